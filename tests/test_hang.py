"""A directory that accepts connections and never answers must not stall the proxy."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sidecar.routes import SIDECAR
from tests.conftest import StartSidecar, basic
from tests.testbed.hang import HangingServer
from tests.testbed.slapd import Slapd


async def test_hanging_directory_blocks_nothing_and_fails_after_its_timeout(
    sidecar: StartSidecar, caplog: pytest.LogCaptureFixture
) -> None:
    with HangingServer() as hanging:
        client = await sidecar(server_uri=[hanging.uri], timeout=2, connect_timeout=1)
        waiting = asyncio.create_task(client.get("/auth", headers=basic("alice", "alice-pass")))
        await asyncio.sleep(0.2)  # the login is now stuck inside the directory's thread
        assert not waiting.done()
        assert (await client.get("/healthz")).status == 200
        assert not waiting.done()  # healthz answered while the login still hangs
        response = await waiting
        assert response.status == 503
    assert any("failed" in r.getMessage() and hanging.uri in r.getMessage()
               for r in caplog.records if r.levelno >= logging.WARNING)


async def test_cached_logins_answer_while_the_directory_hangs(sidecar: StartSidecar, slapd: Slapd) -> None:
    with HangingServer() as hanging:
        client = await sidecar(server_uri=[slapd.uri], timeout=2)
        assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 200
        # The directory now hangs: every new login waits inside a directory thread.
        client.app[SIDECAR].directory.servers.uris = (hanging.uri,)
        waiting = asyncio.create_task(client.get("/auth", headers=basic("bob", "bob-pass")))
        await asyncio.sleep(0.2)
        for _ in range(20):
            response = await client.get("/auth", headers=basic("alice", "alice-pass"))
            assert response.status == 200 and response.headers["Remote-User"] == "alice"
        assert not waiting.done()
        assert (await waiting).status == 503
