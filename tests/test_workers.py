"""``server.workers``: real supervisors and workers, on one port.

Which worker answers a connection is the kernel's choice, so a test that must reach one worker
stops the others (SIGSTOP): a stopped process accepts nothing, and the connection waits in the
shared queue for the one left running. PIDs are the ones the supervisor reports in its log.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import pytest
import yaml

from tests.conftest import PEOPLE, ldap_settings, need
from tests.testbed import ROOT, free_port
from tests.testbed.delay import DelayedDirectory
from tests.testbed.redis import RedisServer
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd

pytestmark = pytest.mark.server

ALICE = {"Authorization": "Basic " + base64.b64encode(b"alice:alice-pass").decode(), "Host": "app.test",
         "X-Original-URI": "/"}
NOBODY = {"Host": "app.test", "X-Original-URI": "/"}
WAIT = 30.0  # seconds a condition the processes will reach is waited for
STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    need("redis-server")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


def settings(slapd: Slapd, redis_server: RedisServer, port: int, workers: int = 2, **top: Any) -> dict[str, Any]:
    return {"server": {"listen": f"127.0.0.1:{port}", "workers": workers}, "ldap": ldap_settings(slapd),
            "state": {"backend": "redis", "url": redis_server.url}, "admin": {"enabled": False}, **top}


class Fleet(SidecarProcess):
    """A supervisor and its workers; ``workers()`` is what the supervisor reported last, per index."""

    name = "the supervisor"
    start_timeout = 60.0  # the workers start one after the other
    stop_timeout = 60.0

    def __init__(self, workdir: Path, config: dict[str, Any], *, environment: dict[str, str] | None = None) -> None:
        super().__init__(workdir, config, log_level="info")
        self.count = int(config["server"]["workers"])
        self.extra_environment = environment or {}

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **self.extra_environment}

    def ready(self) -> bool:
        return super().ready() and len(self.workers()) == self.count and \
            f"{self.count} workers answering" in self.log()

    def workers(self) -> dict[int, int]:
        return {int(index): int(pid) for index, pid in STARTED.findall(self.log())}

    @contextlib.contextmanager
    def only(self, index: int) -> Iterator[None]:
        """Every worker but ``index`` stopped (SIGSTOP) for the block, then continued."""
        others = [pid for i, pid in self.workers().items() if i != index]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT:g} s: {what}")
        time.sleep(0.05)


def get(port: int, headers: dict[str, str], path: str = "/auth") -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return int(response.status), response.headers
    except HTTPError as refused:
        return refused.code, refused.headers


def realm(port: int) -> str:
    status, headers = get(port, NOBODY)
    assert status == 401, status
    return str(headers["WWW-Authenticate"].split('"')[1])


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def two_free_ports() -> int:
    """A port that is free, and the one after it too (metrics: one per worker)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def test_two_workers_answer_on_one_port_each_with_its_metrics(tmp_path: Path, slapd: Slapd,
                                                              redis_server: RedisServer) -> None:
    port, scrape = free_port(), two_free_ports()
    with Fleet(tmp_path, settings(slapd, redis_server, port, metrics={"listen": f"127.0.0.1:{scrape}"})) as fleet:
        assert fleet.process is not None
        workers = fleet.workers()
        assert sorted(workers) == [0, 1] and len(set(workers.values())) == 2
        assert all(parent_of(pid) == fleet.process.pid for pid in workers.values())
        for index in workers:
            with fleet.only(index):
                assert get(port, ALICE)[0] == 200
                assert get(port, NOBODY)[0] == 401
        for index in workers:  # each counts its own requests, on its own port
            status, _ = get(scrape + index, {}, "/metrics")
            assert status == 200


def test_a_killed_worker_is_started_again_and_no_queued_connection_is_lost(
        tmp_path: Path, slapd: Slapd, redis_server: RedisServer) -> None:
    port = free_port()
    with Fleet(tmp_path, settings(slapd, redis_server, port)) as fleet:
        before = fleet.workers()
        os.kill(before[1], signal.SIGKILL)
        until(lambda: fleet.workers()[1] != before[1], "worker 1 started again")
        assert f"worker 1 (pid {before[1]}) exited with signal SIGKILL" in fleet.log()
        assert fleet.workers()[0] == before[0]
        # Worker 0 stopped: the request waits in the queue until the new worker 1 takes it.
        with fleet.only(1):
            assert get(port, ALICE)[0] == 200
        assert fleet.process is not None and fleet.process.poll() is None


