"""Fetching keys and discovery documents from a real aiohttp provider: caching, rate limits, single flight, outages."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from jose import jwk, jwt
from pytest_aiohttp import AiohttpServer

from sidecar.errors import DirectoryUnavailable, KeysUnavailable, ProviderUnavailable, Unavailable, UnknownKey
from sidecar.jwks import Discovery, JwksCache
from sidecar.tokens import Expectations, KeySet, allowed_algorithms, verify
from tests.test_tokens import EC_JWK, EC_PEMS, OTHER_RSA_PEM, RSA_JWK, RSA_PEM, claims, expect, public_jwk

ISSUER_PATH = "/realms/main"
RSA_2 = public_jwk(OTHER_RSA_PEM, "RS256", "rsa-2")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Provider:
    """An OpenID provider serving a JWK set and a discovery document, counting requests."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.jwks: Any = {"keys": [RSA_JWK, EC_JWK]}
        self.status = 200
        self.body: bytes | None = None
        self.delay = 0.0
        self.gate: asyncio.Event | None = None
        self.base = ""
        self.discovery: dict[str, Any] = {}

    async def serve_jwks(self, request: web.Request) -> web.StreamResponse:
        self.hits["jwks"] += 1
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.body is not None:
            return web.Response(body=self.body, status=self.status, content_type="application/json")
        return web.json_response(self.jwks, status=self.status)

    async def serve_discovery(self, request: web.Request) -> web.StreamResponse:
        self.hits["discovery"] += 1
        return web.json_response(self.discovery)

    async def serve_chunked(self, request: web.Request) -> web.StreamResponse:
        self.hits["chunked"] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"keys": [], "padding": "')
        for _ in range(100):
            await response.write(b"x" * 1024)
        await response.write(b'"}')
        return response

    def url(self, path: str = "/jwks") -> str:
        return self.base + path


@pytest.fixture
async def provider(aiohttp_server: AiohttpServer) -> Provider:
    idp = Provider()
    app = web.Application()
    app.router.add_get("/jwks", idp.serve_jwks)
    app.router.add_get("/chunked", idp.serve_chunked)
    app.router.add_get(ISSUER_PATH + "/.well-known/openid-configuration", idp.serve_discovery)
    server = await aiohttp_server(app)
    idp.base = str(server.make_url("")).rstrip("/")
    issuer = idp.base + ISSUER_PATH
    idp.discovery = {"issuer": issuer, "authorization_endpoint": issuer + "/auth", "token_endpoint": issuer + "/token",
                     "jwks_uri": idp.url(), "id_token_signing_alg_values_supported": ["RS256", "HS256"]}
    return idp


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(session: aiohttp.ClientSession, provider: Provider, clock: Clock) -> JwksCache:
    return JwksCache(session, provider.url(), clock=clock, timeout=2.0)


def kids(keys: KeySet) -> set[str]:
    return set(keys.by_kid)


# Caching


async def test_keys_are_fetched_once_and_cached(cache: JwksCache, provider: Provider, clock: Clock) -> None:
    assert kids(await cache.keys()) == {"rsa-1", "ec-1"}
    clock.now += 3599
    assert kids(await cache.keys()) == {"rsa-1", "ec-1"}
    assert provider.hits["jwks"] == 1


async def test_keys_are_fetched_again_after_max_age(cache: JwksCache, provider: Provider, clock: Clock) -> None:
    await cache.keys()
    provider.jwks = {"keys": [RSA_2]}
    clock.now += 3600
    assert kids(await cache.keys()) == {"rsa-2"}
    assert provider.hits["jwks"] == 2


async def test_concurrent_first_callers_share_one_fetch(cache: JwksCache, provider: Provider) -> None:
    provider.delay = 0.05
    results = await asyncio.gather(*[cache.keys() for _ in range(20)])
    assert provider.hits["jwks"] == 1
    assert all(result is results[0] for result in results)


# Unknown kids


async def test_an_unknown_kid_fetches_the_rotated_keys(cache: JwksCache, provider: Provider, clock: Clock) -> None:
    await cache.keys()
    provider.jwks = {"keys": [RSA_JWK, RSA_2]}
    clock.now += 61
    assert kids(await cache.refresh_for_unknown_kid("rsa-2")) == {"rsa-1", "rsa-2"}
    assert kids(await cache.refresh_for_unknown_kid("rsa-2")) == {"rsa-1", "rsa-2"}
    assert provider.hits["jwks"] == 2


