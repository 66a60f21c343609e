"""Tokens: verifying a signed JWT (an OpenID Connect ID token or an API client's Bearer token).

:func:`verify` is pure: it takes the token, the provider's public keys, what to expect and the time,
and returns the claims or raises :class:`TokenRejected`. Fetching keys is ``sidecar.jwks``'s job.

The header is read without trusting it. Its ``alg`` must be one the caller allows, all of them
asymmetric, before any key is looked at: a public key can never become an HMAC secret
(CVE-2024-33663), and ``none`` is never accepted. Keys come only from the key set, never from the
token (``jwk``, ``jku``, ``x5u`` and ``x5c`` headers are ignored). The signature is checked by
python-jose with ``algorithms=[alg]``; the claims are checked here, against the caller's clock.

python-jose 3.5 verifies RS256/384/512 and ES256/384/512 only: it has no RSASSA-PSS (PS256...)
and no EdDSA, so neither is offered.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

from jose import jwk, jws
from jose.backends.base import Key

from sidecar import base64url
from sidecar.errors import TokenRejected, UnknownKey

JWK = Mapping[str, Any]

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})
# An ES algorithm is defined for one curve only (RFC 7518, section 3.4).
EC_CURVES = MappingProxyType({"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"})
ASYMMETRIC = RSA_ALGORITHMS | frozenset(EC_CURVES)
# The public members of each key type: a key is rebuilt from these alone, so a private "d" is never used.
PUBLIC_MEMBERS = MappingProxyType({"RSA": ("n", "e"), "EC": ("crv", "x", "y")})
# Clocks of NTP-synchronised hosts differ by far less; more would keep expired tokens usable longer.
DEFAULT_LEEWAY = 30.0
MAX_LEEWAY = 60.0
MAX_TOKEN_BYTES = 16 * 1024
MAX_TIME = 2**53
# Three base64url segments; an empty signature is let through so that alg "none" gets its own reason.
COMPACT_JWS = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")
# Error messages show at most this much of a value taken from a token.
SHOWN = 64


@dataclass(frozen=True, slots=True)
class KeySet:
    """A provider's public signing keys: by key id (RFC 7517 lets keys of different types share one) and all of them."""

    by_kid: Mapping[str, tuple[JWK, ...]]
    all: tuple[JWK, ...]

    @classmethod
    def of(cls, keys: Iterable[JWK]) -> KeySet:
        every = tuple(MappingProxyType(dict(key)) for key in keys)
        by_kid: dict[str, tuple[JWK, ...]] = {}
        for key in every:
            if isinstance(kid := key.get("kid"), str):
                by_kid[kid] = (*by_kid.get(kid, ()), key)
        return cls(MappingProxyType(by_kid), every)


@dataclass(frozen=True, slots=True)
class Expectations:
    """What a token must say to be accepted.

    ``audiences`` is the client id for ID tokens, the configured API audiences for Bearer tokens.
    ``authorized_party`` (the client id, for ID tokens) must be the ``azp`` of a token with several
    audiences, and of any token that has an ``azp``. ``max_age`` refuses tokens issued longer ago.
    """

    issuer: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    leeway: float = DEFAULT_LEEWAY
    require_nonce: str | None = field(default=None, repr=False)
    authorized_party: str | None = None
    max_age: float | None = None
    max_token_bytes: int = MAX_TOKEN_BYTES

    def __post_init__(self) -> None:
        problems = []
        if not self.issuer:
            problems.append("issuer: must not be empty")
        if not self.audiences or not all(self.audiences):
            problems.append("audiences: at least one, none empty")
        if not self.algorithms or not self.algorithms <= ASYMMETRIC:
            problems.append(f"algorithms: at least one, all of {', '.join(sorted(ASYMMETRIC))}")
        if not 0 <= self.leeway <= MAX_LEEWAY:
            problems.append(f"leeway: must be 0 to {MAX_LEEWAY:g} seconds, got {self.leeway}")
        if self.max_age is not None and not self.max_age > 0:
            problems.append(f"max_age: must be positive, got {self.max_age}")
        if not self.max_token_bytes > 0:
            problems.append(f"max_token_bytes: must be positive, got {self.max_token_bytes}")
        if problems:
            raise ValueError("; ".join(problems))


