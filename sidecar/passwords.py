"""The password verifier: username + password -> verdict, shared by HTTP Basic and the login form.

The verdict cache first (no source asked), then the regulation's budgets (a place taken before any
source is asked), then the password sources in their order. Concurrent misses for the same
credentials share one round trip.
"""

from __future__ import annotations

import functools
import logging

from sidecar.cache import VerdictCache
from sidecar.errors import AccessDenied, AccountRefused, BindUnanswered, InvalidCredentials, Throttled
from sidecar.flight import SingleFlight
from sidecar.headers import HeaderWriter
from sidecar.logs import audit
from sidecar.regulation import Regulator, Ticket
from sidecar.sources import Sources
from sidecar.verdict import Verdict

log = logging.getLogger("sidecar.regulation")


class PasswordVerifier:
    """Username + password -> verdict (see the module's docstring)."""

    def __init__(self, sources: Sources, cache: VerdictCache[Verdict], writer: HeaderWriter,
                 regulator: Regulator | None = None) -> None:
        self.sources = sources
        self.cache = cache
        self.writer = writer
        self.regulator = regulator
        self._flights: SingleFlight[bytes, Verdict] = SingleFlight()

    async def verify(self, username: str, password: str, client: str | None = None,
                     key: bytes | None = None) -> Verdict:
        """The allowing verdict for these credentials; their refusal raised (AuthError). key: their
        cache key (``cache.key(username, password)``) when the caller has it already."""
        key = key or self.cache.key(username, password)
        verdict = self.cached(username, key, client)
        return verdict if verdict is not None else await self.uncached(username, password, client, key)

    def cached(self, username: str, key: bytes, client: str | None) -> Verdict | None:
        """The kept verdict for the credentials of this key (``cache.key``), judged now (a ban may
        refuse it: raised); None when none is kept. No password needed."""
        known = self.cache.get(key)
        return None if known is None else self._answered(known, username, client).settle()

    async def uncached(self, username: str, password: str, client: str | None, key: bytes) -> Verdict:
        """verify after ``cached`` found nothing: the sources asked, once for concurrent equal credentials."""
        known = await self._flights.join(key)  # asked already: no second look at the sources
        if known is not None:
            return self._answered(known, username, client).settle()
        regulator = self.regulator
        ticket = await regulator.admit(username, client) if regulator is not None else None
        # admit may have waited: the same credentials may be under way, or answered, by now. Then
        # this attempt asks no source, and its place goes back (no await until run: nothing can
        # start in between).
        known = self.cache.peek(key)
        if known is not None or self._flights.running(key):
            if regulator is not None and ticket is not None:
                regulator.settle(ticket, "unknown")
            known = known or await self._flights.join(key)
            assert known is not None  # answered, or under way until it is
            return self._answered(known, username, client).settle()
        attempt = await self._flights.run(key, lambda: self._attempt(key, username, password, ticket, client))
        return attempt.settle()

    def _answered(self, verdict: Verdict, username: str, client: str | None) -> Verdict:
        """A verdict that asked no source now: a ban still refuses it, except a success from an
        address this user signed in from (see sidecar.regulation)."""
        regulator = self.regulator
        if regulator is None:
            return verdict
        if verdict.identity is not None:
            resolved = verdict.identity.username
            if not regulator.renew(resolved, client):  # known lately (and renewed): never banned out
                why = regulator.banned(username, client) or regulator.banned(resolved, None)
                if why is not None:
                    return Verdict.refuse(Throttled(why))
                regulator.remember_client(resolved, client)  # in use from here: known as long as it is
            return verdict
        if isinstance(verdict.refusal, AccountRefused):
            # A right password for an account that may not sign in: a ban hides it as it hides a success.
            why = regulator.banned(username, client)
            return verdict if why is None else Verdict.refuse(Throttled(why))
        if isinstance(verdict.refusal, InvalidCredentials):
            for ban in regulator.failed(username, client):
                log.warning("regulation: %s", ban, extra=audit("ban", user=username, client=client, reason=ban))
        return verdict

    async def _attempt(self, key: bytes, username: str, password: str, ticket: Ticket | None,
                       client: str | None) -> Verdict:
        """One look at the sources, run to its end even when the caller leaves: its verdict is
        cached and its outcome settled in the regulation's budgets."""
        outcome, resolved = "unknown", None
        try:
            try:
                verdict = await self._ask_sources(username, password, ticket)
            except BindUnanswered:
                outcome = "failed"  # the password may have reached the directory: it counts
                raise
            if not isinstance(verdict.refusal, Throttled):  # a budget spent now says nothing later
                self.cache.put(key, verdict, success=not isinstance(verdict.refusal, InvalidCredentials))
            if isinstance(verdict.refusal, InvalidCredentials):
                outcome = "failed"
            elif verdict.identity is not None:
                outcome, resolved = "succeeded", verdict.identity.username
                # The audit record of a Basic client's sign-in: once per cache_timeout, not per request.
                log.info("password of %s checked by %s client=%s", resolved, verdict.identity.source, client,
                         extra=audit("password_verified", user=resolved, source=verdict.identity.source,
                                     client=client))
            return verdict
        finally:
            if self.regulator is not None and ticket is not None:
                for ban in self.regulator.settle(ticket, outcome, resolved, client):
                    log.warning("regulation: %s", ban, extra=audit("ban", user=username, client=client, reason=ban))
                await self.regulator.written(ticket)  # a failure: in the fleet's budgets before the answer

    async def _ask_sources(self, username: str, password: str, ticket: Ticket | None) -> Verdict:
        regulator = self.regulator
        admit = None
        if regulator is not None and ticket is not None:
            admit = functools.partial(regulator.admit_resolved, ticket)
        try:
            identity = await self.sources.check_password(username, password, admit)
            return Verdict.allow(identity, self.writer.render(identity))
        except (InvalidCredentials, AccessDenied, Throttled) as exc:
            return Verdict.refuse(exc)