def test_a_worker_that_keeps_dying_waits_longer_each_time(tmp_path: Path, slapd: Slapd,
                                                           redis_server: RedisServer) -> None:
    port = free_port()
    with Fleet(tmp_path, settings(slapd, redis_server, port)) as fleet:
        for _ in range(3):  # each killed as soon as it is started: a quick death every time
            pid = fleet.workers()[1]
            os.kill(pid, signal.SIGKILL)
            until(lambda: fleet.workers()[1] != pid, "worker 1 started again")  # noqa: B023
        delays = re.findall(r"worker 1 \(pid \d+\) exited with signal SIGKILL; starting it again in (\S+) s",
                            fleet.log())
        assert delays == ["0.5", "1", "2"], fleet.log()
        with fleet.only(1):
            assert get(port, ALICE)[0] == 200


def test_a_sighup_while_a_worker_starts_reloads_it_once_it_is_ready(tmp_path: Path, slapd: Slapd,
                                                                     redis_server: RedisServer) -> None:
    """Before its handler is in place a SIGHUP would end a worker: the supervisor holds it back."""
    port = free_port()
    config = settings(slapd, redis_server, port)
    with Fleet(tmp_path, config) as fleet:
        assert fleet.process is not None
        old = fleet.workers()[1]
        os.kill(old, signal.SIGKILL)
        until(lambda: fleet.workers()[1] != old, "worker 1 started again")
        new = fleet.workers()[1]
        os.kill(new, signal.SIGSTOP)  # held in its start (it takes far longer than this to be ready)
        try:
            config["server"]["realm"] = "reloaded"
            fleet.config_file.write_text(yaml.safe_dump(config))
            fleet.process.send_signal(signal.SIGHUP)
            until(lambda: "reload: passing SIGHUP" in fleet.log(), "the supervisor passing the reload on")
        finally:
            os.kill(new, signal.SIGCONT)
        for index in fleet.workers():
            with fleet.only(index):
                until(lambda: realm(port) == "reloaded", f"worker {index} reloaded")
        assert fleet.workers()[1] == new and "exited with" not in fleet.log().split(f"(pid {new})", 1)[1]


def test_sighup_reloads_every_worker(tmp_path: Path, slapd: Slapd, redis_server: RedisServer) -> None:
    port = free_port()
    config = settings(slapd, redis_server, port)
    with Fleet(tmp_path, config) as fleet:
        assert fleet.process is not None
        config["server"]["realm"] = "reloaded"
        fleet.config_file.write_text(yaml.safe_dump(config))
        fleet.process.send_signal(signal.SIGHUP)
        for index in fleet.workers():
            with fleet.only(index):
                until(lambda: realm(port) == "reloaded", f"worker {index} reloaded")
        assert fleet.log().count("reloaded ") >= 2 and "Traceback" not in fleet.log()


def test_an_admin_reload_reaches_every_worker(tmp_path: Path, slapd: Slapd, redis_server: RedisServer) -> None:
    port = free_port()
    config = settings(slapd, redis_server, port, admin={"socket": str(tmp_path / "admin.sock")})
    with Fleet(tmp_path, config) as fleet:
        config["server"]["realm"] = "reloaded"
        fleet.config_file.write_text(yaml.safe_dump(config))
        result = subprocess.run([sys.executable, "-m", "sidecar", "admin", "--config", str(fleet.config_file),
                                 "reload"], capture_output=True, text=True, cwd=ROOT, timeout=WAIT * 2)
        assert result.returncode == 0, result
        for index in fleet.workers():
            with fleet.only(index):
                until(lambda: realm(port) == "reloaded", f"worker {index} reloaded")


def test_sigterm_stops_every_worker_and_exits_0(tmp_path: Path, slapd: Slapd, redis_server: RedisServer) -> None:
    port = free_port()
    with Fleet(tmp_path, settings(slapd, redis_server, port)) as fleet:
        process, workers = fleet.process, fleet.workers()
        assert process is not None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT * 2) == 0
        assert all(gone(pid) for pid in workers.values())  # the supervisor waited for each
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert "Traceback" not in fleet.log()


