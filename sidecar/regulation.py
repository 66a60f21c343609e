"""Brute-force regulation: a budget of wrong passwords per username and per client address.

The guarantee: within any ``window`` seconds, at most ``max_failures`` wrong passwords for one
username (and from one client address) reach a directory, whatever the concurrency. An attempt
reserves its place in every budget it draws on *before* the directory is asked, so a burst of
parallel attempts cannot overrun it; the reservation becomes a failure, or is returned, when the
answer comes. A budget spent starts a ban of ``ban`` seconds. As long as ``max_failures`` stays
below the directory's own lockout threshold, no account can be locked out through the sidecar.

A username counts both as typed (casefolded) and as the directory spelled it once it has found
the entry (``İrİs`` and ``iris`` draw on one budget). A success clears the username's failures,
never the address's: one valid account must not reset an attacker's address.

Strangers must not lock a user out of what already works. A ban stops *new* password checks
only. Sessions are never affected, and a login the verdict cache already knows to be right
(no directory is asked) is still honoured from an address where this user signed in before
(``remember`` seconds): from any other address it is refused like every other attempt, so a
banned name offers an attacker no oracle. What a ban costs the real user is a fresh password
check from a new address, until the ban ends.

Bounded and fail closed: a record that still holds a failure, a ban or an attempt is never
evicted to make room; when ``max_entries`` names and addresses are all in use, new ones are refused
until some expire. A record that holds none of them is not kept at all: users who sign in take no
place in the table. IPv6 clients count per /64, the block one subscriber gets.

An operator sees the bans and the failures counting (:meth:`Regulator.bans`) and lifts one
(:meth:`Regulator.lift`) through ``auth-sidecar admin``: a tester who mistyped waits for no restart.

Across a fleet (:meth:`Regulator.share`, ``state.backend: redis``) every budget is also kept in
the shared store, whose Lua scripts check and reserve all of an attempt's budgets in one atomic
step, so the guarantee holds for the fleet as a whole, not per instance. The local budgets go on
counting as before and are checked first: what this instance knows always applies. Bans the fleet
starts are mirrored here by pub/sub, so a cached login (which asks no store) still meets them. When
the store does not answer within ``state.timeout``, the attempt goes on against the local budgets
alone, and :class:`~sidecar.store.fleet.Fleet` says so in the log, the metrics and /readyz.

Thread-safe: the directory's worker threads call :meth:`Regulator.admit_resolved`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import TTLCache

from sidecar.errors import Throttled
from sidecar.logs import audit
from sidecar.metrics import NO_METRICS, Metrics
from sidecar.store import Ban, Budget, Event, Outcome, Rules, Spent, StoreUnavailable
from sidecar.store.fleet import Fleet

log = logging.getLogger("sidecar.regulation")

Key = tuple[str, str]
FULL_WARNING_EVERY = 60.0  # seconds between two warnings that the table is full
BUSY_POLL = 0.05  # seconds between two looks at a fleet budget held only by attempts in flight
HOLD = 60.0  # seconds an attempt's place in a fleet budget counts if its instance never settles it


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    in_flight: int = 0
    banned_until: float = 0.0


__all__ = ["Ban", "Regulator", "Ticket"]


class _Busy(Exception):
    """A budget is held only by attempts still in flight: wait for them rather than refuse."""


@dataclass
class Ticket:
    """The budgets one attempt holds a place in, until :meth:`Regulator.settle` returns them."""

    records: list[tuple[Key, _Record]]
    settled: bool = False
    shared: str | None = None  # its id in the fleet's store, when it holds places there
    budgets: list[Budget] = field(default_factory=list)  # the fleet budgets it holds a place in
    loop: asyncio.AbstractEventLoop | None = None  # where admit_resolved reaches the store from a thread
    writing: asyncio.Task[None] | None = None  # its failure being written to the fleet's store


class Regulator:
    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        ban: float,
        remember: float = 3600.0,
        wait: float = 10.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.max_failures = max_failures
        self._banned = metrics.bans()
        self.window = window
        self.ban = ban
        self._clock = clock
        self._lock = threading.Lock()
        # A record is useless once both its window and its ban are over; one in use is held by its ticket.
        self.max_entries = max_entries
        self.wait = wait
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        # Never full in the cache's own sense: _reserve refuses new keys first (nothing is evicted).
        self._records: TTLCache[Key, _Record] = TTLCache(max_entries + 1, max(window, ban), timer=clock)
        self._full_warned = -FULL_WARNING_EVERY
        # (username, address) pairs that signed in, with when that stops counting: their cached logins
        # outlive a ban of the name. A plain dict: renewing costs one lookup on the cached path.
        self.remember = remember
        self._known: dict[Key, float] = {}
        self._fleet: Fleet | None = None

    def share(self, fleet: Fleet) -> None:
        """Keep the budgets in the fleet's store too (see the module's docstring)."""
        if self._fleet is None:
            self._fleet = fleet
            fleet.watch(self._heard, self._resync)

    @property
    def rules(self) -> Rules:
        return Rules(self.max_failures, self.window, self.ban, max(HOLD, 2 * self.wait))

    def retune(self, *, max_failures: int, window: float, ban: float, remember: float) -> None:
        """New budgets from a reloaded configuration; the failures, bans and known addresses stay."""
        with self._lock:
            self.max_failures, self.window, self.ban, self.remember = max_failures, window, ban, remember
            records = self._records
            self._records = TTLCache(self.max_entries + 1, max(window, ban), timer=self._clock)
            self._records.update(records.items())  # each lives on from now: nothing is forgotten early

    @staticmethod
    def _keys(username: str | None, client: str | None) -> list[Key]:
        keys = []
        if username:
            keys.append(("user", username.casefold()))
        if client:
            keys.append(("client", _client_key(client)))
        return keys

    def _spent(self, record: _Record, now: float) -> str | None:
        """Why this budget has no place now (banned, or failures and attempts fill it), or None."""
        if record.banned_until > now:
            return f"banned for {record.banned_until - now:.0f} more seconds"
        failures = record.failures
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) + record.in_flight >= self.max_failures:
            return (f"{len(failures)} failures and {record.in_flight} attempts in flight "
                    f"within {self.window:g} s")
        return None

    def _busy(self, record: _Record, now: float) -> bool:
        """Whether the budget is full only for attempts in flight, which may yet succeed."""
        return record.banned_until <= now and len(record.failures) < self.max_failures

    def banned(self, username: str | None, client: str | None) -> str | None:
        """Why no password may be checked for this attempt right now, or None when one may."""
        now = self._clock()
        with self._lock:
            for key in self._keys(username, client):
                record = self._records.get(key)
                if record is not None and (why := self._spent(record, now)) is not None:
                    return f"{key[0]} {key[1]!r}: {why}"
        return None

    def known(self, username: str, client: str | None) -> bool:
        """Whether this user signed in from this address lately (see the module's docstring)."""
        return client is not None and self._known.get((username.casefold(), client), 0.0) > self._clock()

    def renew(self, username: str, client: str | None) -> bool:
        """known(), and when it is, remember_client() in the same look: a kept verdict's hot path."""
        if client is None:
            return False
        now, key = self._clock(), (username.casefold(), client)
        until = self._known.get(key, 0.0)
        if until <= now:
            return False
        if until - now <= self.remember / 2:
            self._remember(key, now)
        return True

    def remember_client(self, username: str, client: str | None) -> None:
        """This user signed in from this address now (a fresh success, or a cached one honoured)."""
        if client is None:
            return
        now, key = self._clock(), (username.casefold(), client)
        if self._known.get(key, 0.0) - now > self.remember / 2:
            return  # renewed lately: the hot path pays a lookup, not a write
        self._remember(key, now)

    def _remember(self, key: Key, now: float) -> None:
        with self._lock:
            if len(self._known) >= self.max_entries:
                self._known = {k: until for k, until in self._known.items() if until > now}
                if len(self._known) >= self.max_entries:
                    return  # full of live entries: this one goes unremembered (only a convenience)
            self._known[key] = now + self.remember

    async def admit(self, username: str | None, client: str | None) -> Ticket:
        """A place in the username's and the address's budgets; Throttled when either is spent.

        A budget held only by attempts in flight (a burst of sign-ins behind one office address)
        is waited for, up to ``wait`` seconds: each attempt that ends frees or spends its place."""
        ticket, keys = Ticket([]), self._keys(username, client)
        loop = asyncio.get_running_loop()
        end = loop.time() + self.wait
        while True:
            try:
                self._reserve(ticket, keys, wait=True)
                if self._fleet is not None:
                    await self._admit_shared(ticket, keys, loop, end)
                return ticket
            except _Busy as busy:
                remaining = end - loop.time()
                if remaining <= 0:
                    raise Throttled(f"{busy}, for {self.wait:g} s") from None
                waiter = loop.create_future()
                with self._lock:
                    self._waiters.append((loop, waiter))
                try:
                    await asyncio.wait_for(waiter, remaining)
                except TimeoutError:
                    pass

    async def _admit_shared(self, ticket: Ticket, keys: list[Key], loop: asyncio.AbstractEventLoop,
                            end: float) -> None:
        """The same places in the fleet's budgets; Throttled (the local places returned) when one has none."""
        fleet = self._fleet
        assert fleet is not None
        ticket.shared, ticket.loop = secrets.token_hex(12), loop
        # Held from before the call: a caller that leaves while it runs returns what it may have taken,
        # and a failure counts in the fleet even when the store could not be asked first.
        ticket.budgets.extend(keys)
        try:
            while True:
                try:
                    spent = await fleet.call("reserve", functools.partial(fleet.store.reserve, ticket.shared, keys,
                                                                          self.rules))
                except StoreUnavailable:
                    return  # counted here only until the store is back (Fleet said so once)
                if spent is None:
                    return
                if spent.banned_for:
                    self._mirror((spent.kind, spent.value), spent.banned_for)
                if not spent.busy or loop.time() >= end:
                    ticket.budgets.clear()  # no place was taken there
                    self.settle(ticket, "unknown")
                    raise Throttled(_fleet_reason(spent, self.wait))
                await asyncio.sleep(BUSY_POLL)
        except asyncio.CancelledError:
            self.settle(ticket, "unknown")  # the local places would otherwise be held for good
            raise

    def admit_resolved(self, ticket: Ticket, username: str) -> None:
        """Also draw on the budget of the name as the directory spelled it (from any thread)."""
        keys = [key for key in self._keys(username, None) if key not in ticket.budgets]
        self._reserve(ticket, keys)
        fleet, loop = self._fleet, ticket.loop
        if fleet is None or ticket.shared is None or loop is None or not keys:
            return
        if _in_a_thread():  # a worker thread may wait for the store; the event loop may not
            call = fleet.call("reserve", functools.partial(fleet.store.reserve, ticket.shared, keys, self.rules))
            try:
                spent = asyncio.run_coroutine_threadsafe(call, loop).result(timeout=self.wait)
            except (StoreUnavailable, concurrent.futures.TimeoutError, RuntimeError):
                return
            if spent is not None:
                raise Throttled(_fleet_reason(spent, self.wait))
        ticket.budgets.extend(keys)  # on the loop: no place taken in the fleet, but a failure counts there

    def _reserve(self, ticket: Ticket, keys: list[Key], *, wait: bool = False, check: bool = True) -> Ticket:
        now = self._clock()
        with self._lock:
            held = {key for key, _ in ticket.records}
            found = [(key, self._records.get(key)) for key in keys if key not in held]
            new = sum(record is None for _, record in found)
            if new and len(self._records) + new > self.max_entries:
                self._records.expire()
                if len(self._records) + new > self.max_entries:
                    self._warn_full(now)
                    raise Throttled(f"the regulation table is full ({self.max_entries} names and addresses)")
            wanted = [(key, record or _Record()) for key, record in found]
            spent = [(key, why) for key, record in wanted if check and (why := self._spent(record, now))]
            if spent:
                (kind, value), why = spent[0]
                if wait and all(self._busy(record, now) for _, record in wanted):
                    raise _Busy(f"{kind} {value!r}: {why}")
                raise Throttled(f"{kind} {value!r}: {why}")
            for key, record in wanted:
                record.in_flight += 1
                self._records[key] = record  # re-inserting renews the entry's lifetime
                ticket.records.append((key, record))
        return ticket

    def settle(self, ticket: Ticket, outcome: str, username: str | None = None,
               client: str | None = None) -> list[str]:
        """Return the ticket's places: ``failed`` counts a failure in each budget, ``succeeded``
        clears the usernames' failures and remembers the address, ``unknown`` (the directory did
        not answer) counts nothing. Returns a description of each ban it starts, for the log."""
        now = self._clock()
        started = []
        with self._lock:
            if ticket.settled:
                return []
            ticket.settled = True
            for key, record in ticket.records:
                if (ban := self._settle_record(key, record, outcome, now)) is not None:
                    started.append(ban)
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:  # attempts waiting for a place: look again
            loop.call_soon_threadsafe(_wake, waiter)
        if outcome == "succeeded" and username:
            self.remember_client(username, client)
        if ticket.shared is not None and ticket.budgets:
            task = self._settle_shared(ticket.shared, ticket.budgets, outcome)  # type: ignore[arg-type]
            if outcome == "failed":
                ticket.writing = task
        return started

    def _settle_record(self, key: Key, record: _Record, outcome: str, now: float) -> str | None:
        """One budget's place back (under the lock); the ban it starts, described, or None."""
        record.in_flight = max(0, record.in_flight - 1)
        started = None
        if outcome == "failed":
            record.failures.append(now)
            self._spent(record, now)  # drops failures older than the window
            if len(record.failures) >= self.max_failures and record.banned_until <= now:
                record.banned_until = now + self.ban
                record.failures.clear()
                self._banned[key[0]].inc()
                started = (f"{key[0]} {key[1]!r} banned for {self.ban:g} s after "
                           f"{self.max_failures} failures in {self.window:g} s")
        elif outcome == "succeeded" and key[0] == "user" and record.banned_until <= now:
            record.failures.clear()
        if record.in_flight or record.failures or record.banned_until > now:
            self._records[key] = record  # re-inserting renews the entry's lifetime
        else:
            # It remembers nothing: a success, or an answer that counted nothing, leaves no entry,
            # so signed-in users never fill the table that new names need a place in.
            self._records.pop(key, None)
        return started

    async def written(self, ticket: Ticket) -> None:
        """Until the ticket's failure is in the fleet's store (bounded by state.timeout; a store that
        is down keeps it for later): the answer that earns a ban leaves only when every replica can
        enforce it, so no other replica lets the next attempt reach the directory in between."""
        if ticket.writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(ticket.writing)

    def _settle_shared(self, ticket: str, budgets: list[Budget], outcome: Outcome) -> asyncio.Task[None] | None:
        fleet = self._fleet
        if fleet is None:
            return None
        # Kept when the store is down: a failure written late still counts (its place expires anyway).
        return fleet.spawn("settle", functools.partial(fleet.store.settle, ticket, list(budgets), outcome,
                                                       self.rules),
                           keep=outcome == "failed", then=self._started_in_fleet)

    def _started_in_fleet(self, found: object) -> None:
        for kind, value in found if isinstance(found, list) else []:
            why = f"{kind} {value!r} banned in the fleet for {self.ban:g} s after {self.max_failures} failures " \
                  f"in {self.window:g} s"
            log.warning("regulation: %s", why, extra=audit("ban", user=value if kind == "user" else None,
                                                          client=value if kind == "client" else None, reason=why))

    # -- the fleet's bans, mirrored here ------------------------------------------------------------

    def _heard(self, event: Event) -> None:
        if event[0] == "ban":
            self._mirror(event[1], event[2])
        elif event[0] == "lift":
            self._lift_here([event[1]])

    async def _resync(self) -> None:
        fleet = self._fleet
        assert fleet is not None
        for ban in await fleet.call("bans", functools.partial(fleet.store.bans, self.rules)):
            if ban.remaining:
                self._mirror((ban.kind, ban.value), ban.remaining)

    def _mirror(self, key: Budget, seconds: float) -> None:
        """A ban the fleet started: enforced here for the time it has left."""
        now = self._clock()
        with self._lock:
            record = self._records.get(key)
            if record is None:
                if len(self._records) >= self.max_entries:
                    return  # the fleet's store still refuses it, as long as it answers
                record = _Record()
            record.banned_until = max(record.banned_until, now + seconds)
            record.failures.clear()
            self._records[key] = record

    async def fleet_bans(self) -> tuple[list[Ban], bool]:
        """The bans of the whole fleet, and True; this instance's own and False when the store does
        not answer (or there is none)."""
        fleet = self._fleet
        if fleet is not None:
            try:
                return await fleet.call("bans", functools.partial(fleet.store.bans, self.rules)), True
            except StoreUnavailable:
                pass
        return self.bans(), fleet is None

    async def lift_everywhere(self, name_or_address: str) -> tuple[list[Ban], bool]:
        """:meth:`lift` here and in the fleet's store (which tells the other instances); what was
        lifted, and whether the fleet was reached (True without a fleet)."""
        lifted = {(ban.kind, ban.value): ban for ban in self.lift(name_or_address)}
        fleet = self._fleet
        if fleet is None:
            return list(lifted.values()), True
        try:
            found = await fleet.call("lift", functools.partial(fleet.store.lift, _lift_keys(name_or_address),
                                                               self.rules))
        except StoreUnavailable:
            return list(lifted.values()), False
        for ban in found:
            held = lifted.get((ban.kind, ban.value))
            if held is None or ban.remaining > held.remaining or ban.failures > held.failures:
                lifted[(ban.kind, ban.value)] = ban
        return list(lifted.values()), True

    def _warn_full(self, now: float) -> None:
        if now - self._full_warned >= FULL_WARNING_EVERY:
            self._full_warned = now
            log.warning("regulation: %d names and addresses hold failures, bans or attempts; new ones are "
                        "refused until some expire (a flood of distinct names?)", self.max_entries)

    def bans(self) -> list[Ban]:
        """Every name and address that is banned or counts failures now, for the admin channel."""
        now = self._clock()
        found = []
        with self._lock:
            self._records.expire()
            for (kind, value), record in self._records.items():
                self._spent(record, now)  # drops failures older than the window
                remaining = max(0.0, record.banned_until - now)
                if remaining or record.failures:
                    found.append(Ban(kind, value, remaining, len(record.failures)))
        return sorted(found, key=lambda ban: (not ban.remaining, ban.kind, ban.value))

    def lift(self, name_or_address: str) -> list[Ban]:
        """End the ban, and forget the failures, of a username (any spelling: it counts casefolded)
        or of an address (IPv6 by its /64, as it counts); what was lifted, none when nothing held."""
        return self._lift_here(_lift_keys(name_or_address))

    def _lift_here(self, keys: list[Key]) -> list[Ban]:
        now = self._clock()
        lifted = []
        with self._lock:
            for key in keys:
                record = self._records.get(key)
                if record is None:
                    continue
                self._spent(record, now)
                remaining = max(0.0, record.banned_until - now)
                if remaining or record.failures:
                    lifted.append(Ban(key[0], key[1], remaining, len(record.failures)))
                    record.banned_until = 0.0
                    record.failures.clear()
        return lifted

    def failed(self, username: str | None, client: str | None) -> list[str]:
        """Count a failure that asked no directory (a cached refusal, a malformed attempt)."""
        try:
            ticket = self._reserve(Ticket([]), self._keys(username, client), check=False)
        except Throttled:  # the table is full
            ticket = Ticket([])
        if self._fleet is not None:
            ticket.shared, ticket.budgets = secrets.token_hex(12), self._keys(username, client)
        return self.settle(ticket, "failed")


def _in_a_thread() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def _lift_keys(name_or_address: str) -> list[Key]:
    keys = [("user", name_or_address.casefold())]
    if (address := _address_key(name_or_address)) is not None:
        keys.insert(0, ("client", address))
    return keys


def _fleet_reason(spent: Spent, wait: float) -> str:
    return str(spent) + ("" if spent.banned_for else f", for {wait:g} s")


def _client_key(client: str) -> str:
    """An address as budgets count it: IPv4 as it is, IPv6 by its /64."""
    if ":" not in client:
        return client
    try:
        return str(ipaddress.IPv6Network(f"{client}/64", strict=False))
    except ValueError:
        return client


def _address_key(text: str) -> str | None:
    """An address or a network as the budgets count it (IPv6 by its /64), or None if it is neither."""
    try:
        return _client_key(str(ipaddress.ip_address(text)))
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if network.version == 4:
        return str(network.network_address) if network.prefixlen == 32 else None
    return _client_key(str(network.network_address)) if network.prefixlen >= 64 else None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