async def test_unknown_kids_refresh_at_most_once_per_interval(
        cache: JwksCache, provider: Provider, clock: Clock) -> None:
    await cache.keys()
    clock.now += 61
    for n in range(50):
        clock.now += 1
        assert kids(await cache.refresh_for_unknown_kid(f"random-{n}")) == {"rsa-1", "ec-1"}
    assert provider.hits["jwks"] == 2
    clock.now += 60
    await cache.refresh_for_unknown_kid("random-again")
    assert provider.hits["jwks"] == 3


async def test_a_key_rotated_right_after_the_first_fetch_is_picked_up(cache: JwksCache, provider: Provider,
                                                                      clock: Clock) -> None:
    await cache.keys()
    provider.jwks = {"keys": [RSA_2]}
    clock.now += 1
    assert "rsa-2" in kids(await cache.refresh_for_unknown_kid("rsa-2"))
    await cache.refresh_for_unknown_kid("sprayed")  # and then one interval before the next
    assert provider.hits["jwks"] == 2


async def test_concurrent_refreshes_share_one_fetch(cache: JwksCache, provider: Provider, clock: Clock) -> None:
    await cache.keys()
    provider.jwks = {"keys": [RSA_2]}
    provider.gate = asyncio.Event()
    clock.now += 61
    waiting = [asyncio.ensure_future(cache.refresh_for_unknown_kid(f"kid-{n}")) for n in range(20)]
    waiting.append(asyncio.ensure_future(cache.refresh_for_unknown_kid("rsa-1")))
    await asyncio.sleep(0.05)
    provider.gate.set()
    results = await asyncio.gather(*waiting)
    assert provider.hits["jwks"] == 2
    assert all(kids(result) == {"rsa-2"} for result in results)


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_fetch(
        cache: JwksCache, provider: Provider) -> None:
    provider.gate = asyncio.Event()
    impatient = asyncio.ensure_future(cache.keys())
    patient = asyncio.ensure_future(cache.keys())
    await asyncio.sleep(0.05)
    impatient.cancel()
    provider.gate.set()
    assert kids(await patient) == {"rsa-1", "ec-1"}
    assert impatient.cancelled()
    assert provider.hits["jwks"] == 1


async def test_a_rotation_found_through_unknown_key(cache: JwksCache, provider: Provider, clock: Clock) -> None:
    """The caller's part: verify, and on UnknownKey refresh the keys and verify once more."""
    expected = expect(algorithms=frozenset({"RS256"}))
    token = jwt.encode(claims(), OTHER_RSA_PEM, algorithm="RS256", headers={"kid": "rsa-2"})
    with pytest.raises(UnknownKey):
        verify(token, await cache.keys(), expected, 1_700_000_000.0)
    provider.jwks = {"keys": [RSA_JWK, RSA_2]}
    clock.now += 61
    assert verify(token, await cache.refresh_for_unknown_kid("rsa-2"), expected, 1_700_000_000.0)["sub"]


# Outages


@pytest.mark.parametrize(("breakage", "cause"), [
    ({"status": 500}, "HTTP status 500"),
    ({"status": 404}, "HTTP status 404"),
    ({"body": b"<html>maintenance</html>"}, "the document is not JSON"),
    ({"body": b"[" * 100_000}, "the document is not JSON"),
    ({"jwks": {"not": "keys"}}, "the JWK set is not a JSON object with a list of keys"),
    ({"jwks": [RSA_JWK]}, "the JWK set is not a JSON object with a list of keys"),
    ({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}},
     "none of the 1 keys in the JWK set is an RSA or EC signing key"),
    ({"delay": 0.5}, "no answer within 0.2 s"),
])
async def test_a_failing_fetch_keeps_the_old_keys(
        session: aiohttp.ClientSession, provider: Provider, clock: Clock, caplog: pytest.LogCaptureFixture,
        breakage: dict[str, Any], cause: str) -> None:
    cache = JwksCache(session, provider.url(), clock=clock, timeout=0.2)
    good = await cache.keys()
    for name, value in breakage.items():
        setattr(provider, name, value)
    clock.now += 3600
    with caplog.at_level(logging.DEBUG, logger="sidecar.jwks"):
        assert await cache.keys() is good
        assert await cache.keys() is good
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING] == [
        ("WARNING", f"cannot fetch {provider.url()}: {cause}; keeping the one fetched 3600 s ago"),
    ]
    assert provider.hits["jwks"] == 2


