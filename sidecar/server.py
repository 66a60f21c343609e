"""``auth-sidecar serve``: one listening socket, and the application behind it swapped on reload.

The socket is bound once and never closed until the process stops, so a reload refuses no
connection. Each request is answered by the application that was current when it arrived; a
reload validates the file, builds the new application beside the old one and runs its start-up
work (a configuration that fails any of it is logged, problem by problem, and the old one goes on),
then makes it current. The old one finishes the requests it has, then is cleaned up. What must
outlive a reload — bans, sign-outs, metrics — lives in :class:`sidecar.state.State`.

SIGHUP reloads; SIGTERM and SIGINT stop taking connections, let the requests in flight finish
(up to ``DRAIN_TIMEOUT``) and exit 0. Anything that stops the start — a port in use, a file that
cannot be read, a secret that is missing — is one line on standard error and exit status 2.

With ``server.workers`` above 1 this process is the supervisor of that many (:mod:`sidecar.workers`),
each of which runs :func:`run` on the sockets it inherits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler

from sidecar import __version__, logs, routes
from sidecar.app import HANDLER_ARGS, MAX_BODY, make_app
from sidecar.cli import add_config_argument, fail
from sidecar.config import Config, load_config
from sidecar.errors import ConfigError
from sidecar.metrics import Metrics
from sidecar.state import State

if TYPE_CHECKING:
    from sidecar.workers import Inherited

log = logging.getLogger("sidecar")

DRAIN_TIMEOUT = 30.0  # seconds the requests in flight get to finish, at a stop or after a reload


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    add_config_argument(parser)
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="overrides log.level from the configuration")
    # Set by the supervisor for its workers (sidecar.workers): the index, and the inherited sockets.
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fds", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    from sidecar import workers

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(f"{args.config}: {exc}")
    logs.setup(config.log, level=args.log_level)
    inherited = workers.Inherited.from_args(args)
    if inherited is None and config.server.workers > 1:
        return workers.supervise(args.config, config, level=args.log_level)
    loop = _event_loop()
    try:
        return loop.run_until_complete(run(args.config, config, level=args.log_level, inherited=inherited))
    finally:
        loop.close()


async def run(path: str, config: Config, *, level: str | None = None, inherited: Inherited | None = None) -> int:
    """Serve until SIGTERM or SIGINT (or, in a worker, until its supervisor is gone); the exit status."""
    server = Server(path, config, level=level, inherited=inherited)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handled from the start: a SIGHUP that comes while the application starts is a reload once it has.
    loop.add_signal_handler(signal.SIGHUP, server.reload_soon)
    for stop in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop, stopping.set)
    if inherited is not None:
        inherited.watch_supervisor(stopping)
    try:
        try:
            await server.start()
        except Refused as exc:
            return fail(str(exc))
        if inherited is not None:
            inherited.ready()  # the supervisor tells systemd, once every worker is
        else:
            notify("READY=1")
        await stopping.wait()
        if inherited is None:
            notify("STOPPING=1")
        log.info("stopping: draining the requests in flight", extra={"event": "stop"})
    finally:
        for handled in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(handled)
        await server.stop()
    log.info("stopped", extra={"event": "stop"})
    return 0


def notify(state: str) -> None:
    """Tell systemd (Type=notify) where the start or the stop is: the unit is started once we listen."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.sendto(state.encode(), address)


class Refused(Exception):
    """The sidecar cannot start: the message says why in one line."""


@dataclass
class Generation:
    """One application, built from one version of the configuration, and its requests in flight."""

    app: web.Application
    config: Config
    digest: str
    auth: Callable[[web.Request], Awaitable[web.StreamResponse]]  # GET /auth, answered without routing
    in_flight: int = 0
    idle: asyncio.Event | None = None  # made when it is replaced: set once its last request is done


