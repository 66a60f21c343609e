"""JWKS: fetching an OpenID provider's discovery document and public signing keys, over an injected session.

Both documents are fetched on demand (:func:`sidecar.fetch.fetch_json`) and cached with one
discipline (:class:`_Cached`): kept for ``max_age``, fetched again at most once per
``min_refresh_interval`` whatever asks (tokens with random kids, or an outage), one fetch shared by
every concurrent caller (:class:`sidecar.flight.SingleFlight`), and the last good document kept
when a fetch fails. Only when there has never been one does a caller get an error (a 503):
:class:`ProviderUnavailable` for the discovery document, :class:`KeysUnavailable` for the key set,
both drawn in :mod:`sidecar.errors`'s tree.

The keys kept are public signing keys (``use`` absent or ``sig``) of type RSA or EC, rebuilt from
their public members. A key that comes with its private part is refused with a warning.
:meth:`JwksCache.verify` verifies a token with them, and on a kid it does not know yet fetches the
set again, once (rate-limited), before giving its verdict.
"""

from __future__ import annotations

import logging
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

import aiohttp

from sidecar.errors import FetchFailed, KeysUnavailable, ProviderUnavailable, UnknownKey
from sidecar.fetch import fetch_json
from sidecar.flight import SingleFlight
from sidecar.metrics import NO_METRICS, Metrics
from sidecar.tokens import JWK, PUBLIC_MEMBERS, Expectations, KeySet, verify

log = logging.getLogger("sidecar.jwks")
T = TypeVar("T")

MAX_BYTES = 512 * 1024
TIMEOUT = 5.0
B64URL = re.compile(r"[A-Za-z0-9_-]+")
CURVES = frozenset({"P-256", "P-384", "P-521"})
# The private members of RSA and EC keys (RFC 7518, section 6).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})
# The discovery members the sign-in flow needs (OpenID Connect Discovery 1.0, section 3).
REQUIRED_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")


class _Invalid(Exception):
    """Why a fetch brought no usable document: for the operator's log line."""


class _Cached(ABC, Generic[T]):
    """A document fetched on demand, with the refresh discipline the module docstring describes."""

    unavailable: ClassVar[type[ProviderUnavailable]] = ProviderUnavailable
    counted_as: ClassVar[str]  # the document label of its fetches in metrics

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        min_refresh_interval: float,
        max_age: float,
        clock: Callable[[], float],
        timeout: float,
        max_bytes: int,
        metrics: Metrics,
    ) -> None:
        problems = [f"{name} must be positive, got {value}" for name, value in
                    [("max_age", max_age), ("timeout", timeout), ("max_bytes", max_bytes)] if not value > 0]
        if not min_refresh_interval >= 0:
            problems.append(f"min_refresh_interval must not be negative, got {min_refresh_interval}")
        if problems:
            raise ValueError("; ".join(problems))
        self._session = session
        self.url = url
        self._min_refresh_interval = min_refresh_interval
        self._max_age = max_age
        self._clock = clock
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._value: T | None = None
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        # One fetch at a time, shared; a caller that gives up (its client left) does not cancel it.
        self._flight: SingleFlight[None, T] = SingleFlight()
        self._failure = "not tried yet"
        self._fetches = metrics.fetches(self.counted_as)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    async def _current(self) -> T:
        """The document, fetched again when older than max_age."""
        if self._value is not None and self._clock() - self._fetched_at < self._max_age:
            return self._value
        return await self._refetched()

    async def _refetched(self) -> T:
        """A newly fetched document, unless a fetch started less than min_refresh_interval ago."""
        if not self._flight.running(None):
            if self._clock() - self._attempted_at < self._min_refresh_interval:
                return self._last_good()
            self._attempted_at = self._clock()
        return await self._flight.run(None, self._fetch)

    async def _fetch(self) -> T:
        try:
            value = self._validate(await self._document())
        except _Invalid as exc:
            self._fetches["failed"].inc()
            self._failure = str(exc)
            if self._value is not None:
                log.warning("cannot fetch %s: %s; keeping the one fetched %.0f s ago",
                            self.url, exc, self._clock() - self._fetched_at)
            return self._last_good()
        self._fetches["ok"].inc()
        self._value, self._fetched_at = value, self._clock()
        return value

    async def _document(self) -> Any:
        try:
            answer = await fetch_json(self._session, self.url, timeout=self._timeout, max_bytes=self._max_bytes,
                                      allow_redirects=True)
        except FetchFailed as exc:
            raise _Invalid(str(exc)) from None
        if answer.status != 200:
            raise _Invalid(f"HTTP status {answer.status}")
        if answer.problem is not None:
            raise _Invalid(f"the document {answer.problem}")
        return answer.document

    def _last_good(self) -> T:
        # Without a document to keep, the caller's error is the only log line: it carries the cause.
        if self._value is None:
            raise self.unavailable(f"cannot fetch {self.url}: {self._failure}")
        return self._value

    @abstractmethod
    def _validate(self, document: Any) -> T:
        """The document made usable; _Invalid when it is not."""