def allowed_algorithms(advertised: Iterable[str] | None) -> frozenset[str]:
    """The provider's signing algorithms (``id_token_signing_alg_values_supported``) we can verify.

    Without a list, RS256, which every OpenID provider must support. ``none``, HS256 and any other
    algorithm not in ASYMMETRIC are dropped; ValueError when nothing is left.
    """
    # The list comes from the provider's document: anything but a string in it is skipped.
    offered = frozenset(a for a in advertised if isinstance(a, str)) if advertised is not None else frozenset({"RS256"})
    allowed = offered & ASYMMETRIC
    if not allowed:
        raise ValueError(f"no signing algorithm offered ({', '.join(sorted(offered)) or 'none at all'}) "
                         f"is one of {', '.join(sorted(ASYMMETRIC))}")
    return allowed


def verify(token: str, keys: KeySet, expected: Expectations, now: float) -> dict[str, Any]:
    """The claims of a token signed by one of the keys and meeting the expectations at ``now`` (epoch seconds).

    Raises UnknownKey when the token names a key id the set lacks, TokenRejected for anything else.
    """
    header = _parse(token, expected.max_token_bytes)
    alg = _algorithm(header, expected.algorithms)
    payload = _signed_payload(token, _keys_for(header, keys, alg), alg)
    claims = _claims(payload)
    _check_claims(claims, expected, now)
    return claims


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``realm_access.roles``), or None when it is missing.

    A key holding dots wins over the path through it, so namespaced claims such as
    ``https://example.com/roles`` (Auth0) can be named too.
    """
    if path in claims:
        return claims[path]
    for dot in (i for i, char in enumerate(path) if char == "."):
        inner = claims.get(path[:dot])
        if isinstance(inner, Mapping) and (value := claim(inner, path[dot + 1:])) is not None:
            return value
    return None


def claim_strings(claims: Mapping[str, Any], path: str) -> tuple[str, ...]:
    """The strings at a dotted path: a list's strings (others skipped), a single string, or none."""
    value = claim(claims, path)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def _parse(token: str, max_bytes: int) -> dict[str, Any]:
    """The header of a compact JWS, not to be trusted yet."""
    if len(token) > max_bytes:
        raise TokenRejected(f"the token is longer than {max_bytes} bytes")
    if token.count(".") == 4:
        raise TokenRejected("the token is encrypted (JWE): only signed tokens are accepted")
    match = COMPACT_JWS.fullmatch(token)
    if match is None:
        raise TokenRejected("the token is not a JWS in compact form")
    try:
        raw = base64url.decode(match[1])
    except ValueError:
        raise TokenRejected("a segment of the token is not base64url") from None
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise TokenRejected("the token's header is not JSON") from None
    if not isinstance(header, dict):
        raise TokenRejected("the token's header is not a JSON object")
    return header


def _algorithm(header: Mapping[str, Any], allowed: frozenset[str]) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed:
        raise TokenRejected(f"alg {_shown(alg)} is not one of {', '.join(sorted(allowed))}")
    # RFC 7515: extensions listed as critical must be understood, and we understand none.
    if "crit" in header:
        raise TokenRejected("the token's header lists critical extensions")
    return alg


def _keys_for(header: Mapping[str, Any], keys: KeySet, alg: str) -> list[Key]:
    """The keys that may have signed a token: those with its kid, or the one key for its alg."""
    kid = header.get("kid")
    if kid is None:
        usable = [key for key in keys.all if _fits(key, alg)]
        if len(usable) != 1:
            raise TokenRejected(f"the token names no kid and the key set has {len(usable)} keys for {alg}")
        return [_construct(usable[0], alg)]
    if not isinstance(kid, str):
        raise TokenRejected("the token's kid is not a string")
    if kid not in keys.by_kid:
        raise UnknownKey(kid)
    usable = [key for key in keys.by_kid[kid] if _fits(key, alg)]
    if not usable:
        raise TokenRejected(f"the key with kid {_shown(kid)} is not for {alg}")
    return [_construct(key, alg) for key in usable]


