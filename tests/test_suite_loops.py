"""The suite itself: no event loop is made behind its back (see pytest_configure in conftest.py)."""

from __future__ import annotations

import asyncio

import pytest


async def test_an_async_test_runs_on_a_loop_of_its_own() -> None:
    assert asyncio.get_running_loop().is_running()


def test_after_an_async_test_no_loop_is_current_for_asyncio_run_to_leave_unclosed() -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_event_loop_policy().get_event_loop()
    asyncio.run(asyncio.sleep(0))
    with pytest.raises(RuntimeError):
        asyncio.get_event_loop_policy().get_event_loop()
