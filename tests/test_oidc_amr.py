"""second_factor.trust_amr: a provider's amr and auth_time are read from its signed ID token when
the operator trusts it with them, and ignored otherwise (then our own factor is asked)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from sidecar.config import OidcProvider as ProviderConfig
from sidecar.oidc import HttpClient, Provider
from sidecar.secrets import Secret
from tests.test_oidc import id_token, op  # noqa: F401  (op: the provider fixture)
from tests.testbed.oidc import OidcProvider


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    lifetime = client.lifetime(web.Application())
    await lifetime.__anext__()
    yield client
    with pytest.raises(StopAsyncIteration):
        await lifetime.__anext__()


def provider(op: OidcProvider, http: HttpClient, *, trusted: bool) -> Provider:  # noqa: F811
    config = ProviderConfig(name="op", label="op", client_id="sidecar", client_secret=Secret("s"), issuer=op.issuer)
    return Provider(config, http, redirect_uri="http://127.0.0.1/cb", leeway=5, trust_amr=trusted,
                    trust_acr=frozenset({"urn:example:mfa"}))


async def test_a_trusted_provider_s_amr_and_auth_time_are_kept(op: OidcProvider, http: HttpClient) -> None:  # noqa: F811
    when = int(time.time()) - 30
    token = id_token(op, amr=["pwd", "otp", 7], auth_time=when, preferred_username="alice")
    grant = await provider(op, http, trusted=True)._grant({"id_token": token}, nonce="n-1")
    assert grant.amr == ("pwd", "otp") and grant.auth_time == when  # what is not a string is left out


async def test_an_untrusted_provider_s_amr_is_ignored(op: OidcProvider, http: HttpClient) -> None:  # noqa: F811
    token = id_token(op, amr=["pwd", "otp"], auth_time=int(time.time()), preferred_username="alice")
    grant = await provider(op, http, trusted=False)._grant({"id_token": token}, nonce="n-1")
    assert grant.amr == () and grant.auth_time is None


async def test_a_trusted_acr_value_counts_as_mfa(op: OidcProvider, http: HttpClient) -> None:  # noqa: F811
    token = id_token(op, acr="urn:example:mfa", amr=["pwd"], preferred_username="alice")
    assert (await provider(op, http, trusted=True)._grant({"id_token": token}, nonce="n-1")).amr == ("pwd", "mfa")
    other = id_token(op, acr="urn:example:password", preferred_username="alice")
    assert (await provider(op, http, trusted=True)._grant({"id_token": other}, nonce="n-1")).amr == ()
    assert (await provider(op, http, trusted=False)._grant({"id_token": token}, nonce="n-1")).amr == ()
