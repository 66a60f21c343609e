"""Property-based tests of every parser that sees client bytes at /auth, and of the config loader.

Whatever arrives: no exception escapes as a 5xx, every refusal is a 4xx, and no input turns into
an identity other than the one its credentials name.
"""

from __future__ import annotations

import asyncio
import base64
import string
from typing import Any
from unittest import mock
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.app import make_app
from sidecar.basic import normalize_username, parse_basic
from sidecar.canonical import parse_host, parse_path
from sidecar.config import parse_config
from sidecar.errors import BadRequest, ConfigError, MalformedRequest
from sidecar.routes import auth
from tests.conftest import config_for
from tests.testbed.slapd import Slapd

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Text a client can put in a header: latin-1 as the HTTP parser hands it over, with the usual suspects.
header_text = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=200) | st.sampled_from([
    "Basic", "basic ", "Basic  =", "\u00a0Basic YWxpY2U6YWxpY2UtcGFzcw==", "Bearer", "Bearer a.b.c",
    "BASIC YWxpY2U6YWxpY2UtcGFzcw==", "Basic YWxpY2U6YWxpY2UtcGFzcw==", "Basic YWxpY2U6",
])
url_text = st.text(st.sampled_from(string.ascii_letters + string.digits + "/.%?#@:[]\\-_ \t~&=+;,"), max_size=60)


@FUZZ
@given(header_text)
@example("Basic " + base64.b64encode("ali\u0130ce:p\u00e4ss".encode()).decode())
def test_basic_parsing_returns_credentials_or_refuses(value: str) -> None:
    try:
        parsed = parse_basic(value)
    except BadRequest:
        return
    if parsed is None:
        assert not value[:6].lower().startswith("basic") or value[5:6] not in (" ", "")
        return
    username, password = parsed
    assert value[:5].lower() == "basic" and value[5] == " "
    assert normalize_username(username) == username  # what was returned is already in its one form
    assert password


@FUZZ
@given(st.text(max_size=80), st.text(max_size=80))
def test_any_basic_credentials_are_read_back_exactly_or_refused(username: str, password: str) -> None:
    value = "Basic " + base64.b64encode(f"{username}:{password}".encode("utf-8", "surrogatepass")).decode()
    try:
        parsed = parse_basic(value)
    except BadRequest:
        return
    assert parsed is not None
    # The name is the typed one in NFKC (without SP/HTAB padding); the password exactly as typed.
    assert parsed[0] == normalize_username(username.split(":")[0] if ":" in username else username)
    if ":" not in username:
        assert parsed[1] == password


@FUZZ
@given(url_text)
@example("app.test?")
@example("x@admin.app.test")
@example("admin.app.test.:80")
def test_a_host_is_canonical_or_refused(value: str) -> None:
    try:
        host, port = parse_host(value)
    except MalformedRequest:
        return
    assert host == host.lower() and not host.endswith(".")
    assert host.startswith("[") or set(host) <= set(string.ascii_lowercase + string.digits + "._-")
    assert port is None or 0 < port <= 65535
    # The canonical form reads back as itself: one spelling per host.
    assert parse_host(host) == (host, None)


@FUZZ
@given(url_text)
@example("/admin/%2e%2e/x")
@example("/admin/.%2E/x")
@example("//admin//x")
def test_a_path_is_what_the_application_receives_or_refused(target: str) -> None:
    try:
        path = parse_path(target)
    except MalformedRequest:
        return
    raw = target.split("?", 1)[0]
    decoded = unquote(raw)
    # Nothing to resolve: the application, decoding once, sees the same segments the rules judged.
    assert [s for s in decoded.split("/") if s] == [s for s in path.split("/") if s]
    assert "." not in path.split("/") and ".." not in path.split("/") and "\\" not in path


@pytest.fixture(scope="module")
def app(slapd: Slapd) -> web.Application:
    config = config_for(slapd, top={"access": {"rules": [{"path": "/admin", "users": ["alice"]}],
                                               "default": "deny"}})
    return make_app(config)


