"""Signed assertions: the identity of a 200 answer, signed, so an application can tell it came from us.

The sidecar adds ``Remote-User-Assertion``: a JWT in compact JWS form, ``{"alg": "ES256", "kid": ...,
"typ": "JWT"}``, whose claims repeat what the plain headers say::

    {"iss", "aud", "sub": username, "iat", "nbf", "exp": iat + lifetime, "jti": random,
     "given_name", "family_name", "email", "groups": [...], "is_staff", "is_superuser",
     "amr": [how the user signed in: pwd, otp, hwk], "auth_time": when (sessions only)}

Claim values are the header values exactly (cleaned the same way, the same groups left out), so an
application checks one against the other (:class:`sidecar.contrib.assertion.AssertionVerifier`).
The public keys are published as a JWK set at ``/.well-known/jwks.json``.

Keys are EC P-256 (ES256): python-jose 3.5 has no EdDSA, so Ed25519 keys are refused.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jws
from jose.backends.base import Key

from sidecar import keylist
from sidecar.headers import clean, published_groups
from sidecar.identity import Identity

ALG = "ES256"
MIN_LIFETIME = 1.0

# The fields an assertion is made of: identities alike here get the same assertion.
Fingerprint = tuple[str, str, str, str, tuple[str, ...], bool, bool, tuple[str, ...], int | None]


class AssertionSigner:
    """Signs identities with the first key and publishes every key.

    To rotate a key without refusing anyone:

    1. add the new key second: it is published; wait five minutes, by which time every application
       that fetches the key set knows it (give applications configured with a fixed set the new one);
    2. move it first: it signs, and the old key still verifies what it signed;
    3. drop the old key once its last assertions have expired (``lifetime`` seconds).

    Signed assertions are memoised per identity for half their lifetime, so most /auth answers
    cost a dictionary lookup. The memo is not thread-safe: sign on the event loop.
    """

    def __init__(
        self,
        keys: Sequence[tuple[str, str]],
        *,
        issuer: str,
        audience: str,
        lifetime: float = 60,
        clock: Callable[[], float] = time.time,
        group_separator: str = "|",
        memo_entries: int = 10_000,
    ) -> None:
        problems = keylist.problems(keys, keylist.pem_problem, kind="PEM private key")
        if not issuer:
            problems.append("issuer: must not be empty")
        if not audience:
            problems.append("audience: must not be empty")
        if not lifetime >= MIN_LIFETIME:
            problems.append(f"lifetime: must be at least {MIN_LIFETIME:g} second, got {lifetime}")
        if not group_separator:
            problems.append("group_separator: must not be empty")
        if not memo_entries > 0:
            problems.append(f"memo_entries: must be positive, got {memo_entries}")
        if problems:
            raise ValueError("; ".join(problems))
        self._kid, pem = keys[0]
        self._key: Key = jwk.construct(pem, ALG)
        self._jwks = tuple(_public_jwk(kid, jwk.construct(text, ALG)) for kid, text in keys)
        self._issuer = issuer
        self._audience = audience
        self._lifetime = lifetime
        self._clock = clock
        self._separator = group_separator
        self._memo_entries = memo_entries
        # Fingerprint -> (assertion, when to sign a new one).
        self._memo: dict[Fingerprint, tuple[str, float]] = {}

    def __repr__(self) -> str:
        kids = [key["kid"] for key in self._jwks]
        return f"AssertionSigner(kids={kids!r}, issuer={self._issuer!r}, audience={self._audience!r})"

    def sign(self, identity: Identity, *, amr: tuple[str, ...] = (), auth_time: float | None = None) -> str:
        """The assertion for an identity (signed in by the ``amr`` methods, last at ``auth_time``):
        from the memo while more than half its lifetime remains."""
        now = self._clock()
        fingerprint = (identity.username, identity.first_name, identity.last_name, identity.email,
                       identity.groups, identity.is_staff, identity.is_superuser, amr,
                       None if auth_time is None else int(auth_time))
        memo = self._memo.get(fingerprint)
        if memo is not None and now < memo[1]:
            return memo[0]
        token = self._sign(identity, now, amr, auth_time)
        self._memo.pop(fingerprint, None)
        if len(self._memo) >= self._memo_entries:
            # Oldest first: dictionaries keep insertion order, and a re-signed entry moves to the end.
            del self._memo[next(iter(self._memo))]
        self._memo[fingerprint] = (token, now + self._lifetime / 2)
        return token

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK set to serve at ``/.well-known/jwks.json`` (a fresh copy each call)."""
        return {"keys": [dict(key) for key in self._jwks]}

    def _sign(self, identity: Identity, now: float, amr: tuple[str, ...], auth_time: float | None) -> str:
        issued = int(now)
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": clean(identity.username),
            "iat": issued,
            "nbf": issued,
            "exp": int(now + self._lifetime),
            "jti": secrets.token_urlsafe(16),
            "given_name": clean(identity.first_name),
            "family_name": clean(identity.last_name),
            "email": clean(identity.email),
            "groups": published_groups(identity.groups, self._separator),
            "is_staff": identity.is_staff,
            "is_superuser": identity.is_superuser,
            **({"amr": list(amr)} if amr else {}),
            **({"auth_time": int(auth_time)} if auth_time is not None else {}),
        }
        # Raw UTF-8 rather than \u escapes: names in other scripts stay small.
        payload = json.dumps(claims, ensure_ascii=False, separators=(",", ":")).encode()
        return jws.sign(payload, self._key, headers={"kid": self._kid}, algorithm=ALG)


def generate_key() -> str:
    """A new EC P-256 private key in PEM (PKCS #8), for ``auth-sidecar generate-signing-key``."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem.decode("ascii")


def _public_jwk(kid: str, key: Key) -> dict[str, str]:
    public: dict[str, Any] = key.public_key().to_dict()
    return {"kty": public["kty"], "crv": public["crv"], "x": public["x"], "y": public["y"],
            "kid": kid, "alg": ALG, "use": "sig"}


