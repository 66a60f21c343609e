"""Property-based tests of the parsers the sign-in side exposes to client bytes: the session
cookie, the ``rd`` return target, the login form body through the real application, and the
revocation list's bounds.

Whatever arrives: nothing raises, no damaged cookie becomes a session (the same or another), no
target leaves the allowed hosts or changes scheme, no form body is answered with a 5xx.
"""

from __future__ import annotations

import asyncio
import dataclasses
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
import yarl
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.app import make_app
from sidecar.config import parse_config
from sidecar.cookies import cookie_value
from sidecar.identity import Identity
from sidecar.local import hash_password
from sidecar.redirects import RedirectPolicy
from sidecar.sessions import Revocations, Session, SessionCodec

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NOW = 1_700_000_000.0
LIFETIME = 8 * 3600.0
ALICE = Identity(username="alice", first_name="Alice", email="alice@example.com", groups=("staff", "users"),
                 rule_groups=frozenset({"staff", "users"}), is_staff=True, is_superuser=True, source="ldap")
B64URL = string.ascii_letters + string.digits + "-_"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


CODEC = SessionCodec([("a", bytes(range(32)))], lifetime=LIFETIME, idle_timeout=3600.0, clock=Clock())
SESSION = CODEC.start(ALICE)
VALUE = CODEC.encode(SESSION)
OTHER = CODEC.encode(CODEC.start(dataclasses.replace(ALICE, username="mallory")))


# -- session cookies -----------------------------------------------------------------------------

def _mutated(draw: st.DrawFn) -> str:
    value = VALUE
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "pad", "std-alphabet", "swap", "splice", "case"]))
        at = draw(st.integers(0, len(value)))
        if op == "flip" and at < len(value):
            value = value[:at] + draw(st.sampled_from(B64URL + ".=+/ ")) + value[at + 1:]
        elif op == "delete":
            value = value[:at] + value[at + draw(st.integers(1, 40)):]
        elif op == "insert":
            value = value[:at] + draw(st.text(B64URL + ".=", min_size=1, max_size=8)) + value[at:]
        elif op == "pad":
            parts = value.split(".")
            index = draw(st.integers(0, len(parts) - 1))
            parts[index] += "=" * draw(st.integers(1, 2))
            value = ".".join(parts)
        elif op == "std-alphabet":
            value = value.replace("-", "+").replace("_", "/")
        elif op == "swap":
            parts = value.split(".")
            i, j = draw(st.integers(0, len(parts) - 1)), draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
            value = ".".join(parts)
        elif op == "splice":  # segments of another real cookie under the same key
            parts, theirs = value.split("."), OTHER.split(".")
            index = draw(st.integers(0, min(len(parts), len(theirs)) - 1))
            parts[index] = theirs[index]
            value = ".".join(parts)
        elif op == "case" and at < len(value):
            value = value[:at] + value[at].swapcase() + value[at + 1:]
    return value


tampered = st.composite(_mutated)()


@FUZZ
@given(tampered)
@example(VALUE[:-1])
@example(VALUE + "A")
@example(VALUE.replace(".", "..", 1))
def test_a_damaged_cookie_never_decodes_to_any_session(value: str) -> None:
    decoded = CODEC.decode(value)
    if value == VALUE:
        assert decoded == SESSION
    else:
        assert decoded is None


@FUZZ
@given(st.text(max_size=300) | st.text(B64URL + ".", max_size=300) | st.binary(max_size=200).map(
    lambda raw: raw.decode("latin-1")))
def test_any_text_is_refused_without_raising(value: str) -> None:
    assert CODEC.decode(value) is None


@FUZZ
@given(st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=200),
       st.sampled_from(["__Host-sidecar_session=", "sidecar_session=", "a="]))
@example("a=1; __Host-sidecar_session=x; __Host-sidecar_session=y", "__Host-sidecar_session=")
def test_cookie_value_never_raises_and_returns_only_what_follows_the_name(header: str, prefix: str) -> None:
    found = cookie_value(header, prefix)
    if found is not None:
        assert prefix + found in header
        assert ";" not in found


# -- rd: where the browser goes after signing in or out ------------------------------------------