async def test_an_unreachable_provider_keeps_the_old_keys(
        session: aiohttp.ClientSession, aiohttp_server: AiohttpServer, clock: Clock,
        caplog: pytest.LogCaptureFixture) -> None:
    idp = Provider()
    app = web.Application()
    app.router.add_get("/jwks", idp.serve_jwks)
    server = await aiohttp_server(app)
    cache = JwksCache(session, str(server.make_url("/jwks")), clock=clock)
    good = await cache.keys()
    await server.close()
    clock.now += 3600
    assert await cache.keys() is good
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "ClientConnectorError" in caplog.records[0].getMessage()


async def test_no_keys_at_all_is_unavailable(cache: JwksCache, provider: Provider, clock: Clock,
                                             caplog: pytest.LogCaptureFixture) -> None:
    provider.status = 503
    with pytest.raises(KeysUnavailable) as info:
        await cache.keys()
    assert info.value.reason == f"cannot fetch {provider.url()}: HTTP status 503"
    assert info.value.status == 503
    # A provider's outage is no directory's: siblings under Unavailable, both a 503.
    assert isinstance(info.value, Unavailable) and not isinstance(info.value, DirectoryUnavailable)
    # The error is the log line; the next try waits for the interval.
    assert caplog.records == []
    for kid in ("any", "other"):  # one kid-driven retry, then the interval
        with pytest.raises(KeysUnavailable):
            await cache.refresh_for_unknown_kid(kid)
    assert provider.hits["jwks"] == 2
    provider.status = 200
    clock.now += 60
    assert kids(await cache.keys()) == {"rsa-1", "ec-1"}


async def test_concurrent_callers_all_learn_of_the_outage(cache: JwksCache, provider: Provider) -> None:
    provider.status = 500
    provider.delay = 0.05
    results = await asyncio.gather(*[cache.keys() for _ in range(5)], return_exceptions=True)
    assert all(isinstance(result, KeysUnavailable) for result in results)
    assert provider.hits["jwks"] == 1


# The document


async def test_private_key_parts_are_never_kept(cache: JwksCache, provider: Provider,
                                                caplog: pytest.LogCaptureFixture) -> None:
    private_rsa = {**jwk.construct(RSA_PEM, "RS256").to_dict(), "kid": "leaked"}
    private_ec = {**jwk.construct(EC_PEMS["ES256"], "ES256").to_dict(), "kid": "leaked-ec"}
    provider.jwks = {"keys": [private_rsa, private_ec, RSA_2]}
    keys = await cache.keys()
    assert kids(keys) == {"rsa-2"}
    assert not any(member in key for key in keys.all for member in ["d", "p", "q", "dp", "dq", "qi"])
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "JWK 'leaked' refused: the JWK set publishes its private part"),
        ("WARNING", "JWK 'leaked-ec' refused: the JWK set publishes its private part"),
    ]


