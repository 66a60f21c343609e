"""Key lists: every problem at once, each key named by its kid, no key material shown."""

from __future__ import annotations

from sidecar import keylist


def thirty_two(key: bytes) -> str | None:
    return None if len(key) == 32 else "must be 32 bytes"


def test_a_good_list_has_no_problems() -> None:
    assert keylist.problems([("new", b"n" * 32), ("old-1_", b"o" * 32)], thirty_two, kind="key") == []


def test_an_empty_list_names_what_a_key_is() -> None:
    assert keylist.problems([], thirty_two, kind="PEM private key") == [
        "keys: at least one (kid, PEM private key) is required"]


def test_every_problem_is_reported_without_key_material() -> None:
    found = keylist.problems([("a b", b"secret-material"), ("x" * 33, b"k" * 32), ("a", b"k" * 32),
                              ("a", b"k" * 32)], thirty_two, kind="key")
    assert found == [
        "keys: a kid is 1 to 32 of A-Z a-z 0-9 _ -, got 'a b'",
        "keys: the key of 'a b' must be 32 bytes",
        f"keys: a kid is 1 to 32 of A-Z a-z 0-9 _ -, got {'x' * 33!r}",
        "keys: kid 'a' is used twice",
    ]
    assert "secret-material" not in "; ".join(found)


def test_a_kid_that_is_no_string_is_a_problem_not_a_crash() -> None:
    assert keylist.problems([(None, b"k" * 32)], thirty_two, kind="key") == [  # type: ignore[list-item]
        "keys: a kid is 1 to 32 of A-Z a-z 0-9 _ -, got None"]
