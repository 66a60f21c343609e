"""The whole chain, all real, through Apache, Caddy and HAProxy with the shipped deploy files.

client -> proxy (deploy/apache, deploy/caddy, deploy/haproxy) -> `auth-sidecar serve` -> slapd,
and an application behind the proxy. The same promises as tests/test_chain_nginx.py, for each
proxy: the directory's identity for valid credentials, the login page for browsers, nothing for
anyone else, and never an identity header a client wrote, in any spelling.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from sidecar.assertion import AssertionSigner, generate_key
from sidecar.contrib.assertion import AssertionVerifier
from sidecar.contrib.headers import decode
from tests.conftest import basic, group, ldap_settings, need
from tests.testbed import free_port
from tests.testbed.gunicorn import Gunicorn
from tests.testbed.proxies import BINARIES, Proxy, mode, proxy_server
from tests.testbed.proxies import PROXIES as ALL_PROXIES
from tests.testbed.rawhttp import SPOOFS, Headers, Response, identity_seen, send
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd
from tests.testbed.upstream import Echo, EchoApp, header_values

PROXIES = [proxy for proxy in ALL_PROXIES if proxy != "nginx"]  # nginx: test_chain_nginx.py
SIGNING_KEY = generate_key()
VERIFIER = AssertionVerifier(issuer="https://sidecar.test", audience="app",
                             jwks=AssertionSigner([("k1", SIGNING_KEY)], issuer="https://sidecar.test",
                                                  audience="app").jwks())
PLAIN = {"user": "remote-user", "first_name": "remote-user-first-name", "last_name": "remote-user-last-name",
         "email": "remote-user-email", "groups": "remote-user-group", "is_staff": "remote-user-staff",
         "is_superuser": "remote-user-superuser"}

ALICE = {
    "remote-user": "alice",
    "remote-user-first-name": "Alice",
    "remote-user-last-name": "Liddell",
    "remote-user-email": "alice@example.com",
    "remote-user-group": "netbox-users|staff|superuser",  # mirror_groups leaves out "active"
    "remote-user-staff": "true",
    "remote-user-superuser": "true",
    "remote-user-auth-methods": "pwd",  # how the user signed in: a password
}
CAROL = {
    "remote-user": "carol",
    "remote-user-first-name": "Carol",
    "remote-user-last-name": "Danvers",
    "remote-user-email": "carol@example.com",
    "remote-user-group": "netbox-users",
    "remote-user-staff": "false",
    "remote-user-superuser": "false",
    "remote-user-auth-methods": "pwd",
}
BROWSER = ("Accept", "text/html,application/xhtml+xml")
CSRF = "c" * 43  # the login form accepts a token the browser already holds in its cookie


@dataclass
class Chain:
    proxy: str
    port: int
    app: EchoApp
    sidecar: SidecarProcess
    server: Proxy

    @property
    def base(self) -> str:
        return f"http://localhost:{self.port}"  # the Host rawhttp.send writes

    def get(self, path: str = "/", headers: Headers = ()) -> Response:
        return send(self.port, path, headers)

    def app_requests_during(self, path: str, headers: Headers = ()) -> tuple[Response, int]:
        """The answer, and how many requests reached the application meanwhile."""
        before = len(self.app.requests)
        response = self.get(path, headers)
        return response, len(self.app.requests) - before


def auth(user: str, password: str) -> tuple[str, str]:
    (name, value), = basic(user, password).items()
    return name, value


def sidecar_config(proxy: str, slapd: Slapd, *, sidecar_port: int, listen_port: int) -> dict[str, Any]:
    base = f"http://localhost:{listen_port}"
    return {
        # Caddy hands non-2xx answers to the client as they are: browsers need the 302 itself.
        "server": {"listen": f"127.0.0.1:{sidecar_port}", "public_url": f"{base}/_sidecar",
                   "mode": mode(proxy)},
        "ldap": ldap_settings(
            slapd,
            group_type="nested_group_of_names",
            find_group_perms=True,
            # "active" is left out of the groups header, so some users have an empty one.
            mirror_groups=["netbox-users", "staff", "superuser"],
            user_flags_by_group={"is_active": group("active"), "is_staff": group("staff"),
                                 "is_superuser": group("superuser")},
        ),
        "access": {"rules": [{"path": "/admin", "groups": ["staff"]}, {"path": "/admin", "policy": "deny"}]},
        # Plain http on loopback, so no Secure cookie; re-checked every second to see a refresh.
        "sessions": {"keys": [{"id": "k1", "secret": "s" * 40}], "secure": False, "recheck_every": 1,
                     "default_redirect": f"{base}/"},
        "assertion": {"keys": [{"id": "k1", "private_key": SIGNING_KEY}], "audience": "app",
                      "issuer": "https://sidecar.test"},
    }




@pytest.fixture(scope="module", params=PROXIES)
def chain(request: pytest.FixtureRequest, slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    proxy: str = request.param
    need(BINARIES[proxy])
    workdir = tmp_path_factory.mktemp(f"chain-{proxy}")
    sidecar_port, listen_port = free_port(), free_port()
    config = sidecar_config(proxy, slapd, sidecar_port=sidecar_port, listen_port=listen_port)
    with EchoApp() as app, SidecarProcess(workdir, config) as sidecar:
        with proxy_server(proxy, workdir / proxy, listen_port=listen_port, sidecar_port=sidecar_port,
                          app_port=app.port) as server:
            yield Chain(proxy, listen_port, app, sidecar, server)


def identity(echo: Echo) -> dict[str, str]:
    """The identity headers the application saw, by lower-case name (HAProxy sends names in lower
    case and Caddy in its own order: both fine for an application), checking there is one of each."""
    seen = identity_seen(echo)
    names = [name.lower() for name, _ in seen]
    assert len(names) == len(set(names)), f"an identity header arrived twice: {seen}"
    found = {name.lower(): value for name, value in seen}
    # The signed assertion came through too, and vouches for exactly these plain headers.
    assertion = found.pop("remote-user-assertion")
    plain = {key: decode(found.get(name, "")) for key, name in PLAIN.items()}
    assert VERIFIER.verify(assertion, plain)["sub"] == plain["user"]
    return found


def sign_in(chain: Chain, user: str, password: str, rd: str) -> Response:
    """POST the login form through the proxy, as a browser holding the form's CSRF cookie would."""
    body = urlencode({"username": user, "password": password, "csrf": CSRF, "rd": rd}).encode()
    headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", f"sidecar_csrf={CSRF}"),
               ("Origin", chain.base)]
    return send(chain.port, "/_sidecar/login", headers, method="POST", body=body)


