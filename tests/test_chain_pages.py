"""The pages a user sees, through every real proxy with the shipped deploy files.

client -> nginx | Apache | Caddy | HAProxy (deploy/*) -> `auth-sidecar serve` (built-in users) and
an echo application. What a person meets instead of a proxy's bare answers: the "not allowed here"
page naming who is signed in, with the 403 kept (and a plain 403 for scripts); the "signed out"
confirmation; "this account may not sign in" for the right password of an inactive account (and
only then); the icon and robots.txt without signing in. And the proxy's request id reaches the
sidecar's log and the application.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import bcrypt
import pytest

from sidecar.pages import public_files
from tests.conftest import basic, need
from tests.testbed import free_port
from tests.testbed.proxies import BINARIES, PROXIES, mode, proxy_server
from tests.testbed.rawhttp import Headers, Response, send
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.upstream import EchoApp, header_values

pytestmark = pytest.mark.server

# Built-in users: carol may not open /admin, dave's account is inactive, erin is for one test only.
USERS = {"carol": ("carol-pass", True), "dave": ("dave-pass", False), "erin": ("erin-pass", True)}
BROWSER = ("Accept", "text/html,application/xhtml+xml")
CSRF = "c" * 43  # the forms accept a token the browser already holds in its cookie
FORGED_ID = "forged-by-the-client"
# How each proxy writes its request id (deploy/*): nginx's $request_id, mod_unique_id, UUIDs.
REQUEST_IDS = {
    "nginx": re.compile(r"[0-9a-f]{32}"),
    "apache": re.compile(r"[A-Za-z0-9@_-]{20,}"),
    "caddy": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    "haproxy": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
}


@dataclass
class Chain:
    proxy: str
    port: int
    app: EchoApp
    sidecar: SidecarProcess
    server: Any

    @property
    def base(self) -> str:
        return f"http://localhost:{self.port}"  # the Host rawhttp.send writes

    def get(self, path: str, headers: Headers = ()) -> Response:
        return send(self.port, path, headers)

    def reached_app(self, path: str, headers: Headers = ()) -> tuple[Response, int]:
        """The answer, and how many requests reached the application meanwhile."""
        before = len(self.app.requests)
        response = self.get(path, headers)
        return response, len(self.app.requests) - before

    def log(self) -> str:
        return f"--- {self.proxy}\n{self.server.log()[-3000:]}\n--- sidecar\n{self.sidecar.log()[-3000:]}"

    def records(self) -> list[dict[str, Any]]:
        """The sidecar's JSON log, one object per line."""
        return [json.loads(line) for line in self.sidecar.log().splitlines() if line.startswith("{")]