POLICY = RedirectPolicy(hosts=["app.test", "intranet.test:8443", "[::1]"], domains=["example.com"],
                        schemes=["https"], default="https://app.test/")
ALLOWED = ("app.test", "intranet.test", "::1", "[::1]")
pieces = st.sampled_from([
    "https://", "http://", "HTTPS://", "javascript:", "//", "/\\", "\\\\", "https:", "https:/", "ftp://",
    "app.test", "evil.test", "app.test.evil.test", "app.test@evil.test", "evil.test#@app.test", "x.example.com",
    "example.com.evil.test", "intranet.test:8443", "intranet.test:443", "[::1]", "[::ffff:1.2.3.4]", ":443", ":0",
    ":99999", "/", "/path", "?q=1", "#frag", "%2e", "%2F", "%5c", "%00", "%0d%0a", "%250a", "\t", "\n", " ", "\\",
    "@", ":", ".", "\u3002", "\uff0e", "ａｐｐ.test", "xn--pp-8ka.test", "\u00e4pp.test", "\u200b", "\x00",
])
targets = st.lists(pieces, max_size=8).map("".join) | st.text(max_size=80)


@FUZZ
@given(targets)
@example("https://app.test\\@evil.test/")
@example("https://evil.test\u3002app.test/")
def test_rd_never_leaves_the_allowed_hosts_or_changes_scheme(target: str) -> None:
    safe = POLICY.safe(target)
    if safe == POLICY.default:
        return
    parts = urlsplit(safe)
    assert parts.scheme == "https" and target[:8].lower() == "https://"
    assert "@" not in parts.netloc and "\\" not in safe and safe.isascii()
    assert not any(c in safe for c in "\t\r\n \x00")
    host = parts.hostname or ""
    assert host in ALLOWED or host == "example.com" or host.endswith(".example.com")
    # Another parser (the one aiohttp uses for Location) sees the same host and scheme.
    browser = yarl.URL(safe)
    assert browser.scheme == "https" and (browser.host or "").strip("[]") == host.strip("[]")
    if host == "intranet.test":
        assert parts.port == 8443


@FUZZ
@given(targets)
def test_rd_is_stable(target: str) -> None:
    once = POLICY.safe(target)
    assert POLICY.safe(once) == once


# -- the login form through the real application -------------------------------------------------

FORM_TYPES = st.sampled_from([
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=UTF-8",
    "application/x-www-form-urlencoded; charset=foo", "application/x-www-form-urlencoded; charset=utf-7",
    "application/x-www-form-urlencoded; charset=\"utf-8\"", "multipart/form-data; boundary=x",
    "multipart/form-data", "text/plain", "application/json", "", ";;;", "application/x-www-form-urlencoded;=",
])
field_text = st.text(max_size=40) | st.sampled_from(["alice", "alice-pass", "https://app.test/x", "//evil.test",
                                                      "\x00", "\ud800", "a" * 3000])


class Site:
    """One sidecar for every example: its own event loop, a CSRF token, a users file."""

    def __init__(self, users: Path) -> None:
        self.runner = asyncio.Runner()
        data = {"server": {"public_url": "https://app.test/_sidecar"}, "local_users": {"file": str(users)},
                "sessions": {"keys": [{"id": "k1", "secret": "s" * 40}], "default_redirect": "https://app.test/"},
                "regulation": {"max_failures": 1000}}
        app = make_app(parse_config(data))

        async def start() -> TestClient[Any, Any]:
            client: TestClient[Any, Any] = TestClient(TestServer(app))
            await client.start_server()
            return client

        self.client = self.runner.run(start())
        self.token = "T" * 43

    def post(self, path: str, body: bytes, content_type: str, extra: dict[str, str]) -> tuple[int, str]:
        async def send() -> tuple[int, str]:
            headers = {"Cookie": f"__Host-sidecar_csrf={self.token}", **extra}
            if content_type:
                headers["Content-Type"] = content_type
            response = await self.client.post(path, data=body, headers=headers, allow_redirects=False)
            await response.read()
            return response.status, response.headers.get("Location", "")

        return self.runner.run(send())

    def close(self) -> None:
        self.runner.run(self.client.close())
        self.runner.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    users = tmp_path_factory.mktemp("users") / "users.yaml"
    # A cheap hash: the examples exercise the parsing, not the password check.
    users.write_text(f"users:\n  alice:\n    password: '{hash_password('alice-pass')}'\n")
    running = Site(users)
    yield running
    running.close()


