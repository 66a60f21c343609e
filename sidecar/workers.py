"""``server.workers: N``: N processes answering on one port, and the supervisor that keeps them.

With ``workers: 1`` (the default) ``serve`` is one process, as it always was. With more, the process
``serve`` starts is the supervisor: it binds the sockets, starts the workers (each ``python -m
sidecar serve --worker I``, the same program, handed its sockets), restarts a worker that dies,
passes SIGHUP on to every worker and SIGTERM/SIGINT as a drain, and tells systemd READY=1 once every
worker answers and STOPPING=1 once, at the stop. It answers no request itself and holds no state:
bans and sign-outs are shared through ``state.backend: redis`` (the configuration refuses more than
one worker with ``memory``, where each process would keep its own).

**One socket, bound by the supervisor and inherited by the workers, rather than SO_REUSEPORT
sockets each worker opens.** The listen queue then belongs to the supervisor, which never closes
it: a worker that dies or is restarted loses no connection the kernel had already queued (with
SO_REUSEPORT each worker has its own queue, and the connections in a dead worker's queue are reset),
and a drain closes nothing the other workers still accept on. A port in use is found once, before
any worker starts, and is the same one line and exit status 2 as with one process. And no other
process of the same user can bind the port beside us and take a share of the connections, as it
can join a SO_REUSEPORT group. The cost: the kernel wakes the workers on one queue instead of
hashing connections over several, so the share is less even under light load (under load, each
worker accepts as fast as it can, which is the share that matters).

**What each worker serves besides the port.** The metrics listener: worker I on ``metrics.port +
I`` (also bound by the supervisor), since each process counts its own requests: scrape every port
(one Prometheus target per worker; ``sum without (instance)`` adds them). A single port would show
one worker's counts and change at every scrape. The admin socket: worker 0 only, at
``admin.socket``. Bans, unban, sessions and revoke act on the shared state, so one worker suffices;
``status`` describes worker 0; ``reload`` reloads worker 0, answers with its problems, and then has
the supervisor pass SIGHUP to the others.

The supervisor talks to each worker over a socket pair: the worker writes ``READY=1`` once it
listens (its sd_notify, which never reaches systemd itself) and ``RELOAD=1`` after an admin reload;
the worker stops (drains) when the supervisor's end closes, so a supervisor killed with SIGKILL leaves
no orphan holding the port. Workers start one after the other, each once the one before is ready: a
configuration that fails at start then fails in worker 0 alone, with one line and exit status 2.
A worker that dies later is started again, after 0.5 s, doubled for each death in a row that came
within ``QUICK_DEATH`` of its start, up to 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from sidecar.cli import fail
from sidecar.config import Config
from sidecar.server import DRAIN_TIMEOUT, Refused, notify

log = logging.getLogger("sidecar.workers")

BACKLOG = 128  # aiohttp's own default for a site it binds itself
FIRST_DELAY = 0.5  # seconds before a dead worker is started again
MAX_DELAY = 30.0
QUICK_DEATH = 10.0  # a worker that dies sooner than this after its start makes the next delay longer
STOP_GRACE = DRAIN_TIMEOUT + 10.0  # seconds a worker gets to drain before it is killed
READY, RELOAD = b"READY=1", b"RELOAD=1"


# -- in a worker ----------------------------------------------------------------------------------


@dataclass
class Inherited:
    """What a worker was handed by its supervisor: its index, sockets, and its line to the supervisor."""

    index: int
    listen: list[socket.socket]
    metrics: socket.socket | None
    channel: socket.socket

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Inherited | None:
        """``--worker I --fds CHANNEL,METRICS|-,LISTEN[,LISTEN...]``, as the supervisor writes them."""
        if args.worker is None:
            return None
        channel, metrics, *listen = str(args.fds).split(",")
        return cls(index=int(args.worker), listen=[socket.socket(fileno=int(fd)) for fd in listen],
                   metrics=None if metrics == "-" else socket.socket(fileno=int(metrics)),
                   channel=socket.socket(fileno=int(channel)))

    def ready(self) -> None:
        self._send(READY)

    def reload_others(self) -> None:
        """After a reload asked of this worker (the admin channel): every other worker reloads too."""
        self._send(RELOAD)

    def watch_supervisor(self, gone: asyncio.Event) -> None:
        """Set ``gone`` when the supervisor's end of the channel closes (it exited, or was killed)."""
        loop = asyncio.get_running_loop()
        self.channel.setblocking(False)

        def readable() -> None:
            try:
                data = self.channel.recv(64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(self.channel)
                gone.set()

        loop.add_reader(self.channel, readable)

    def _send(self, message: bytes) -> None:
        with contextlib.suppress(OSError):
            self.channel.send(message + b"\n")


# -- the supervisor -------------------------------------------------------------------------------


def supervise(path: str, config: Config, *, level: str | None = None) -> int:
    """Run ``config.server.workers`` workers until SIGTERM or SIGINT; the exit status."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(Supervisor(path, config, level=level).run())
    finally:
        loop.close()


@dataclass
class Slot:
    """One worker's place: its sockets outlive the processes that fill it."""

    index: int
    metrics: socket.socket | None
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    channel: socket.socket | None = None
    pidfd: int | None = None  # readable once the process has exited
    ready: bool = False
    reload_pending: bool = False  # a SIGHUP came before it could take one
    quick_deaths: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # it became ready, or it exited

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    def __init__(self, path: str, config: Config, *, level: str | None = None) -> None:
        self.path = path
        self.config = config
        self.level = level
        self.listen: list[socket.socket] = []
        self.slots: list[Slot] = []
        self.stopping = asyncio.Event()
        self._keepers: list[asyncio.Task[None]] = []

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        for stop in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop, self.stopping.set)
        try:
            try:
                self._bind()
            except Refused as exc:
                return fail(str(exc))
            for slot in self.slots:  # one after the other: a start that fails, fails once
                self._spawn(slot)
                while not slot.ready and not self.stopping.is_set():
                    if not slot.running:
                        return 2  # the worker said why on standard error
                    await self._changed(slot)
            if self.stopping.is_set():
                return 0  # stopped while starting: systemd was never told it was ready
            self._keepers = [asyncio.ensure_future(self._keep(slot)) for slot in self.slots]
            notify("READY=1")
            log.info("%d workers answering on %s:%d", len(self.slots), self.config.server.host,
                     self.config.server.port, extra={"event": "start"})
            await self.stopping.wait()
            notify("STOPPING=1")
            log.info("stopping: the workers drain the requests in flight", extra={"event": "stop"})
        finally:
            for handled in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(handled)
            self.stopping.set()
            for keeper in self._keepers:
                keeper.cancel()
            await self._stop_all()
            for sock in [*self.listen, *(s.metrics for s in self.slots if s.metrics is not None)]:
                sock.close()
        log.info("stopped", extra={"event": "stop"})
        return 0

    def reload(self, *, besides: Slot | None = None) -> None:
        """SIGHUP: passed on to every worker (but ``besides``); one still starting gets it once ready."""
        log.info("reload: passing SIGHUP to the %sworkers", "other " if besides else "", extra={"event": "reload"})
        for slot in self.slots:
            if slot is besides or not slot.running:
                continue
            assert slot.process is not None
            if slot.ready:
                slot.process.send_signal(signal.SIGHUP)
            else:
                slot.reload_pending = True  # before its handler is in place, SIGHUP would end it

    def _bind(self) -> None:
        server = self.config.server
        self.listen = _bind(server.host, server.port, f"{server.host}:{server.port}")
        for index in range(server.workers):
            metrics = None
            if (scrape := self.config.metrics) is not None:
                port = scrape.port + index
                metrics, *more = _bind(scrape.host, port, f"{scrape.host}:{port} (metrics of worker {index})")
                for extra in more:  # a name with several addresses: the first one serves
                    extra.close()
            self.slots.append(Slot(index, metrics))

    def _spawn(self, slot: Slot) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        metrics = "-" if slot.metrics is None else str(slot.metrics.fileno())
        listen = [str(sock.fileno()) for sock in self.listen]
        command = [sys.executable, "-m", "sidecar", "serve", "--config", self.path, "--worker", str(slot.index),
                   "--fds", ",".join([str(theirs.fileno()), metrics, *listen])]
        if self.level:
            command += ["--log-level", self.level]
        keep = [theirs.fileno(), *(sock.fileno() for sock in self.listen)]
        if slot.metrics is not None:
            keep.append(slot.metrics.fileno())
        # A worker's sd_notify goes up the channel: systemd hears the supervisor only.
        environment = {name: value for name, value in os.environ.items() if name != "NOTIFY_SOCKET"}
        try:
            slot.process = subprocess.Popen(command, pass_fds=keep, env=environment, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        slot.started, slot.ready, slot.channel = time.monotonic(), False, ours
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        loop.add_reader(ours, self._heard, slot, ours)
        slot.pidfd = os.pidfd_open(slot.process.pid)
        loop.add_reader(slot.pidfd, self._exited, slot)
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid, extra={"event": "worker"})

    def _heard(self, slot: Slot, channel: socket.socket) -> None:
        try:
            data = channel.recv(256)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker is going: its exit comes through the pidfd
            asyncio.get_running_loop().remove_reader(channel)
            return
        for message in data.split():
            if message == READY:
                slot.ready = True
                if slot.reload_pending and slot.process is not None:
                    slot.reload_pending = False
                    slot.process.send_signal(signal.SIGHUP)
            elif message == RELOAD:
                self.reload(besides=slot)
        slot.changed.set()

    def _exited(self, slot: Slot) -> None:
        if slot.pidfd is not None:
            asyncio.get_running_loop().remove_reader(slot.pidfd)
            os.close(slot.pidfd)
            slot.pidfd = None
        if slot.process is not None:
            slot.process.poll()  # reaps it: the pidfd says it has exited
        slot.changed.set()

    async def _changed(self, slot: Slot, *, timeout: float | None = None, or_stop: bool = True) -> None:
        """Until the slot's worker says something or exits, or the stop (or ``timeout``)."""
        waits = [asyncio.ensure_future(slot.changed.wait())]
        if or_stop:
            waits.append(asyncio.ensure_future(self.stopping.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        slot.changed.clear()

    async def _keep(self, slot: Slot) -> None:
        """Start the slot's worker again each time it dies, until the stop."""
        while not self.stopping.is_set():
            if slot.running:
                await self._changed(slot)
                continue
            assert slot.process is not None
            lived = time.monotonic() - slot.started
            slot.quick_deaths = slot.quick_deaths + 1 if lived < QUICK_DEATH else 0
            delay = min(MAX_DELAY, FIRST_DELAY * 2 ** max(0, slot.quick_deaths - 1))
            log.warning("worker %d (pid %d) exited with %s; starting it again in %g s", slot.index,
                        slot.process.pid, _status(slot.process.returncode), delay,
                        extra={"event": "worker", "status": "died"})
            self._close_channel(slot)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if not self.stopping.is_set():
                self._spawn(slot)

    async def _stop_all(self) -> None:
        """SIGTERM to every worker, and wait: each drains its requests; past STOP_GRACE it is killed."""
        running = [slot for slot in self.slots if slot.running]
        for slot in running:
            assert slot.process is not None
            slot.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for slot in running:
            while slot.running and time.monotonic() < deadline:
                await self._changed(slot, timeout=deadline - time.monotonic(), or_stop=False)
            if slot.running:
                assert slot.process is not None
                log.warning("worker %d (pid %d) did not stop within %g s: killed", slot.index,
                            slot.process.pid, STOP_GRACE, extra={"event": "worker"})
                slot.process.kill()
                await asyncio.to_thread(slot.process.wait)
        for slot in self.slots:
            self._close_channel(slot)
            if slot.pidfd is not None:
                self._exited(slot)

    def _close_channel(self, slot: Slot) -> None:
        if slot.channel is not None:
            asyncio.get_running_loop().remove_reader(slot.channel)
            slot.channel.close()
            slot.channel = None


def _bind(host: str, port: int, where: str) -> list[socket.socket]:
    """Listening sockets on every address of ``host`` (as aiohttp binds them); Refused if any fails."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise Refused(f"cannot listen on {where}: {exc.strerror or exc}") from None
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
    except OSError as exc:
        for sock in bound:
            sock.close()
        raise Refused(f"cannot listen on {where}: {os.strerror(exc.errno) if exc.errno else exc}") from None
    return bound


def _status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"status {code}"
