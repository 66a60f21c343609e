"""Assertion checks for applications: trust the identity headers only with a matching signed assertion.

The sidecar signs what it puts in the identity headers (:mod:`sidecar.assertion`). An application
that can be reached other than through the proxy, or sits behind a misconfigured one, may receive
identity headers from anyone; :meth:`AssertionVerifier.verify` accepts them only when
``Remote-User-Assertion`` is an ES256 JWT signed by a published key, current, for this audience,
and saying exactly what the plain headers say. Extra headers (``headers.extra``) are not signed.

An assertion is a bearer token: whoever sees one can replay it until it expires, which is why it
lives a minute. Keys come as a JWK set, given or fetched from ``/.well-known/jwks.json``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from email.message import Message
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

from jose import jwk
from jose.backends.base import Key

from sidecar import base64url
from sidecar.errors import AssertionRejected

log = logging.getLogger("sidecar.contrib.assertion")
T = TypeVar("T")

ALG = "ES256"
HEADER_FIELDS = frozenset({"alg", "kid", "typ"})
SIGNATURE_BYTES = 64  # r and s of P-256, 32 bytes each
COORDINATE_BYTES = 32
# Far more than seven headers' worth: anything longer was not made by the sidecar.
MAX_TOKEN = 16 * 1024
MAX_JWKS_BYTES = 64 * 1024
FETCH_TIMEOUT = 5.0
# However many unknown kids arrive, the key set is fetched at most this often...
REFETCH_INTERVAL = 60.0
# ...but soon again after a failure: an application often starts before the sidecar answers.
RETRY_AFTER_FAILURE = 5.0
# Known keys are fetched again after this long, so a key dropped by the sidecar stops working.
KEYS_MAX_AGE = 300.0
REQUIRED = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti", "given_name", "family_name", "email",
            "groups", "is_staff", "is_superuser")
# Claim -> key of the ``headers`` mapping it must equal.
TEXT_CLAIMS = {"sub": "user", "given_name": "first_name", "family_name": "last_name", "email": "email"}
FLAG_CLAIMS = {"is_staff": "is_staff", "is_superuser": "is_superuser"}


class AssertionVerifier:
    """Checks assertions against a JWK set given once or fetched (and cached) from the sidecar.

    Thread-safe. With ``jwks_url``, keys are fetched on first use, again when an unknown kid
    arrives (at most once a minute) and when they are five minutes old; a failed fetch keeps
    the keys known so far.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: Mapping[str, Any] | None = None,
        jwks_url: str | None = None,
        leeway: float = 5,
        clock: Callable[[], float] = time.time,
        fetch: Callable[[str], object] | None = None,
        group_separator: str = "|",
    ) -> None:
        problems = []
        if (jwks is None) == (jwks_url is None):
            problems.append("give exactly one of jwks and jwks_url")
        if jwks_url is not None and not _trusted_url(jwks_url):
            problems.append(f"jwks_url: must be https, or http to 127.0.0.1, ::1 or localhost, got {jwks_url!r}")
        if not issuer:
            problems.append("issuer: must not be empty")
        if not audience:
            problems.append("audience: must not be empty")
        if not leeway >= 0:
            problems.append(f"leeway: must not be negative, got {leeway}")
        if not group_separator:
            problems.append("group_separator: must not be empty")
        self._keys: dict[str, Key] = {}
        if jwks is not None:
            try:
                self._keys = parse_jwks(jwks)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        self._url = jwks_url
        self._fetch = fetch or fetch_jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._clock = clock
        self._separator = group_separator
        self._lock = threading.Lock()
        self._fetched_at = -float("inf")
        self._next_fetch = -float("inf")

    def __repr__(self) -> str:
        source = self._url or "a given JWK set"
        return f"AssertionVerifier(issuer={self._issuer!r}, audience={self._audience!r}, keys from {source})"

    def verify(self, token: str, headers: Mapping[str, str]) -> dict[str, Any]:
        """The claims of a valid assertion that matches ``headers``; raises AssertionRejected otherwise.

        ``headers`` maps user, first_name, last_name, email, groups (joined by the separator),
        is_staff and is_superuser to the decoded header values; a missing one counts as empty,
        as a proxy may leave out an empty header.
        """
        claims = self._signed_claims(token)
        self._check_claims(claims)
        self._check_match(claims, headers)
        return claims

    def _signed_claims(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token:
            raise AssertionRejected("no assertion")
        if len(token) > MAX_TOKEN:
            raise AssertionRejected(f"the assertion is longer than {MAX_TOKEN} characters")
        segments = token.split(".")
        if len(segments) != 3:
            raise AssertionRejected("the assertion is not a JWS in compact form")
        header = _json_object(_segment(segments[0]), "header")
        kid = header.get("kid")
        if header.get("alg") != ALG:
            raise AssertionRejected(f"the assertion is not signed with {ALG}")
        if not header.keys() <= HEADER_FIELDS or header.get("typ", "JWT") != "JWT" or not isinstance(kid, str):
            raise AssertionRejected("the assertion's header is not alg ES256, a kid and typ JWT")
        signature = _segment(segments[2])
        if len(signature) != SIGNATURE_BYTES:
            raise AssertionRejected("the signature is not 64 bytes long")
        key = self._key(kid)
        if key is None:
            raise AssertionRejected("the assertion is signed by an unknown key")
        # The key was built for ES256 from an EC P-256 JWK: no header can make it another algorithm.
        if not key.verify(f"{segments[0]}.{segments[1]}".encode("ascii"), signature):
            raise AssertionRejected("the signature is not valid")
        return _json_object(_segment(segments[1]), "payload")

    def _check_claims(self, claims: dict[str, Any]) -> None:
        missing = [name for name in REQUIRED if name not in claims]
        if missing:
            raise AssertionRejected(f"the assertion lacks the claims {', '.join(missing)}")
        if claims["iss"] != self._issuer:
            raise AssertionRejected("the assertion comes from another issuer")
        if claims["aud"] != self._audience:
            raise AssertionRejected("the assertion is meant for another audience")
        now = self._clock()
        if now >= _typed(claims, "exp", int) + self._leeway:
            raise AssertionRejected("the assertion has expired")
        if _typed(claims, "nbf", int) > now + self._leeway:
            raise AssertionRejected("the assertion is not valid yet")
        if _typed(claims, "iat", int) > now + self._leeway:
            raise AssertionRejected("the assertion is issued in the future")

    def _check_match(self, claims: dict[str, Any], headers: Mapping[str, str]) -> None:
        for claim, name in TEXT_CLAIMS.items():
            if _typed(claims, claim, str) != headers.get(name, ""):
                raise AssertionRejected(f"the {claim} claim does not match the {name} header")
        groups = _typed(claims, "groups", list)
        # A name with the separator (or an empty one) would make the joined header ambiguous.
        if not all(type(group) is str and group and self._separator not in group for group in groups):
            raise AssertionRejected("the groups claim holds something other than group names")
        if self._separator.join(groups) != headers.get("groups", ""):
            raise AssertionRejected("the groups claim does not match the groups header")
        for claim, name in FLAG_CLAIMS.items():
            if ("true" if _typed(claims, claim, bool) else "false") != headers.get(name, ""):
                raise AssertionRejected(f"the {claim} claim does not match the {name} header")

    def _key(self, kid: str) -> Key | None:
        key = self._keys.get(kid)
        if self._url is not None and (key is None or self._clock() - self._fetched_at >= KEYS_MAX_AGE):
            self._refresh(self._url)
            key = self._keys.get(kid)
        return key

    def _refresh(self, url: str) -> None:
        # One fetch at a time; threads that waited find it done and the next one not yet due.
        with self._lock:
            now = self._clock()
            if now < self._next_fetch:
                return
            try:
                keys = parse_jwks(self._fetch(url))
            except Exception as exc:  # any failure of an injected fetch must leave the known keys in place
                self._next_fetch = now + RETRY_AFTER_FAILURE
                log.warning("cannot fetch assertion keys from %s (%s: %s); keeping the %d known",
                            url, type(exc).__name__, exc, len(self._keys))
                return
            self._keys = keys
            self._fetched_at = now
            self._next_fetch = now + REFETCH_INTERVAL


def parse_jwks(document: object) -> dict[str, Key]:
    """The ES256 public keys of a JWK set by kid; ValueError listing every problem in it."""
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError('jwks: expected {"keys": [...]} with at least one key')
    keys: dict[str, Key] = {}
    problems = []
    for index, entry in enumerate(entries):
        try:
            kid, key = _public_key(entry)
        except ValueError as exc:
            problems.append(f"jwks.keys[{index}]: {exc}")
            continue
        if kid in keys:
            problems.append(f"jwks.keys[{index}]: kid {kid!r} is used twice")
        keys[kid] = key
    if problems:
        raise ValueError("; ".join(problems))
    return keys


def fetch_jwks(url: str) -> object:
    """GET a JWK set: a 5 s timeout, at most 64 KiB, no redirects, no proxy to a loopback address."""
    handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
    if _loopback(urlsplit(url).hostname):
        handlers.append(urllib.request.ProxyHandler({}))
    with urllib.request.build_opener(*handlers).open(url, timeout=FETCH_TIMEOUT) as response:
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"the JWK set is larger than {MAX_JWKS_BYTES} bytes")
    return json.loads(body)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead from https or loopback to anywhere: it ends the fetch as an HTTP error."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Message, newurl: str,
    ) -> None:
        return None


