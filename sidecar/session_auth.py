"""The session side of /auth: a session cookie becomes a verdict.

:class:`SessionJar` puts sessions into cookies and takes them out again, refusing signed-out ones
(its :class:`~sidecar.sessions.Revocations`) and keeping groups too many for a cookie server-side;
:class:`SessionAuthenticator` turns a cookie into a verdict, re-checks it against its source every
``sessions.recheck_every`` seconds (through the :class:`~sidecar.sources.Registry`) and refreshes
it while in use. The login and logout pages that make and end sessions are in sidecar.signin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from cachetools import TTLCache

from sidecar.cookies import cookie_value
from sidecar.errors import AccessDenied, AuthError, FactorRequired, InvalidCredentials, SessionTooLarge, Unavailable
from sidecar.flight import SingleFlight
from sidecar.headers import HeaderWriter
from sidecar.metrics import NO_METRICS, Metrics
from sidecar.session_index import SessionIndex
from sidecar.sessions import CookieSettings, Revocations, Session, SessionCodec
from sidecar.sources import Registry
from sidecar.store import StoreUnavailable
from sidecar.store.fleet import Fleet
from sidecar.verdict import Verdict

log = logging.getLogger("sidecar.signin")

RETRY_UNREACHABLE = 30.0  # seconds before re-checking a session whose source did not answer
MAX_RENDERED = 10_000  # sessions whose rendered verdict is kept


class SessionJar:
    """Sessions into and out of cookies. Groups too many for a cookie (a few hundred long AD names)
    stay here instead, per user, for the session lifetime; with a fleet they are kept in its store
    too, so another replica (or this one after a restart) reads them there, and only without one
    (or when the store does not answer) are they read again from the user's source.

    The jar holds the :class:`Revocations` too: every cookie read goes through :meth:`decode`,
    which refuses signed-out sessions, so neither the codec's memo nor a rendered verdict can
    outlive a sign-out. It tells the :class:`SessionIndex` (the admin channel's list) of the
    sessions it makes and ends."""

    def __init__(self, codec: SessionCodec, sources: Registry, *, keep_for: float,
                 max_users: int = 5_000, revocations: Revocations | None = None,
                 index: SessionIndex | None = None, metrics: Metrics = NO_METRICS,
                 fleet: Fleet | None = None) -> None:
        self.codec = codec
        self.fleet = fleet
        self.keep_for = keep_for
        self._issued = metrics.sessions_issued
        self.sources = sources
        # Not `revocations or ...`: an empty list of revocations has a len of 0, and is the one to use.
        self.revocations = revocations if revocations is not None else Revocations(lifetime=codec.lifetime,
                                                                                   clock=codec.clock)
        self.index = index
        self._groups: TTLCache[tuple[str, str], tuple[tuple[str, ...], frozenset[str]]] = TTLCache(max_users, keep_for)

    def encode(self, session: Session) -> str:
        """The cookie value; raises SessionTooLarge only if even a session without groups is too large."""
        try:
            return self.codec.encode(session)
        except SessionTooLarge:
            who = session.identity
            kept = self._groups[(who.source, who.username)] = (who.groups, who.rule_groups)
            if self.fleet is not None:
                self.fleet.spawn("keep groups", functools.partial(self.fleet.store.keep_groups,
                                                                  (who.source, who.username), kept, self.keep_for),
                                 keep=True)
            bare = dataclasses.replace(who, groups=(), rule_groups=frozenset())
            return self.codec.encode(dataclasses.replace(session, identity=bare, groups_elsewhere=True))

    def issued(self, session: Session, client: str | None) -> None:
        """A sign-in made this session (its cookie is on its way), from ``client`` if known."""
        self._issued.inc()
        if self.index is not None:
            self.index.issued(session, client)

    def sign_out(self, value: str, *, everywhere: bool = False) -> Session | None:
        """Revoke the session in a cookie value (with ``everywhere``, every session of its user
        issued until now); the session, or None when the value held no current one."""
        session = self.open(value)
        if session is not None:
            who = session.identity
            if everywhere:
                self.revocations.revoke_user(who.source, who.username)
            else:
                self.revocations.revoke(session)
            if self.index is not None:
                if everywhere:
                    self.index.forget(who.username)
                else:
                    self.index.forget_session(session.id)
        return session

    def open(self, value: str) -> Session | None:
        """The current, not signed-out session in a cookie value, as the cookie holds it; else None."""
        session = self.codec.decode(value)
        return None if session is None or self.revocations.is_revoked(session) else session

    async def decode(self, value: str) -> Session | None:
        """The current session in a cookie value, its groups restored; None for any other value."""
        session = self.open(value)
        if session is None or not session.groups_elsewhere:
            return session
        return await self.restore(session)

    async def restore(self, session: Session) -> Session | None:
        """A session whose groups are kept here, with them (read again from its source if need be)."""
        who = session.identity
        kept = self._groups.get((who.source, who.username))
        if kept is None and self.fleet is not None:  # kept by another replica, or before a restart
            with contextlib.suppress(StoreUnavailable):
                kept = await self.fleet.call("groups", functools.partial(self.fleet.store.groups,
                                                                         (who.source, who.username)))
            if kept is not None:
                self._groups[(who.source, who.username)] = kept
        if kept is None:
            try:
                fresh = (await self.sources.renew(session)).identity  # through whichever source signed it in
            except AuthError as exc:
                log.warning("session of %s refused: its groups could not be read again: %s", who.username, exc.reason)
                return None
            kept = self._groups[(who.source, who.username)] = (fresh.groups, fresh.rule_groups)
        identity = dataclasses.replace(who, groups=kept[0], rule_groups=kept[1])
        return dataclasses.replace(session, identity=identity, groups_elsewhere=False)


class SessionAuthenticator:
    """The /auth side of browser sign-in: a session cookie becomes a verdict."""

    method = "session"

    def __init__(self, jar: SessionJar, cookie: CookieSettings, renew: Callable[[Session], Awaitable[Session]],
                 writer: HeaderWriter, *, recheck_every: float, max_age: int,
                 clock: Callable[[], float] = time.time,
                 client_address: Callable[[web.Request], str] | None = None, metrics: Metrics = NO_METRICS) -> None:
        self.jar = jar
        self._renewed = metrics.sessions_renewed
        self.index = jar.index
        self.client_address = client_address  # for the session index, read only when it is due
        self.codec = jar.codec
        self.cookie = cookie
        self.renew = renew  # the user's source describes them again (directory, users file, provider)
        self.writer = writer
        self.recheck_every = recheck_every
        self.max_age = max_age
        self._clock = clock
        self._prefix = cookie.cookie_name() + "="
        self._retry_at: dict[str, float] = {}
        self._rechecks: SingleFlight[tuple[str, str], Session] = SingleFlight()
        # Rendered verdicts by session: the codec's memo hands back the same Session for the same
        # cookie, so a cookie in use costs no header rendering. Holding the session keeps its id valid.
        self._verdicts: dict[int, tuple[Session, Verdict]] = {}

    async def authenticate(self, request: web.Request) -> Verdict | None:
        value = cookie_value(request.headers.get("Cookie"), self._prefix)
        if value is None:
            return None
        session = self.jar.open(value)  # no await on the common path: a coroutine costs as much as the rest
        if session is not None and session.pending:  # the password was right; the second factor is to come
            refusal = FactorRequired("a half-signed-in session (its second factor is still to come)")
            refusal.user = session.identity.username
            raise refusal
        if session is not None and session.groups_elsewhere:
            session = await self.jar.restore(session)
        if session is None:
            log.info("session cookie refused (invalid, expired, idle, signed out or from a retired key)")
            return None
        now = self._clock()
        index = self.index
        if index is not None and index.due(session.id, now):  # a lookup: most requests write nothing
            index.touch(session, now, self.client_address(request) if self.client_address is not None else None)
        if self.recheck_every and now - session.checked_at > self.recheck_every:
            return await self._rechecked(session, now)
        if self.codec.refresh_due(session):
            return self._verdict(self.codec.touched(session), renew=True)
        return self._verdict(session, renew=False)

    async def _rechecked(self, session: Session, now: float) -> Verdict:
        username = session.identity.username
        if self._retry_at.get(username, 0.0) > now:
            return self._verdict(session, renew=False)
        try:
            renewed = await self._recheck(session)
        except Unavailable as exc:
            # Signed-in people keep working while the directory is away; new sign-ins cannot.
            log.warning("session of %s not re-checked, kept for now: %s", username, exc.reason)
            self._retry_at[username] = now + RETRY_UNREACHABLE
            return self._verdict(session, renew=False)
        except (InvalidCredentials, AccessDenied) as exc:
            log.warning("session of %s ended by its re-check: %s", username, exc.reason)
            exc.set_cookie = self.cookie.clear_cookie_header()
            raise
        self._retry_at.pop(username, None)
        return self._verdict(dataclasses.replace(renewed, last_seen=now, checked_at=now), renew=True)

    async def _recheck(self, session: Session) -> Session:
        # One query to the source per user however many of their requests arrive at once.
        who = session.identity
        return await self._rechecks.run((who.source, who.username), lambda: self.renew(session))

    def _verdict(self, session: Session, *, renew: bool) -> Verdict:
        if not renew and (hit := self._verdicts.get(id(session))) is not None and hit[0] is session:
            return hit[1]
        cookie = None
        if renew:
            try:
                cookie = self.cookie.set_cookie_header(self.jar.encode(session), self.max_age)
            except SessionTooLarge:
                log.error("session of %s is too large to refresh; keeping the old cookie",
                          session.identity.username)
            else:
                self._renewed.inc()
        verdict = Verdict.allow(session.identity, self.writer.render(session.identity, session.methods), cookie,
                                methods=session.methods, factor_at=session.factor_at,
                                auth_time=max(session.issued_at, session.factor_at))
        if cookie is None:
            if len(self._verdicts) >= MAX_RENDERED:
                self._verdicts.clear()
            self._verdicts[id(session)] = (session, verdict)
        return verdict
