"""This instance's side of a shared store: whether it answers, what to write again, local views.

:class:`Fleet` runs every call to the store through :meth:`Fleet.call`, which bounds it and keeps
track of whether the store is up: the first failure logs a warning (regulation counts locally,
sign-outs known so far stay enforced), the metric and /readyz say so, and the first success after
it logs the return. A write that must reach the fleet (a sign-out, a kept group list) and finds the
store down is kept and written again when the store is back (bounded: ``max_pending``; past it the
oldest go, and the warning says so: this instance still enforces them).

The local views (the regulator's mirror of bans, the revocations) register a listener for the
changes other instances publish and a resync, run once subscribed (at start and after every
reconnection), and by the poll every ``poll_every`` seconds when the store's revision moved, so a
lost message costs at most one poll and a quiet fleet one GET per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from sidecar.metrics import NO_METRICS, Metrics
from sidecar.store import Event, Listener, Store, StoreUnavailable

log = logging.getLogger("sidecar.store")

T = TypeVar("T")
MAX_PENDING = 10_000  # writes kept for the store's return


class Fleet:
    def __init__(self, store: Store, *, poll_every: float, metrics: Metrics = NO_METRICS,
                 max_pending: int = MAX_PENDING) -> None:
        self.store = store
        self.poll_every = poll_every
        self.up = False  # until the first answer: at start nothing is known to be shared yet
        self.reason: str | None = "not reached yet"
        self.down_since: float | None = None
        self.max_pending = max_pending
        self._count, self._set_up = metrics.store()
        self._set_up(False)
        self._pending: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        self._listeners: list[Listener] = []
        self._resyncs: list[Callable[[], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._users = 0  # applications started on it (a reload runs two for a while)
        self.synced = asyncio.Event()  # set after each full resync (tests wait on it)
        self._revision: int | None = None  # the store's revision at the last full resync

    # -- what the local views register -----------------------------------------------------------

    def watch(self, listener: Listener, resync: Callable[[], Awaitable[None]]) -> None:
        self._listeners.append(listener)
        self._resyncs.append(resync)

    # -- calls ------------------------------------------------------------------------------------

    async def call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, recording whether the store answered; StoreUnavailable when it did not."""
        try:
            found = await call()
        except StoreUnavailable as exc:
            self._count(what, "unavailable")
            self._down(exc.reason)
            raise
        self._count(what, "ok")
        self._back()
        return found

    @contextlib.asynccontextmanager
    async def holding(self, name: str, ttl: float, *, keep_after: bool = False) -> AsyncIterator[bool]:
        """Hold the lock ``name`` (at most ``ttl`` seconds) while the block runs: True when held,
        False when another instance holds it; with ``keep_after``, a block that ends well leaves it
        held until ``ttl`` (the work is done: nobody else should do it again so soon). A store that
        does not answer holds no lock and yields True: a lock only keeps two replicas from doing
        the same work at once, it allows nothing."""
        try:
            token = await self.call("lock", functools.partial(self.store.lock, name, ttl))
        except StoreUnavailable:
            yield True
            return
        if token is None:
            yield False
            return
        try:
            yield True
        except BaseException:
            with contextlib.suppress(StoreUnavailable):
                await self.call("unlock", functools.partial(self.store.unlock, name, token))
            raise
        if not keep_after:
            with contextlib.suppress(StoreUnavailable):
                await self.call("unlock", functools.partial(self.store.unlock, name, token))

    def spawn(self, what: str, call: Callable[[], Awaitable[object]], *, keep: bool = False,
              then: Callable[[object], None] | None = None) -> asyncio.Task[None] | None:
        """Run ``call`` in the background (the caller cannot wait: the event loop or a sync path);
        with ``keep``, a write the store missed is written again when it is back. The task, for a
        caller that may wait for it after all (None: no loop here)."""
        async def run() -> None:
            try:
                found = await self.call(what, call)
            except StoreUnavailable:
                if keep:
                    self._keep(what, call)
                return
            if then is not None:
                then(found)

        try:
            task = asyncio.get_running_loop().create_task(run())
        except RuntimeError:  # no loop in this thread: nothing can be written now
            if keep:
                self._keep(what, call)
            return None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _keep(self, what: str, call: Callable[[], Awaitable[object]]) -> None:
        self._pending.append((what, call))
        if len(self._pending) > self.max_pending:
            del self._pending[0]
            log.warning("state store: more than %d writes wait for it; the oldest is dropped (this instance "
                        "still enforces it, the others will not learn it)", self.max_pending)

    def _down(self, reason: str) -> None:
        self.reason = reason
        if self.up or self.down_since is None:
            self.up = False
            self.down_since = time.time()
            self._set_up(False)
            log.warning("state store unreachable (%s): regulation counts failures locally, sign-outs known so "
                        "far stay enforced, changes are written when it is back", reason,
                        extra={"event": "store", "status": "down", "reason": reason})

    def _back(self) -> None:
        if self.up:
            return
        was_down = self.down_since is not None
        self.up, self.reason, self.down_since = True, None, None
        self._set_up(True)
        if was_down:
            log.warning("state store reachable again: shared regulation and sign-outs resume",
                        extra={"event": "store", "status": "up"})
        else:
            log.info("state store reachable", extra={"event": "store", "status": "up"})

    # -- the background work ------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe and poll, once per process however many applications share this fleet."""
        self._users += 1
        if self._users > 1:
            return
        loop = asyncio.get_running_loop()
        for work in (self.store.listen(self._dispatch, self._resync), self._poll()):
            task: asyncio.Task[object] = loop.create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:  # a first look before serving: bans and sign-outs written before this start count now
            await asyncio.wait_for(self._resync(), timeout=max(1.0, self.poll_every))
        except (StoreUnavailable, TimeoutError):
            pass

    async def stop(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.close()

    def _dispatch(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("state store: a change could not be applied locally")

    async def _resync(self, *, if_changed: bool = False) -> None:
        """Write what waited for the store, then read everything again (with ``if_changed``, only
        when the store's revision moved since the last time)."""
        pending, self._pending = self._pending, []
        written = 0
        try:
            for what, call in pending:
                await self.call(what, call)
                written += 1
        finally:  # the store went away again, or the work was cancelled: what is left waits on
            self._pending[:0] = pending[written:]
        revision = await self.call("revision", self.store.revision)  # before: a change while reading is read next time
        if if_changed and revision == self._revision:
            return
        for resync in self._resyncs:
            await resync()
        self._revision = revision
        self.synced.set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_every)
            try:
                await self._resync(if_changed=True)
            except StoreUnavailable:
                pass
            except Exception:
                log.exception("state store: the poll failed")
