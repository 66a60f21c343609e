"""The store in this process: the reference for what a store means (the Redis one matches it).

A single instance does not need it: its regulator, revocations and jar keep their own state
(``state.backend: memory``). It serves the contract suite, and any embedding that wants the
:class:`~sidecar.store.Store` protocol without a server. Listeners are called synchronously, so
two views over one MemoryStore behave as two replicas over one Redis.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from sidecar.store import Ban, Budget, Event, Groups, Listener, Outcome, Revoked, Rules, Seen, Spent, User


@dataclass
class _Budget:
    failures: dict[str, float] = field(default_factory=dict)  # ticket -> when it failed
    in_flight: dict[str, float] = field(default_factory=dict)  # ticket -> until when it counts
    banned_until: float = 0.0


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._budgets: dict[Budget, _Budget] = {}
        self._revoked: dict[tuple[str, str, str], Revoked] = {}
        self._groups: dict[User, tuple[Groups, float]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._seen: dict[str, tuple[dict[str, Seen], float]] = {}  # casefolded name -> (sessions, until)
        self._listeners: list[Listener] = []
        self._revision = 0

    def _budget(self, budget: Budget, rules: Rules, now: float) -> _Budget:
        found = self._budgets.setdefault(budget, _Budget())
        found.failures = {t: at for t, at in found.failures.items() if at > now - rules.window}
        found.in_flight = {t: until for t, until in found.in_flight.items() if until > now}
        return found

    async def reserve(self, ticket: str, budgets: Sequence[Budget], rules: Rules) -> Spent | None:
        now = self._clock()
        found = [(b, self._budget(b, rules, now)) for b in budgets]
        for (kind, value), state in found:
            if state.banned_until > now:
                return Spent(kind, value, state.banned_until - now, 0, 0)
            if len(state.failures) + len(state.in_flight) >= rules.max_failures:
                return Spent(kind, value, 0.0, len(state.failures), len(state.in_flight))
        for _, state in found:
            state.in_flight[ticket] = now + rules.hold
        return None

    async def settle(self, ticket: str, budgets: Sequence[Budget], outcome: Outcome, rules: Rules) -> list[Budget]:
        now = self._clock()
        started = []
        for budget in budgets:
            state = self._budget(budget, rules, now)
            state.in_flight.pop(ticket, None)
            if outcome == "failed":
                state.failures[ticket] = now
                if len(state.failures) >= rules.max_failures and state.banned_until <= now:
                    state.banned_until = now + rules.ban
                    state.failures.clear()
                    started.append(budget)
            elif outcome == "succeeded" and budget[0] == "user" and state.banned_until <= now:
                state.failures.clear()
        for budget in started:
            self._tell(("ban", budget, rules.ban))
        return started

    async def bans(self, rules: Rules) -> list[Ban]:
        now = self._clock()
        found = []
        for budget in list(self._budgets):
            state = self._budget(budget, rules, now)
            remaining = max(0.0, state.banned_until - now)
            if remaining or state.failures:
                found.append(Ban(budget[0], budget[1], remaining, len(state.failures)))
            elif not state.in_flight:
                del self._budgets[budget]
        return sorted(found, key=lambda ban: (not ban.remaining, ban.kind, ban.value))

    async def lift(self, budgets: Sequence[Budget], rules: Rules) -> list[Ban]:
        now = self._clock()
        lifted = []
        for budget in budgets:
            if budget not in self._budgets:
                continue
            state = self._budget(budget, rules, now)
            remaining = max(0.0, state.banned_until - now)
            if remaining or state.failures:
                lifted.append(Ban(budget[0], budget[1], remaining, len(state.failures)))
            state.banned_until = 0.0
            state.failures.clear()
            self._tell(("lift", budget, 0.0))
        return lifted

    async def revoke(self, revoked: Revoked) -> None:
        key = (revoked.kind, revoked.id, f"{revoked.source}\0{revoked.username}" if revoked.kind == "user" else "")
        held = self._revoked.get(key)
        if held is None or held.at < revoked.at:
            self._revoked[key] = revoked
        self._tell(("revoke", revoked))

    async def revocations(self) -> list[Revoked]:
        now = self._clock()
        self._revoked = {k: r for k, r in self._revoked.items() if r.expires > now}
        return list(self._revoked.values())

    async def keep_groups(self, user: User, groups: Groups, ttl: float) -> None:
        self._groups[user] = (groups, self._clock() + ttl)

    async def groups(self, user: User) -> Groups | None:
        found = self._groups.get(user)
        return found[0] if found is not None and found[1] > self._clock() else None

    async def note_session(self, seen: Seen, ttl: float, per_user: int) -> None:
        key = seen.username.casefold()
        held, until = self._seen.get(key, ({}, 0.0))
        sessions = held if until > self._clock() else {}
        sessions[seen.id] = seen
        while len(sessions) > per_user:
            del sessions[min(sessions.values(), key=lambda s: s.last_seen).id]
        self._seen[key] = (sessions, self._clock() + ttl)

    async def sessions_of(self, username: str) -> list[Seen]:
        sessions, until = self._seen.get(username.casefold(), ({}, 0.0))
        return list(sessions.values()) if until > self._clock() else []

    async def forget_sessions(self, username: str, session_id: str | None = None) -> None:
        key = username.casefold()
        if session_id is None:
            self._seen.pop(key, None)
        elif key in self._seen:
            self._seen[key][0].pop(session_id, None)

    async def lock(self, name: str, ttl: float) -> str | None:
        now = self._clock()
        held = self._locks.get(name)
        if held is not None and held[1] > now:
            return None
        token = secrets.token_hex(8)
        self._locks[name] = (token, now + ttl)
        return token

    async def unlock(self, name: str, token: str) -> None:
        if self._locks.get(name, ("", 0.0))[0] == token:
            del self._locks[name]

    async def revision(self) -> int:
        return self._revision

    async def ping(self) -> None:
        return None

    async def listen(self, listener: Listener, ready: Callable[[], Awaitable[None]]) -> None:
        self._listeners.append(listener)
        try:
            await ready()
            await asyncio.Event().wait()  # until cancelled
        finally:
            self._listeners.remove(listener)

    async def close(self) -> None:
        return None

    def _tell(self, event: Event) -> None:
        self._revision += 1
        for listener in list(self._listeners):
            listener(event)
