"""Key lists: the (kid, key) pairs of session keys and signing keys, checked one way.

The first key of a list is the one in use (it encrypts or signs) and every key is accepted (it
decrypts or is published), so a key rotates by putting a new one first. A kid is what a header
names the key by: 1 to 32 of ``A-Z a-z 0-9 _ -``, and no two keys share one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

K = TypeVar("K")

KID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def problems(keys: Sequence[tuple[str, K]], key_problem: Callable[[K], str | None], *, kind: str) -> list[str]:
    """What is wrong with a key list, naming each key by its id and never showing key material.

    ``key_problem`` says what is wrong with one key ("must be 32 bytes"), or None; ``kind`` is what
    a key is, for the message about an empty list ("key", "PEM private key").
    """
    if not keys:
        return [f"keys: at least one (kid, {kind}) is required"]
    found = []
    for kid, key in keys:
        if not isinstance(kid, str) or not KID.fullmatch(kid):
            found.append(f"keys: a kid is 1 to 32 of A-Z a-z 0-9 _ -, got {kid!r}")
        if (problem := key_problem(key)) is not None:
            found.append(f"keys: the key of {kid!r} {problem}")
    kids = [kid for kid, _ in keys]
    found += [f"keys: kid {kid!r} is used twice" for kid in dict.fromkeys(kids) if kids.count(kid) > 1]
    return found


def pem_problem(pem: str) -> str | None:
    """What is wrong with a signing key's PEM text for ES256 (an EC P-256 private key), or None."""
    if not isinstance(pem, str):
        return "must be PEM text"
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        return "is encrypted: give it without a passphrase"
    except Exception:  # cryptography raises ValueError or UnsupportedAlgorithm; the text may hold the key
        return "is not a PEM private key"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "is Ed25519: python-jose has no EdDSA, use EC P-256 (auth-sidecar generate-signing-key)"
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return "is not an EC key: ES256 needs EC P-256 (auth-sidecar generate-signing-key)"
    if not isinstance(key.curve, ec.SECP256R1):
        return f"is on curve {key.curve.name}: ES256 needs P-256 (secp256r1)"
    return None
