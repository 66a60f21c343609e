"""The daemon's life cycle, on a real process: SIGHUP reloads under load without one failed request,
a bad file keeps the running configuration, SIGTERM lets requests in flight finish and exits 0,
and whatever stops the start is one line and exit status 2."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import PEOPLE, ldap_settings, need
from tests.testbed import ROOT, free_port
from tests.testbed.delay import DelayedDirectory
from tests.testbed.nginx import Nginx, render_site
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd
from tests.testbed.upstream import EchoApp

pytestmark = pytest.mark.server

ALICE = {"Authorization": "Basic " + base64.b64encode(b"alice:alice-pass").decode(), "Host": "app.test",
         "X-Original-URI": "/"}
NOBODY = {"Host": "app.test", "X-Original-URI": "/"}
WAIT = 30.0  # seconds a condition the process will reach is waited for


def settings(slapd: Slapd, port: int, **top: Any) -> dict[str, Any]:
    return {"server": {"listen": f"127.0.0.1:{port}"}, "ldap": ldap_settings(slapd), "admin": {"enabled": False},
            **top}


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT:g} s: {what}")
        time.sleep(0.05)


@pytest.fixture
def started(tmp_path: Path, slapd: Slapd) -> Iterator[SidecarProcess]:
    with SidecarProcess(tmp_path, settings(slapd, free_port())) as process:
        yield process


def rewrite(process: SidecarProcess, config: dict[str, Any]) -> None:
    process.config_file.write_text(yaml.safe_dump(config))


def hup(process: SidecarProcess) -> None:
    assert process.pid is not None
    os.kill(process.pid, signal.SIGHUP)


def realm(port: int) -> str:
    """The realm a request without credentials is challenged with: the configuration in use."""
    import urllib.request
    from urllib.error import HTTPError

    request = urllib.request.Request(f"http://127.0.0.1:{port}/auth", headers=NOBODY)
    try:
        urllib.request.urlopen(request, timeout=10)
    except HTTPError as refused:
        return refused.headers["WWW-Authenticate"].split('"')[1]
    raise AssertionError("a request without credentials was let in")


async def load(port: int, stop: asyncio.Event, results: Counter[str], path: str = "/auth") -> None:
    """Requests as nginx sends them (or to nginx, with ``path``), over kept-alive connections and
    new ones, until ``stop``; counted by status, and whether alice's identity came with a 200."""
    async def worker(keep_alive: bool) -> None:
        connector = aiohttp.TCPConnector(force_close=not keep_alive, limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not stop.is_set():
                try:
                    async with session.get(f"http://127.0.0.1:{port}{path}", headers=ALICE) as response:
                        alice = (response.headers.get("Remote-User") == "alice" if path == "/auth"
                                 else '"Remote-User", "alice"' in await response.text())
                        results[str(response.status) if alice else f"{response.status} without alice"] += 1
                except aiohttp.ClientError as exc:
                    results[type(exc).__name__] += 1

    await asyncio.gather(*(worker(keep_alive=i % 2 == 0) for i in range(8)))


async def more(results: Counter[str], count: int) -> None:
    """Until ``count`` more requests are answered: the load goes on across each reload."""
    target, deadline = sum(results.values()) + count, time.monotonic() + WAIT
    while sum(results.values()) < target:
        assert time.monotonic() < deadline, f"the load stalled: {results}"
        await asyncio.sleep(0.01)


def test_sighup_reloads_under_load_and_no_request_fails(started: SidecarProcess, slapd: Slapd) -> None:
    config = yaml.safe_load(started.config_file.read_text())
    results: Counter[str] = Counter()

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(load(started.port, stop, results))
        for generation in range(1, 6):
            config["server"]["realm"] = f"generation-{generation}"
            rewrite(started, config)
            hup(started)
            wanted = f"generation-{generation}"
            await asyncio.to_thread(until, lambda: realm(started.port) == wanted, f"{wanted} served")  # noqa: B023
            await more(results, 100)
        stop.set()
        await task

    asyncio.run(scenario())
    assert set(results) == {"200"}, results
    assert sum(results.values()) >= 500, results  # the load ran on across each of the five reloads
    assert started.process is not None and started.process.poll() is None


def test_through_nginx_a_reload_costs_no_request(tmp_path: Path, slapd: Slapd) -> None:
    """The operator's first day: systemctl reload killed the daemon and nginx answered 500."""
    need("nginx")
    sidecar_port, listen_port = free_port(), free_port()
    config = settings(slapd, sidecar_port)
    results: Counter[str] = Counter()
    with EchoApp() as app, SidecarProcess(tmp_path, config) as process:
        site = render_site(listen_port=listen_port, sidecar_port=sidecar_port, app_port=app.port)
        with Nginx(tmp_path / "nginx", site):
            async def through_nginx() -> None:
                stop = asyncio.Event()
                task = asyncio.ensure_future(load(listen_port, stop, results, path="/devices/"))
                for generation in range(1, 4):
                    config["server"]["realm"] = wanted = f"generation-{generation}"
                    rewrite(process, config)
                    hup(process)
                    await asyncio.to_thread(until, lambda: realm(sidecar_port) == wanted, f"{wanted} served")  # noqa: B023
                    await more(results, 50)
                stop.set()
                await task

            asyncio.run(through_nginx())
    assert set(results) == {"200"} and results["200"] >= 150, results


def test_a_bad_file_is_refused_and_the_running_configuration_goes_on(started: SidecarProcess,
                                                                    slapd: Slapd) -> None:
    config = yaml.safe_load(started.config_file.read_text())
    config["server"]["realm"] = "new"
    config["ldap"]["group_type"] = "no_such_type"
    config["cache"] = {"max_entries": -1}
    rewrite(started, config)
    hup(started)
    until(lambda: "reload refused" in started.log(), "the refusal logged")
    log = started.log()
    assert "ldap.group_type" in log and "cache.max_entries" in log, log  # every problem, not the first
    assert "Traceback" not in log
    assert realm(started.port) == "auth-sidecar"
    assert started.process is not None and started.process.poll() is None


def test_what_a_reload_cannot_change_is_refused_by_name(started: SidecarProcess, slapd: Slapd) -> None:
    config = yaml.safe_load(started.config_file.read_text())
    config["server"]["listen"] = f"127.0.0.1:{free_port()}"
    rewrite(started, config)
    hup(started)
    until(lambda: "reload refused" in started.log(), "the refusal logged")
    assert "server.listen changed: it takes effect at a restart" in started.log()
    assert realm(started.port) == "auth-sidecar"


def test_a_reload_keeps_bans(tmp_path: Path, slapd: Slapd) -> None:
    port = free_port()
    config = settings(slapd, port, regulation={"max_failures": 2, "ban": 600})
    wrong = {**ALICE, "Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()}
    with SidecarProcess(tmp_path, config) as process:
        statuses = [status(port, wrong) for _ in range(3)]
        assert statuses == [401, 401, 401]
        assert "banned" in process.log()
        config["server"]["realm"] = "reloaded"
        rewrite(process, config)
        hup(process)
        until(lambda: realm(port) == "reloaded", "the reload served")
        assert status(port, ALICE) == 401  # still banned: the right password is not checked
        assert "banned for" in process.log().rsplit("reloaded", 1)[1]


def status(port: int, headers: dict[str, str]) -> int:
    import urllib.request
    from urllib.error import HTTPError

    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/auth", headers=headers),
                                    timeout=30) as response:
            return int(response.status)
    except HTTPError as refused:
        return refused.code


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(tmp_path: Path, slapd: Slapd) -> None:
    port = free_port()
    with DelayedDirectory(slapd.port, delay=1.0, only_binds_under=PEOPLE) as far:
        config = settings(slapd, port)
        config["ldap"]["server_uri"] = far.uri
        with SidecarProcess(tmp_path, config) as process:
            assert process.process is not None
            answered: list[int] = []

            async def ask() -> None:
                answered.append(await asyncio.to_thread(status, port, ALICE))

            async def scenario() -> None:
                request = asyncio.ensure_future(ask())
                await asyncio.to_thread(until, lambda: far.binds_as(f"uid=alice,{PEOPLE}") == 1,
                                        "alice's bind on its way to the directory")
                process.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                await request

            asyncio.run(scenario())
            assert answered == [200]
            assert process.process.wait(timeout=WAIT) == 0
            assert "stopping: draining" in process.log() and "Traceback" not in process.log()


def serve(config: Path | str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", "serve", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def one_line_and_2(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and "listening" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, slapd: Slapd) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(settings(slapd, port)))
        line = one_line_and_2(serve(path))
    assert line == f"auth-sidecar: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_a_file_that_cannot_be_read_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = serve(tmp_path)  # a directory
    assert result.returncode == 2 and "Is a directory" in result.stderr and "Traceback" not in result.stderr
    result = serve(tmp_path / "absent.yaml")
    assert result.returncode == 2 and "No such file" in result.stderr and "Traceback" not in result.stderr


def test_a_missing_secret_is_named_and_exit_2(tmp_path: Path, slapd: Slapd) -> None:
    config = settings(slapd, free_port())
    config["ldap"]["bind_password"] = {"file": str(tmp_path / "absent-secret")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = serve(path)
    assert result.returncode == 2 and "ldap.bind_password" in result.stderr and "absent-secret" in result.stderr
    assert "Traceback" not in result.stderr


class NotifyingSidecar(SidecarProcess):
    def __init__(self, workdir: Path, config: dict[str, Any], notify_socket: Path) -> None:
        super().__init__(workdir, config)
        self.notify_socket = notify_socket

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "NOTIFY_SOCKET": str(self.notify_socket)}


def test_systemd_is_told_when_it_is_ready_and_when_it_stops(tmp_path: Path, slapd: Slapd) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(path))
        systemd.settimeout(WAIT)
        port = free_port()
        with NotifyingSidecar(tmp_path, settings(slapd, port), path) as process:
            assert systemd.recv(100) == b"READY=1"
            assert status(port, ALICE) == 200  # ready means answering
            assert process.process is not None
            process.process.send_signal(signal.SIGTERM)
            assert systemd.recv(100) == b"STOPPING=1"
            assert process.process.wait(timeout=WAIT) == 0


def answer(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, str | None, str | None]:
    """(status, Remote-User, WWW-Authenticate) of one request to the sidecar itself."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Remote-User"), response.getheader("WWW-Authenticate")
    finally:
        connection.close()


def test_get_auth_answered_without_routing_answers_as_the_route_does(started: SidecarProcess) -> None:
    """The server answers GET /auth itself (no router); HEAD, a query string and other spellings of
    the path go through the router: every way that reaches the handler answers alike, the rest is 404."""
    port = started.port
    alice, nobody = answer(port, "GET", "/auth", ALICE), answer(port, "GET", "/auth", NOBODY)
    assert alice == (200, "alice", None)
    assert nobody[:2] == (401, None) and nobody[2] is not None and nobody[2].startswith("Basic realm=")
    for method, path in (("GET", "/auth?x=1"), ("HEAD", "/auth")):
        assert answer(port, method, path, ALICE) == alice
        assert answer(port, method, path, NOBODY) == nobody
    for path in ("/auth/", "/Auth", "/auth%20", "//auth"):
        assert answer(port, "GET", path, ALICE)[0] == 404
    assert answer(port, "POST", "/auth", ALICE)[0] == 405
    # An Expect header is aiohttp's to answer, on every path alike: 417 for anything but 100-continue.
    for path in ("/auth", "/auth?x=1"):
        assert answer(port, "GET", path, {**ALICE, "Expect": "foo"})[0] == 417
        assert answer(port, "GET", path, {**NOBODY, "Expect": "foo"})[0] == 417
        assert answer(port, "GET", path, {**ALICE, "Expect": "100-continue"}) == alice
