"""Single-flight: one run of the work per key, shared, and not cancelled by a caller that leaves."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.flight import SingleFlight


class Work:
    def __init__(self) -> None:
        self.runs = 0
        self.gate = asyncio.Event()

    async def __call__(self) -> int:
        self.runs += 1
        await self.gate.wait()
        return self.runs


async def test_concurrent_callers_share_one_run() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    work = Work()
    callers = [asyncio.ensure_future(flight.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    assert flight.running("k") and not flight.running("other")
    work.gate.set()
    assert await asyncio.gather(*callers) == [1] * 5
    assert work.runs == 1
    await asyncio.sleep(0)
    assert not flight.running("k") and len(flight) == 0
    assert await flight.run("k", work) == 2  # the key is free again: a later caller runs afresh


async def test_join_waits_for_the_run_under_way_or_answers_none() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    assert await flight.join("k") is None
    work = Work()
    leader = asyncio.ensure_future(flight.run("k", work))
    await asyncio.sleep(0)
    joined = asyncio.ensure_future(flight.join("k"))
    work.gate.set()
    assert await leader == await joined == 1


async def test_a_caller_that_leaves_cancels_neither_the_work_nor_the_others() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    work = Work()
    leaving = asyncio.ensure_future(flight.run("k", work))
    staying = asyncio.ensure_future(flight.run("k", work))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    work.gate.set()
    assert await staying == 1
    assert leaving.cancelled()


async def test_every_caller_gets_the_failure_and_the_key_is_freed() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def broken() -> int:
        await asyncio.sleep(0)
        raise LookupError("down")

    results = await asyncio.gather(flight.run("k", broken), flight.run("k", broken), return_exceptions=True)
    assert [str(r) for r in results] == ["down", "down"]
    await asyncio.sleep(0)
    assert not flight.running("k")


async def test_a_failure_nobody_waits_for_any_more_is_not_reported_as_unretrieved() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def broken() -> int:
        await asyncio.sleep(0.01)
        raise LookupError("down")

    caller = asyncio.ensure_future(flight.run("k", broken))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0.05)  # filterwarnings = error: an unretrieved exception would fail the test
    assert not flight.running("k")