def session_cookie(response: Response) -> str:
    """name=value of the session cookie a response sets."""
    (cookie,) = [c.split(";", 1)[0] for c in response.values("Set-Cookie") if c.startswith("sidecar_session=")]
    return cookie


def test_valid_credentials_reach_the_app_with_the_directorys_identity(chain: Chain) -> None:
    response = chain.get("/devices/?q=1&sort=name", [auth("alice", "alice-pass")])
    assert response.status == 200, chain.server.log()
    echo = response.echo()
    assert echo["path"] == "/devices/?q=1&sort=name"
    assert identity(echo) == ALICE


def test_a_request_body_reaches_the_app_intact(chain: Chain) -> None:
    # The check is a body-less GET: the application still gets the method and the whole body.
    body = b'{"name": "rack-1"}' * 1000
    response = send(chain.port, "/api/dcim/racks/", [auth("alice", "alice-pass"),
                                                    ("Content-Type", "application/json")], method="POST", body=body)
    echo = response.echo()
    assert (echo["method"], echo["body"]) == ("POST", body.decode())


def test_non_ascii_names_arrive_as_utf8_bytes(chain: Chain) -> None:
    seen = identity(chain.get("/", [auth("jose", "jose-pass")]).echo())
    # The upstream decodes as latin-1 (as gunicorn does): the bytes on the wire are UTF-8.
    assert seen["remote-user-first-name"].encode("latin-1").decode("utf-8") == "José"
    assert seen["remote-user-last-name"].encode("latin-1").decode("utf-8") == "山田"


@pytest.mark.parametrize("credentials", [("alice", "wrong"), ("alice", ""), ("nobody", "x")])
def test_wrong_credentials_get_401_and_never_reach_the_app(chain: Chain, credentials: tuple[str, str]) -> None:
    response, reached = chain.app_requests_during("/", [auth(*credentials)])
    assert response.status == 401
    assert response.values("WWW-Authenticate") == ['Basic realm="auth-sidecar", charset="UTF-8"']
    assert reached == 0


def test_a_browser_without_a_session_is_sent_to_the_login_page(chain: Chain) -> None:
    response, reached = chain.app_requests_during("/devices/?q=rack%201&sort=name", [BROWSER])
    assert response.status == 302
    wanted = f"{chain.base}/devices/?q=rack%201&sort=name"
    assert response.values("Location") == [f"{chain.base}/_sidecar/login?rd={quote(wanted, safe='')}"]
    assert reached == 0
    # A script asking for HTML (X-Requested-With) gets the plain 401 instead.
    response, reached = chain.app_requests_during("/", [BROWSER, ("X-Requested-With", "XMLHttpRequest")])
    assert (response.status, reached) == (401, 0)