class JwksCache(_Cached[KeySet]):
    """A provider's key set (``jwks_uri``), fetched again after max_age or when a token names a new kid."""

    unavailable = KeysUnavailable
    counted_as = "keys"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        min_refresh_interval: float = 60.0,
        max_age: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = TIMEOUT,
        max_bytes: int = MAX_BYTES,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        super().__init__(session, url, min_refresh_interval=min_refresh_interval, max_age=max_age, clock=clock,
                         timeout=timeout, max_bytes=max_bytes, metrics=metrics)
        self._kid_refreshed_at = -math.inf

    async def keys(self) -> KeySet:
        """The key set; raises KeysUnavailable when none could ever be fetched."""
        return await self._current()

    async def verify(self, token: str, expected: Expectations, now: float) -> dict[str, Any]:
        """The claims of a token signed by one of the keys (sidecar.tokens.verify); providers publish
        a new key before signing with it, so a kid not in the set fetches the set again, once."""
        try:
            return verify(token, await self.keys(), expected, now)
        except UnknownKey as exc:
            return verify(token, await self.refresh_for_unknown_kid(exc.kid), expected, now)

    async def refresh_for_unknown_kid(self, kid: str) -> KeySet:
        """The key set fetched again for a kid it lacks: providers publish new keys before using them.

        Rate-limited, so a client sending random kids cannot make us hammer the provider.
        """
        running = self._flight.running(None)
        if not running and self._value is not None and kid in self._value.by_kid:
            return self._value  # another caller's refresh has already brought it
        if not running:
            # Limited on its own clock: a key rotated just after our first fetch is still picked up.
            if self._clock() - self._kid_refreshed_at < self._min_refresh_interval:
                return self._last_good()
            self._kid_refreshed_at = self._clock()
            self._attempted_at = -math.inf
        return await self._refetched()

    def _validate(self, document: Any) -> KeySet:
        return _parse_jwks(document)


class Discovery(_Cached[dict[str, Any]]):
    """A provider's discovery document, fetched on first use, so the sidecar starts while the provider is down."""

    counted_as = "discovery"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        issuer: str,
        *,
        min_refresh_interval: float = 60.0,
        max_age: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = TIMEOUT,
        max_bytes: int = MAX_BYTES,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        super().__init__(session, _discovery_url(issuer), min_refresh_interval=min_refresh_interval,
                         max_age=max_age, clock=clock, timeout=timeout, max_bytes=max_bytes, metrics=metrics)
        self.issuer = issuer

    async def document(self) -> dict[str, Any]:
        """The discovery document; raises ProviderUnavailable when none could ever be fetched."""
        return await self._current()

    def _validate(self, document: Any) -> dict[str, Any]:
        return _check_discovery(document, self.issuer)


def _discovery_url(issuer: str) -> str:
    # OpenID Connect Discovery 1.0, section 4: a terminating "/" is removed before appending.
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _check_discovery(document: Any, issuer: str) -> dict[str, Any]:
    """The document if it is a discovery document for exactly this issuer (the mix-up defence)."""
    if not isinstance(document, dict):
        raise _Invalid("the discovery document is not a JSON object")
    if document.get("issuer") != issuer:
        raise _Invalid(f"the discovery document is for issuer {document.get('issuer')!r:.100}, not {issuer!r}")
    missing = [name for name in REQUIRED_ENDPOINTS if not isinstance(document.get(name), str)]
    if missing:
        raise _Invalid(f"the discovery document lacks {', '.join(missing)}")
    return document


def _parse_jwks(document: Any) -> KeySet:
    """The usable public signing keys of a JWK set document; _Invalid when there are none."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _Invalid("the JWK set is not a JSON object with a list of keys")
    kept = [key for raw in document["keys"] if (key := _public_key(raw)) is not None]
    if not kept:
        raise _Invalid(f"none of the {len(document['keys'])} keys in the JWK set is an RSA or EC signing key")
    return KeySet.of(kept)


def _public_key(raw: Any) -> JWK | None:
    """A signing key rebuilt from its public members, or None (with a log line) for any other entry."""
    if not isinstance(raw, dict):
        log.debug("JWK set entry skipped: not a JSON object")
        return None
    kid, kty = raw.get("kid"), raw.get("kty")
    names = PUBLIC_MEMBERS.get(kty) if isinstance(kty, str) else None
    if raw.get("use", "sig") != "sig" or names is None:
        log.debug("JWK %r skipped: kty %r, use %r", kid, kty, raw.get("use"))
        return None
    if not PRIVATE_MEMBERS.isdisjoint(raw):
        # Whoever fetched the set can sign tokens with it: trusting that key would accept their forgeries.
        log.warning("JWK %r refused: the JWK set publishes its private part", kid)
        return None
    members = {name: raw.get(name) for name in names}
    if not _well_formed(members) or not isinstance(kid, str | None) or not isinstance(raw.get("alg"), str | None):
        log.debug("JWK %r skipped: a member is missing or malformed", kid)
        return None
    optional = {name: raw[name] for name in ("kid", "alg") if name in raw}
    return {"kty": kty, "use": "sig", **members, **optional}


def _well_formed(members: Mapping[str, Any]) -> bool:
    return all(isinstance(value, str) and (value in CURVES if name == "crv" else bool(B64URL.fullmatch(value)))
               for name, value in members.items())