@st.composite
def form_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["fields", "raw", "mixed"]))
    fields = draw(st.lists(st.tuples(st.sampled_from(["csrf", "username", "password", "rd", "scope", "x"]),
                                     field_text), max_size=6))
    if draw(st.booleans()):
        fields.append(("csrf", "T" * 43))
    if kind == "fields":
        return urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in fields]).encode()
    raw = draw(st.binary(max_size=200))
    if kind == "raw":
        return raw
    return urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in fields]).encode() + b"&" + raw


@FUZZ
@given(form_bodies(), FORM_TYPES, st.sampled_from(["/login", "/logout"]),
       st.sampled_from([{}, {"Origin": "https://app.test"}, {"Origin": "null"}, {"Host": "[app.test]"},
                        {"Host": "app.test:99999"}, {"Content-Encoding": "identity"}]))
@example(b"csrf=" + b"T" * 43 + b"&username=alice&password=alice-pass&rd=https%3A%2F%2Fapp.test%2Fx",
         "application/x-www-form-urlencoded", "/login", {})
@example(b"csrf=" + b"T" * 43 + b"&username=alice&password=x", "application/x-www-form-urlencoded; charset=foo",
         "/login", {})
@example(b"csrf=" + b"T" * 43 + b"&username=%2B2D3-&password=x", "application/x-www-form-urlencoded; charset=utf-7",
         "/login", {})
@example(b"csrf=" + b"T" * 43 + b"&username=alice&password=wrong", "application/x-www-form-urlencoded", "/login",
         {"Host": "[app.test]"})
def test_no_form_body_is_answered_with_a_5xx(site: Site, body: bytes, content_type: str, path: str,
                                             extra: dict[str, str]) -> None:
    status, location = site.post(path, body, content_type, extra)
    assert status < 500
    if status == 303 and path == "/login":
        assert location.startswith("https://app.test/")  # signed in: only ever to an allowed place


# -- revocations: bounded, and nothing revoked is forgotten early ---------------------------------

operations = st.lists(st.one_of(
    st.tuples(st.just("revoke"), st.integers(0, 30)),
    st.tuples(st.just("everywhere"), st.integers(0, 30)),
    st.tuples(st.just("wait"), st.sampled_from([0.5, 1.0, 60.0, LIFETIME / 3])),
), max_size=120)


@FUZZ
@given(operations)
def test_revocations_stay_bounded_and_never_forget_a_live_session(steps: list[tuple[str, Any]]) -> None:
    clock = Clock()
    codec = SessionCodec([("a", bytes(range(32)))], lifetime=LIFETIME, idle_timeout=LIFETIME, clock=clock)
    revoked = Revocations(lifetime=LIFETIME, clock=clock, max_sessions=8, max_users=3)
    refused: list[Session] = []
    everywhere: list[tuple[str, float]] = []
    live: list[Session] = []
    for op, arg in steps:
        if op == "wait":
            clock.now += arg
            continue
        user = f"user{arg % 7}"
        session = codec.decode(codec.encode(codec.start(dataclasses.replace(ALICE, username=user))))
        assert session is not None
        live.append(session)
        if op == "revoke":
            revoked.revoke(session)
            refused.append(session)
        else:
            revoked.revoke_user("ldap", user)
            everywhere.append((user, clock.now))
        assert len(revoked) <= 8 + 3
    for session in refused:
        assert revoked.is_revoked(session) or clock.now - session.issued_at > LIFETIME
    for user, at in everywhere:
        for session in live:
            if session.identity.username == user and session.issued_at <= at:
                assert revoked.is_revoked(session) or clock.now - session.issued_at > LIFETIME


def test_the_form_site_signs_in(site: Site) -> None:
    body = f"csrf={site.token}&username=alice&password=alice-pass&rd={quote('https://app.test/y', safe='')}"
    assert site.post("/login", body.encode(), "application/x-www-form-urlencoded", {}) == \
        (303, "https://app.test/y")
