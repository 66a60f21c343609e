"""ID token checks against a real provider's keys: another client's token, a wrong nonce, expiry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from jose import jwt

from sidecar.config import OidcProvider as ProviderConfig
from sidecar.errors import TokenRejected
from sidecar.oidc import HttpClient, Provider
from sidecar.secrets import Secret
from tests.conftest import need
from tests.testbed.oidc import OidcProvider, oidc_client


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    need("node")
    clients = [oidc_client("sidecar", "s", ["http://127.0.0.1/cb"]), oidc_client("other-app", "o", ["http://x/cb"])]
    with OidcProvider(tmp_path_factory.mktemp("op"), clients=clients) as provider:
        yield provider


@pytest.fixture
async def provider(op: OidcProvider) -> AsyncIterator[Provider]:
    http = HttpClient()
    lifetime = http.lifetime(web.Application())
    await lifetime.__anext__()
    config = ProviderConfig(name="op", label="op", client_id="sidecar", client_secret=Secret("s"), issuer=op.issuer)
    yield Provider(config, http, redirect_uri="http://127.0.0.1/cb", leeway=5)
    with pytest.raises(StopAsyncIteration):
        await lifetime.__anext__()


def id_token(op: OidcProvider, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": op.issuer, "aud": "sidecar", "sub": "alice", "iat": now, "exp": now + 60, "nonce": "n-1", **claims}
    key = op.keys[0]
    return str(jwt.encode(body, key, algorithm="RS256", headers={"kid": key["kid"]}))


async def test_a_good_id_token_passes(provider: Provider, op: OidcProvider) -> None:
    assert (await provider._verified(id_token(op), "n-1"))["sub"] == "alice"


@pytest.mark.parametrize(("claims", "nonce"), [
    ({"aud": "other-app"}, "n-1"),                          # issued to another client
    ({"aud": ["sidecar", "other-app"]}, "n-1"),             # several audiences, no azp
    ({"aud": ["sidecar", "other-app"], "azp": "other-app"}, "n-1"),
    ({}, "another-nonce"),                                  # a token from another sign-in
    ({"nonce": None}, "n-1"),
    ({"exp": int(time.time()) - 60}, "n-1"),
    ({"iss": "http://127.0.0.1:1"}, "n-1"),
])
async def test_id_tokens_that_are_not_for_this_sign_in_are_refused(provider: Provider, op: OidcProvider,
                                                                   claims: dict[str, Any], nonce: str) -> None:
    token = id_token(op, **{k: v for k, v in claims.items() if v is not None})
    if claims.get("nonce", "") is None:
        token = id_token(op, nonce="")  # an empty nonce stands for a missing one here
    with pytest.raises(TokenRejected):
        await provider._verified(token, nonce)