class Server:
    """The listening socket and the current application; what the admin channel acts on."""

    def __init__(self, path: str, config: Config, *, level: str | None = None,
                 inherited: Inherited | None = None) -> None:
        self.path = path
        self.level = level
        self.inherited = inherited  # a supervisor's worker: its sockets are handed to it, not bound
        self.state = State(Metrics(enabled=config.metrics is not None))
        self.started = time.time()
        self._first = config
        self._current: Generation | None = None
        self._runners: list[web.BaseRunner] = []
        self._reloading = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._reload_pending = False
        self._loop: asyncio.AbstractEventLoop  # set by start()

    @property
    def current(self) -> Generation:
        assert self._current is not None, "started"
        return self._current

    @property
    def config(self) -> Config:
        return self.current.config

    async def start(self) -> None:
        # Each request's loop, read once: asyncio.get_running_loop() costs a getpid() system call
        # per call on Python 3.11 (it checks for a fork), and _request would make one per request.
        self._loop = asyncio.get_running_loop()
        self._current = await self._build(self._first, digest_of(self.path))
        config = self._first
        low = web.Server(self._dispatch, request_factory=self._request, access_log_class=AccessLogger,
                         access_log=logging.getLogger("aiohttp.access") if config.server.access_log else None,
                         **HANDLER_ARGS)
        runner = web.ServerRunner(low, shutdown_timeout=DRAIN_TIMEOUT)
        inherited = self.inherited
        if inherited is None:
            await self._listen(runner, lambda: [web.TCPSite(runner, config.server.host, config.server.port)],
                               f"{config.server.host}:{config.server.port}")
        else:
            await self._listen(runner, lambda: [web.SockSite(runner, sock) for sock in inherited.listen],
                               f"{config.server.host}:{config.server.port}")
        if (scrape := config.metrics) is not None:
            metrics = web.AppRunner(self.state.metrics.listener_app(), access_log=None)
            if inherited is None:
                await self._listen(metrics, lambda: [web.TCPSite(metrics, scrape.host, scrape.port)],
                                   f"{scrape.host}:{scrape.port} (metrics)")
            elif inherited.metrics is not None:
                sock = inherited.metrics
                await self._listen(metrics, lambda: [web.SockSite(metrics, sock)], f"{scrape.host} (metrics)")
        # Several workers: the admin channel is worker 0's (sidecar.workers says why one is enough).
        if config.admin.socket is not None and (inherited is None or inherited.index == 0):
            from sidecar import admin

            control = await admin.start(self, config.admin.socket)
            if control is not None:
                self._runners.append(control)
        log.info("auth-sidecar %s listening on %s:%d%s", __version__, config.server.host, config.server.port,
                 "" if inherited is None else f" (worker {inherited.index}, pid {os.getpid()})",
                 extra={"event": "start"})
        if self._reload_pending:
            self.reload_soon()

    async def _listen(self, runner: web.BaseRunner, sites: Callable[[], list[web.BaseSite]], where: str) -> None:
        await runner.setup()
        self._runners.append(runner)
        try:
            for site in sites():
                await site.start()
        except OSError as exc:
            raise Refused(f"cannot listen on {where}: {os.strerror(exc.errno) if exc.errno else exc}") from None

    async def stop(self) -> None:
        """Stop taking connections, let the requests in flight finish, clean every application up."""
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._current is not None:
            await _cleanup(self._current.app)
            self._current = None

    def reload_soon(self) -> None:
        """SIGHUP: reload in the background (a signal handler cannot wait); after the start if it is
        still under way."""
        if self._current is None:
            self._reload_pending = True
            return
        task = asyncio.ensure_future(self._reload_quietly())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _reload_quietly(self) -> None:
        await self._reload_logged()

    async def reload(self) -> list[str]:
        """Load the file again and, if it is good, serve from a new application; the problems found
        (none when reloaded). A bad file changes nothing: the running configuration goes on. Asked of
        a worker (the admin channel), the other workers reload too once this one has."""
        problems = await self._reload_logged()
        if not problems and self.inherited is not None:
            self.inherited.reload_others()
        return problems

    async def _reload_logged(self) -> list[str]:
        async with self._reloading:
            problems = await self._reload()
        self.state.metrics.reloaded(ok=not problems)
        if problems:
            log.error("reload refused, still serving the previous configuration: %s", "; ".join(problems),
                      extra={"event": "reload", "status": "refused", "reason": "; ".join(problems)})
        else:
            log.info("reloaded %s (%s)%s", self.path, self.current.digest[:12],
                     "" if self.inherited is None else f" in worker {self.inherited.index}",
                     extra={"event": "reload", "status": "ok"})
        return problems

    async def _reload(self) -> list[str]:
        digest = digest_of(self.path)
        try:
            config = await asyncio.to_thread(load_config, self.path)
        except ConfigError as exc:
            return exc.problems
        problems = _fixed_at_start(self.current.config, config)
        if problems:
            return problems
        try:
            fresh = await self._build(config, digest)
        except Refused as exc:
            return [str(exc)]
        old, self._current = self.current, fresh
        logs.setup(config.log, level=self.level)
        task = asyncio.ensure_future(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return []

    async def _build(self, config: Config, digest: str) -> Generation:
        """A started application for ``config``; Refused, with everything it made cleaned up, if not."""
        try:
            app = make_app(config, self.state)
        except (ConfigError, OSError, ValueError) as exc:
            raise Refused(_one_line(exc)) from None
        app.freeze()
        try:
            await app.startup()
        except (ConfigError, OSError, ValueError) as exc:
            await _cleanup(app)
            raise Refused(_one_line(exc)) from None
        return Generation(app, config, digest, functools.partial(routes.answer, sidecar=app[routes.SIDECAR]))

    async def _retire(self, old: Generation) -> None:
        """Clean an application up once the requests it was answering are done."""
        old.idle = asyncio.Event()
        if old.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(old.idle.wait(), DRAIN_TIMEOUT)
        await _cleanup(old.app)

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        generation = self.current
        generation.in_flight += 1
        try:
            # Every proxied request is a GET /auth: answered by its handler directly, not routed
            # (the router and the application cost ~3 µs a request). HEAD, a query, any other path,
            # and an Expect header (aiohttp answers it: 100 Continue, or 417 for any other) are routed.
            if request.method == "GET" and request.raw_path == "/auth" and hdrs.EXPECT not in request.headers:
                return await generation.auth(request)  # type: ignore[arg-type]
            return await generation.app._handle(request)  # type: ignore[arg-type]
        finally:
            generation.in_flight -= 1
            if not generation.in_flight and generation.idle is not None:
                generation.idle.set()

    def _request(self, message: Any, payload: Any, protocol: RequestHandler, writer: Any,
                 task: asyncio.Task[None]) -> web.Request:
        return web.Request(message, payload, protocol, writer, task, self._loop, client_max_size=MAX_BODY)


def _fixed_at_start(running: Config, loaded: Config) -> list[str]:
    """What a reload cannot change: the sockets are bound (or made) once, at start."""
    changed = []
    if (running.server.host, running.server.port) != (loaded.server.host, loaded.server.port):
        changed.append("server.listen")
    if running.server.workers != loaded.server.workers:
        changed.append("server.workers")
    if running.metrics != loaded.metrics:
        changed.append("metrics")
    if running.admin != loaded.admin:
        changed.append("admin.socket")
    if running.state != loaded.state:
        changed.append("state")  # the store the bans and sign-outs live in: one per process, for its life
    return [f"{name} changed: it takes effect at a restart, not a reload" for name in changed]


async def _cleanup(app: web.Application) -> None:
    try:
        await app.shutdown()
        await app.cleanup()
    except Exception:
        log.exception("cleaning up an application failed")


def digest_of(path: str) -> str:
    """The sha256 of the configuration file as it is on disk now ("-" when it cannot be read)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "-"


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return " ".join(str(exc).split())


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()

