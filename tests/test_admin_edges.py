"""The admin channel's edges, without a sidecar: a channel that cannot bind, a handler that fails, a
sidecar without sessions, a refused reload; the command against a configuration it cannot use, a
socket where something other than a sidecar answers, and how empty or partial answers are printed."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar import admin
from sidecar.config import AdminConfig
from sidecar.routes import SIDECAR
from tests.test_admin import run_admin


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="adme", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def ask(path: Path, method: str, where: str, body: str | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as client:
        async with client.request(method, "http://sidecar" + where, data=body) as response:
            return response.status, await response.json()


@pytest.fixture
async def channel(short_dir: Path) -> AsyncIterator[tuple[Path, SimpleNamespace]]:
    """The admin channel served in this process for a stand-in server the test fills in."""
    server = SimpleNamespace()
    path = short_dir / "a.sock"
    runner = await admin.start(server, str(path))  # type: ignore[arg-type]
    assert runner is not None
    try:
        yield path, server
    finally:
        await runner.cleanup()


# -- the channel -------------------------------------------------------------------------------------

async def test_a_path_too_long_to_bind_is_one_warning_and_no_channel(short_dir: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = short_dir / ("s" * 120)
    with caplog.at_level(logging.INFO, "sidecar.admin"):
        assert await admin.start(object(), str(path)) is None  # type: ignore[arg-type]
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith(f"admin channel off: cannot bind {path}: ")
    assert not path.exists()


async def test_a_name_too_long_to_look_at_is_one_warning_and_no_channel(short_dir: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = short_dir / ("n" * 300)
    with caplog.at_level(logging.INFO, "sidecar.admin"):
        assert await admin.start(object(), str(path)) is None  # type: ignore[arg-type]
    assert caplog.messages == [f"admin channel off: cannot look at {path}: File name too long"]


async def test_a_failing_handler_is_a_json_500_and_a_logged_traceback(
        channel: tuple[Path, SimpleNamespace], caplog: pytest.LogCaptureFixture) -> None:
    path, _server = channel  # the stand-in has no current generation: status fails
    with caplog.at_level(logging.INFO, "sidecar.admin"):
        assert await ask(path, "GET", "/v1/status") == (500, {"error": "internal error (see the sidecar's log)"})
    failed = [r for r in caplog.records if r.getMessage() == "admin channel: GET /v1/status failed"]
    assert len(failed) == 1 and failed[0].exc_info is not None


async def test_sessions_without_browser_sign_in_is_a_409(channel: tuple[Path, SimpleNamespace]) -> None:
    path, server = channel
    server.current = SimpleNamespace(app={SIDECAR: SimpleNamespace(signin=None)})
    error = {"error": "browser sign-in is not configured (no sessions: section): there are no sessions"}
    assert await ask(path, "GET", "/v1/sessions?user=alice") == (409, error)
    assert await ask(path, "POST", "/v1/revoke", '{"user": "alice"}') == (409, error)


async def test_a_refused_reload_is_a_409_with_its_problems(channel: tuple[Path, SimpleNamespace]) -> None:
    path, server = channel

    async def reload() -> list[str]:
        return ["ldap.uri: missing"]

    server.reload = reload
    assert await ask(path, "POST", "/v1/reload") == (
        409, {"error": "reload refused, still serving the previous configuration", "problems": ["ldap.uri: missing"]})


async def test_an_unban_the_store_did_not_answer_is_logged_and_nothing_found_is_a_404(
        channel: tuple[Path, SimpleNamespace], caplog: pytest.LogCaptureFixture) -> None:
    path, server = channel

    async def lift_everywhere(target: str) -> tuple[list[Any], bool]:
        return [], False

    server.state = SimpleNamespace(current_regulator=SimpleNamespace(lift_everywhere=lift_everywhere))
    with caplog.at_level(logging.INFO, "sidecar.admin"):
        assert await ask(path, "POST", "/v1/unban", '{"name": "alice"}') == (
            404, {"error": "no ban and no failures for 'alice'"})
    assert "admin: the state store did not answer: 'alice' is lifted on this instance only" in caplog.messages


def test_the_peer_is_unknown_without_a_socket_or_credentials() -> None:
    no_socket = SimpleNamespace(transport=SimpleNamespace(get_extra_info=lambda name: None))
    assert admin._peer_uid(no_socket) is None  # type: ignore[arg-type]

    class NoCredentials:
        def getsockopt(self, *args: Any) -> bytes:
            raise OSError(95, "Operation not supported")

    bare = SimpleNamespace(transport=SimpleNamespace(get_extra_info=lambda name: NoCredentials()))
    assert admin._peer_uid(bare) is None  # type: ignore[arg-type]


# -- the command: the socket's path from a configuration it cannot load --------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("admin: [unclosed\n", "{config} is not valid YAML; give --socket PATH"),
    ("admin: 3\n", "{config}: admin is not a mapping; give --socket PATH"),
    ("admin:\n  socket: relative.sock\n", "{config}: admin.socket is not an absolute path; give --socket PATH"),
])
def test_a_configuration_without_a_usable_socket_is_one_line_and_exit_2(tmp_path: Path, text: str,
                                                                         message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    status, out, err = run_admin("--config", str(config), "status")
    assert (status, out) == (2, "")
    assert err == "auth-sidecar: " + message.format(config=config) + "\n"


def test_a_configuration_without_an_admin_section_uses_the_default_socket(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("server: {}\n")  # not a valid configuration: the socket is read from the YAML alone
    assert admin._socket_in_yaml(str(config)) == AdminConfig().socket
    assert admin._socket_of(str(config)) == AdminConfig().socket


# -- the command: what answers on the socket is not a sidecar ---------------------------------------

async def serve(path: Path, handler: Any) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    return runner


@pytest.mark.parametrize(("answer", "message"), [
    ("<html>hello</html>", "what answers there is not a sidecar's admin channel (JSONDecodeError)"),
    ("[1, 2]", "what answers there is not a sidecar's admin channel"),
])
async def test_something_else_answering_on_the_socket_is_unreachable(short_dir: Path, answer: str,
                                                                     message: str) -> None:
    path = short_dir / "other.sock"

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=answer)

    runner = await serve(path, handler)
    try:
        with pytest.raises(admin._Unreachable) as caught:
            await admin._ask(str(path), "status", None)
    finally:
        await runner.cleanup()
    assert str(caught.value) == f"cannot reach the admin socket {path}: {message}"


async def test_no_answer_in_time_is_unreachable(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = short_dir / "slow.sock"
    monkeypatch.setattr(admin, "ANSWER_TIMEOUT", 0.2)

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    runner = await serve(path, handler)
    try:
        with pytest.raises(admin._Unreachable) as caught:
            await admin._ask(str(path), "reload", None)
    finally:
        await runner.cleanup()
    assert str(caught.value) == f"cannot reach the admin socket {path}: no answer within 0.2 s"


def test_another_os_error_is_shown_by_its_text() -> None:
    assert admin._why(OSError(5, "Input/output error")) == "Input/output error"


# -- how answers are printed ------------------------------------------------------------------------

def test_no_bans_with_regulation_off() -> None:
    assert admin._show_bans({"regulation": False, "settings": None, "bans": []}) == [
        "Regulation is off in the running configuration (regulation.enabled: false).",
        "No bans, and no failures counting."]


def test_names_counting_failures_without_a_ban() -> None:
    body = {"regulation": True, "settings": {"max_failures": 3, "window": 300, "ban": 900},
            "bans": [{"kind": "user", "name": "al\x1bice", "banned": False, "until": None, "remaining": 0,
                      "failures": 2}]}
    assert admin._show_bans(body) == [
        "3 wrong passwords within 300 s start a ban of 900 s.",
        "Counting failures, not banned (1):",
        "  user     al\\x1bice  2 failures",
        "Lift one with: auth-sidecar admin unban NAME|ADDRESS"]


def test_no_session_known_revoke_and_status_without_directory() -> None:
    assert admin._show_sessions({"user": "bob", "sessions": []}) == [
        "bob: no session known to this process (one issued before a restart, or by another instance, "
        "is listed once it is used here)"]
    assert admin._show_revoke({"user": "bob", "names": ["bob", "Bob"], "sources": ["ldap", "local"],
                               "known_sessions": 0}) == [
        "signed out bob everywhere: every session issued until now to bob, Bob, from ldap, local (0 known here). "
        "Other instances keep their own list: run this on each."]
    lines = admin._show_status({"version": "1.0", "pid": 7, "uptime": 90, "started": 0, "config": "/etc/s.yaml",
                                "sha256": "ab", "changed_on_disk": False, "directory": [], "bans": 0,
                                "counting": 0, "regulation": False, "sign_in": False, "sessions": 0, "users": 0})
    assert lines[1:] == ["config     /etc/s.yaml", "sha256     ab", "directory  none configured",
                         "bans       0 (regulation is off)", "sessions   browser sign-in is not configured"]
    assert lines[0].startswith("auth-sidecar 1.0, pid 7, up 1 min 30 s (since ")