def users_file(path: Path) -> Path:
    lines = ["users:"]
    for name, (password, active) in USERS.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()  # cost 4: a test
        lines += [f"  {name}:", f"    password: '{hashed}'", f"    is_active: {str(active).lower()}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def sidecar_config(proxy: str, workdir: Path, *, sidecar_port: int, listen_port: int) -> dict[str, Any]:
    base = f"http://localhost:{listen_port}"
    return {
        # Caddy hands non-2xx answers to the client as they are: the 403 page comes with /auth's answer.
        "server": {"listen": f"127.0.0.1:{sidecar_port}", "public_url": f"{base}/_sidecar",
                   "mode": mode(proxy)},
        "local_users": {"file": str(users_file(workdir / "users.yaml"))},
        "access": {"rules": [{"path": "/admin", "policy": "deny"}]},
        "sessions": {"keys": [{"id": "k1", "secret": "s" * 40}], "secure": False, "default_redirect": f"{base}/"},
        "log": {"format": "json"},
    }




@pytest.fixture(scope="module", params=PROXIES)
def chain(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    proxy: str = request.param
    need(BINARIES[proxy])
    workdir = tmp_path_factory.mktemp(f"pages-{proxy}")
    sidecar_port, listen_port = free_port(), free_port()
    config = sidecar_config(proxy, workdir, sidecar_port=sidecar_port, listen_port=listen_port)
    with EchoApp() as app, SidecarProcess(workdir, config) as sidecar:
        with proxy_server(proxy, workdir / proxy, listen_port=listen_port, sidecar_port=sidecar_port,
                          app_port=app.port) as server:
            yield Chain(proxy, listen_port, app, sidecar, server)


def post_form(chain: Chain, path: str, fields: dict[str, str], cookies: str = "") -> Response:
    """POST a form through the proxy, as a browser holding the form's CSRF cookie would."""
    body = urlencode({**fields, "csrf": CSRF}).encode()
    headers = [BROWSER, ("Content-Type", "application/x-www-form-urlencoded"),
               ("Cookie", f"sidecar_csrf={CSRF}" + (f"; {cookies}" if cookies else "")), ("Origin", chain.base)]
    return send(chain.port, path, headers, method="POST", body=body)


def sign_in(chain: Chain, user: str) -> str:
    """The session cookie (name=value) of user."""
    response = post_form(chain, "/_sidecar/login", {"username": user, "password": USERS[user][0],
                                                    "rd": f"{chain.base}/"})
    assert response.status == 303, (response.status, response.body[:300], chain.log())
    (cookie,) = [c.split(";", 1)[0] for c in response.values("Set-Cookie") if c.startswith("sidecar_session=")]
    return cookie


def text(response: Response) -> str:
    return response.body.decode()


def test_a_signed_in_user_who_may_not_enter_sees_who_they_are_and_can_sign_out(chain: Chain) -> None:
    cookie = sign_in(chain, "carol")
    assert chain.get("/devices/", [BROWSER, ("Cookie", cookie)]).status == 200  # she may enter elsewhere
    response, reached = chain.reached_app("/admin/users?x=1", [BROWSER, ("Cookie", cookie)])
    assert (response.status, reached) == (403, 0), chain.log()
    assert response.values("Content-Type")[0].startswith("text/html")
    page = text(response)
    assert "<title>Not allowed here</title>" in page
    assert "You are signed in as <strong>carol</strong>, but you are not allowed here." in page
    assert '<a class="button" href="/_sidecar/logout">Sign out</a>' in page
    assert f'href="{chain.base}/">Back to the start page</a>' in page
    # The page's own rules came along (no script, no inline style, no framing), and what it links
    # to is served through this proxy: it looks like the login page.
    (csp,) = response.values("Content-Security-Policy")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.values("Cache-Control") == ["no-store"]
    for link in re.findall(r'href="(/_sidecar/static/[^"]+)"', page):
        assert chain.get(link).status == 200, link


def test_scripts_get_a_plain_403(chain: Chain) -> None:
    cookie = sign_in(chain, "carol")
    for headers in ([("Cookie", cookie)], [("Accept", "application/json"), ("Cookie", cookie)],
                    [BROWSER, ("X-Requested-With", "XMLHttpRequest"), ("Cookie", cookie)],
                    [tuple(basic("carol", "carol-pass").items())[0]]):
        response, reached = chain.reached_app("/admin/", headers)
        assert (response.status, reached) == (403, 0), headers
        assert b"<html" not in response.body and b"carol" not in response.body, (headers, response.body[:200])


def test_a_basic_user_in_a_browser_gets_the_page_too(chain: Chain) -> None:
    (credentials,) = basic("carol", "carol-pass").items()
    response, reached = chain.reached_app("/admin/", [BROWSER, credentials])
    assert (response.status, reached) == (403, 0)
    page = text(response)
    # Only a session's user is named (and offered to sign out): there is no signing out of Basic.
    assert "<title>Not allowed here</title>" in page and "You are not allowed here." in page
    assert "carol" not in page and "Sign out" not in page


def test_signing_out_ends_on_a_confirmation(chain: Chain) -> None:
    cookie = sign_in(chain, "carol")
    assert chain.get("/_sidecar/logout", [BROWSER, ("Cookie", cookie)]).status == 200
    signed_out = post_form(chain, "/_sidecar/logout", {}, cookies=cookie)
    assert signed_out.status == 303, (signed_out.body[:300], chain.log())
    assert signed_out.values("Location") == ["/_sidecar/signed-out"]
    page = chain.get("/_sidecar/signed-out", [BROWSER])
    assert page.status == 200
    assert "<title>Signed out</title>" in text(page) and "You are signed out." in text(page)
    assert '<a class="button" href="/_sidecar/login">Sign in again</a>' in text(page)
    # The session is over: the old cookie is the login page again, and names nobody on a 403.
    assert chain.get("/devices/", [BROWSER, ("Cookie", cookie)]).status == 302
    assert "carol" not in text(chain.get("/admin/", [BROWSER, ("Cookie", cookie)]))


def test_the_right_password_of_an_inactive_account_says_it_may_not_sign_in(chain: Chain) -> None:
    refused = post_form(chain, "/_sidecar/login", {"username": "dave", "password": "dave-pass"})
    assert refused.status == 403
    assert "This account may not sign in." in text(refused) and "Wrong username" not in text(refused)
    # Any other password for that account says what it says for anyone: no oracle.
    wrong = post_form(chain, "/_sidecar/login", {"username": "dave", "password": "not-his"})
    assert wrong.status == 401
    assert "Wrong username or password." in text(wrong) and "may not sign in" not in text(wrong)
    assert "sidecar_session" not in " ".join(refused.values("Set-Cookie") + wrong.values("Set-Cookie"))


def test_the_icon_and_robots_txt_need_no_sign_in(chain: Chain) -> None:
    shipped = public_files()
    for path, name in (("/favicon.ico", "favicon.ico"), ("/robots.txt", "robots.txt")):
        for headers in ([BROWSER], [("Accept", "*/*")], [("Remote-User", "admin")]):
            response, reached = chain.reached_app(path, headers)
            assert (response.status, reached) == (200, 0), (path, headers, chain.log())
            assert response.body == shipped[name][0]
            assert response.values("Content-Type") == [shipped[name][1]]
    assert b"Disallow: /" in chain.get("/robots.txt").body
    # Only those two paths: their neighbours are checked as before.
    for path in ("/favicon.ico/x", "/favicon.icon", "/robots.txt.bak"):
        assert chain.get(path, [BROWSER]).status == 302, path


def test_the_proxys_request_id_reaches_the_sidecar_and_the_app(chain: Chain) -> None:
    pattern = REQUEST_IDS[chain.proxy]
    forged = ("X-Request-ID", FORGED_ID)
    # Audit records carry the id the proxy gave the request, never the client's: a refusal at
    # /auth, and a sign-in at the sidecar's own pages.
    chain.get("/admin/request-id-probe", [forged, tuple(basic("carol", "carol-pass").items())[0]])
    body = urlencode({"username": "erin", "password": "erin-pass", "csrf": CSRF}).encode()
    send(chain.port, "/_sidecar/login", [forged, ("Content-Type", "application/x-www-form-urlencoded"),
                                         ("Cookie", f"sidecar_csrf={CSRF}"), ("Origin", chain.base)],
         method="POST", body=body)
    records = chain.records()
    (refusal,) = [r for r in records if r.get("event") == "refusal" and r.get("path") == "/admin/request-id-probe"]
    (signed_in,) = [r for r in records if r.get("event") == "sign_in" and r.get("user") == "erin"]
    assert pattern.fullmatch(refusal["request_id"]) and pattern.fullmatch(signed_in["request_id"]), records[-3:]
    assert refusal["request_id"] != signed_in["request_id"]
    # The application gets one id, the proxy's, new for each request.
    (credentials,) = basic("erin", "erin-pass").items()
    given = [header_values(chain.get("/request-id-probe", [forged, credentials]).echo(), "X-Request-ID")
             for _ in range(2)]
    assert all(len(ids) == 1 and pattern.fullmatch(ids[0]) for ids in given), given
    assert given[0] != given[1] and refusal["request_id"] not in given[0] + given[1]


def test_the_applications_own_403_passes_unchanged(chain: Chain) -> None:
    # Only the check's 403 becomes the sidecar's page: the application's refusals are its own.
    cookie = sign_in(chain, "carol")
    response, reached = chain.reached_app("/answer-status/403", [BROWSER, ("Cookie", cookie)])
    assert (response.status, reached) == (403, 1)
    assert response.echo()["path"] == "/answer-status/403"
