"""The fleet's own rules, where the store is down or a caller fails: a lock allows nothing (a store
that cannot answer holds no lock, and the work goes on, as one replica would do it alone), a block
that fails gives its lock back, writes that wait for the store are bounded (the oldest goes, said in
the log), a write made where no event loop runs waits for the store, and a listener that fails is
logged while the others still hear the change."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from sidecar.config import StateConfig
from sidecar.store.fleet import Fleet
from sidecar.store.memory import MemoryStore
from sidecar.store.redis_store import RedisStore
from tests.testbed import free_port


def down_store() -> RedisStore:
    """A Redis store whose server is not there (a port nobody listens on)."""
    return RedisStore.from_config(StateConfig(backend="redis", url=f"redis://127.0.0.1:{free_port()}",
                                              timeout=0.2, connect_timeout=0.2))


async def test_with_the_store_down_a_lock_is_no_lock_and_the_work_goes_on() -> None:
    fleet = Fleet(down_store(), poll_every=5)
    async with fleet.holding("refresh:s1", 30) as held:
        assert held  # nobody else can be told to wait: do it, as a single replica would
    assert not fleet.up and fleet.reason
    await fleet.store.close()


async def test_a_block_that_fails_gives_its_lock_back() -> None:
    store = MemoryStore()
    one, two = Fleet(store, poll_every=5), Fleet(store, poll_every=5)
    with pytest.raises(RuntimeError):
        async with one.holding("refresh:s2", 30, keep_after=True) as held:
            assert held
            raise RuntimeError("the refresh failed")
    async with two.holding("refresh:s2", 30) as held:
        assert held  # free again at once, although keep_after would have kept a success's lock
    async with one.holding("refresh:s3", 30, keep_after=True) as held:
        assert held
    async with two.holding("refresh:s3", 30) as held:
        assert not held  # a success keeps it: the work is done, nobody does it again so soon


async def test_writes_waiting_for_the_store_are_bounded_and_the_drop_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    fleet = Fleet(down_store(), poll_every=5, max_pending=2)
    calls = [asyncio.Event() for _ in range(3)]

    def write(n: int):  # type: ignore[no-untyped-def]
        async def run() -> None:
            calls[n].set()
            await fleet.store.revision()  # the store is down: StoreUnavailable
        return run

    with caplog.at_level(logging.WARNING, logger="sidecar.store"):
        tasks = [fleet.spawn("settle", write(n), keep=True) for n in range(3)]
        await asyncio.gather(*(task for task in tasks if task is not None))
    assert all(event.is_set() for event in calls)
    dropped = [r.getMessage() for r in caplog.records if "the oldest is dropped" in r.getMessage()]
    assert dropped == ["state store: more than 2 writes wait for it; the oldest is dropped (this instance "
                       "still enforces it, the others will not learn it)"]
    await fleet.store.close()


def test_a_write_made_where_no_event_loop_runs_waits_for_the_store() -> None:
    fleet = Fleet(MemoryStore(), poll_every=5)
    found: list[object] = []

    async def write() -> None:
        return None

    thread = threading.Thread(target=lambda: found.append(fleet.spawn("settle", write, keep=True)))
    thread.start()
    thread.join()
    assert found == [None]  # no task: kept for the next resync instead

    async def resync() -> None:
        await fleet._resync()

    asyncio.run(resync())
    assert fleet.up  # the kept write went to the store, which answered


async def test_a_listener_that_fails_is_logged_and_the_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    fleet = Fleet(MemoryStore(), poll_every=5)
    heard: list[object] = []

    def broken(event: object) -> None:
        raise ValueError("cannot apply")

    async def nothing() -> None:
        return None

    fleet.watch(broken, nothing)
    fleet.watch(heard.append, nothing)
    with caplog.at_level(logging.ERROR, logger="sidecar.store"):
        fleet._dispatch(("lift", ("user", "alice"), 0.0))
    assert heard == [("lift", ("user", "alice"), 0.0)]
    assert any("could not be applied locally" in r.getMessage() for r in caplog.records)