HEADER_NAMES = st.sampled_from(["Authorization", "Cookie", "Accept", "X-Original-URL", "X-Forwarded-Host",
                                "X-Forwarded-Uri", "X-Forwarded-Proto", "X-Original-Method", "X-Forwarded-For",
                                "X-Real-IP", "Host", "Remote-User", "remote_user", "X-Original-URI"])


@FUZZ
@given(st.lists(st.tuples(HEADER_NAMES, header_text | url_text), max_size=6))
@example([("Authorization", "Basic YWxpY2U6YWxpY2UtcGFzcw=="), ("X-Forwarded-Host", "app.test"),
          ("X-Forwarded-Uri", "/admin/../x")])
@example([("Authorization", "Basic Ym9iOmJvYi1wYXNz"), ("X-Original-URL", "http://app.test?/admin")])
def test_auth_answers_4xx_or_the_identity_the_credentials_name(app: web.Application,
                                                              headers: list[tuple[str, str]]) -> None:
    transport = mock.Mock()
    transport.get_extra_info.return_value = ("127.0.0.1", 40000)
    request = make_mocked_request("GET", "/auth", headers=headers, app=app, transport=transport)
    response: Any = asyncio.run(auth(request))
    assert response.status in (200, 400, 401, 403)
    if response.status == 200:
        credentials = parse_basic(dict(headers)["Authorization"])
        assert credentials is not None
        assert response.headers["Remote-User"].casefold() == credentials[0].casefold()


@pytest.fixture(scope="module")
def bearer_app() -> web.Application:
    # An issuer that cannot be reached: a token that gets as far as its keys is a 503, all else 4xx.
    return make_app(parse_config({"oidc": {"bearer": [{"issuer": "https://idp.invalid", "audiences": ["api"],
                                                       "jwks_url": "https://idp.invalid/jwks"}]}}))


def jwt_like(payload: bytes) -> str:
    return "e30." + base64.urlsafe_b64encode(payload).decode().rstrip("=") + ".c2ln"


@FUZZ
@given(header_text | st.binary(max_size=300).map(lambda b: "Bearer " + jwt_like(b)))
@example("Bearer " + jwt_like(b"[" * 5000))  # nesting deep enough to exhaust the JSON parser's recursion
@example("Bearer " + jwt_like(b'{"iss": ["x"]}'))
@example("\u3000Bearer " + jwt_like(b'{"iss": "https://idp.invalid"}'))
def test_bearer_headers_get_a_4xx(bearer_app: web.Application, value: str) -> None:
    transport = mock.Mock()
    transport.get_extra_info.return_value = ("127.0.0.1", 40000)
    request = make_mocked_request("GET", "/auth", headers={"Authorization": value, "Host": "app.test"}, app=bearer_app,
                                  transport=transport)
    response: Any = asyncio.run(auth(request))
    assert response.status in (400, 401)


# -- the configuration loader ------------------------------------------------------------------

KEYS = ["server", "headers", "ldap", "sessions", "access", "rules", "path", "groups", "users", "require_group",
        "deny_group", "user_flags_by_group", "is_active", "extra", "listen", "public_url", "server_uri",
        "user_search", "base_dn", "filter", "group_type", "keys", "id", "secret", "oidc", "bearer", "issuer",
        "audiences", "regulation", "max_failures", "mode", "trusted_proxies", "local_users", "file", "log",
        "level", "cache", "default", "username_prefix", "shares_usernames", "mirror_groups"]
values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=30)
    | st.sampled_from(["ldap://127.0.0.1:1", "(uid=%(user)s)", "dc=x", "https://a.test/_sidecar", "s" * 40,
                       "127.0.0.1:9180", "Remote-User-X", "member_of", "deny", "[]"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
@example({"ldap": {"server_uri": "ldap://127.0.0.1:1", "user_search": {"base_dn": "dc=x",
          "filter": "(uid=%(user)s)"}, "require_group": []}})
def test_the_loader_refuses_with_config_error_or_builds_an_app(data: dict[str, Any]) -> None:
    try:
        config = parse_config(data)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and ": " in p for p in exc.problems)
        return
    make_app(config)  # whatever the loader accepts, serve can build
