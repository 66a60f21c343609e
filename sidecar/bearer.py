"""API clients: ``Authorization: Bearer <JWT>`` access tokens from configured issuers.

The token's own ``iss`` only chooses which configured issuer to check it against; everything is
then verified strictly (:mod:`sidecar.tokens`) with that issuer's keys, audiences and algorithms.
A verified token's verdict is remembered, keyed by an HMAC of the Authorization value, until the token expires
(bounded), so a client sending the same token on every request costs a dictionary lookup.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from sidecar import base64url
from sidecar.cache import ExpiringMap, Fingerprint
from sidecar.config import BearerIssuer
from sidecar.errors import BadRequest, InvalidCredentials, ProviderUnavailable
from sidecar.headers import HeaderWriter
from sidecar.jwks import Discovery, JwksCache
from sidecar.metrics import NO_METRICS, Metrics
from sidecar.oidc import Admission, HttpClient, identity_from_claims
from sidecar.tokens import MAX_TOKEN_BYTES, Expectations, allowed_algorithms
from sidecar.verdict import Verdict

log = logging.getLogger("sidecar.bearer")

MEMO_TTL = 300.0  # seconds at most between two full verifications of one token


class _Issuer:
    """One configured issuer: its keys (from jwks_url or discovery) and what its tokens must say."""

    def __init__(self, config: BearerIssuer, http: HttpClient, leeway: float, metrics: Metrics) -> None:
        self.config = config
        self._http = http
        self._leeway = leeway
        self._metrics = metrics
        self._jwks: JwksCache | None = None
        self._expected: Expectations | None = None
        self._discovery: Discovery | None = None  # kept, so its cache and rate limit hold while set-up fails

    async def claims(self, token: str, now: float) -> dict[str, Any]:
        jwks, expected = await self._setup()
        return await jwks.verify(token, expected, now)

    async def _setup(self) -> tuple[JwksCache, Expectations]:
        if self._jwks is None or self._expected is None:
            config = self.config
            advertised: Any = config.algorithms or None
            url = config.jwks_url
            if url is None or not advertised:
                if self._discovery is None:
                    self._discovery = Discovery(self._http.session, config.issuer, metrics=self._metrics)
                metadata = await self._discovery.document()
                url = url or str(metadata["jwks_uri"])
                advertised = advertised or metadata.get("id_token_signing_alg_values_supported")
            try:
                algorithms = allowed_algorithms(advertised)
            except ValueError as exc:
                raise ProviderUnavailable(f"{config.issuer}: {exc}") from None
            self._expected = Expectations(issuer=config.issuer, audiences=frozenset(config.audiences),
                                          algorithms=algorithms, leeway=self._leeway)
            self._jwks = JwksCache(self._http.session, url, metrics=self._metrics)
        return self._jwks, self._expected


# RFC 6750: "Bearer" 1*SP b64token, parsed as strictly as Basic (sidecar.basic).
_SCHEME = re.compile(r"bearer(?:[ \t]|$)", re.ASCII | re.IGNORECASE)
_BEARER = re.compile(r"bearer +([A-Za-z0-9._~+/-]+=*)[ \t]*", re.ASCII | re.IGNORECASE)


class BearerAuthenticator:
    method = "bearer"

    def __init__(self, issuers: Sequence[BearerIssuer], http: HttpClient, writer: HeaderWriter, *,
                 leeway: float, memo_entries: int = 10_000, clock: Callable[[], float] = time.time,
                 metrics: Metrics = NO_METRICS, policies: Mapping[str, Admission] | None = None) -> None:
        self._issuers = {config.issuer: _Issuer(config, http, leeway, metrics) for config in issuers}
        self._policies = policies or {}  # by issuer: its group rules (sidecar.policy.NamePolicy)
        self._lookups = metrics.lookups("bearer")
        self._writer = writer
        self._clock = clock
        self._fingerprint = Fingerprint()
        self._memo: ExpiringMap[bytes, tuple[Verdict, float]] = ExpiringMap(memo_entries, MEMO_TTL)

    async def authenticate(self, request: web.Request) -> Verdict | None:
        header = request.headers.get("Authorization")
        if not header or not _SCHEME.match(header):
            return None
        if len(header) > MAX_TOKEN_BYTES + 16:
            raise BadRequest("oversized Bearer token")
        # Keyed by the whole value: one that was read strictly once is known without reading it again.
        key = self._fingerprint(header.encode())
        now = self._clock()
        if (hit := self._memo.get(key)) is not None and now < hit[1]:
            self._lookups.hit.inc()
            return hit[0]
        self._lookups.miss.inc()
        if (match := _BEARER.fullmatch(header)) is None:
            raise BadRequest("malformed Bearer token (not 'Bearer' SP token68)")
        token = match.group(1)
        issuer = self._issuers.get(_unverified_issuer(token))
        if issuer is None:
            raise InvalidCredentials("a Bearer token from an issuer that is not configured")
        claims = await issuer.claims(token, now)
        identity = identity_from_claims(claims, issuer.config.claims, issuer.config.allow,
                                        f"bearer:{issuer.config.issuer}", issuer.config.username_prefix)
        if policy := self._policies.get(issuer.config.issuer):
            identity = await policy.admit(identity)
        verdict = Verdict.allow(identity, self._writer.render(identity, ()), methods=())
        self._memo[key] = (verdict, float(claims["exp"]))
        return verdict


def _unverified_issuer(token: str) -> str:
    """The ``iss`` a token claims: trusted for nothing but choosing which issuer checks it."""
    try:
        segment = token.split(".")[1]
        claims = json.loads(base64url.decode(segment))
    except (IndexError, ValueError, RecursionError):
        raise InvalidCredentials("a Bearer token that is not a JWT") from None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    if not isinstance(issuer, str):
        raise InvalidCredentials("a Bearer token without an issuer")
    return issuer.rstrip("/")