def test_sign_in_through_the_proxy_and_the_session_refresh_reaches_the_browser(chain: Chain) -> None:
    login_page = chain.get("/_sidecar/login", [BROWSER])
    assert login_page.status == 200 and b"<form" in login_page.body
    signed_in = sign_in(chain, "bob", "bob-pass", rd=f"{chain.base}/devices/")
    assert signed_in.status == 303, signed_in.body
    assert signed_in.values("Location") == [f"{chain.base}/devices/"]
    cookie = session_cookie(signed_in)

    response = chain.get("/devices/", [BROWSER, ("Cookie", cookie)])
    assert response.status == 200
    assert identity(response.echo())["remote-user"] == "bob"
    time.sleep(1.2)  # past recheck_every: the next /auth re-checks and answers 200 with a new cookie
    response = chain.get("/devices/", [BROWSER, ("Cookie", cookie)])
    assert response.status == 200
    assert session_cookie(response) != cookie
    assert identity(response.echo())["remote-user"] == "bob"


def test_the_sidecars_auth_endpoint_is_not_exposed(chain: Chain) -> None:
    for path in ("/_sidecar/auth", "/_sidecar/%61uth"):
        response = chain.get(path, [auth("alice", "alice-pass")])
        assert response.status in (403, 404), path


@pytest.mark.parametrize("path", ["/_sidecar/../devices/", "/_sidecar/%2e%2e/devices/", "//_sidecar/../devices/",
                                  "/_SIDECAR/../devices/", "/_sidecar%2f..%2fdevices/"])
def test_paths_dressed_as_the_sidecars_pages_never_reach_the_app_unchecked(chain: Chain, path: str) -> None:
    response, reached = chain.app_requests_during(path)
    assert reached == 0, (path, response.status)


def test_valid_but_not_allowed_is_403(chain: Chain) -> None:
    for path, credentials in [("/", ("dave", "dave-pass")), ("/admin/users", ("carol", "carol-pass")),
                              ("/%61dmin/users", ("carol", "carol-pass"))]:
        response, reached = chain.app_requests_during(path, [auth(*credentials)])
        assert (response.status, reached) == (403, 0), path
    assert chain.get("/admin/users", [auth("alice", "alice-pass")]).status == 200


def test_the_client_cannot_describe_another_request_to_the_sidecar(chain: Chain) -> None:
    # Access rules read the original request the proxy describes; a client's own description must lose.
    forged = [("X-Original-URL", f"{chain.base}/public"), ("X-Original-URI", "/public"),
              ("X-Forwarded-Uri", "/public"), ("X-Original-Method", "GET"), ("X-Forwarded-Host", "evil.test")]
    response, reached = chain.app_requests_during("/admin/users", [*forged, auth("carol", "carol-pass")])
    assert (response.status, reached) == (403, 0)


def test_the_client_cannot_choose_the_address_the_sidecar_sees(chain: Chain) -> None:
    # Brute-force bans go by client address, at /auth and at the login form.
    forged = [("X-Forwarded-For", "203.0.113.9"), ("X-Real-IP", "203.0.113.9")]
    chain.get("/", [*forged, auth("bob", "wrong")])
    body = urlencode({"username": "bob", "password": "wrong", "csrf": CSRF}).encode()
    send(chain.port, "/_sidecar/login", [*forged, ("Content-Type", "application/x-www-form-urlencoded"),
                                         ("Cookie", f"sidecar_csrf={CSRF}")], method="POST", body=body)
    refusals = [line for line in chain.sidecar.log().splitlines() if "refused" in line and "client=" in line]
    assert "refused the password" in refusals[-2] and "sign-in refused" in refusals[-1]
    assert all("client=127.0.0.1" in line for line in refusals[-2:])
    assert "203.0.113.9" not in chain.sidecar.log()


@pytest.mark.parametrize("spoof", SPOOFS, ids=lambda s: "+".join(n for n, _ in s))
def test_spoofed_identity_headers_never_reach_the_app(chain: Chain, spoof: Headers) -> None:
    response, reached = chain.app_requests_during("/", spoof)
    assert (response.status, reached) == (401, 0)  # anonymous: stopped at the proxy
    seen = identity(chain.get("/", [*spoof, auth("carol", "carol-pass")]).echo())
    assert seen == CAROL  # the sidecar's values, one of each, nothing else


