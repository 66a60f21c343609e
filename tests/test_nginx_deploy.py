"""The shipped nginx files (deploy/nginx), run by a real nginx against a fake sidecar and EchoApp.

The fake sidecar speaks the /auth contract with fixed users, so these tests prove the nginx wiring
alone: what reaches the sidecar, what reaches the application, what reaches the client.
"""

from __future__ import annotations

import base64
import re
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.testbed import free_port, substitute
from tests.testbed.nginx import Nginx, render_site, static_app
from tests.testbed.rawhttp import exchange, identity_seen, is_identity, raw_request, send, utf8
from tests.testbed.upstream import EchoApp, header_values

Headers = Sequence[tuple[str, str]]

IDENTITY_NAMES = (
    "Remote-User",
    "Remote-User-First-Name",
    "Remote-User-Last-Name",
    "Remote-User-Email",
    "Remote-User-Group",
    "Remote-User-Staff",
    "Remote-User-Superuser",
    "Remote-User-Assertion",
)
# What the fake sidecar answers per user: alice has everything, bob only a name, mallory is denied.
IDENTITIES = {
    "alice": ("alice", "Alice", "Liddell", "alice@example.org", "netbox-users|netbox-admins", "true", "true",
              "eyJ.alice.sig"),
    "bob": ("bob", "", "", "", "", "false", "false", ""),
}
PASSWORDS = {"alice": "alice-pass", "bob": "bob-pass", "mallory": "mallory-pass"}
SESSION_COOKIE = "sidecar_session=refreshed; Path=/; HttpOnly"
CLEAR_COOKIE = "sidecar_session=; Max-Age=0; Path=/"
LOGIN = "http://example/login?rd="
API_TOKEN = "0123456789abcdef"
SESSION = ("Cookie", "sidecar_session=alice-session")  # the fake sidecar's session for alice
SESSION_OF_MALLORY = ("Cookie", "sidecar_session=mallory-session")  # a session the fake sidecar does not know
# What the fake sidecar answers at its own pages, whoever asks (the status is the real sidecar's).
PAGES: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {
    "/forbidden": (403, [("Content-Type", "text/html"), ("Content-Security-Policy", "default-src 'none'")],
                   b"not allowed here"),
    "/favicon.ico": (200, [("Content-Type", "image/x-icon")], b"icon"),
    "/robots.txt": (200, [("Content-Type", "text/plain")], b"User-agent: *\nDisallow: /\n"),
}
# Paths for which the fake sidecar answers with that status, whoever asks.
STATUS_PATHS = {"/status/400": 400, "/status/503": 503, "/status/500": 500, "/status/429": 429}

# Client-sent identity headers nginx must keep from the sidecar and the application.
SPOOFS = [
    [("Remote-User", "evil")],
    [("remote-user", "evil")],
    [("REMOTE-USER", "evil")],
    [("Remote_User", "evil")],
    [("Remote-User_Email", "evil@example.org")],
    [("Remote_User_Group", "evil-admins")],
    [("Remote-User", "evil"), ("Remote-User", "evil-too")],
    [(name, "evil") for name in IDENTITY_NAMES],
]


