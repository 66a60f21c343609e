"""sidecar.basic.ParsedBasic: parse_basic once per distinct Authorization value, the same answer
every time, no password kept, bounded under a flood of unique values."""

from __future__ import annotations

import base64
import contextlib

import pytest

from sidecar.basic import ParsedBasic, parse_basic
from sidecar.cache import Fingerprint
from sidecar.errors import BadRequest


def basic(user: str, password: str, *, scheme: str = "Basic", pad: str = "") -> str:
    return f"{scheme} " + base64.b64encode(f"{user}:{password}".encode()).decode() + pad


@pytest.mark.parametrize("header", [
    basic("alice", "alice-pass"),
    basic("alice", "pa:ss:word"),
    basic("ｊｏｓé", "p€ss"),  # NFKC: the memo answers the normalised name
    basic(" alice\t", "x"),  # SP/HTAB padding of the name, trimmed
    basic("alice", "alice-pass", scheme="bAsIc"),
    basic("alice", "alice-pass", pad=" \t"),
    "Basic  " + base64.b64encode(b"alice:two spaces").decode(),
])
def test_a_remembered_value_parses_as_parse_basic_does(header: str) -> None:
    parsed = ParsedBasic()
    assert parsed(header) == parse_basic(header)
    assert parsed(header) == parse_basic(header)  # the second time from the memo


@pytest.mark.parametrize("header", [
    basic("alice\x01", "x"),
    basic("alice", ""),
    "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic !!!",
])
def test_a_refused_value_is_refused_every_time(header: str) -> None:
    parsed = ParsedBasic()
    for _ in range(2):
        with pytest.raises(BadRequest):
            parsed(header)


def test_other_schemes_and_other_spaces_are_no_basic() -> None:
    parsed = ParsedBasic()
    for header in ("Bearer abc", "Basic\u00a0" + base64.b64encode(b"alice:x").decode()):
        assert parsed(header) is None
        assert parsed(header) is None


def test_the_memo_holds_no_password_and_stays_bounded() -> None:
    parsed = ParsedBasic(max_entries=100)
    for i in range(1000):
        assert parsed(basic(f"user{i}", f"secret-{i}")) == (f"user{i}", f"secret-{i}")
        assert len(parsed._names) <= 100
    assert not any("secret" in name or b"secret" in derived for name, derived in parsed._names.values())
    assert not any(b"secret" in key for key in parsed._names)


def test_what_is_derived_from_the_credentials_is_derived_once_per_value() -> None:
    derived: list[tuple[str, str]] = []

    def derive(username: str, password: str) -> bytes:
        derived.append((username, password))
        return f"key of {username}".encode()

    parsed = ParsedBasic(derive=derive)
    for _ in range(3):
        assert parsed.parsed(basic("alice", "alice-pass")) == ("alice", "alice-pass", b"key of alice")
        assert parsed.parsed(basic("bob", "bob-pass")) == ("bob", "bob-pass", b"key of bob")
    assert derived == [("alice", "alice-pass"), ("bob", "bob-pass")]


def test_a_value_seen_before_is_known_without_its_password() -> None:
    """known(): the name and the derived key of a value that parsed, no password decoded (the
    cached verdict's path); password() decodes it only when a source must be asked."""
    parsed = ParsedBasic(derive=lambda username, password: f"key of {username}".encode())
    header = basic("ｊｏｓé", "pa:ss wörd")
    assert parsed.known(header) is None  # not parsed yet
    assert parsed.parsed(header) == ("josé", "pa:ss wörd", "key of josé".encode())
    assert parsed.known(header) == ("josé", "key of josé".encode())
    assert parsed.password(header) == "pa:ss wörd"
    assert parsed.password(basic("josé", "x", scheme="bAsIc", pad=" \t")) == "x"
    for refused in (basic("alice", ""), "Bearer abc", "Basic " + "A" * 5000, "Basic\u00a0YTpi"):
        with contextlib.suppress(BadRequest):
            parsed.parsed(refused)
        assert parsed.known(refused) is None  # refusals and other schemes are never remembered


def test_memo_keys_are_keyed_per_process() -> None:
    """Fingerprint: the same value gives the same key in one memo, another in any other (each made
    with its own random key), and no key shows the value."""
    one, other = Fingerprint(), Fingerprint()
    cookie = b"session=" + b"s3cret" * 20
    assert one(cookie) == one(cookie) and len(one(cookie)) == 32
    assert one(cookie) != other(cookie) and one(cookie) != one(cookie + b"x")
    assert b"s3cret" not in one(cookie)
