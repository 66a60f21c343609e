"""Base64url without padding (RFC 7515, section 2), in its one canonical spelling.

Python's decoder skips characters outside the alphabet and ignores the spare low bits of the last
character, so several texts decode to the same bytes. :func:`decode` accepts only the text that
:func:`encode` gives for those bytes: a cookie, a token segment or a key member has one spelling.
"""

from __future__ import annotations

import base64
import binascii
import re

ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def encode(raw: bytes) -> str:
    """The unpadded base64url text of some bytes."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str) -> bytes:
    """The bytes whose :func:`encode` is exactly ``text``; ValueError for anything else."""
    if not ALPHABET.fullmatch(text):
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:  # a length of 4n+1: no bytes encode to that
        raise ValueError("not base64url") from None
    if encode(raw) != text:
        raise ValueError("not canonical base64url")
    return raw
