"""Verdict cache: answers for credentials seen recently, so /auth rarely reaches the directory.

Entries are keyed by a keyed hash (:class:`Fingerprint`) of (username as typed after NFKC,
password) under a random key made at start-up: the cache holds no password, and its keys are
useless outside this process. The name is not folded any further: ``strasse`` and ``straße`` may
be two directory entries, and only the directory may decide which one a spelling means, so each
spelling has its own verdict. Successes (and refusals of valid users) live for
``ldap.cache_timeout``; failures only for ``cache.failure_timeout``. Both maps are bounded.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from sidecar.metrics import NO_METRICS, Metrics

K = TypeVar("K")
V = TypeVar("V")


class Fingerprint:
    """What a memo of credentials is keyed by: a keyed BLAKE2b under a key made at start-up, so the
    memo holds no credential and its keys are useless outside this process. One call on the hot
    path of every cookie, token and Basic value (half the time of an HMAC-SHA256 of a cookie)."""

    __slots__ = ("_key",)

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def __call__(self, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=self._key, digest_size=32).digest()


class ExpiringMap(Generic[K, V]):
    """A bounded map whose entries lapse ``ttl`` seconds after they were put: a dict lookup and
    one clock reading on the hot path (cachetools' TTLCache costs several times that). Entries are
    kept in the order they lapse, so a put drops lapsed ones from the front, and when full the one
    put longest ago."""

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[K, tuple[V, float]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] > self._clock():
            return entry[0]
        self._entries.pop(key, None)
        return None

    def __setitem__(self, key: K, value: V) -> None:
        entries = self._entries
        entries.pop(key, None)  # a new put goes to the end of the line: the order is that of expiry
        now = self._clock()
        while entries:
            oldest = next(iter(entries))
            if len(entries) < self._max and entries[oldest][1] > now:
                break
            del entries[oldest]  # lapsed, or the longest held when full
        entries[key] = (value, now + self._ttl)

    def pop(self, key: K, default: V | None = None) -> V | None:
        entry = self._entries.pop(key, None)
        return default if entry is None else entry[0]

    def values(self) -> list[V]:
        now = self._clock()
        return [value for value, until in self._entries.values() if until > now]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class VerdictCache(Generic[V]):
    def __init__(
        self,
        *,
        ttl: float,
        failure_ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._fingerprint = Fingerprint()
        self._lookups = metrics.lookups("verdict")
        self._ok: ExpiringMap[bytes, V] | None = ExpiringMap(max_entries, ttl, clock) if ttl > 0 else None
        self._failed: ExpiringMap[bytes, V] | None = (
            ExpiringMap(max_entries, failure_ttl, clock) if failure_ttl > 0 else None
        )

    def key(self, username: str, password: str) -> bytes:
        # The NUL separator cannot occur in either part: both are checked for control characters.
        return self._fingerprint(f"{username}\0{password}".encode())

    def get(self, key: bytes) -> V | None:
        """The verdict kept for a key, counted as a hit or a miss."""
        found = self.peek(key)
        (self._lookups.miss if found is None else self._lookups.hit).inc()
        return found

    def peek(self, key: bytes) -> V | None:
        """The same, not counted: a second look within one request."""
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