async def test_only_well_formed_public_signing_keys_are_kept(cache: JwksCache, provider: Provider,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    provider.jwks = {"keys": [
        {**RSA_JWK, "alg": "RS256", "use": "sig", "x5c": ["MIIC..."], "x5t": "abc", "extra": 1},
        {**EC_JWK, "use": "enc"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {**RSA_2, "n": None},
        {**RSA_2, "e": "not base64!"},
        {**EC_JWK, "kid": "p-999", "crv": "P-999"},
        {**EC_JWK, "kid": 5},
        {**EC_JWK, "kid": "ec-alg", "alg": ["ES256"]},
        "a string",
        None,
        {**EC_JWK, "kid": "ec-kept"},
        {**RSA_2, "kid": None},
    ]}
    with caplog.at_level(logging.DEBUG, logger="sidecar.jwks"):
        keys = await cache.keys()
    assert kids(keys) == {"rsa-1", "ec-kept"}
    assert dict(keys.by_kid["rsa-1"][0]) == {"kty": "RSA", "use": "sig", "n": RSA_JWK["n"], "e": RSA_JWK["e"],
                                            "kid": "rsa-1", "alg": "RS256"}
    assert len(keys.all) == 3
    assert {r.levelname for r in caplog.records} == {"DEBUG"}
    assert len(caplog.records) == 10


async def test_the_kept_keys_verify_tokens(cache: JwksCache) -> None:
    token = jwt.encode(claims(), EC_PEMS["ES256"], algorithm="ES256", headers={"kid": "ec-1"})
    assert verify(token, await cache.keys(), expect(), 1_700_000_000.0)["sub"]


async def test_an_oversized_document_is_refused(session: aiohttp.ClientSession, provider: Provider,
                                                clock: Clock) -> None:
    provider.jwks = {"keys": [RSA_JWK] * 50}
    with pytest.raises(KeysUnavailable, match="the document is larger than 4096 bytes"):
        await JwksCache(session, provider.url(), clock=clock, max_bytes=4096).keys()


async def test_an_oversized_chunked_document_is_refused(session: aiohttp.ClientSession, provider: Provider,
                                                        clock: Clock) -> None:
    with pytest.raises(KeysUnavailable, match="the document is larger than 65536 bytes"):
        await JwksCache(session, provider.url("/chunked"), clock=clock, max_bytes=65536).keys()


# Discovery


async def test_discover_returns_the_document(session: aiohttp.ClientSession, provider: Provider) -> None:
    issuer = provider.base + ISSUER_PATH
    assert (await Discovery(session, issuer).document())["jwks_uri"] == provider.url()
    provider.discovery["issuer"] = issuer + "/"
    assert (await Discovery(session, issuer + "/").document())["issuer"] == issuer + "/"


@pytest.mark.parametrize(("change", "cause"), [
    ({"issuer": "https://evil.example.com"}, "is for issuer 'https://evil.example.com', not"),
    ({"issuer": None}, "is for issuer None, not"),
    ({"jwks_uri": None, "token_endpoint": 7}, "lacks token_endpoint, jwks_uri"),
])
async def test_discover_refuses_another_issuer_or_a_partial_document(
        session: aiohttp.ClientSession, provider: Provider, change: dict[str, Any], cause: str) -> None:
    provider.discovery.update(change)
    with pytest.raises(ProviderUnavailable, match=cause):
        await Discovery(session, provider.base + ISSUER_PATH).document()


async def test_discover_of_a_missing_issuer_is_unavailable(session: aiohttp.ClientSession, provider: Provider) -> None:
    with pytest.raises(ProviderUnavailable, match="HTTP status 404"):
        await Discovery(session, provider.base + "/realms/other").document()


async def test_discovery_is_cached(session: aiohttp.ClientSession, provider: Provider, clock: Clock) -> None:
    discovery = Discovery(session, provider.base + ISSUER_PATH, clock=clock)
    first = await discovery.document()
    assert await discovery.document() is first
    clock.now += 86400
    assert await discovery.document() == first
    assert provider.hits["discovery"] == 2


async def test_discovery_refuses_a_mixed_up_issuer(session: aiohttp.ClientSession, provider: Provider,
                                                   clock: Clock) -> None:
    provider.discovery["issuer"] = "https://evil.example.com"
    with pytest.raises(ProviderUnavailable) as info:
        await Discovery(session, provider.base + ISSUER_PATH, clock=clock).document()
    assert not isinstance(info.value, KeysUnavailable)


async def test_discovered_algorithms_build_expectations(session: aiohttp.ClientSession, provider: Provider) -> None:
    document = await Discovery(session, provider.base + ISSUER_PATH).document()
    expected = Expectations(issuer=document["issuer"], audiences=frozenset({"sidecar"}),
                            algorithms=allowed_algorithms(document["id_token_signing_alg_values_supported"]))
    assert expected.algorithms == {"RS256"}


def test_settings_are_checked(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError) as info:
        JwksCache(session, "https://idp.example.com/jwks", min_refresh_interval=-1, max_age=0, timeout=0, max_bytes=0)
    assert str(info.value) == ("max_age must be positive, got 0; timeout must be positive, got 0; "
                               "max_bytes must be positive, got 0; min_refresh_interval must not be negative, got -1")
