"""The sessions this process knows, per user: what ``auth-sidecar admin sessions USER`` lists.

A session enters when this process issues it (:meth:`SessionIndex.issued`, where every sign-in
ends) or first sees its cookie (:meth:`SessionIndex.touch`, from /auth: a session issued before a
restart, or by another instance behind the same proxy). The cookie path asks :meth:`due` first:
one dict lookup and a comparison. Last seen and the client address are written at most every
``touch_every`` seconds, so most requests write nothing.

With a fleet (:meth:`SessionIndex.share`) each session noted here is noted in the fleet's store
too, in the background (the cookie path never waits for it), and the admin channel asks the store
(:meth:`SessionIndex.everywhere`), so ``sessions USER`` lists the sessions of every replica.

Informational only: nothing is allowed or refused by what it holds. Signing a user out everywhere
goes through :class:`~sidecar.sessions.Revocations` for every source whether or not the index knows
the sessions, so an index that has dropped one cannot let it in again. Bounded: ``max_users``
users (the longest unseen go first) of ``per_user`` sessions each (likewise). Sessions past their
lifetime or idle timeout are left out of every answer. On the event loop only, like the jar.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.sessions import Session
from sidecar.store import Seen, StoreUnavailable
from sidecar.store.fleet import Fleet

TOUCH_EVERY = 60.0  # seconds: how stale "last seen" may be, and how often a cookie in use writes
UNKNOWN = "-"  # the client of a session seen where no address could be read


@dataclass(slots=True)
class Known:
    """One session as the index knows it (times in epoch seconds)."""

    id: str
    username: str
    source: str
    issued: float
    last_seen: float
    client: str | None  # the address it was last seen from; None until /auth sees it


class SessionIndex:
    def __init__(self, *, lifetime: float, idle_timeout: float, max_users: int = 10_000, per_user: int = 16,
                 touch_every: float = TOUCH_EVERY, clock: Callable[[], float] = time.time) -> None:
        if not (max_users >= 1 and per_user >= 1):
            raise ValueError("max_users and per_user must be at least 1")
        self.lifetime = lifetime
        self.idle_timeout = idle_timeout
        self.max_users = max_users
        self.per_user = per_user
        self.touch_every = touch_every
        self._clock = clock
        self._users: OrderedDict[str, dict[str, Known]] = OrderedDict()  # casefolded name, least recent first
        self._ids: dict[str, Known] = {}
        self._fleet: Fleet | None = None

    def share(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def _publish(self, session_id: str) -> None:
        fleet, known = self._fleet, self._ids.get(session_id)
        if fleet is None or known is None:
            return
        seen = Seen(known.id, known.username, known.source, known.issued, known.last_seen, known.client)
        fleet.spawn("note session", functools.partial(fleet.store.note_session, seen, self.lifetime, self.per_user))

    async def everywhere(self, username: str) -> tuple[list[Known], bool]:
        """The user's current sessions in the whole fleet (this instance's own if the store does not
        answer), and whether the fleet's were read; without a fleet, this instance's and True."""
        here = {known.id: known for known in self.sessions(username)}
        fleet = self._fleet
        if fleet is None:
            return list(here.values()), True
        try:
            found = await fleet.call("sessions", functools.partial(fleet.store.sessions_of, username))
        except StoreUnavailable:
            return list(here.values()), False
        now = self._clock()
        for seen in found:
            known = Known(*seen)
            if self._current(known, now) and (seen.id not in here or here[seen.id].last_seen < known.last_seen):
                here[seen.id] = known
        return sorted(here.values(), key=lambda k: k.last_seen, reverse=True), True

    def retune(self, *, lifetime: float, idle_timeout: float) -> None:
        """Lifetimes from a reloaded configuration; what is known stays."""
        self.lifetime, self.idle_timeout = lifetime, idle_timeout

    # -- fed by sign-in and /auth ----------------------------------------------------------------

    def issued(self, session: Session, client: str | None) -> None:
        """A session this process has just made."""
        self._note(session, session.issued_at, client)
        self._publish(session.id)

    def due(self, session_id: str, now: float) -> bool:
        """Whether :meth:`touch` has something to write for this session (the cookie path's check)."""
        known = self._ids.get(session_id)
        return known is None or known.client is None or now - known.last_seen >= self.touch_every

    def touch(self, session: Session, now: float, client: str | None) -> None:
        """The session's cookie was seen now, from ``client``."""
        self._note(session, now, client or UNKNOWN)
        self._publish(session.id)

    def _note(self, session: Session, now: float, client: str | None) -> None:
        known = self._ids.get(session.id)
        if known is not None:
            known.last_seen = max(known.last_seen, now)
            known.client = client if client not in (None, UNKNOWN) else known.client or client
            self._users.move_to_end(known.username.casefold())
            return
        who = session.identity
        key = who.username.casefold()
        sessions = self._users.get(key)
        if sessions is None:
            while len(self._users) >= self.max_users:
                _, dropped = self._users.popitem(last=False)
                for session_id in dropped:
                    self._ids.pop(session_id, None)
            sessions = self._users[key] = {}
        else:
            self._users.move_to_end(key)
        if len(sessions) >= self.per_user:
            oldest = min(sessions.values(), key=lambda entry: entry.last_seen)
            del sessions[oldest.id]
            self._ids.pop(oldest.id, None)
        known = Known(session.id, who.username, who.source, session.issued_at, max(now, session.last_seen), client)
        sessions[session.id] = self._ids[session.id] = known

    # -- read and pruned by the admin channel and sign-out -----------------------------------------

    def sessions(self, username: str) -> list[Known]:
        """The user's current sessions (any spelling of the name), last seen first."""
        found = self._users.get(username.casefold(), {})
        now = self._clock()
        return sorted((k for k in found.values() if self._current(k, now)), key=lambda k: k.last_seen, reverse=True)

    def forget(self, username: str) -> list[Known]:
        """Drop every session of the user (signed out everywhere); those that were current."""
        found = self._users.pop(username.casefold(), {})
        for session_id in found:
            self._ids.pop(session_id, None)
        if self._fleet is not None:
            self._fleet.spawn("forget sessions", functools.partial(self._fleet.store.forget_sessions, username))
        now = self._clock()
        return [k for k in found.values() if self._current(k, now)]

    def forget_session(self, session_id: str) -> None:
        """Drop one session (signed out)."""
        known = self._ids.pop(session_id, None)
        if known is not None and self._fleet is not None:
            self._fleet.spawn("forget session", functools.partial(self._fleet.store.forget_sessions,
                                                                  known.username, session_id))
        if known is not None:
            key = known.username.casefold()
            sessions = self._users.get(key)
            if sessions is not None:
                sessions.pop(session_id, None)
                if not sessions:
                    del self._users[key]

    def counts(self) -> tuple[int, int]:
        """How many current sessions are known, and of how many users."""
        now = self._clock()
        users = sessions = 0
        for entries in self._users.values():
            current = sum(self._current(k, now) for k in entries.values())
            sessions += current
            users += bool(current)
        return sessions, users

    def _current(self, known: Known, now: float) -> bool:
        # last_seen may lag by touch_every: the idle timeout is read that much more leniently.
        return (now - known.issued <= self.lifetime
                and now - known.last_seen <= self.idle_timeout + self.touch_every)
