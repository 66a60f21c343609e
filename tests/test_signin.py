"""Browser sign-in against a real slapd: the form, the session cookie at /auth, redirects, logout,
re-checks against the directory, regulation, and built-in users."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.app import make_app
from sidecar.config import parse_config
from sidecar.identity import Identity
from sidecar.local import hash_password
from sidecar.routes import SIDECAR
from tests.conftest import StartApp, basic, group, identity_headers, ldap_settings
from tests.test_ldap import ClosingServer
from tests.testbed.slapd import Slapd

PUBLIC = "https://app.test/_sidecar"
SESSION = "__Host-sidecar_session"
CSRF = "__Host-sidecar_csrf"
SESSIONS: dict[str, Any] = {
    "keys": [{"id": "k1", "secret": "s" * 40}],
    "default_redirect": "https://app.test/",
}
BROWSER = {"Accept": "text/html,application/xhtml+xml"}


def settings(slapd: Slapd | None, *, ldap: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"server": {"public_url": PUBLIC}, "sessions": dict(SESSIONS)}
    if slapd is not None:
        data["ldap"] = ldap_settings(slapd, **(ldap or {}))
    for key, value in top.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


@pytest.fixture
def start(app_client: StartApp) -> Any:
    async def start(data: dict[str, Any]) -> TestClient[Any, Any]:
        return await app_client(parse_config(data))

    return start


def set_cookies(response: Any) -> dict[str, str]:
    """name -> the whole Set-Cookie value, for each cookie the response sets."""
    return {v.split("=", 1)[0]: v for v in response.headers.getall("Set-Cookie", [])}


def cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


async def form(client: TestClient[Any, Any], path: str = "/login") -> str:
    response = await client.get(path)
    assert response.status == 200
    token = cookie_value(set_cookies(response)[CSRF])
    assert f'name="csrf" value="{token}"' in await response.text()
    return token


async def sign_in(client: TestClient[Any, Any], username: str, password: str, rd: str | None = None,
                  **extra: str) -> Any:
    token = await form(client)
    fields = {"username": username, "password": password, "csrf": token, **extra}
    if rd is not None:
        fields["rd"] = rd
    return await client.post("/login", data=fields, headers={"Cookie": f"{CSRF}={token}"},
                             allow_redirects=False)


async def session_of(client: TestClient[Any, Any], username: str, password: str) -> str:
    response = await sign_in(client, username, password)
    assert response.status == 303, await response.text()
    return cookie_value(set_cookies(response)[SESSION])


async def auth(client: TestClient[Any, Any], session: str, **headers: str) -> Any:
    return await client.get("/auth", headers={"Cookie": f"other=1; {SESSION}={session}", **headers})


# -- the form and the cookie ---------------------------------------------------------------------

async def test_sign_in_sets_a_session_that_auth_accepts(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd))
    response = await sign_in(client, "alice", "alice-pass", rd="https://app.test/x?a=1&b=2")
    assert response.status == 303
    assert response.headers["Location"] == "https://app.test/x?a=1&b=2"
    cookie = set_cookies(response)[SESSION]
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "path", "max-age", "samesite"} <= attributes and "domain" not in attributes
    assert "SameSite=Lax" in cookie and "Path=/" in cookie
    answer = await auth(client, cookie_value(cookie))
    assert answer.status == 200
    assert identity_headers(answer)["Remote-User"] == "alice"
    assert identity_headers(answer)["Remote-User-Email"] == "alice@example.com"


@pytest.mark.parametrize(("name", "kind"), [("login.css", "text/css"), ("theme.css", "text/css")])
async def test_static_files_are_served(start: Any, slapd: Slapd, name: str, kind: str) -> None:
    client = await start(settings(slapd))
    response = await client.get(f"/static/{name}?v=123")
    assert response.status == 200 and response.headers["Content-Type"].startswith(kind)
    for bad in ("../pages.py", "%2e%2e%2fpages.py", "templates", "nope.css"):
        assert (await client.get(f"/static/{bad}")).status == 404


async def test_a_cookie_domain_shares_sign_in_across_subdomains(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd, sessions={"cookie_domain": "app.test"}))
    response = await sign_in(client, "alice", "alice-pass")
    cookie = set_cookies(response)["sidecar_session"]  # no __Host- prefix: it forbids Domain
    assert "Domain=app.test" in cookie


async def test_wrong_password_and_unknown_user_look_the_same(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd))
    wrong = await sign_in(client, "alice", "nope")
    unknown = await sign_in(client, "nobody-here", "nope")
    assert wrong.status == unknown.status == 401
    for response in (wrong, unknown):
        page = await response.text()
        assert "Wrong username or password." in page and 'role="alert"' in page
        assert SESSION not in set_cookies(response)
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


ACTIVE = {"user_flags_by_group": {"is_active": group("active")}}


async def test_the_right_password_of_an_inactive_account_says_it_may_not_sign_in(
        start: Any, slapd: Slapd, caplog: pytest.LogCaptureFixture) -> None:
    client = await start(settings(slapd, ldap=ACTIVE))
    refused = await sign_in(client, "dave", "dave-pass")  # not in the is_active group
    assert refused.status == 403 and SESSION not in set_cookies(refused)
    page = await refused.text()
    assert "This account may not sign in." in page and "Wrong username" not in page and 'role="alert"' in page
    assert any("dave is not in the is_active group" in r.getMessage() for r in caplog.records)
    # Only the right password says so: any other is wrong, like anyone's.
    wrong = await sign_in(client, "dave", "not-his")
    assert wrong.status == 401 and "Wrong username or password." in await wrong.text()
    assert "may not sign in" not in await wrong.text()
    # Basic learns it the same way: the right password is a 403, a wrong one a 401.
    assert (await client.get("/auth", headers=basic("dave", "dave-pass"))).status == 403
    assert (await client.get("/auth", headers=basic("dave", "nope"))).status == 401


async def test_require_and_deny_group_refuse_the_account_the_same_way(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd, ldap={"require_group": group("staff")}))
    assert "This account may not sign in." in await (await sign_in(client, "carol", "carol-pass")).text()
    assert (await sign_in(client, "alice", "alice-pass")).status == 303


async def test_a_ban_hides_that_the_password_of_an_inactive_account_was_right(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd, ldap=ACTIVE, regulation={"max_failures": 2}))
    assert (await sign_in(client, "dave", "dave-pass")).status == 403  # known now, in the verdict cache
    for _ in range(2):
        assert (await sign_in(client, "dave", "wrong")).status == 401
    banned = await sign_in(client, "dave", "dave-pass")
    assert banned.status == 429 and "may not sign in" not in await banned.text()
    assert (await client.get("/auth", headers=basic("dave", "dave-pass"))).status == 401


async def test_a_local_account_that_is_not_active_may_not_sign_in(start: Any, tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"users:\n  ann:\n    password: '{hash_password('ann-pass')}'\n    is_active: false\n")
    client = await start(settings(None, local_users={"file": str(users)}))
    refused = await sign_in(client, "ann", "ann-pass")
    assert refused.status == 403 and "This account may not sign in." in await refused.text()
    assert "Wrong username or password." in await (await sign_in(client, "ann", "wrong")).text()


@pytest.mark.parametrize("problem", ["no-token", "wrong-token", "foreign-origin"])
async def test_the_form_is_csrf_protected(start: Any, slapd: Slapd, problem: str) -> None:
    client = await start(settings(slapd))
    token = await form(client)
    fields = {"username": "alice", "password": "alice-pass", "csrf": token}
    headers = {"Cookie": f"{CSRF}={token}"}
    if problem == "no-token":
        fields.pop("csrf")
    elif problem == "wrong-token":
        fields["csrf"] = "A" * 43
    else:
        headers["Origin"] = "https://evil.test"
    response = await client.post("/login", data=fields, headers=headers, allow_redirects=False)
    assert response.status == 400
    assert SESSION not in set_cookies(response)


FORM_TYPE = "application/x-www-form-urlencoded"


def hostile_forms(token: str) -> dict[str, tuple[dict[str, str], Any]]:
    """Bodies no browser posts for our form, each with the CSRF token right: (headers, body)."""
    good = f"csrf={token}&username=alice&password=alice-pass"
    form = {"Content-Type": FORM_TYPE}
    multipart = (f'--xx\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{token}\r\n'
                 '--xx\r\nContent-Disposition: form-data; name="username"\r\n\r\nalice\r\n'
                 '--xx\r\nContent-Disposition: form-data; name="password"\r\n\r\nalice-pass\r\n--xx--\r\n')

    async def chunked() -> AsyncIterator[bytes]:
        yield good.encode()
        for _ in range(40):
            yield b"&x=" + b"y" * 1000

    return {
        "unknown charset": ({"Content-Type": f"{FORM_TYPE}; charset=foo"}, good),
        "utf-7 lone surrogate": ({"Content-Type": f"{FORM_TYPE}; charset=utf-7"}, good + "&username=%2B2D3-"),
        "utf-7": ({"Content-Type": f"{FORM_TYPE}; charset=utf-7"}, good),
        "latin-1": ({"Content-Type": f"{FORM_TYPE}; charset=iso-8859-1"}, good),
        "multipart": ({"Content-Type": "multipart/form-data; boundary=xx"}, multipart),
        "multipart without boundary": ({"Content-Type": "multipart/form-data"}, "garbage"),
        "json": ({"Content-Type": "application/json"}, json.dumps({"csrf": token})),
        "no content type": ({}, good),
        "raw non-ASCII": (form, good.encode() + b"&x=\xff\xfe"),
        "invalid UTF-8": (form, good.replace("alice&", "alice%ff&")),
        "surrogate in UTF-8": (form, good.replace("alice&", "alice%ed%a0%80&")),
        "field without =": (form, good + "&garbage"),
        "percent garbage": (form, good + "&%%%=%"),
        "username twice": (form, good + "&username=bob"),
        "csrf twice": (form, good + f"&csrf={token}"),
        "too many fields": (form, good + "&x=1" * 20),
        "too large": (form, good + "&x=" + "y" * 20_000),
        "too large, chunked": (form, chunked()),
        "compressed": ({**form, "Content-Encoding": "gzip"}, gzip.compress(good.encode())),
    }


@pytest.mark.parametrize("case", list(hostile_forms("t")))
async def test_malformed_forms_are_a_400_and_one_line(start: Any, slapd: Slapd, caplog: pytest.LogCaptureFixture,
                                                      case: str) -> None:
    client = await start(settings(slapd))
    token = await form(client)
    headers, body = hostile_forms(token)[case]
    caplog.clear()
    response = await client.post("/login", data=body, headers={**headers, "Cookie": f"{CSRF}={token}"},
                                 allow_redirects=False)
    assert response.status == 400
    assert SESSION not in set_cookies(response)
    assert "Your sign-in form expired" in await response.text()
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].name == "sidecar.signin" and lines[0].getMessage().startswith("form refused")
    assert lines[0].exc_info is None


@pytest.mark.parametrize("fields", [
    {"username": "alice\x00", "password": "x"}, {"username": "a" * 5000, "password": "x"},
    {"username": "alice", "password": "p" * 8000}, {"username": "alice", "password": "\x00"},
    {"username": "", "password": ""}, {"username": "alice"}, {}, {"username": "\u202ealice", "password": "x"},
])
async def test_odd_fields_are_a_refused_sign_in_and_one_line(start: Any, slapd: Slapd,
                                                             caplog: pytest.LogCaptureFixture,
                                                             fields: dict[str, str]) -> None:
    client = await start(settings(slapd))
    token = await form(client)
    caplog.clear()
    response = await client.post("/login", data={"csrf": token, **fields}, headers={"Cookie": f"{CSRF}={token}"},
                                 allow_redirects=False)
    assert response.status == 401 and SESSION not in set_cookies(response)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].exc_info is None and "sign-in refused" in lines[0].getMessage()


@pytest.mark.parametrize("host", ["[app.test]", "app.test?", "app.test#x", "x@app.test", "app.test:80:80",
                                  "app.test:99999", "[::1", "a b", "", "app.test.", "\\evil", "[::1]:x"])
async def test_odd_host_headers_with_a_wrong_password_leave_no_traceback(
        start: Any, slapd: Slapd, caplog: pytest.LogCaptureFixture, host: str) -> None:
    client = await start(settings(slapd))
    token = await form(client)
    caplog.clear()
    fields = {"csrf": token, "username": "alice", "password": "wrong", "rd": "https://app.test/x"}
    response = await client.post("/login", data=fields, headers={"Cookie": f"{CSRF}={token}", "Host": host},
                                 allow_redirects=False)
    assert response.status == 401
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].exc_info is None and "sign-in refused" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info is not None]


@pytest.mark.parametrize("rd", [
    "//evil.test/", "https://evil.test/", "https://app.test@evil.test/", "https://app.test.evil.test/",
    "javascript:alert(1)", "https:evil.test", "/\\evil.test", "https://app.test/%0d%0aSet-Cookie:x=1",
    "x" * 5000,
])
async def test_open_redirects_fall_back_to_the_default(start: Any, slapd: Slapd, rd: str) -> None:
    client = await start(settings(slapd))
    response = await sign_in(client, "alice", "alice-pass", rd=rd)
    assert response.status == 303 and response.headers["Location"] == "https://app.test/"


@pytest.mark.parametrize("mangle", [
    lambda v: v[:-5],                             # truncated
    lambda v: v[:40] + ("A" if v[40] != "A" else "B") + v[41:],  # one character changed
    lambda v: v.replace(".", "", 1),              # a segment boundary gone
    lambda v: "garbage",
    lambda v: "",
    lambda v: "x" * 10_000,                       # oversized
    lambda v: base64.urlsafe_b64encode(b'{"alg":"none"}').decode() + ".." + v.split(".", 2)[2],
])
async def test_damaged_cookies_are_anonymous(start: Any, slapd: Slapd, mangle: Any) -> None:
    client = await start(settings(slapd))
    session = await session_of(client, "alice", "alice-pass")
    response = await auth(client, mangle(session))
    assert response.status == 401
    assert "Remote-User" not in response.headers


async def test_a_cookie_from_another_key_is_anonymous(start: Any, slapd: Slapd) -> None:
    first = await start(settings(slapd))
    session = await session_of(first, "alice", "alice-pass")
    other = await start(settings(slapd, sessions={"keys": [{"id": "k1", "secret": "t" * 40}]}))
    assert (await auth(other, session)).status == 401


async def test_rotated_keys_keep_existing_sessions(start: Any, slapd: Slapd) -> None:
    old = await start(settings(slapd))
    session = await session_of(old, "alice", "alice-pass")
    rotated = await start(settings(slapd, sessions={"keys": [{"id": "k2", "secret": "n" * 40},
                                                             {"id": "k1", "secret": "s" * 40}]}))
    assert (await auth(rotated, session)).status == 200
    fresh = await session_of(rotated, "bob", "bob-pass")
    assert (await auth(old, fresh)).status == 401  # the old sidecar lacks the new key


# -- answers that fit the proxy ------------------------------------------------------------------

async def test_browsers_without_a_session_get_the_login_url(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd))
    original = "https://app.test/x?a=1&b=2"
    response = await client.get("/auth", headers={**BROWSER, "X-Original-URL": original})
    assert response.status == 401
    assert response.headers["Location"] == f"{PUBLIC}/login?rd={quote(original, safe='')}"


async def test_forward_auth_mode_redirects_browsers(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd, server={"mode": "forward_auth"}))
    headers = {**BROWSER, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/y?z=1"}
    response = await client.get("/auth", headers=headers, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == f"{PUBLIC}/login?rd={quote('https://app.test/y?z=1', safe='')}"


@pytest.mark.parametrize("headers", [{"Accept": "application/json"}, {**BROWSER, "X-Requested-With": "fetch"}, {}])
async def test_api_clients_always_get_a_plain_401(start: Any, slapd: Slapd, headers: dict[str, str]) -> None:
    client = await start(settings(slapd, server={"mode": "forward_auth"}))
    original = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/api/"}
    response = await client.get("/auth", headers={**headers, **original}, allow_redirects=False)
    assert response.status == 401 and "Location" not in response.headers
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


async def test_logout_clears_the_session(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd))
    session = await session_of(client, "alice", "alice-pass")
    token = await form(client, "/logout")
    response = await client.post("/logout", data={"csrf": token},
                                 headers={"Cookie": f"{CSRF}={token}; {SESSION}={session}"}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/_sidecar/signed-out"
    cleared = set_cookies(response)[SESSION]
    assert "Max-Age=0" in cleared and cookie_value(cleared) == ""
    forged = await client.post("/logout", data={"csrf": "x" * 43}, headers={"Cookie": f"{CSRF}={token}"},
                               allow_redirects=False)
    assert forged.status == 400


async def test_signing_out_ends_on_a_page_that_says_so(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd))
    response = await log_out(client, await session_of(client, "alice", "alice-pass"), everywhere=True)
    assert response.headers["Location"] == "/_sidecar/signed-out?everywhere"
    for query, said in (("", "You are signed out."), ("?everywhere", "You are signed out, here and on your other")):
        page = await client.get("/signed-out" + query)
        assert page.status == 200 and page.headers["Content-Security-Policy"].startswith("default-src 'none'")
        html = await page.text()
        assert "<title>Signed out</title>" in html and said in html
        assert '<a class="button" href="/_sidecar/login">Sign in again</a>' in html


async def test_a_logout_redirect_goes_elsewhere(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd, sessions={"logout_redirect": "https://intranet.example.com/bye"}))
    response = await log_out(client, await session_of(client, "alice", "alice-pass"))
    assert response.headers["Location"] == "https://intranet.example.com/bye"


async def log_out(client: TestClient[Any, Any], session: str, *, everywhere: bool = False) -> Any:
    token = await form(client, "/logout")
    fields = {"csrf": token, **({"scope": "everywhere"} if everywhere else {})}
    response = await client.post("/logout", data=fields, headers={"Cookie": f"{CSRF}={token}; {SESSION}={session}"},
                                 allow_redirects=False)
    assert response.status == 303
    return response


async def test_the_logout_page_offers_signing_out_everywhere(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd))
    page = await (await client.get("/logout")).text()
    assert page.count("<button") == 2 and '<form method="post" action="/_sidecar/logout">' in page
    assert '<button class="button secondary" type="submit" name="scope" value="everywhere">' in page


async def test_a_signed_out_cookie_replayed_is_refused(start: Any, slapd: Slapd,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sidecar.signin")
    client = await start(settings(slapd))
    session = await session_of(client, "alice", "alice-pass")
    other = await session_of(client, "alice", "alice-pass")  # another browser of hers
    bob = await session_of(client, "bob", "bob-pass")
    for value in (session, other, bob):
        assert (await auth(client, value)).status == 200  # in the codec's memo and the verdict memo now
    await log_out(client, session)
    assert any(r.getMessage().startswith("signed out alice (ldap) client=") for r in caplog.records)
    replay = await auth(client, session)
    assert replay.status == 401 and "Remote-User" not in replay.headers and "Set-Cookie" not in replay.headers
    assert (await auth(client, session, **BROWSER)).status == 401
    assert (await auth(client, other)).status == 200 and (await auth(client, bob)).status == 200
    assert (await log_out(client, session)).status == 303  # signing out again is harmless


async def test_signing_out_everywhere_ends_every_session_of_that_user(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd))
    laptop = await session_of(client, "alice", "alice-pass")
    phone = await session_of(client, "alice", "alice-pass")
    bob = await session_of(client, "bob", "bob-pass")
    await log_out(client, laptop, everywhere=True)
    assert (await auth(client, laptop)).status == 401
    assert (await auth(client, phone)).status == 401
    assert (await auth(client, bob)).status == 200
    await asyncio.sleep(1.1)  # a mark covers its whole second (cookies hold whole seconds)
    assert (await auth(client, await session_of(client, "alice", "alice-pass"))).status == 200


async def test_the_refreshed_cookie_of_a_signed_out_session_is_refused(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd, sessions={"recheck_every": 1}))
    session = await session_of(client, "alice", "alice-pass")
    await asyncio.sleep(1.2)
    renewed = await auth(client, session)
    refreshed = cookie_value(set_cookies(renewed)[SESSION])
    assert refreshed != session and (await auth(client, refreshed)).status == 200
    await log_out(client, session)  # signed out with the old cookie: the new one is the same session
    assert (await auth(client, refreshed)).status == 401
    assert (await auth(client, session)).status == 401


# -- not allowed here ----------------------------------------------------------------------------

ADMIN_ONLY = {"rules": [{"path": "/admin", "groups": ["staff"]}, {"path": "/admin", "policy": "deny"}]}
TO_ADMIN = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/admin/x"}


async def test_the_forbidden_page_names_the_session_s_user(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd, ldap={"find_group_perms": True}))
    session = await session_of(client, "carol", "carol-pass")
    page = await client.get("/forbidden", headers={**BROWSER, "Cookie": f"{SESSION}={session}"})
    assert page.status == 403 and page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.headers["Cache-Control"] == "no-store" and page.headers["X-Frame-Options"] == "DENY"
    html = await page.text()
    assert "You are signed in as <strong>carol</strong>" in html and 'href="/_sidecar/logout">Sign out' in html
    assert 'href="https://app.test/">Back to the start page' in html  # sessions.default_redirect
    # Any method (a proxy may pass the refused request's on), and a signed-out session names nobody.
    assert (await client.post("/forbidden", headers={**BROWSER, "Cookie": f"{SESSION}={session}"})).status == 403
    await log_out(client, session)
    html = await (await client.get("/forbidden", headers={**BROWSER, "Cookie": f"{SESSION}={session}"})).text()
    assert "You are not allowed here." in html and "carol" not in html


@pytest.mark.parametrize("headers", [{}, {"Accept": "application/json"}, {**BROWSER, "X-Requested-With": "fetch"}])
async def test_scripts_get_a_plain_403_from_the_forbidden_page(start: Any, slapd: Slapd,
                                                              headers: dict[str, str]) -> None:
    client = await start(settings(slapd))
    session = await session_of(client, "carol", "carol-pass")
    response = await client.get("/forbidden", headers={**headers, "Cookie": f"{SESSION}={session}"})
    assert (response.status, await response.text()) == (403, "403 Forbidden\n")


async def test_without_sign_in_the_forbidden_page_is_plain(start: Any, slapd: Slapd) -> None:
    data = settings(slapd)
    del data["sessions"]
    client = await start(data)
    response = await client.get("/forbidden", headers=BROWSER)
    assert (response.status, await response.text()) == (403, "403 Forbidden\n")


@pytest.mark.parametrize("mode", ["forward_auth", "auth_request"])
async def test_auth_answers_a_refused_browser_with_the_page_in_forward_auth_mode(start: Any, slapd: Slapd,
                                                                                 mode: str) -> None:
    client = await start(settings(slapd, server={"mode": mode}, access=ADMIN_ONLY, ldap={"find_group_perms": True}))
    session = await session_of(client, "carol", "carol-pass")
    response = await client.get("/auth", headers={**BROWSER, **TO_ADMIN, "Cookie": f"{SESSION}={session}"})
    assert response.status == 403
    if mode == "forward_auth":  # Traefik and Caddy hand this answer to the browser as it is
        assert response.content_type == "text/html" and "Content-Security-Policy" in response.headers
        assert "You are signed in as <strong>carol</strong>" in await response.text()
    else:  # nginx, Apache and HAProxy drop the body and fetch /forbidden instead
        assert await response.text() == "403 Forbidden\n"
    script = await client.get("/auth", headers={**TO_ADMIN, "Cookie": f"{SESSION}={session}"})
    assert (script.status, await script.text()) == (403, "403 Forbidden\n")


@pytest.mark.parametrize(("path", "kind"), [("/favicon.ico", "image/x-icon"), ("/robots.txt", "text/plain")])
async def test_the_icon_and_robots_txt_are_served_without_sign_in(start: Any, slapd: Slapd, path: str,
                                                                  kind: str) -> None:
    data = settings(slapd)
    del data["sessions"]  # whatever the configuration: a proxy sends every such request here
    client = await start(data)
    response = await client.get(path, headers=BROWSER)
    assert response.status == 200 and response.content_type == kind
    assert response.headers["Cache-Control"] == "public, max-age=86400"


async def test_single_sign_on_sessions_are_revoked_on_the_way_to_the_provider(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd))
    signin = client.app[SIDECAR].signin
    asked: list[str] = []

    class Provider:
        async def logout_url(self, session: Any, return_to: str) -> str | None:
            asked.append(session.identity.source if session is not None else "-")
            return "https://idp.test/end?back=" + quote(return_to, safe="")

    signin.sso = Provider()
    sso_session = signin.jar.encode(signin.jar.codec.start(Identity(username="ann", source="oidc:idp")))
    assert (await auth(client, sso_session)).status == 200
    response = await log_out(client, sso_session)
    assert response.headers["Location"].startswith("https://idp.test/end?back=")
    assert asked == ["oidc:idp"]
    assert (await auth(client, sso_session)).status == 401


# -- staying true to the directory ---------------------------------------------------------------

async def test_a_session_follows_the_directory(start: Any, slapd: Slapd) -> None:
    slapd.add_user("session-user", "pass", given_name="Before", groups=("active", "netbox-users"))
    client = await start(settings(slapd, ldap={"require_group": group("netbox-users")},
                                  sessions={"recheck_every": 1}))
    session = await session_of(client, "session-user", "pass")
    slapd.modify_user("session-user", givenName="After")
    await asyncio.sleep(1.2)
    renamed = await auth(client, session)
    assert renamed.status == 200 and renamed.headers["Remote-User-First-Name"] == "After"
    session = cookie_value(set_cookies(renamed)[SESSION])  # the refreshed cookie carries the change
    slapd.remove_from_group("session-user", "netbox-users")
    await asyncio.sleep(1.2)
    refused = await auth(client, session)
    assert refused.status == 403
    assert "Max-Age=0" in set_cookies(refused)[SESSION]


async def test_a_deleted_user_loses_the_session(start: Any, slapd: Slapd) -> None:
    slapd.add_user("doomed-user", "pass")
    client = await start(settings(slapd, sessions={"recheck_every": 1}))
    session = await session_of(client, "doomed-user", "pass")
    slapd.delete_user("doomed-user")
    await asyncio.sleep(1.2)
    assert (await auth(client, session)).status == 401


async def test_sessions_outlive_a_directory_outage(start: Any, slapd: Slapd,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    client = await start(settings(slapd, sessions={"recheck_every": 1}))
    session = await session_of(client, "alice", "alice-pass")
    broken = ClosingServer()
    try:
        client.app[SIDECAR].directory.servers.uris = (broken.uri,)
        await asyncio.sleep(1.2)
        assert (await auth(client, session)).status == 200
        assert (await auth(client, session)).status == 200
        assert broken.accepted == 1  # one re-check attempt, then a pause, not one per request
        assert (await sign_in(client, "bob", "bob-pass")).status == 503  # new sign-ins cannot
    finally:
        broken.close()
    assert any("not re-checked" in r.getMessage() for r in caplog.records)


# -- regulation ----------------------------------------------------------------------------------

async def test_the_form_is_regulated(start: Any, slapd: Slapd, caplog: pytest.LogCaptureFixture) -> None:
    client = await start(settings(slapd, regulation={"max_failures": 3}))
    for _ in range(3):
        assert (await sign_in(client, "carol", "wrong")).status == 401
    response = await sign_in(client, "carol", "carol-pass")
    assert response.status == 429 and "Too many failed attempts" in await response.text()
    assert any("banned" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert (await sign_in(client, "bob", "bob-pass")).status == 429  # the same address is banned too


async def test_basic_is_regulated_too(start: Any, slapd: Slapd) -> None:
    client = await start(settings(slapd, regulation={"max_failures": 2}))
    for password in ("a", "b"):
        assert (await client.get("/auth", headers=basic("o'brien", password))).status == 401
    assert (await client.get("/auth", headers=basic("o'brien", "obrien-pass"))).status == 401


# -- built-in users ------------------------------------------------------------------------------

def ad_like_groups(count: int) -> list[str]:
    """Group names as big directories have them: long, varied, compressing badly."""
    import random

    rng = random.Random(7)
    parts = ["FIN", "HR", "ENG", "OPS", "SEC", "NET", "SharePoint", "Citrix", "VPN", "ReadWrite", "Owners"]
    return [f"SG_{rng.choice(parts)}_{rng.choice(parts)}_{rng.randrange(10**6):06d}_{rng.choice(parts)}"
            for _ in range(count)]


@pytest.fixture
def users_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "users.yaml"
    path.write_text(
        "users:\n"
        f"  breakglass:\n    password: '{hash_password('glass-pass')}'\n    first_name: Break\n"
        "    groups: [netbox-admins]\n    is_superuser: true\n"
        f"  alice:\n    password: '{hash_password('local-alice-pass')}'\n"
        f"  big:\n    password: '{hash_password('big-pass')}'\n    groups: ["
        + ", ".join(f"GG_App_NetBox_Team_{i:04d}" for i in range(500)) + "]\n"
        f"  huge:\n    password: '{hash_password('huge-pass')}'\n    groups: [" + ", ".join(ad_like_groups(500)) + "]\n"
    )
    yield path


async def test_local_users_alone_need_no_directory(start: Any, users_file: Path) -> None:
    client = await start(settings(None, local_users={"file": str(users_file)}))
    response = await client.get("/auth", headers=basic("breakglass", "glass-pass"))
    assert response.status == 200
    assert response.headers["Remote-User-Group"] == "netbox-admins"
    assert response.headers["Remote-User-Superuser"] == "true"
    session = await session_of(client, "breakglass", "glass-pass")
    assert (await auth(client, session)).headers["Remote-User-First-Name"] == "Break"
    assert (await client.get("/readyz")).status == 200


async def test_ldap_first_falls_back_only_when_the_directory_cannot_say(start: Any, slapd: Slapd,
                                                                         users_file: Path) -> None:
    client = await start(settings(slapd, local_users={"file": str(users_file)}))
    assert (await client.get("/auth", headers=basic("breakglass", "glass-pass"))).status == 200  # unknown to LDAP
    # alice exists in the directory: its answer stands, the file is not asked.
    assert (await client.get("/auth", headers=basic("alice", "local-alice-pass"))).status == 401
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 200


async def test_ldap_first_falls_back_when_the_directory_is_down(start: Any, slapd: Slapd, users_file: Path) -> None:
    broken = ClosingServer()
    try:
        client = await start(settings(slapd, ldap={"server_uri": broken.uri}, local_users={"file": str(users_file)}))
        response = await client.get("/auth", headers=basic("alice", "local-alice-pass"))
        assert response.status == 200 and response.headers["Remote-User"] == "alice"
    finally:
        broken.close()


async def test_local_first(start: Any, slapd: Slapd, users_file: Path) -> None:
    client = await start(settings(slapd, local_users={"file": str(users_file), "order": "local_first"}))
    assert (await client.get("/auth", headers=basic("alice", "local-alice-pass"))).status == 200
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 401
    assert (await client.get("/auth", headers=basic("bob", "bob-pass"))).status == 200  # not in the file


async def test_a_user_in_500_groups_gets_a_working_session(users_file: Path) -> None:
    app = make_app(parse_config(settings(None, local_users={"file": str(users_file)})))
    # 500 group names make a 12 KB groups header: more than clients accept by default.
    async with TestClient(TestServer(app), max_field_size=32768) as client:
        await check_big_session(client)


async def check_big_session(client: TestClient[Any, Any]) -> None:
    for user in ("big", "huge"):  # the second's groups do not fit a cookie even compressed
        response = await sign_in(client, user, f"{user}-pass")
        cookie = set_cookies(response)[SESSION]
        assert len(cookie) < 4096
        answer = await auth(client, cookie_value(cookie))
        assert answer.status == 200
        assert len(answer.headers["Remote-User-Group"].split("|")) == 500


async def test_groups_kept_server_side_are_read_again_after_a_restart(users_file: Path) -> None:
    data = settings(None, local_users={"file": str(users_file)})
    async with TestClient(TestServer(make_app(parse_config(data))), max_field_size=65536) as first:
        response = await sign_in(first, "huge", "huge-pass")
        session = cookie_value(set_cookies(response)[SESSION])
    async with TestClient(TestServer(make_app(parse_config(data))), max_field_size=65536) as restarted:
        answer = await auth(restarted, session)
        assert answer.status == 200
        assert sorted(answer.headers["Remote-User-Group"].split("|")) == sorted(set(ad_like_groups(500)))


def test_config_requires_public_url_and_keys() -> None:
    from sidecar.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config({"ldap": {"server_uri": "ldap://x", "user_dn_template": "uid=%(user)s,dc=x"},
                      "sessions": {"keys": [{"id": "k!", "secret": "short"}]}})
    text = "\n".join(caught.value.problems)
    assert "server.public_url: is required with sessions" in text
    assert "sessions.keys[0].id" in text and "sessions.keys[0].secret: must be at least 32" in text
    assert "short" not in text
    assert re.search(r"sessions\.keys\[0\]\.secret", text)


async def test_a_cookie_in_use_is_rendered_once(start: Any, slapd: Slapd, monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.headers import HeaderWriter

    client = await start(settings(slapd))
    session = await session_of(client, "alice", "alice-pass")
    calls: list[str] = []
    original = HeaderWriter.render

    def counting(self: HeaderWriter, identity: Any, *methods: Any) -> Any:
        calls.append(identity.username)
        return original(self, identity, *methods)

    monkeypatch.setattr(HeaderWriter, "render", counting)
    for _ in range(5):
        assert (await auth(client, session)).headers["Remote-User"] == "alice"
    assert calls == ["alice"]
