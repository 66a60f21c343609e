"""Shared fixtures: one real slapd per session, and sidecars configured against it.

A test that needs a real server it cannot find skips locally and fails under CI=true.

Every test is marked either `server` (it uses one of SERVER_FIXTURES, or is in a module of
SERVER_MODULES, or says so with @pytest.mark.server) or `unit`: `pytest -m unit` runs the rest in
seconds, and a unit test that starts a testbed server fails, so the marks stay true.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.app import make_app
from sidecar.config import Config, parse_config
from tests.testbed import find_binary, in_ci
from tests.testbed.process import ManagedProcess
from tests.testbed.samba import SambaDC
from tests.testbed.slapd import Slapd

# Debian's Chromium, headless; without the networking flags it keeps calling home and is refused.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PEOPLE = "ou=people,dc=example,dc=com"
GROUPS = "ou=groups,dc=example,dc=com"

StartSidecar = Callable[..., Awaitable[TestClient[Any, Any]]]

# Fixtures that are, or start, a real server (a fixture that uses one of them counts too).
SERVER_FIXTURES = {"slapd", "ad", "sidecar", "browser", "page"}
# Modules whose tests start servers themselves (in the test, or in fixtures of their own).
SERVER_MODULES = {
    "test_browser", "test_browser_sso", "test_chain_app_tokens", "test_chain_attacks", "test_chain_django",
    "test_chain_nginx", "test_chain_proxies", "test_demo", "test_deploy_static", "test_nginx_deploy", "test_package",
    "test_testbed_oidc", "test_testbed_samba", "test_testbed_slapd", "test_netbox",
}


def pytest_configure(config: pytest.Config) -> None:
    # No event loop is current until a test makes one. Otherwise Python 3.11's get_event_loop()
    # makes one the first time pytest-asyncio asks for "the loop before" an async test, puts it
    # back after, and a later asyncio.run() replaces it unclosed: a ResourceWarning (an error here)
    # in whichever later test the garbage collector happens to run.
    asyncio.set_event_loop(None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if isinstance(item, pytest.Function) else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("server") or fixtures & SERVER_FIXTURES or module in SERVER_MODULES:
            item.add_marker(pytest.mark.server)
        else:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_server(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked unit that starts a testbed server fails: it belongs with the server tests."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    ManagedProcess.forbidden = f"{request.node.nodeid} is marked unit"
    try:
        yield
    finally:
        ManagedProcess.forbidden = None


def need(binary: str) -> str:
    """The binary's path; skip the test when it is missing, except under CI=true where that fails."""
    path = find_binary(binary)
    if path is None:
        message = f"{binary} is not installed (tests/install.sh installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def group(cn: str) -> str:
    return f"cn={cn},{GROUPS}"


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def identity_headers(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("remote-user")}


def ldap_settings(server: Slapd, **overrides: Any) -> dict[str, Any]:
    """A working ``ldap:`` section for the test directory: service account, search, groups.

    An override of None removes that key.
    """
    settings: dict[str, Any] = {
        "server_uri": server.uri,
        "bind_dn": server.service_dn,
        "bind_password": server.service_password,
        "user_search": {"base_dn": PEOPLE, "filter": "(uid=%(user)s)"},
        "group_search": {"base_dn": GROUPS, "filter": "(objectClass=groupOfNames)"},
        "group_type": "group_of_names",
    }
    settings.update(overrides)
    return {k: v for k, v in settings.items() if v is not None}


def config_for(server: Slapd, *, top: dict[str, Any] | None = None, **ldap: Any) -> Config:
    return parse_config({"ldap": ldap_settings(server, **ldap), **(top or {})})


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    need("slapd")
    need("ldapadd")
    with Slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture(scope="session")
def ad(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[SambaDC]:
    """A real Samba AD domain controller, in a network of its own, reached on free ports."""
    need("samba")
    need("samba-tool")
    # pytest's cache dir outlives the run, so only the first run on a machine provisions.
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    cache_dir = cache.mkdir("samba-dc") if cache else None
    with SambaDC(tmp_path_factory.mktemp("samba"), cache_dir=cache_dir) as dc:
        yield dc


StartApp = Callable[[Config], Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def app_client() -> AsyncIterator[StartApp]:
    """``await app_client(config)``: a test client for a new sidecar app, closed after the test."""
    clients: list[TestClient[Any, Any]] = []

    async def start(config: Config) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(make_app(config)))
        clients.append(client)  # closed at the end even when it fails to start
        await client.start_server()
        return client

    yield start
    for client in clients:
        await client.close()


def sidecar_for(server: Slapd, app_client: StartApp) -> StartSidecar:
    """``await start(top={...}, **ldap_overrides)`` against one directory."""
    async def start(*, top: dict[str, Any] | None = None, **ldap: Any) -> TestClient[Any, Any]:
        return await app_client(config_for(server, top=top, **ldap))

    return start


@pytest.fixture
def sidecar(slapd: Slapd, app_client: StartApp) -> StartSidecar:
    """``await sidecar(top={...}, **ldap_overrides)``: a test client for a new sidecar app."""
    return sidecar_for(slapd, app_client)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (sync API: per module, away from the async tests)."""
    chromium = need("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in a fresh browser context: no cookies from other tests."""
    context = browser.new_context()
    yield context.new_page()
    context.close()
