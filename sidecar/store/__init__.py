"""The state a fleet shares: regulation budgets and bans, sign-outs, kept group lists, refresh locks.

One :class:`Store` protocol, two implementations with one meaning (tests/test_store_contract.py
runs the same assertions on both): :class:`~sidecar.store.memory.MemoryStore`, in this process,
and :class:`~sidecar.store.redis_store.RedisStore`, in Redis or Valkey, shared by every replica and
worker. A store is asked off the hot path only: the cookie check reads the local view that
:class:`~sidecar.store.fleet.Fleet` keeps current (pub/sub, and a poll as a fallback).

Vocabulary: a *budget* is (kind, value), kind ``user`` (a casefolded name) or ``client`` (an
address, IPv6 by its /64); a *ticket* is one attempt's place in its budgets, returned by
:meth:`Store.settle`; a *revocation* is one signed-out session, or a user's "sign out everywhere".
Times are epoch seconds; a Redis store reads them from the Redis server's clock, so replicas with
skewed clocks still agree on windows and bans.

Fail closed: a store that does not answer raises :class:`StoreUnavailable`, never answers "no ban".
The callers then fall back to what they know locally (sidecar.regulation, sidecar.sessions).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

Budget = tuple[str, str]  # (kind, value): ("user", "alice") or ("client", "192.0.2.1")
Outcome = Literal["failed", "succeeded", "unknown"]
Groups = tuple[tuple[str, ...], frozenset[str]]  # (groups, rule groups) kept for a user's sessions
User = tuple[str, str]  # (source, username)


class StoreUnavailable(Exception):
    """The store did not answer in time, or at all: the caller goes on with what it knows locally."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Ban(NamedTuple):
    """A budget spent or being spent: ``kind`` user or client, ``value`` the casefolded name or the
    address (an IPv6 /64), ``remaining`` seconds of ban (0: not banned), ``failures`` in the window."""

    kind: str
    value: str
    remaining: float
    failures: int


@dataclass(frozen=True)
class Rules:
    """The regulation's budgets, as the configuration sets them; ``hold`` bounds how long a place
    taken by an attempt counts when its settlement never comes (a replica that died mid-attempt)."""

    max_failures: int
    window: float
    ban: float
    hold: float = 60.0


@dataclass(frozen=True)
class Spent:
    """Why a budget has no place: banned (``banned_for`` seconds more), or full of failures and
    attempts in flight (``busy`` when only attempts in flight fill it: they may yet succeed)."""

    kind: str
    value: str
    banned_for: float
    failures: int
    in_flight: int

    @property
    def busy(self) -> bool:
        return not self.banned_for and self.in_flight > 0

    def __str__(self) -> str:
        if self.banned_for:
            return f"{self.kind} {self.value!r}: banned for {self.banned_for:.0f} more seconds"
        return (f"{self.kind} {self.value!r}: {self.failures} failures and {self.in_flight} attempts in "
                "flight in the fleet")


@dataclass(frozen=True)
class Revoked:
    """One revocation: ``session`` (its id, refused until issued_at + lifetime) or ``user`` (every
    session of that user issued until ``at``). ``expires`` is when it can be forgotten."""

    kind: Literal["session", "user"]
    source: str
    username: str
    at: float  # the session's issued_at, or the user's mark
    expires: float
    id: str = ""


class Seen(NamedTuple):
    """One session as the fleet knows it, for ``auth-sidecar admin sessions`` (epoch seconds)."""

    id: str
    username: str
    source: str
    issued: float
    last_seen: float
    client: str | None


# A change another instance made, as pub/sub carries it: ("ban", budget, seconds), ("lift", budget, 0),
# ("revoke", Revoked).
Event = tuple[Literal["ban", "lift"], Budget, float] | tuple[Literal["revoke"], Revoked]
Listener = Callable[[Event], None]


class Store(Protocol):
    async def reserve(self, ticket: str, budgets: Sequence[Budget], rules: Rules) -> Spent | None:
        """A place for ``ticket`` in every budget, all or none; the first that has none, else None."""
        ...

    async def settle(self, ticket: str, budgets: Sequence[Budget], outcome: Outcome, rules: Rules) -> list[Budget]:
        """Return the ticket's places: ``failed`` counts one failure in each (a ticket never
        reserved counts too), ``succeeded`` clears a user budget's failures; the bans it started."""
        ...

    async def bans(self, rules: Rules) -> list[Ban]:
        """Every budget banned or counting failures now."""
        ...

    async def lift(self, budgets: Sequence[Budget], rules: Rules) -> list[Ban]:
        """End these budgets' bans and forget their failures; what was lifted."""
        ...

    async def revoke(self, revoked: Revoked) -> None:
        ...

    async def revocations(self) -> list[Revoked]:
        """Every revocation not yet expired."""
        ...

    async def keep_groups(self, user: User, groups: Groups, ttl: float) -> None:
        ...

    async def groups(self, user: User) -> Groups | None:
        ...

    async def note_session(self, seen: Seen, ttl: float, per_user: int) -> None:
        """Remember a session of the user (the ``per_user`` last seen are kept), for ``ttl`` seconds."""
        ...

    async def sessions_of(self, username: str) -> list[Seen]:
        """Every session noted for the user (any spelling: names are casefolded)."""
        ...

    async def forget_sessions(self, username: str, session_id: str | None = None) -> None:
        """Forget one session of the user, or (None) all of them."""
        ...

    async def lock(self, name: str, ttl: float) -> str | None:
        """A token if this caller now holds ``name`` (for ``ttl`` seconds at most), else None."""
        ...

    async def unlock(self, name: str, token: str) -> None:
        """Let ``name`` go, if ``token`` still holds it."""
        ...

    async def revision(self) -> int:
        """A number that changes with every ban, lift and revocation: what a poll compares."""
        ...

    async def ping(self) -> None:
        ...

    async def listen(self, listener: Listener, ready: Callable[[], Awaitable[None]]) -> None:
        """Call ``listener`` with every change any instance makes, until cancelled; ``ready`` once
        subscribed (each time again after a reconnection: the caller re-reads what it missed)."""
        ...

    async def close(self) -> None:
        ...