@pytest.mark.parametrize("name", ["Remote-User-Group", "remote_user_group", "REMOTE-USER-GROUP"])
def test_a_value_the_sidecar_leaves_empty_cannot_be_filled_in(chain: Chain, name: str) -> None:
    # o'brien is only in "active", which mirror_groups leaves out: the sidecar sends an empty group list.
    seen = identity(chain.get("/", [(name, "superusers"), auth("o'brien", "obrien-pass")]).echo())
    assert seen["remote-user"] == "o'brien"
    assert seen.get("remote-user-group", "") == ""


def test_the_proxy_forwards_other_underscore_headers(chain: Chain) -> None:
    # So the identity headers' underscore spellings are stopped by the deploy file, not by luck.
    echo = chain.get("/", [("X_Probe", "1"), auth("alice", "alice-pass")]).echo()
    assert re.search(r"^X_Probe: 1\r?$", echo["raw_headers"], re.M | re.I)


def test_basic_credentials_never_reach_the_app_but_api_tokens_do(chain: Chain) -> None:
    for scheme in ("Basic", "basic", "BASIC"):
        credentials = auth("alice", "alice-pass")[1].replace("Basic", scheme)
        echo = chain.get("/", [("Authorization", credentials)]).echo()
        assert header_values(echo, "Authorization") == []
        assert "YWxpY2U6YWxpY2UtcGFzcw" not in echo["raw_headers"]  # base64 of alice:alice-pass
    signed_in = sign_in(chain, "carol", "carol-pass", rd=f"{chain.base}/")
    token = ("Authorization", "Token 0123456789abcdef")
    echo = chain.get("/api/dcim/devices/", [("Cookie", session_cookie(signed_in)), token]).echo()
    assert header_values(echo, "Authorization") == ["Token 0123456789abcdef"]


@pytest.mark.parametrize("proxy", PROXIES)
def test_sidecar_down_means_5xx_never_open_access(proxy: str, tmp_path: Path) -> None:
    need(BINARIES[proxy])
    dead_port, listen_port = free_port(), free_port()  # nothing listens on dead_port
    with EchoApp() as app, proxy_server(proxy, tmp_path, listen_port=listen_port, sidecar_port=dead_port,
                                        app_port=app.port):
        # (HAProxy's HTTP client keeps trying for about 3 s before it gives up: keep this list short.)
        for headers in ([auth("alice", "alice-pass")], [("Remote-User", "admin")], [BROWSER]):
            assert send(listen_port, "/", headers).status >= 500
    assert app.requests == []


# -- a real Django app (sidecar.contrib.django, served by gunicorn) behind each proxy ------------------

@pytest.fixture(scope="module", params=PROXIES)
def django_chain(request: pytest.FixtureRequest, slapd: Slapd,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Gunicorn]]:
    proxy: str = request.param
    need(BINARIES[proxy])
    workdir = tmp_path_factory.mktemp(f"django-{proxy}")
    sidecar_port, listen_port, app_port = free_port(), free_port(), free_port()
    config = sidecar_config(proxy, slapd, sidecar_port=sidecar_port, listen_port=listen_port)
    with Gunicorn(workdir / "django", app_port) as django, SidecarProcess(workdir, config):
        with proxy_server(proxy, workdir / proxy, listen_port=listen_port, sidecar_port=sidecar_port,
                          app_port=app_port):
            yield listen_port, django


def whoami(port: int, headers: Headers) -> dict[str, Any]:
    response = send(port, "/whoami", headers)
    assert response.status == 200, response.body[:300]
    seen: dict[str, Any] = json.loads(response.body)
    return seen


def test_django_behind_each_proxy_gets_the_directory_user_and_never_a_spoof(
        django_chain: tuple[int, Gunicorn]) -> None:
    port, django = django_chain
    alice = whoami(port, [auth("alice", "alice-pass")])
    assert (alice["username"], alice["first_name"], alice["last_name"]) == ("alice", "Alice", "Liddell")
    assert set(alice["groups"]) == {"netbox-users", "staff", "superuser"} and alice["is_superuser"]
    assert whoami(port, [auth("jose", "jose-pass")])["last_name"] == "山田"
    for number, spoof in enumerate(SPOOFS):
        assert send(port, f"/whoami?anonymous={number}", spoof).status == 401
        carol = whoami(port, [*spoof, auth("carol", "carol-pass")])
        assert carol["username"] == "carol" and not carol["is_superuser"] and not carol["is_staff"]
    # The application records each request before answering it: once answered, it is recorded.
    send(port, "/whoami?last=1", [auth("carol", "carol-pass")])
    logged = " ".join(django.targets())
    assert "last=1" in logged and "anonymous=" not in logged  # no anonymous request reached Django