def _fits(key: JWK, alg: str) -> bool:
    """Whether a key may verify an algorithm: its type and curve match, and so does its alg if it has one."""
    if key.get("alg", alg) != alg or key.get("use", "sig") != "sig":
        return False
    if alg in RSA_ALGORITHMS:
        return key.get("kty") == "RSA"
    return key.get("kty") == "EC" and key.get("crv") == EC_CURVES[alg]


def _construct(key: JWK, alg: str) -> Key:
    kty = key["kty"]
    public = {"kty": kty, **{name: key.get(name) for name in PUBLIC_MEMBERS[kty]}}
    if not all(isinstance(value, str) for value in public.values()):
        raise TokenRejected(f"the key with kid {_shown(key.get('kid'))} lacks a member")
    try:
        return jwk.construct(public, alg)
    except Exception:  # python-jose raises many kinds, its own and its backend's
        raise TokenRejected(f"the key with kid {_shown(key.get('kid'))} is malformed") from None


def _signed_payload(token: str, candidates: list[Key], alg: str) -> bytes:
    for key in candidates:
        try:
            # A Key object, not a dict or text: python-jose cannot take it for another kind of key.
            return jws.verify(token, key, algorithms=[alg])
        except Exception:  # JWSError for a bad signature; any other kind is no better a token
            continue
    raise TokenRejected("the signature does not verify")


def _claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise TokenRejected("the token's payload is not JSON") from None
    if not isinstance(claims, dict):
        raise TokenRejected("the token's payload is not a JSON object")
    return claims


def _check_claims(claims: Mapping[str, Any], expected: Expectations, now: float) -> None:
    leeway = expected.leeway
    if claims.get("iss") != expected.issuer:
        raise TokenRejected(f"iss {_shown(claims.get('iss'))} is not {expected.issuer!r}")
    _check_audience(claims, expected)
    if _time(claims, "exp") < now - leeway:
        raise TokenRejected("the token has expired")
    issued = _time(claims, "iat")
    if issued > now + leeway:
        raise TokenRejected("the token was issued in the future")
    if expected.max_age is not None and issued < now - expected.max_age - leeway:
        raise TokenRejected(f"the token was issued more than {expected.max_age:g} seconds ago")
    if "nbf" in claims and _time(claims, "nbf") > now + leeway:
        raise TokenRejected("the token is not valid yet (nbf)")
    if expected.require_nonce is not None:
        _check_nonce(claims.get("nonce"), expected.require_nonce)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenRejected("the token has no sub")


def _check_audience(claims: Mapping[str, Any], expected: Expectations) -> None:
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) for a in audiences):
        raise TokenRejected("aud is missing or not a string or list of strings")
    if expected.audiences.isdisjoint(audiences):
        raise TokenRejected(f"aud {_shown(aud)} names none of {', '.join(sorted(expected.audiences))}")
    party = expected.authorized_party
    if party is None or ("azp" not in claims and len(audiences) == 1):
        return
    if claims.get("azp") != party:
        raise TokenRejected(f"azp {_shown(claims.get('azp'))} is not {party!r}")


def _check_nonce(nonce: Any, expected: str) -> None:
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), expected.encode()):
        raise TokenRejected("the nonce is missing or not the one sent")


def _time(claims: Mapping[str, Any], name: str) -> int | float:
    value = claims.get(name)
    # JSON's true is no time, though Python's bool is an int.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"{name} is missing or not a number")
    # Exact as a float, so callers may convert it (10**400 would overflow) and compare it without rounding.
    if not 0 <= value <= MAX_TIME:
        raise TokenRejected(f"{name} is out of range")
    return value


def _no_constant(name: str) -> NoReturn:
    # json.loads would otherwise read NaN and Infinity, which compare false with every time.
    raise ValueError(f"{name} is not JSON")


def _shown(value: Any) -> str:
    """A value from a token, quoted and cut short for a log line."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."
