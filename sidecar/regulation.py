"""Brute-force regulation: failed logins counted per username and per client address.

Past ``max_failures`` failures within ``window`` seconds, that username (or address) is refused
for ``ban`` seconds without asking the directory. So an attacker cannot lock a real Active
Directory account out through us, as long as ``max_failures`` stays below the directory's own
lockout threshold. A success clears the username's count, never the address's: one valid account
must not reset an attacker's address.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import TTLCache


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    banned_until: float = 0.0


class Regulator:
    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        ban: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.ban = ban
        self._clock = clock
        # A record is useless once both its window and its ban are over.
        self._records: TTLCache[tuple[str, str], _Record] = TTLCache(
            max_entries, max(window, ban), timer=clock
        )

    @staticmethod
    def _keys(username: str | None, client: str | None) -> list[tuple[str, str]]:
        keys = []
        if username:
            keys.append(("user", username.casefold()))
        if client:
            keys.append(("client", client))
        return keys

    def banned(self, username: str | None, client: str | None) -> str | None:
        """Why this attempt is refused right now, or None when it may go ahead."""
        now = self._clock()
        for kind, value in self._keys(username, client):
            record = self._records.get((kind, value))
            if record is not None and record.banned_until > now:
                return f"{kind} {value!r} is banned for {record.banned_until - now:.0f} more seconds"
        return None

    def failed(self, username: str | None, client: str | None) -> list[str]:
        """Count a failure; return a description of each ban it starts (for the log)."""
        now = self._clock()
        started = []
        for key in self._keys(username, client):
            record = self._records.get(key) or _Record()
            failures = record.failures
            failures.append(now)
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            if len(failures) >= self.max_failures and record.banned_until <= now:
                record.banned_until = now + self.ban
                failures.clear()
                started.append(f"{key[0]} {key[1]!r} banned for {self.ban:g} s after "
                               f"{self.max_failures} failures in {self.window:g} s")
            self._records[key] = record  # re-inserting renews the entry's lifetime
        return started

    def succeeded(self, username: str | None) -> None:
        if username:
            record = self._records.get(("user", username.casefold()))
            if record is not None and record.banned_until <= self._clock():
                record.failures.clear()
