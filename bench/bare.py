"""The bench's reference row `bare-aiohttp`: the least an aiohttp answer to nginx's auth_request costs.

    python bench/bare.py PORT

One process on uvloop, an `aiohttp.web.Application` with one handler that answers every path
with 200 and the identity headers the sidecar answers for the bench's user (the names and values
deploy/nginx's snippets copy), no access log. It checks nothing: whatever the sidecar spends on top
of this row is the sidecar's own work, whatever this row spends is aiohttp's and the event loop's.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop
from aiohttp import web

# What the sidecar answers for alice of tests/testbed/slapd (the default header names), byte for byte.
HEADERS = {
    "Remote-User": "alice",
    "Remote-User-First-Name": "Alice",
    "Remote-User-Last-Name": "Liddell",
    "Remote-User-Email": "alice@example.com",
    "Remote-User-Group": "active|netbox-users|staff|superuser",
    "Remote-User-Staff": "false",
    "Remote-User-Superuser": "false",
    "Remote-User-Assertion": "",
    "Remote-User-Auth-Methods": "pwd",
}


async def auth(request: web.Request) -> web.Response:
    return web.Response(headers=HEADERS)


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", auth)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python bench/bare.py PORT", file=sys.stderr)
        return 2
    uvloop.run(serve(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
