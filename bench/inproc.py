"""What one /auth request costs the answering process, measured in that process alone.

    python bench/inproc.py [--requests 20000] [--without describe,authenticate]

aiohttp's own protocol object (``RequestHandler``, as the server makes it for each connection) is
fed raw requests, the bytes nginx sends for the bench's paths, on a transport that keeps nothing:
no socket, no nginx, no wrk, no other process. What is left is aiohttp's parsing and answering
and the sidecar's work, so the figure moves by a few per cent between runs where `bench/run.py`'s
rates move by tens, and a change of a microsecond shows. Three rows, each three runs of
``--requests`` after 2,000 to warm up:

    bare-aiohttp   bench/bare.py's application (routed, as aiohttp serves it)
    basic-warm     a sidecar server (sidecar.server.Server, as `serve` runs it), Basic, cache warm
    cookie-warm    the same with sessions, a cookie from its own login form

``--without`` takes a part of the sidecar's work away (each answered once, then that answer
reused), to see what the rest costs: ``describe`` (reading the original request),
``authenticate`` (the credentials to a verdict). What the figures showed is in bench/profiles.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import bare  # noqa: E402
import run  # noqa: E402
import uvloop  # noqa: E402
from aiohttp import web  # noqa: E402

from sidecar.config import parse_config  # noqa: E402
from sidecar.routes import SIDECAR  # noqa: E402
from sidecar.server import Server  # noqa: E402
from tests.testbed import free_port  # noqa: E402
from tests.testbed.slapd import Slapd  # noqa: E402

WARM_UP = 2_000
# What nginx sends with deploy/nginx/auth-sidecar.conf (the blanked identity headers are not sent).
NGINX_HEADERS = ("Host: auth_sidecar", "X-Original-Method: GET", "X-Forwarded-Proto: http",
                 "X-Forwarded-Host: 127.0.0.1:40000", "X-Forwarded-Uri: /", "X-Forwarded-Method: GET",
                 "X-Forwarded-For: 127.0.0.1", "X-Real-IP: 127.0.0.1",
                 "X-Request-ID: 0123456789abcdef0123456789abcdef")


class Transport(asyncio.Transport):
    """Keeps nothing of what is written; says when an answer was, and what its status line was."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = asyncio.Event()
        self.first: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.first is None:
            self.first = bytes(data[:15])
        self.answered.set()

    def writelines(self, data: Any) -> None:
        self.write(b"".join(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default

    def close(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def raw_request(*headers: str) -> bytes:
    return ("\r\n".join(["GET /auth HTTP/1.1", *NGINX_HEADERS, *headers, "User-Agent: wrk"]) + "\r\n\r\n").encode()


async def per_request(server: web.Server, data: bytes, count: int) -> float:
    """µs per request: one connection, one request at a time, each answered before the next."""
    protocol = server()
    transport = Transport()
    protocol.connection_made(transport)

    async def one() -> None:
        transport.answered.clear()
        protocol.data_received(data)
        await transport.answered.wait()

    for _ in range(WARM_UP):
        await one()
    if transport.first != b"HTTP/1.1 200 OK":
        raise RuntimeError(f"the path answered {transport.first!r}, not 200")
    started = time.perf_counter()
    for _ in range(count):
        await one()
    return (time.perf_counter() - started) / count * 1e6


def reuse_first(work: Callable[..., Any], *, awaited: bool) -> Callable[..., Any]:
    """work answered once, then that answer for every call (a part taken away, see --without)."""
    kept: list[Any] = []

    async def awaited_once(*args: Any) -> Any:
        if not kept:
            kept.append(await work(*args))
        return kept[0]

    def once(*args: Any) -> Any:
        if not kept:
            kept.append(work(*args))
        return kept[0]

    return awaited_once if awaited else once


async def sidecar_server(slapd: Slapd, *, sessions: bool, without: set[str]) -> tuple[Server, web.Server]:
    config = run.sidecar_config(slapd, free_port(), cache=True, sessions=sessions)
    config["server"] = {**config["server"], "trusted_proxies": ["127.0.0.1/32"]}  # type: ignore[dict-item]
    server = Server("(bench)", parse_config(config))
    await server.start()
    sidecar = server.current.app[SIDECAR]
    if "describe" in without:
        sidecar.describe = reuse_first(sidecar.describe, awaited=False)  # type: ignore[method-assign]
    if "authenticate" in without:
        for authenticator in sidecar.authenticators:
            authenticator.authenticate = reuse_first(authenticator.authenticate, awaited=True)  # type: ignore[method-assign]
    low = server._runners[0].server
    assert isinstance(low, web.Server)
    return server, low


async def measure(slapd: Slapd, args: argparse.Namespace) -> None:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", bare.auth)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    rows: list[tuple[str, web.Server, bytes, Callable[[], Awaitable[None]]]] = [
        ("bare-aiohttp", runner.server, raw_request(), runner.cleanup)]
    basic, low = await sidecar_server(slapd, sessions=False, without=args.without)
    rows.append(("basic-warm", low, raw_request(f"Authorization: {run.basic_auth(run.USER, run.PASSWORD)}"),
                 basic.stop))
    cookie, low = await sidecar_server(slapd, sessions=True, without=args.without)
    value = await asyncio.to_thread(run.sidecar_login, cookie.config.server.port)
    rows.append(("cookie-warm", low, raw_request(f"Cookie: {run.SESSION_COOKIE}={value}"), cookie.stop))
    figures = {}
    try:
        for name, server, data, _ in rows:
            runs = [await per_request(server, data, args.requests) for _ in range(3)]
            figures[name] = statistics.median(runs)
            print(f"{name:14s} {figures[name]:6.1f} µs a request (runs: {', '.join(f'{r:.1f}' for r in runs)})")
    finally:
        for *_, stop in rows:
            await stop()
    for name in ("basic-warm", "cookie-warm"):
        print(f"{name} / bare-aiohttp, by the time a request takes: {figures['bare-aiohttp'] / figures[name]:.0%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=run.bounded(1_000, 1_000_000), default=20_000)
    parser.add_argument("--without", type=lambda v: set(filter(None, v.split(","))), default=set(),
                        help="describe and/or authenticate: answered once, then reused")
    args = parser.parse_args(argv)
    if args.without - {"describe", "authenticate"}:
        parser.error(f"--without: unknown parts {sorted(args.without - {'describe', 'authenticate'})}")
    with tempfile.TemporaryDirectory(prefix="auth-sidecar-inproc-") as tmp:
        with Slapd(Path(tmp)) as slapd:
            run.bench_users(slapd, 2)
            uvloop.run(measure(slapd, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