def _public_key(entry: object) -> tuple[str, Key]:
    if not isinstance(entry, Mapping):
        raise ValueError("not a JSON object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no kid")
    if "d" in entry:
        raise ValueError(f"{kid!r} is a private key: publish only the public part")
    if entry.get("kty") != "EC" or entry.get("crv") != "P-256":
        raise ValueError(f"{kid!r} is not an EC P-256 key")
    if entry.get("alg", ALG) != ALG or entry.get("use", "sig") != "sig":
        raise ValueError(f"{kid!r} is not for {ALG} signatures")
    x, y = entry.get("x"), entry.get("y")
    if not all(isinstance(c, str) and _byte_length(c) == COORDINATE_BYTES for c in (x, y)):
        raise ValueError(f"{kid!r} has no x and y of {COORDINATE_BYTES} bytes in base64url")
    try:
        key = jwk.construct({"kty": "EC", "crv": "P-256", "x": x, "y": y}, ALG)
    except Exception:  # cryptography refuses a point off the curve with ValueError, jose wraps some
        raise ValueError(f"{kid!r} is not a point on P-256") from None
    return kid, key


def _trusted_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and _loopback(parts.hostname)


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json_object(data: bytes, part: str) -> dict[str, Any]:
    try:
        value = _DECODER.decode(data.decode())
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise AssertionRejected(f"the {part} is not JSON") from None
    if not isinstance(value, dict):
        raise AssertionRejected(f"the {part} is not a JSON object")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


# Built once: json.loads with an option builds a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _segment(segment: str) -> bytes:
    try:
        return base64url.decode(segment)
    except ValueError:
        raise AssertionRejected("a segment is not canonical base64url") from None


def _byte_length(text: str) -> int | None:
    """How many bytes a canonical base64url text holds, or None for any other text."""
    try:
        return len(base64url.decode(text))
    except ValueError:
        return None


def _typed(claims: dict[str, Any], name: str, kind: type[T]) -> T:
    value = claims[name]
    # Exact types: JSON's true is no integer here, nor 1 a boolean.
    if type(value) is not kind:
        raise AssertionRejected(f"the {name} claim is not of type {kind.__name__}")
    return value
