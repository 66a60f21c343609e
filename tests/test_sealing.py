"""Sealing: purpose-bound keys, strict headers, and values sealed before the helper still open."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from jose import jwe

from sidecar import base64url
from sidecar.errors import Unsealable
from sidecar.sealing import Sealer, derive_key

SECRET = "fixed-test-secret-0123456789abcdefghij"
# Made by the code before sealing was one module (SessionCodec, oidc.StateCookie), with SECRET:
# what browsers hold must open the same way after.
OLD_SESSION = (
    "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwia2lkIjoiazEifQ..0Tv0b5KK755q0ZPf.mv3AvHCzq-Sgx89gSob5LhiO8I7jEa2U-LSD"
    "oXeJ7hxySYMaHPzQTIMcVEM7HnrOGeqqqiS78si9ltEjEfQBEi1dUP-kZARJAXb0hjSVah673dX-o7Y0042n7AIcpgSvhoNeIBARZnLbFIK_T"
    "GdORqjlRwgYXBYt9M_5UHO4re8qGNLvKPYWxiZRZ6RbY1e6HN8.5clmkq_kYHICZBfN72i54A"
)
OLD_STATE = (
    "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..z61ebL0efFx7upVZ.l2MJLovvlr5NbCG4V8CT0aFkhuFNML3rfO0vpgtVmapA2U_3jti4"
    "VDfNJEMYeVNS5W_JM5PopNZ4TsCIC9ZS2xAr5WesYETJoT_ZK14CsTlE5qQ-jRFNVYFvlYYry2bCm-Y3iSqDRu1-qNb43Gh6YPTwEpk.uNPHHH"
    "SARhwh00BCi7rvzw"
)


def test_the_derivation_is_the_one_sessions_and_state_cookies_had() -> None:
    secret = SECRET.encode()
    assert derive_key(SECRET, "session key") == hashlib.sha256(b"auth-sidecar session key v1\0" + secret).digest()
    assert derive_key(SECRET, "oidc state") == hashlib.sha256(b"auth-sidecar oidc state v1\0" + secret).digest()
    assert derive_key(SECRET, "session key") != derive_key(SECRET, "oidc state")


def test_an_old_state_cookie_opens() -> None:
    sealer = Sealer([(None, derive_key(SECRET, "oidc state"))])
    assert json.loads(sealer.open(OLD_STATE)) == {
        "provider": "corp", "state": "st", "nonce": "no", "verifier": "ve", "rd": "https://app.example.com/",
        "started": 1_800_000_000.0}


def test_an_old_session_cookie_opens() -> None:
    plaintext = Sealer([("k1", derive_key(SECRET, "session key"))]).open(OLD_SESSION)
    assert plaintext[:1] == b"\x01"  # the format byte; tests/test_sessions.py decodes the whole session


def test_a_value_sealed_for_one_purpose_does_not_open_for_another() -> None:
    with pytest.raises(Unsealable, match="cannot decrypt"):
        Sealer([(None, derive_key(SECRET, "session key"))]).open(OLD_STATE)
    with pytest.raises(Unsealable, match="names another algorithm, compression or key"):
        Sealer([(None, derive_key(SECRET, "oidc state"))]).open(OLD_SESSION)  # a kid it has no key for


def test_the_first_key_seals_and_every_key_opens() -> None:
    old = Sealer([("old", b"o" * 32)])
    both = Sealer([("new", b"n" * 32), ("old", b"o" * 32)])
    value = both.seal(b"hello")
    assert json.loads(base64url.decode(value.split(".")[0])) == {"alg": "dir", "enc": "A256GCM", "kid": "new"}
    assert both.open(old.seal(b"before")) == b"before" and both.open(value) == b"hello"
    with pytest.raises(Unsealable):
        old.open(value)


def test_an_unnamed_key_writes_no_kid() -> None:
    value = Sealer([(None, b"k" * 32)]).seal(b"x")
    assert json.loads(base64url.decode(value.split(".")[0])) == {"alg": "dir", "enc": "A256GCM"}


@pytest.mark.parametrize("header", [
    {"alg": "dir", "enc": "A256GCM", "kid": "k", "zip": "DEF"},
    {"alg": "dir", "enc": "A128GCM", "kid": "k"},
    {"alg": "A256KW", "enc": "A256GCM", "kid": "k"},
    {"alg": "dir", "enc": "A256GCM", "kid": None},
    {"alg": "dir", "enc": "A256GCM"},
    ["dir"],
])
def test_no_header_but_ours_reaches_the_decrypter(header: object) -> None:
    sealer = Sealer([("k", b"k" * 32)])
    _, *rest = sealer.seal(b"x").split(".")
    forged = ".".join([base64url.encode(json.dumps(header).encode()), *rest])
    with pytest.raises(Unsealable, match="another algorithm|not JSON"):
        sealer.open(forged)


@pytest.mark.parametrize("value", ["", "a.b.c", "a..b.c", "a.k.b.c.d", "a..b.c.d;", " a..b.c.d"])
def test_what_is_not_the_compact_form_is_refused(value: str) -> None:
    with pytest.raises(Unsealable):
        Sealer([("k", b"k" * 32)]).open(value)


def test_a_segment_in_another_spelling_is_refused() -> None:
    sealer = Sealer([("k", b"k" * 32)])
    header, empty, iv, ciphertext, tag = sealer.seal(b"x").split(".")
    # A 16-byte tag leaves 4 spare bits in the last character: setting one keeps the bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelled = tag[:-1] + alphabet[alphabet.index(tag[-1]) ^ 1]
    assert respelled != tag and base64url.decode(tag) == base64.urlsafe_b64decode(respelled + "==")
    with pytest.raises(Unsealable, match="a segment is not"):
        sealer.open(".".join([header, empty, iv, ciphertext, respelled]))


def test_an_empty_plaintext_is_refused() -> None:
    sealer = Sealer([("k", b"k" * 32)])
    value = jwe.encrypt(b"", b"k" * 32, encryption="A256GCM", algorithm="dir", kid="k").decode()
    with pytest.raises(Unsealable):
        sealer.open(value)
