"""Sealing: bytes encrypted and authenticated under a key bound to one purpose.

A sealed value is a JWE in compact form with ``alg: dir`` and ``enc: A256GCM``: a header, an empty
encrypted key, the IV, the ciphertext and the tag, each in canonical base64url. A :class:`Sealer`
with named keys writes the first key's id as ``kid`` and opens with whichever key the header
names, so a key rotates by putting a new one first; with one unnamed key the header holds no kid.

:meth:`Sealer.open` reads the header before decrypting and refuses any algorithm, compression or
field but these, so python-jose never sees a header we did not write (cf. CVE-2024-33664).

Keys come from :func:`derive_key`: a configured secret and a purpose give one 256-bit key, so a
value sealed for one purpose (an OpenID sign-in's state) can never be opened as another (a session).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Literal

from jose import jwe

from sidecar import base64url
from sidecar.errors import Unsealable

ALG = "dir"
ENC = "A256GCM"
KEY_BYTES = 32
# The compact form with "dir": header (short), an empty encrypted key, IV, ciphertext, tag.
COMPACT = re.compile(r"([A-Za-z0-9_-]{1,256})\.\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
# What each key is for; the text goes into the derivation, so changing one retires every value sealed with it.
Purpose = Literal["session key", "oidc state", "second factor key"]


def derive_key(secret: str, purpose: Purpose) -> bytes:
    """The 256-bit key for a purpose from a configured secret (at least 32 random characters, checked at load)."""
    return hashlib.sha256(b"auth-sidecar " + purpose.encode() + b" v1\0" + secret.encode()).digest()


class Sealer:
    """Seals with the first key, opens with any. ``keys`` are (kid, key) pairs, checked by the caller
    (:func:`sidecar.keylist.problems`); a kid of None is a key named by no kid in the header."""

    def __init__(self, keys: Sequence[tuple[str | None, bytes]]) -> None:
        if not keys:
            raise ValueError("keys: at least one is required")
        self._kid, self._key = keys[0]
        self._keys = dict(keys)

    @property
    def kids(self) -> list[str | None]:
        return list(self._keys)

    def __repr__(self) -> str:
        return f"Sealer(kids={self.kids!r})"

    def seal(self, plaintext: bytes) -> str:
        """The sealed value, in ASCII."""
        named = {"kid": self._kid} if self._kid is not None else {}
        return jwe.encrypt(plaintext, self._key, encryption=ENC, algorithm=ALG, **named).decode("ascii")

    def open(self, value: str) -> bytes:
        """The plaintext of a value sealed with one of the keys; Unsealable for anything else."""
        match = COMPACT.fullmatch(value)
        if match is None:
            raise Unsealable("not a JWE in compact form with alg dir")
        # Every segment must be canonical base64url; only the header is needed before decrypting.
        try:
            header, *_ = [base64url.decode(part) for part in match.groups()]
        except ValueError as exc:
            raise Unsealable(f"a segment is {exc}") from None
        key = self._key_for(header)
        try:
            plaintext = jwe.decrypt(value, key)
        except Exception as exc:  # python-jose raises many kinds, its own and its backend's
            raise Unsealable(f"cannot decrypt ({type(exc).__name__})") from None
        if not plaintext:
            raise Unsealable("empty plaintext")
        return plaintext

    def _key_for(self, header: bytes) -> bytes:
        """The key a header names; any algorithm, compression or field but ours is refused."""
        try:
            fields = json.loads(header)
        except (ValueError, RecursionError):
            raise Unsealable("the header is not JSON") from None
        kid = fields.get("kid") if isinstance(fields, dict) else None
        key = self._keys.get(kid) if isinstance(kid, str | None) else None
        named = {"kid": kid} if kid is not None else {}
        if key is None or fields != {"alg": ALG, "enc": ENC, **named}:
            raise Unsealable("the header names another algorithm, compression or key")
        return key
