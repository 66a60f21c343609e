"""Canonical base64url: one spelling for each byte string, every other refused."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar import base64url


@given(st.binary(max_size=200))
def test_decode_inverts_encode(raw: bytes) -> None:
    text = base64url.encode(raw)
    assert "=" not in text and base64url.decode(text) == raw
    assert text == base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(("text", "why"), [
    ("QR", "not canonical"),  # "Q" is 010000: the spare bits of "R" (010001) are not zero
    ("QQ=", "not base64url"),  # padding
    ("QQ==", "not base64url"),
    ("Q+", "not base64url"),  # the standard alphabet
    ("Q/", "not base64url"),
    ("Q Q", "not base64url"),
    ("QQ\n", "not base64url"),
    ("Ｑｑ", "not base64url"),  # full-width letters
    ("A", "not base64url"),  # 4n+1 characters encode nothing
    ("AAAAA", "not base64url"),
])
def test_other_spellings_are_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        base64url.decode(text)


def test_lenient_decoders_agree_on_a_refused_spelling() -> None:
    """What the helper exists for: Python's decoder reads two texts as the same bytes."""
    assert base64.urlsafe_b64decode("QR==") == base64.urlsafe_b64decode("QQ==") == b"A"
    assert base64url.decode("QQ") == b"A"