def test_sigterm_lets_each_worker_finish_its_request_in_flight(tmp_path: Path, slapd: Slapd,
                                                              redis_server: RedisServer) -> None:
    port = free_port()
    # Long enough for both requests to be on their way before the stop (they still finish if not).
    with DelayedDirectory(slapd.port, delay=3.0, only_binds_under=PEOPLE) as far:
        config = settings(slapd, redis_server, port)
        config["ldap"]["server_uri"] = far.uri
        with Fleet(tmp_path, config) as fleet:
            assert fleet.process is not None
            answered: list[int] = []

            def ask(index: int, user: str) -> threading.Thread:
                """alice's, then carol's, password check, held by the slow directory, on one worker each."""
                credentials = base64.b64encode(f"{user}:{user}-pass".encode()).decode()
                thread = threading.Thread(target=lambda: answered.append(
                    get(port, {**ALICE, "Authorization": f"Basic {credentials}"})[0]))
                with fleet.only(index):
                    thread.start()
                    until(lambda: far.binds_as(f"uid={user},{PEOPLE}") == 1, f"{user}'s bind on its way")
                return thread

            threads = [ask(0, "alice"), ask(1, "carol")]
            fleet.process.send_signal(signal.SIGTERM)
            for thread in threads:
                thread.join(WAIT)
            assert answered == [200, 200]
            assert fleet.process.wait(timeout=WAIT * 2) == 0
            assert fleet.log().count("stopping: draining") == 2 and "Traceback" not in fleet.log()


def test_a_supervisor_killed_leaves_no_worker_behind(tmp_path: Path, slapd: Slapd,
                                                     redis_server: RedisServer) -> None:
    port = free_port()
    with Fleet(tmp_path, settings(slapd, redis_server, port)) as fleet:
        assert fleet.process is not None
        workers = fleet.workers()
        fleet.process.kill()
        fleet.process.wait(timeout=WAIT)
        until(lambda: all(gone(pid) for pid in workers.values()), "every worker gone with its supervisor")


def test_systemd_hears_ready_and_stopping_once_for_the_whole(tmp_path: Path, slapd: Slapd,
                                                             redis_server: RedisServer) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(path))
        systemd.settimeout(WAIT * 2)
        port = free_port()
        with Fleet(tmp_path, settings(slapd, redis_server, port), environment={"NOTIFY_SOCKET": str(path)}) as fleet:
            assert systemd.recv(100) == b"READY=1"
            for index in fleet.workers():  # ready means every worker answers
                with fleet.only(index):
                    assert get(port, ALICE)[0] == 200
            assert fleet.process is not None
            fleet.process.send_signal(signal.SIGTERM)
            assert systemd.recv(100) == b"STOPPING=1"
            assert fleet.process.wait(timeout=WAIT * 2) == 0
        systemd.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing more: the workers never spoke to systemd
            systemd.recv(100)


def test_a_port_in_use_is_one_line_and_exit_2_before_any_worker(tmp_path: Path, slapd: Slapd,
                                                                redis_server: RedisServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(settings(slapd, redis_server, port)))
        result = subprocess.run([sys.executable, "-m", "sidecar", "serve", "--config", str(path)],
                                capture_output=True, text=True, cwd=ROOT, timeout=WAIT * 2)
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        f"auth-sidecar: cannot listen on 127.0.0.1:{port}: Address already in use"], result.stderr


def test_a_worker_s_metrics_port_in_use_is_one_line_and_exit_2(tmp_path: Path, slapd: Slapd,
                                                               redis_server: RedisServer) -> None:
    scrape = two_free_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", scrape + 1))  # worker 1's
        taken.listen()
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(settings(slapd, redis_server, free_port(),
                                                metrics={"listen": f"127.0.0.1:{scrape}"})))
        result = subprocess.run([sys.executable, "-m", "sidecar", "serve", "--config", str(path)],
                                capture_output=True, text=True, cwd=ROOT, timeout=WAIT * 2)
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        f"auth-sidecar: cannot listen on 127.0.0.1:{scrape + 1} (metrics of worker 1): Address already in use"]


def test_workers_is_fixed_at_start(tmp_path: Path, slapd: Slapd, redis_server: RedisServer) -> None:
    port = free_port()
    config = settings(slapd, redis_server, port)
    with Fleet(tmp_path, config) as fleet:
        assert fleet.process is not None
        config["server"]["workers"] = 3
        fleet.config_file.write_text(yaml.safe_dump(config))
        fleet.process.send_signal(signal.SIGHUP)
        until(lambda: fleet.log().count("server.workers changed") == 2, "both workers refused the reload")
        assert len(fleet.workers()) == 2


def test_the_state_store_is_fixed_at_start(tmp_path: Path, slapd: Slapd, redis_server: RedisServer) -> None:
    """The store the bans and sign-outs live in is the process's for its life: a reload that names
    another is refused by name, and the running configuration goes on."""
    config = settings(slapd, redis_server, free_port())
    with Fleet(tmp_path, config) as fleet:
        assert fleet.process is not None
        config["state"] = {**config["state"], "key_prefix": "elsewhere:"}
        fleet.config_file.write_text(yaml.safe_dump(config))
        fleet.process.send_signal(signal.SIGHUP)
        until(lambda: fleet.log().count("state changed: it takes effect at a restart") == 2,
              "both workers refused the reload")
