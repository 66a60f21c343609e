"""Key lists: the (kid, key) pairs of session keys and signing keys, checked one way.

The first key of a list is the one in use (it encrypts or signs) and every key is accepted (it
decrypts or is published), so a key rotates by putting a new one first. A kid is what a header
names the key by: 1 to 32 of ``A-Z a-z 0-9 _ -``, and no two keys share one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

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
