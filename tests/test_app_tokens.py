"""The application's own tokens (app_tokens) and htmx requests without a session, at /auth in process.

The chain with a real NetBox behind nginx is tests/test_netbox.py; here: which requests pass, with
which headers, and what is refused as before.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sidecar.config import parse_config
from sidecar.errors import ConfigError
from tests.conftest import StartApp, basic

PUBLIC = "https://netbox.test/_sidecar"
RULES = [
    {"scheme": "Token", "paths": ["/api/", "/graphql/"]},
    {"scheme": "Bearer", "prefix": "nbt_", "hosts": ["netbox.test"], "paths": ["/api/", "/graphql/"]},
]
IDENTITY = ["Remote-User", "Remote-User-First-Name", "Remote-User-Last-Name", "Remote-User-Email",
            "Remote-User-Group", "Remote-User-Staff", "Remote-User-Superuser", "Remote-User-Assertion"]
V1 = "Token 0123456789abcdef0123456789abcdef01234567"
V2 = "Bearer nbt_k3ysidecartest.S3cretSidecarTestTokenValue0123456789abc"


def data(*, rules: list[dict[str, Any]] | None = None, **top: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "server": {"public_url": PUBLIC},
        "local_users": {"file": "examples/users.yaml"},
        "sessions": {"keys": [{"id": "k1", "secret": "s" * 40}], "default_redirect": "https://netbox.test/"},
    }
    if rules is not None:
        base["app_tokens"] = {"rules": rules}
    base.update(top)
    return base


async def ask(client: TestClient[Any, Any], path: str, headers: dict[str, str] | None = None,
              host: str = "netbox.test", method: str = "GET") -> Any:
    return await client.get("/auth", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": host,
                                              "X-Forwarded-Uri": path, "X-Forwarded-Method": method,
                                              **(headers or {})})


@pytest.fixture
async def client(app_client: StartApp) -> TestClient[Any, Any]:
    return await app_client(parse_config(data(rules=RULES)))


@pytest.mark.parametrize("authorization", [V1, V2, "token abc", "TOKEN abc", "bearer nbt_x.y"])
@pytest.mark.parametrize("path", ["/api/dcim/sites/", "/graphql/", "/api"])
async def test_the_application_s_tokens_pass_with_every_identity_header_empty(
        client: TestClient[Any, Any], authorization: str, path: str) -> None:
    response = await ask(client, path, {"Authorization": authorization}, method="POST")
    assert response.status == 200
    assert [(name, response.headers.get(name)) for name in IDENTITY] == [(name, "") for name in IDENTITY]
    assert "Set-Cookie" not in response.headers


async def test_a_session_never_adds_its_user_to_a_token_request(app_client: StartApp) -> None:
    client = await app_client(parse_config(data(rules=RULES)))
    signed_in = await ask(client, "/api/dcim/sites/", basic("netbox-admin", "example-only-password"))
    assert signed_in.status == 200 and signed_in.headers["Remote-User"] == "netbox-admin"
    both = await ask(client, "/api/dcim/sites/", {"Authorization": V1, "Cookie": "__Host-sidecar_session=x"})
    assert both.status == 200 and both.headers["Remote-User"] == ""


@pytest.mark.parametrize(("path", "host", "authorization"), [
    ("/dcim/sites/", "netbox.test", V1),             # not an API path
    ("/apiary/", "netbox.test", V1),                 # a path prefix is whole segments
    ("/api/dcim/sites/", "other.test", V2),          # the v2 rule names one host
    ("/api/dcim/sites/", "netbox.test", "Bearer abc.def"),   # not the prefix
    ("/api/dcim/sites/", "netbox.test", "Negotiate abc"),    # no rule for the scheme
    ("/api/dcim/sites/", "netbox.test", "Token"),            # no value
    ("/api/dcim/sites/", "netbox.test", "Token a b"),        # not one token68
    ("/api/dcim/sites/", "netbox.test", "Token\tabc"),
])
async def test_anything_else_is_judged_as_before(client: TestClient[Any, Any], path: str, host: str,
                                                 authorization: str) -> None:
    response = await ask(client, path, {"Authorization": authorization}, host=host)
    assert response.status in (400, 401)
    assert "Remote-User" not in response.headers


async def test_without_rules_a_token_is_refused_as_before(app_client: StartApp) -> None:
    client = await app_client(parse_config(data()))
    response = await ask(client, "/api/dcim/sites/", {"Authorization": V1})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


async def test_a_netbox_v2_token_is_never_read_as_a_jwt(app_client: StartApp) -> None:
    bearer = [{"issuer": "https://idp.test", "audiences": ["api"], "jwks_url": "https://idp.test/jwks",
               "username_prefix": "idp:"}]
    client = await app_client(parse_config(data(rules=RULES, oidc={"bearer": bearer})))
    assert (await ask(client, "/api/x/", {"Authorization": V2})).status == 200
    # A Bearer JWT for our own issuers still goes to the verifier (and this one is no JWT: 401).
    assert (await ask(client, "/api/x/", {"Authorization": "Bearer abc.def"})).status == 401


@pytest.mark.parametrize(("rules", "expected"), [
    ([{"scheme": "Basic"}], "app_tokens.rules[0].scheme: Basic carries directory passwords"),
    ([{"scheme": "Tok en"}], "app_tokens.rules[0].scheme: expected an HTTP auth scheme"),
    ([{"scheme": "Token", "prefix": "a b"}], "app_tokens.rules[0].prefix: expected the first characters"),
    ([{"scheme": "Token", "paths": ["api/"]}], "app_tokens.rules[0].paths: each must start with /"),
    ([{"scheme": "Token", "paths": ["/api/../admin"]}], "app_tokens.rules[0].paths: each must start with /"),
    ([{"scheme": "Token", "hosts": ["netbox.test:443"]}], "app_tokens.rules[0].hosts: a host without a port"),
    ([{"scheme": "Token", "host": "netbox.test"}], "app_tokens.rules[0].host: unknown key (did you mean hosts?)"),
])
def test_rules_are_checked_with_their_yaml_path(rules: list[dict[str, Any]], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data(rules=rules))
    assert expected in str(caught.value)


def test_a_bearer_rule_without_a_prefix_would_hide_every_token_from_oidc_bearer() -> None:
    bearer = [{"issuer": "https://idp.test", "audiences": ["api"], "username_prefix": "idp:"}]
    with pytest.raises(ConfigError) as caught:
        parse_config(data(rules=[{"scheme": "Bearer"}], oidc={"bearer": bearer}))
    assert "app_tokens.rules: a Bearer rule without a prefix" in str(caught.value)


HTMX = {"HX-Request": "true", "Accept": "*/*"}


@pytest.mark.parametrize("mode", ["auth_request", "forward_auth"])
async def test_htmx_without_a_session_gets_hx_redirect_and_no_password_prompt(app_client: StartApp,
                                                                              mode: str) -> None:
    client = await app_client(parse_config(data(server={"public_url": PUBLIC, "mode": mode})))
    response = await ask(client, "/dcim/sites/?sort=name", {**HTMX, "HX-Current-URL": "https://netbox.test/dcim/sites/"})
    assert response.status == 401  # never a 302: the XMLHttpRequest would follow it inside the page
    assert "WWW-Authenticate" not in response.headers and "Location" not in response.headers
    assert response.headers["HX-Redirect"] == f"{PUBLIC}/login?rd=https%3A%2F%2Fnetbox.test%2Fdcim%2Fsites%2F"


@pytest.mark.parametrize("current", ["https://evil.test/phish", "http://netbox.test/dcim/", "javascript:alert(1)",
                                     "https://netbox.test\\@evil.test/", ""])
async def test_htmx_returns_to_the_browser_s_page_only_on_the_same_site(app_client: StartApp,
                                                                         current: str) -> None:
    client = await app_client(parse_config(data()))
    response = await ask(client, "/dcim/sites/?sort=name", {**HTMX, "HX-Current-URL": current})
    here = "https%3A%2F%2Fnetbox.test%2Fdcim%2Fsites%2F%3Fsort%3Dname"
    assert response.headers["HX-Redirect"] == f"{PUBLIC}/login?rd={here}"


async def test_htmx_with_a_valid_session_or_basic_is_answered_as_any_request(app_client: StartApp) -> None:
    client = await app_client(parse_config(data()))
    response = await ask(client, "/dcim/sites/", {**HTMX, **basic("netbox-admin", "example-only-password")})
    assert response.status == 200 and response.headers["Remote-User"] == "netbox-admin"
    assert "HX-Redirect" not in response.headers


async def test_without_sign_in_pages_htmx_gets_the_plain_401(app_client: StartApp) -> None:
    client = await app_client(parse_config({"local_users": {"file": "examples/users.yaml"}}))
    response = await ask(client, "/dcim/sites/", HTMX)
    assert response.status == 401 and "HX-Redirect" not in response.headers


@pytest.mark.parametrize("path", ["/api/../admin/", "/api/%2e%2e/admin/", "/api%2fx"])
async def test_an_ambiguous_request_with_a_token_is_refused_as_any(client: TestClient[Any, Any], path: str) -> None:
    response = await ask(client, path, {"Authorization": V1})
    assert response.status == 400 and "Remote-User" not in response.headers
