"""Single-flight: concurrent callers asking for the same thing share one run of the work.

The first caller for a key starts the work as a task of its own; callers arriving while it runs
await that same task. Each caller awaits it shielded, so a caller that gives up (its client left)
cancels neither the work nor the others' wait; the key is free again as soon as the work ends, so
a later caller starts afresh (a cache in front keeps the answer, if it is to be kept).

On the event loop only: not thread-safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def running(self, key: K) -> bool:
        """Whether work for this key is under way."""
        return key in self._running

    async def join(self, key: K) -> V | None:
        """The outcome of the work under way for this key, or None at once when there is none."""
        future = self._running.get(key)
        return None if future is None else await asyncio.shield(future)

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """The outcome of the work under way for this key, or else of ``work()``, started now."""
        future = self._running.get(key)
        if future is None:
            future = asyncio.ensure_future(work())
            self._running[key] = future
            future.add_done_callback(lambda done: self._ended(key, done))
        return await asyncio.shield(future)

    def _ended(self, key: K, done: asyncio.Future[V]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: when every caller has left, the loop must not warn of it