def basic(user: str) -> tuple[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    return ("Authorization", f"Basic {token}")


def identity(user: str) -> list[tuple[str, str]]:
    """The identity headers the fake sidecar answers for user, in order."""
    return list(zip(IDENTITY_NAMES, IDENTITIES[user], strict=True))


class FakeSidecar(BaseHTTPRequestHandler):
    """GET only, like the real sidecar: a subrequest with another method would fail loudly."""

    protocol_version = "HTTP/1.1"  # nginx keeps upstream connections alive
    server: FakeSidecarServer

    def do_GET(self) -> None:
        self.server.record(self.client_address[1], self.path, list(self.headers.items()))
        if self.path.startswith("/login"):
            self._answer(200, [], b"login page")
            return
        if self.path in PAGES:
            self._answer(*PAGES[self.path])
            return
        status = STATUS_PATHS.get((self.headers.get("X-Forwarded-Uri") or "").split("?")[0])
        if status is not None:  # how nginx hands on each other status of the sidecar's
            self._answer(status, [])
            return
        user = self._user()
        if user in IDENTITIES:
            self._answer(200, [*identity(user), ("Set-Cookie", SESSION_COOKIE)])
        elif user == "mallory":
            self._answer(403, [])
        else:
            self._answer(401, self._refusal())

    def _user(self) -> str | None:
        if SESSION[1] in (self.headers.get("Cookie") or ""):
            return "alice"
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme == "Token":  # an API token, as NetBox's API clients send
            return "bob" if token == API_TOKEN else None
        if scheme.lower() != "basic":
            return None
        user, _, password = base64.b64decode(token).decode().partition(":")
        return user if PASSWORDS.get(user) == password else None

    def _refusal(self) -> list[tuple[str, str]]:
        headers = [("WWW-Authenticate", 'Basic realm="test"'), ("Set-Cookie", CLEAR_COOKIE)]
        if "text/html" in (self.headers.get("Accept") or ""):
            h = self.headers
            original = f"{h['X-Forwarded-Proto']}://{h['X-Forwarded-Host']}{h['X-Forwarded-Uri']}"
            headers.append(("Location", LOGIN + urllib.parse.quote(original, safe="")))
        return headers

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `received`."""


class FakeSidecarServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeSidecar)
        self.received: list[tuple[str, list[tuple[str, str]]]] = []
        self.peer_ports: set[int] = set()
        self._lock = threading.Lock()

    def record(self, peer_port: int, path: str, headers: list[tuple[str, str]]) -> None:
        with self._lock:
            self.received.append((path, headers))
            self.peer_ports.add(peer_port)


@dataclass
class Site:
    port: int
    app: EchoApp
    sidecar: FakeSidecarServer
    nginx: Nginx


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    need("nginx")
    sidecar = FakeSidecarServer()
    threading.Thread(target=sidecar.serve_forever, daemon=True).start()
    port = free_port()
    with EchoApp() as app:
        conf = render_site(listen_port=port, sidecar_port=sidecar.server_address[1], app_port=app.port)
        with Nginx(tmp_path_factory.mktemp("nginx"), conf) as nginx:
            yield Site(port, app, sidecar, nginx)
    sidecar.shutdown()
    sidecar.server_close()


@pytest.fixture
def site(running: Site) -> Site:
    """The shared site with nothing recorded yet."""
    running.app.requests.clear()
    running.sidecar.received.clear()
    running.sidecar.peer_ports.clear()
    return running


def only_auth_request(site: Site) -> list[tuple[str, str]]:
    """The headers of the single /auth request the sidecar received."""
    assert [path for path, _ in site.sidecar.received] == ["/auth"]
    return site.sidecar.received[0][1]


def test_authorized_request_reaches_the_app_with_the_sidecars_identity(site: Site) -> None:
    response = send(site.port, "/devices/?q=1", [basic("alice")])
    assert response.status == 200
    echo = response.echo()
    assert echo["path"] == "/devices/?q=1"
    assert identity_seen(echo) == identity("alice")


def test_anonymous_api_client_gets_401_with_www_authenticate(site: Site) -> None:
    response = send(site.port, "/api/", [("Accept", "application/json")])
    assert response.status == 401
    assert response.values("WWW-Authenticate") == ['Basic realm="test"']
    assert response.values("Location") == []
    assert site.app.requests == []


def test_anonymous_browser_is_redirected_to_the_sidecars_location(site: Site) -> None:
    response = send(site.port, "/x?a=1&b=2", [("Accept", "text/html,application/xhtml+xml")])
    assert response.status == 302
    original = f"http://localhost:{site.port}/x?a=1&b=2"
    assert response.values("Location") == [LOGIN + urllib.parse.quote(original, safe="")]
    assert site.app.requests == []


@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_cookie_cleared_by_a_refusal_reaches_the_client(site: Site, accept: str) -> None:
    assert send(site.port, "/", [("Accept", accept)]).values("Set-Cookie") == [CLEAR_COOKIE]


def test_forbidden_user_gets_403_and_never_reaches_the_app(site: Site) -> None:
    assert send(site.port, "/", [basic("mallory")]).status == 403
    assert site.app.requests == []


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_a_refused_request_gets_the_sidecars_page_with_the_403(site: Site, method: str) -> None:
    response = send(site.port, "/admin/x?a=1", [basic("mallory"), ("Accept", "text/html"), SESSION_OF_MALLORY],
                    method=method, body=b"x=1" if method == "POST" else b"")
    assert (response.status, response.body) == (403, b"not allowed here")
    assert response.values("Content-Security-Policy") == ["default-src 'none'"]
    assert site.app.requests == []
    (check, page) = site.sidecar.received
    assert check[0] == "/auth" and page[0] == "/forbidden"  # no query: the page needs none
    received = dict(page[1])
    # What the page reads (the session cookie, Accept) reaches it; the password does not, nor a body.
    assert received["Cookie"] == SESSION_OF_MALLORY[1] and received["Accept"] == "text/html"
    assert "Authorization" not in received and "Content-Length" not in received
    assert received["X-Request-ID"] == dict(check[1])["X-Request-ID"]


@pytest.mark.parametrize(("path", "body"), [("/favicon.ico", b"icon"),
                                           ("/robots.txt", b"User-agent: *\nDisallow: /\n")])
def test_the_icon_and_robots_txt_come_from_the_sidecar_without_a_check(site: Site, path: str, body: bytes) -> None:
    response = send(site.port, path, [("Cookie", "sidecar_session=x"), basic("alice"), ("Remote-User", "evil")])
    assert (response.status, response.body) == (200, body)
    assert site.app.requests == []
    ((received_path, headers),) = site.sidecar.received  # no /auth: nothing to check
    assert received_path == path
    assert not {"Cookie", "Authorization"} & {name for name, _ in headers}


def test_the_request_id_nginx_gives_the_check_is_the_one_the_app_gets(site: Site) -> None:
    response = send(site.port, "/", [basic("alice"), ("X-Request-ID", "forged")])
    (given,) = header_values(response.echo(), "X-Request-ID")
    assert re.fullmatch(r"[0-9a-f]{32}", given)  # nginx's $request_id, not the client's
    assert dict(only_auth_request(site))["X-Request-ID"] == given
    assert header_values(send(site.port, "/", [basic("alice")]).echo(), "X-Request-ID") != [given]


def test_wrong_password_is_refused(site: Site) -> None:
    token = base64.b64encode(b"alice:wrong").decode()
    assert send(site.port, "/", [("Authorization", f"Basic {token}")]).status == 401
    assert site.app.requests == []


def test_sidecar_receives_the_original_request_and_no_client_identity(site: Site) -> None:
    send(site.port, "/x?a=1&b=2", [("Remote-User", "evil"), ("X-Forwarded-For", "6.6.6.6"), basic("alice")])
    received = dict(only_auth_request(site))
    assert received["X-Forwarded-Method"] == "GET"
    assert received["X-Forwarded-Proto"] == "http"
    assert received["X-Forwarded-Uri"] == "/x?a=1&b=2"
    assert received["X-Forwarded-Host"] == f"localhost:{site.port}"
    assert "X-Original-URL" not in received  # never built from the client's Host
    assert received["X-Forwarded-For"] == "127.0.0.1"  # the client's own value is replaced
    assert received["Authorization"] == basic("alice")[1]
    assert not any(is_identity(name) for name in received)


@pytest.mark.parametrize("method", ["HEAD", "PUT", "DELETE", "OPTIONS"])
def test_any_method_is_checked_with_get_and_passed_on(site: Site, method: str) -> None:
    assert send(site.port, "/", [basic("alice")], method=method).status == 200
    assert dict(only_auth_request(site))["X-Forwarded-Method"] == method
    assert [echo["method"] for echo in site.app.requests] == [method]


def test_post_body_reaches_the_app_but_not_the_sidecar(site: Site) -> None:
    response = send(site.port, "/api/dcim/sites/", [basic("alice")], method="POST", body=b'{"name": "x"}')
    assert response.status == 200
    assert (response.echo()["method"], response.echo()["body"]) == ("POST", '{"name": "x"}')
    received = dict(only_auth_request(site))
    assert received["X-Forwarded-Method"] == "POST"
    assert "Content-Length" not in received


@pytest.mark.parametrize("spoof", SPOOFS, ids=lambda spoof: "+".join(name for name, _ in spoof))
def test_anonymous_spoofer_never_reaches_the_app(site: Site, spoof: Headers) -> None:
    assert send(site.port, "/", spoof).status == 401
    assert site.app.requests == []
    assert not any(is_identity(name) for name in dict(only_auth_request(site)))


@pytest.mark.parametrize("spoof", SPOOFS, ids=lambda spoof: "+".join(name for name, _ in spoof))
def test_authenticated_spoofer_gets_only_the_sidecars_identity(site: Site, spoof: Headers) -> None:
    echo = send(site.port, "/", [*spoof, basic("alice")]).echo()
    assert identity_seen(echo) == identity("alice")
    assert "evil" not in echo["raw_headers"]


def test_identity_left_empty_by_the_sidecar_cannot_be_filled_by_the_client(site: Site) -> None:
    spoof = [(name, "evil") for name in IDENTITY_NAMES]
    echo = send(site.port, "/", [*spoof, basic("bob")]).echo()
    assert identity_seen(echo) == [("Remote-User", "bob"), ("Remote-User-Staff", "false"),
                                   ("Remote-User-Superuser", "false")]
    assert header_values(echo, "Remote-User-Email") == []


def test_session_cookie_from_the_sidecar_reaches_the_client(site: Site) -> None:
    assert send(site.port, "/", [basic("alice")]).values("Set-Cookie") == [SESSION_COOKIE]


def test_sidecar_connections_are_reused(site: Site) -> None:
    for _ in range(10):
        send(site.port, "/", [basic("alice")])
    assert len(site.sidecar.received) == 10
    assert len(site.sidecar.peer_ports) < 10


def test_auth_endpoints_are_not_reachable_from_outside(site: Site) -> None:
    assert send(site.port, "/_auth", [basic("alice")]).status == 404
    assert send(site.port, "/_sidecar/auth", [basic("alice")]).status == 404
    assert site.sidecar.received == []


def test_sidecar_pages_are_public_under_the_prefix(site: Site) -> None:
    response = send(site.port, "/_sidecar/login?rd=%2F")
    assert (response.status, response.body) == (200, b"login page")
    assert [path for path, _ in site.sidecar.received] == ["/login?rd=%2F"]


def test_sidecar_down_means_5xx_and_the_app_is_never_reached(tmp_path: Path) -> None:
    need("nginx")
    port = free_port()
    with EchoApp() as app:
        conf = render_site(listen_port=port, sidecar_port=free_port(), app_port=app.port)
        with Nginx(tmp_path, conf):
            assert send(port, "/", [basic("alice")]).status >= 500
        assert app.requests == []


def test_benchmark_ceiling_serves_a_static_app_without_a_sidecar(tmp_path: Path) -> None:
    need("nginx")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello")
    port, app_port = free_port(), free_port()
    conf = render_site(listen_port=port, sidecar_port=free_port(), app_port=app_port, ceiling=True)
    with Nginx(tmp_path / "nginx", conf + static_app(port=app_port, root=www)):
        response = send(port, "/", [("Remote-User", "evil")])
    assert (response.status, response.body) == (200, b"hello")


def test_render_site_fails_loudly_when_a_token_is_missing() -> None:
    with pytest.raises(ValueError, match="listen 80;"):
        substitute("server { listen 443; }", {"listen 80;": "listen 127.0.0.1:1;"})


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
def test_basic_passwords_never_reach_the_app(site: Site, scheme: str) -> None:
    name, value = basic("alice")
    echo = send(site.port, "/", [(name, value.replace("Basic", scheme, 1))]).echo()
    assert header_values(echo, "Authorization") == []
    assert value.split()[1] not in echo["raw_headers"]


def test_other_authorization_schemes_reach_the_app_unchanged(site: Site) -> None:
    echo = send(site.port, "/api/", [("Authorization", f"Token {API_TOKEN}")]).echo()
    assert header_values(echo, "Authorization") == [f"Token {API_TOKEN}"]


@pytest.mark.parametrize(("sidecar_status", "client_status"), [(400, 400), (503, 503), (500, 500), (429, 500)])
def test_each_other_status_of_the_sidecar_stops_the_request(site: Site, sidecar_status: int,
                                                            client_status: int) -> None:
    # auth_request makes a 500 of anything but 2xx/401/403; @auth_sidecar_error gives 400 and 503 back.
    response = send(site.port, f"/status/{sidecar_status}", [basic("alice")])
    assert response.status == client_status
    assert site.app.requests == []


def test_a_client_s_own_x_original_url_never_reaches_the_sidecar(site: Site) -> None:
    send(site.port, "/x", [("X-Original-URL", "http://localhost/public"), basic("alice")])
    assert "X-Original-URL" not in dict(only_auth_request(site))


@pytest.mark.parametrize(("host", "judged"), [
    ("localhost", "localhost"), ("LocalHost.", "LocalHost."), ("localhost:8080", "localhost:8080"),
    # Not the host nginx routes on: a value the sidecar can only refuse.
    ("localhost:80:80", "localhost:80:80 (not localhost)"),
])
def test_the_sidecar_judges_the_host_nginx_routes_on(site: Site, host: str, judged: str) -> None:
    exchange(site.port, raw_request("GET", "/x", [("Host", host), basic("alice")]))
    assert dict(only_auth_request(site))["X-Forwarded-Host"] == judged


def test_an_absolute_form_request_for_another_host_is_judged_unroutable(site: Site) -> None:
    exchange(site.port, raw_request("GET", "http://admin.app.test/x", [("Host", "localhost"), basic("alice")]))
    assert dict(only_auth_request(site))["X-Forwarded-Host"] == "localhost (not admin.app.test)"


@pytest.mark.parametrize("prefix", ["", "\t", " ", utf8("\u00a0"), utf8("\u2003"), utf8("\u3000"), ",", "x,"],
                         ids=["none", "tab", "space", "nbsp", "em-space", "ideographic-space", "comma",
                              "after-comma"])
@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC", "bAsIc"])
def test_anything_that_could_be_basic_never_reaches_the_app(site: Site, prefix: str, scheme: str) -> None:
    token = basic("alice")[1].split()[1]
    # A session lets the request through whatever the fake sidecar makes of this Authorization.
    response = exchange(site.port, raw_request("GET", "/", [("Host", "localhost"), SESSION,
                                                            ("Authorization:", f"{prefix}{scheme}   {token}")]))
    assert response.status == 200
    assert header_values(response.echo(), "Authorization") == []
    assert token not in response.echo()["raw_headers"]


def test_a_second_authorization_header_is_refused_by_nginx(site: Site) -> None:
    response = exchange(site.port, raw_request("GET", "/", [("Host", "localhost"), ("Authorization", "Token x"),
                                                            basic("alice")]))
    assert response.status == 400
    assert site.app.requests == []
