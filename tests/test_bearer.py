"""API clients with Bearer tokens, against a real OpenID provider (panva oidc-provider).

Tokens come from the provider itself (client credentials), or are signed here with the provider's
own private key to make them wrong in exactly one way.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from jose import jwt

from sidecar.app import make_app
from sidecar.config import parse_config
from tests.conftest import basic, ldap_settings, need
from tests.testbed.oidc import RESOURCE, OidcProvider, oidc_client, public_jwk, rsa_jwk
from tests.testbed.slapd import Slapd

OTHER_RESOURCE = "https://other-api.example.test"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    need("node")
    clients = [oidc_client("api-client", "api-secret"), oidc_client("other-app", "other-secret")]
    resources = {RESOURCE: "api:read", OTHER_RESOURCE: "api:read"}
    with OidcProvider(tmp_path_factory.mktemp("op"), clients=clients, resource_servers=resources) as op:
        yield op


@pytest.fixture
async def client(provider: OidcProvider, slapd: Slapd) -> AsyncIterator[TestClient[Any, Any]]:
    config = parse_config({
        "ldap": ldap_settings(slapd),
        "oidc": {"bearer": [{"issuer": provider.issuer, "audiences": [RESOURCE],
                             "claims": {"username": "sub", "groups": "groups"},
                             "shares_usernames": True}],  # the provider's subjects are the directory's names
                 "leeway": 5},
    })
    async with TestClient(TestServer(make_app(config))) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forged(provider: OidcProvider, **claims: Any) -> str:
    """A token signed with the provider's own key, with these claims over sensible ones."""
    now = int(time.time())
    body = {"iss": provider.issuer, "aud": RESOURCE, "sub": "robot", "iat": now, "exp": now + 60, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    key = provider.keys[0]
    return str(jwt.encode(body, key, algorithm="RS256", headers={"kid": key["kid"]}))


async def test_a_token_from_the_provider_is_accepted(client: TestClient[Any, Any], provider: OidcProvider) -> None:
    token = provider.client_credentials_token("api-client", "api-secret", RESOURCE)
    response = await client.get("/auth", headers=bearer(token))
    assert response.status == 200 and response.headers["Remote-User"] == "api-client"
    again = await client.get("/auth", headers=bearer(token))  # from the memo this time
    assert again.status == 200 and again.headers["Remote-User"] == "api-client"


async def test_basic_and_bearer_share_auth(client: TestClient[Any, Any], provider: OidcProvider) -> None:
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).headers["Remote-User"] == "alice"
    token = provider.client_credentials_token("api-client", "api-secret", RESOURCE)
    assert (await client.get("/auth", headers=bearer(token))).status == 200


async def test_claims_map_nested_values(client: TestClient[Any, Any], provider: OidcProvider) -> None:
    token = forged(provider, sub="svc-1", groups=["deployers", 7, "readers"], email="svc@example.com")
    response = await client.get("/auth", headers=bearer(token))
    assert response.status == 200
    assert response.headers["Remote-User-Group"] == "deployers|readers"  # the non-string is skipped
    assert response.headers["Remote-User-Email"] == "svc@example.com"


def unsigned(provider: OidcProvider) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": provider.issuer, "aud": RESOURCE, "sub": "admin", "iat": now, "exp": now + 60}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def hs256_with_public_key(provider: OidcProvider) -> str:
    now = int(time.time())
    secret = json.dumps(public_jwk(provider.keys[0]))
    return str(jwt.encode({"iss": provider.issuer, "aud": RESOURCE, "sub": "admin", "iat": now, "exp": now + 60},
                          secret, algorithm="HS256", headers={"kid": provider.keys[0]["kid"]}))


def foreign_key(provider: OidcProvider) -> str:
    key = rsa_jwk(provider.keys[0]["kid"])  # same kid, another key
    now = int(time.time())
    return str(jwt.encode({"iss": provider.issuer, "aud": RESOURCE, "sub": "admin", "iat": now, "exp": now + 60},
                          key, algorithm="RS256", headers={"kid": key["kid"]}))


def tampered(provider: OidcProvider) -> str:
    header, payload, signature = forged(provider, sub="robot").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "admin"
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


ATTACKS = {
    "alg none": unsigned,
    "HS256 keyed with the public key": hs256_with_public_key,
    "a foreign key with the provider's kid": foreign_key,
    "tampered payload": tampered,
    "wrong audience": lambda op: op.client_credentials_token("api-client", "api-secret", OTHER_RESOURCE),
    "wrong issuer": lambda op: forged(op, iss="https://evil.test"),
    "expired": lambda op: forged(op, iat=int(time.time()) - 600, exp=int(time.time()) - 300),
    "not yet valid": lambda op: forged(op, nbf=int(time.time()) + 300),
    "issued in the future": lambda op: forged(op, iat=int(time.time()) + 300, exp=int(time.time()) + 600),
    "no expiry": lambda op: forged(op, exp=None),
    "no subject": lambda op: forged(op, sub=None),
    "garbage": lambda op: "not.a.token",
    "an ID-token-like JWE": lambda op: "a.b.c.d.e",
}


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
async def test_attacks_are_refused(client: TestClient[Any, Any], provider: OidcProvider, attack: str) -> None:
    response = await client.get("/auth", headers=bearer(ATTACKS[attack](provider)))
    assert response.status == 401
    assert "Remote-User" not in response.headers


async def test_a_rotated_key_is_fetched_once_and_accepted(client: TestClient[Any, Any], provider: OidcProvider,
                                                          tmp_path: Path) -> None:
    old = provider.client_credentials_token("api-client", "api-secret", RESOURCE)
    assert (await client.get("/auth", headers=bearer(old))).status == 200
    provider.restart(keys=[rsa_jwk("rotated"), *provider.keys])
    new = provider.client_credentials_token("api-client", "api-secret", RESOURCE)
    assert json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"] == "rotated"
    assert (await client.get("/auth", headers=bearer(new))).status == 200
    assert (await client.get("/auth", headers=bearer(old))).status == 200  # the old key is still published
