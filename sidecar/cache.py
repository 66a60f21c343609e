"""Verdict cache: answers for credentials seen recently, so /auth rarely reaches the directory.

Entries are keyed by an HMAC of (username as typed after NFKC, password) under a random key made
at start-up: the cache holds no password, and its keys are useless outside this process. The name
is not folded any further: ``strasse`` and ``straße`` may be two directory entries, and only the
directory may decide which one a spelling means, so each spelling has its own verdict. Successes
(and refusals of valid users) live for ``ldap.cache_timeout``; failures only for
``cache.failure_timeout``. Both maps are bounded.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import TTLCache

V = TypeVar("V")


class VerdictCache(Generic[V]):
    def __init__(
        self,
        *,
        ttl: float,
        failure_ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = secrets.token_bytes(32)
        self._ok: TTLCache[bytes, V] | None = (
            TTLCache(max_entries, ttl, timer=clock) if ttl > 0 else None
        )
        self._failed: TTLCache[bytes, V] | None = (
            TTLCache(max_entries, failure_ttl, timer=clock) if failure_ttl > 0 else None
        )

    def key(self, username: str, password: str) -> bytes:
        # The NUL separator cannot occur in either part: both are checked for control characters.
        message = f"{username}\0{password}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def get(self, key: bytes) -> V | None:
        if self._ok is not None and (found := self._ok.get(key)) is not None:
            return found
        if self._failed is not None:
            return self._failed.get(key)
        return None

    def put(self, key: bytes, verdict: V, *, success: bool) -> None:
        store = self._ok if success else self._failed
        if store is not None:
            store[key] = verdict

    def clear(self) -> None:
        for store in (self._ok, self._failed):
            if store is not None:
                store.clear()

    def __len__(self) -> int:
        return sum(len(s) for s in (self._ok, self._failed) if s is not None)
