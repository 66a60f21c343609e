"""A TCP relay that puts a directory far away and counts the LDAP binds that reach it.

``DelayedDirectory(upstream_port, delay)`` listens on a free port of 127.0.0.1 in a thread of its
own, holds every client-to-server chunk for ``delay`` seconds, and reads the LDAP messages going
through (BER: SEQUENCE { messageID, protocolOp }) to count simple binds per DN. So a test can say
exactly how many passwords reached the real slapd behind it, without reading slapd's own log.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from types import TracebackType
from typing import Self

from tests.testbed import free_port

BIND_REQUEST = 0x60  # [APPLICATION 0] constructed


def _length(data: bytes, at: int) -> tuple[int, int] | None:
    """(length, offset of the value) of the BER length at ``at``, or None if incomplete."""
    if at >= len(data):
        return None
    first = data[at]
    if first < 0x80:
        return first, at + 1
    count = first & 0x7F
    if at + 1 + count > len(data):
        return None
    return int.from_bytes(data[at + 1:at + 1 + count], "big"), at + 1 + count


def _element(data: bytes, at: int) -> tuple[int, bytes, int] | None:
    """(tag, value, offset after it) of the BER element at ``at``, or None if incomplete."""
    if at >= len(data):
        return None
    found = _length(data, at + 1)
    if found is None:
        return None
    length, start = found
    if start + length > len(data):
        return None
    return data[at], data[start:start + length], start + length


def bind_dns(stream: bytearray) -> list[str]:
    """The DNs of the bind requests complete in ``stream``; consumed messages are removed from it."""
    dns = []
    while (message := _element(bytes(stream), 0)) is not None:
        _, body, end = message
        del stream[:end]
        message_id = _element(body, 0)
        op = _element(body, message_id[2]) if message_id else None
        if op is not None and op[0] == BIND_REQUEST:
            version = _element(op[1], 0)
            name = _element(op[1], version[2]) if version else None
            if name is not None:
                dns.append(name[1].decode("utf-8", "replace"))
    return dns


class Relay:
    """A TCP relay to 127.0.0.1:upstream_port on a free port of its own, run on an event loop in a
    thread; a subclass's ``_relay`` handles each connection (and registers its writers)."""

    thread_name = "relay"

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError(f"the {self.thread_name} did not start")
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", self.port))
        self._started.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, server.wait_closed(), return_exceptions=True))
            loop.close()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class DelayedDirectory(Relay):
    thread_name = "delayed-directory"

    def __init__(self, upstream_port: int, delay: float, *, only_binds_under: str | None = None) -> None:
        super().__init__(upstream_port)
        self.delay = delay
        # With a DN suffix, only chunks carrying a bind under it are held (a slow answer to users' binds).
        self.only_binds_under = only_binds_under
        self.binds: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def binds_as(self, dn: str) -> int:
        with self._lock:
            return sum(count for seen, count in self.binds.items() if seen.lower() == dn.lower())

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        seen = bytearray()
        self._writers.update((client_writer, server_writer))

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                seen.extend(data)
                dns = bind_dns(seen)
                with self._lock:
                    self.binds.update(dns)
                suffix = self.only_binds_under
                if suffix is None or any(dn.lower().endswith(suffix.lower()) for dn in dns):
                    await asyncio.sleep(self.delay)
                server_writer.write(data)
                await server_writer.drain()
            server_writer.close()

        async def downstream() -> None:
            while data := await server_reader.read(65536):
                client_writer.write(data)
                await client_writer.drain()
            client_writer.close()

        try:
            await asyncio.gather(upstream(), downstream())
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
                self._writers.discard(writer)
