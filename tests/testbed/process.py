"""ManagedProcess: a testbed server run as a child process, started and stopped the same way for all.

A server is a small subclass that says how to run it (`command`), what to do first (`prepare`:
write and check its configuration), when it is ready (`ready`: by default every port in `ports`
accepts connections) and what to do once it is (`started`: seed it). The base class launches it
with its output in `log_file`, waits until it is ready or has died, stops it by its own PID (never
by name) with the subclass's `stop_signals`, and stops it at interpreter exit if nobody did.
"""

from __future__ import annotations

import atexit
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self

from tests.testbed import ROOT, stop_process

POLL_INTERVAL = 0.02
LOG_TAIL = 4000  # characters of the log an error message shows


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ManagedProcess:
    """One child process serving on 127.0.0.1; `with server:` starts it and stops it again."""

    name: ClassVar[str] = "the server"
    start_timeout: ClassVar[float] = 15.0
    stop_timeout: ClassVar[float] = 10.0
    # Signals tried in turn by stop(), each followed by a wait; SIGKILL comes last in any case.
    stop_signals: ClassVar[tuple[int, ...]] = (signal.SIGTERM,)
    # Own session: a Ctrl-C meant for pytest must not kill the server behind stop()'s back.
    new_session: ClassVar[bool] = False

    # Set (to a reason) while no server may start: tests/conftest.py sets it during unit tests.
    forbidden: ClassVar[str | None] = None

    process: subprocess.Popen[bytes] | None = None
    log_file: Path | None = None
    cwd: Path = ROOT

    # What a subclass says

    def command(self) -> Sequence[str]:
        """The command line, run once prepare() has written what it needs."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Write and check the configuration before every start."""

    def environment(self) -> Mapping[str, str] | None:
        """The child's environment; None: this process's."""
        return None

    def ports(self) -> Sequence[int]:
        """The ports that must accept connections before the server counts as ready."""
        return ()

    def ready(self) -> bool:
        return all(accepts(port) for port in self.ports())

    def started(self) -> None:
        """Runs once the server is ready (seeding); an exception here stops it again."""

    def terminate(self, process: subprocess.Popen[bytes]) -> None:
        """End the process; by default each of stop_signals in turn, then SIGKILL."""
        stop_process(process, *self.stop_signals, timeout=self.stop_timeout)

    # The life cycle, the same for every server

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        """Prepare, launch, wait until ready (or fail with the log), run started()."""
        if self.process is not None:
            raise RuntimeError(f"{self.name} is already running")
        if ManagedProcess.forbidden:
            raise RuntimeError(f"{self.name} may not start here: {ManagedProcess.forbidden}")
        self.prepare()
        command = list(self.command())
        log = self.log_file.open("ab") if self.log_file is not None else None
        try:
            self.process = self._launch(command, log)
        finally:
            if log is not None:
                log.close()
        atexit.register(self.stop)
        try:
            self._wait_until_ready(self.process)
            self.started()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and wait for it. Safe to call twice, and before start()."""
        process, self.process = self.process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        self.terminate(process)

    def log(self) -> str:
        """The server's log so far, for assertion messages."""
        if self.log_file is None:
            return ""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # Internals

    def _launch(self, command: list[str], log: IO[bytes] | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, cwd=self.cwd, env=self.environment(), stdin=self.stdin(),
                                stdout=log, stderr=subprocess.STDOUT if log is not None else None,
                                start_new_session=self.new_session)

    def stdin(self) -> int | None:
        """The child's stdin: nothing to read by default."""
        return subprocess.DEVNULL

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not self.ready():
            if process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {process.returncode}:\n{self.log()[-LOG_TAIL:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} was not ready within {self.start_timeout}s:\n"
                                   f"{self.log()[-LOG_TAIL:]}")
            time.sleep(POLL_INTERVAL)
