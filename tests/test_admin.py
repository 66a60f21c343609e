"""The admin channel, driven by the CLI against a real sidecar process: bans and unban, sessions and
revoke, reload, status; the socket's mode, that a second sidecar does not take it over, that a stale
one is replaced, and that an unreachable socket or bad input is one clear line, never a traceback."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import http.client
import io
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml

from sidecar import __version__, admin, cli
from sidecar.identity import Identity
from sidecar.regulation import Ban, Regulator
from sidecar.session_index import SessionIndex
from sidecar.sessions import Session
from tests.conftest import ldap_settings, need
from tests.testbed import ROOT, free_port
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd

PUBLIC = "https://app.test/_sidecar"
SESSION = "__Host-sidecar_session"
CSRF = "__Host-sidecar_csrf"
NOBODY = 65534


class AdminSidecar(SidecarProcess):
    """A sidecar that counts as ready once it has logged that it listens (the admin channel is set up
    before that line)."""

    def ready(self) -> bool:
        return super().ready() and "listening on" in self.log()


@pytest.fixture(scope="module")
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="adm", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def settings(slapd: Slapd, socket_path: Path, users: Path, **top: Any) -> dict[str, Any]:
    return {
        "server": {"listen": f"127.0.0.1:{free_port()}", "public_url": PUBLIC},
        "ldap": ldap_settings(slapd),
        "local_users": {"file": str(users)},
        "sessions": {"keys": [{"id": "k1", "secret": "s" * 40}], "default_redirect": "https://app.test/"},
        "regulation": {"max_failures": 3, "window": 300, "ban": 900},
        "admin": {"socket": str(socket_path)},
        **top,
    }


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, slapd: Slapd, short_dir: Path) -> Iterator[AdminSidecar]:
    workdir = tmp_path_factory.mktemp("admin")
    users = workdir / "users.htpasswd"
    users.write_text(f"lena:{bcrypt.hashpw(b'lena-pass', bcrypt.gensalt(4)).decode()}\n")
    with AdminSidecar(workdir, settings(slapd, short_dir / "admin.sock", users)) as process:
        yield process


def socket_of(process: SidecarProcess) -> str:
    return str(yaml.safe_load(process.config_file.read_text())["admin"]["socket"])


def run_admin(*argv: str) -> tuple[int, str, str]:
    """``auth-sidecar admin ARGV``, in this process: exit status, standard output, standard error."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            status = cli.main(["admin", *argv])
        except SystemExit as exit:  # argparse's usage errors
            status = int(exit.code or 0)
    return status, out.getvalue(), err.getvalue()


def admin_json(process: SidecarProcess, *argv: str) -> tuple[int, Any]:
    status, out, err = run_admin("--socket", socket_of(process), "--json", *argv)
    assert "Traceback" not in out + err
    return status, json.loads(out)


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: str | None = None) -> tuple[int, http.client.HTTPMessage, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        connection.close()


def auth_basic(port: int, username: str, password: str, client: str) -> int:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    status, _, _ = request(port, "GET", "/auth", {"Authorization": f"Basic {token}", "X-Forwarded-For": client,
                                                  "Host": "app.test", "X-Original-URI": "/"})
    return status


def cookie(headers: http.client.HTTPMessage, name: str) -> str:
    for value in headers.get_all("Set-Cookie") or []:
        if value.startswith(name + "="):
            return value.split(";", 1)[0].split("=", 1)[1]
    raise AssertionError(f"no {name} cookie set")


def sign_in(port: int, username: str, password: str, client: str) -> str:
    """The session cookie a sign-in through /login ends with."""
    status, headers, _ = request(port, "GET", "/login")
    assert status == 200
    token = cookie(headers, CSRF)
    form = f"csrf={token}&username={username}&password={password}"
    status, headers, text = request(port, "POST", "/login", {
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"{CSRF}={token}",
        "X-Forwarded-For": client}, form)
    assert status == 303, text
    return cookie(headers, SESSION)


def auth_session(port: int, value: str) -> int:
    status, _, _ = request(port, "GET", "/auth", {"Cookie": f"{SESSION}={value}", "Host": "app.test",
                                                  "X-Original-URI": "/"})
    return status


# -- the socket ------------------------------------------------------------------------------------

def test_the_socket_is_mode_0600_and_the_sidecars_own(running: AdminSidecar) -> None:
    found = os.lstat(socket_of(running))
    assert stat.S_ISSOCK(found.st_mode)
    assert stat.S_IMODE(found.st_mode) == 0o600
    assert found.st_uid == os.geteuid()


def test_status_tells_version_file_hash_uptime_and_directory(running: AdminSidecar, slapd: Slapd) -> None:
    status, body = admin_json(running, "status")
    assert status == 0
    assert body["version"] == __version__
    assert body["pid"] == running.pid
    assert body["config"] == str(running.config_file)
    assert body["sha256"] == hashlib.sha256(running.config_file.read_bytes()).hexdigest()
    assert body["changed_on_disk"] is False
    assert body["uptime"] >= 0
    assert body["directory"] == [{"uri": slapd.uri, "state": "up", "retry_in": 0}]
    # The human-readable form says the same, through the real command (python -m sidecar).
    done = subprocess.run([sys.executable, "-m", "sidecar", "admin", "--config", str(running.config_file), "status"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f"auth-sidecar {__version__}, pid {running.pid}, up " in done.stdout
    assert f"config     {running.config_file}" in done.stdout
    assert f"sha256     {body['sha256']}" in done.stdout
    assert f"{slapd.uri}  up" in done.stdout


# -- bans ------------------------------------------------------------------------------------------

def test_a_ban_is_listed_lifted_and_the_right_password_works_again(running: AdminSidecar) -> None:
    port = running.port
    for _ in range(3):
        assert auth_basic(port, "carol", "wrong", "192.0.2.10") == 401
    assert auth_basic(port, "carol", "carol-pass", "192.0.2.11") != 200  # banned: no password is checked

    status, body = admin_json(running, "bans")
    assert status == 0
    assert body["settings"] == {"max_failures": 3, "window": 300, "ban": 900}
    listed = {(ban["kind"], ban["name"]): ban for ban in body["bans"]}
    assert listed[("user", "carol")]["banned"] and listed[("address", "192.0.2.10")]["banned"]
    assert 0 < listed[("user", "carol")]["remaining"] <= 900
    status, out, _ = run_admin("--socket", socket_of(running), "bans")
    assert status == 0
    assert "Banned (" in out and "user     carol" in out and "address  192.0.2.10" in out

    status, out, _ = run_admin("--socket", socket_of(running), "unban", "Carol")  # any spelling of the name
    assert status == 0
    assert out.startswith("lifted: user carol")
    assert auth_basic(port, "carol", "carol-pass", "192.0.2.11") == 200
    assert admin_json(running, "unban", "192.0.2.10")[0] == 0
    status, out, err = run_admin("--socket", socket_of(running), "unban", "192.0.2.10")
    assert (status, out) == (1, "")
    assert err == "auth-sidecar admin unban: no ban and no failures for '192.0.2.10'\n"


def test_an_ipv6_address_is_lifted_by_its_64(running: AdminSidecar) -> None:
    for name in ("ghost-1", "ghost-2", "ghost-3"):
        assert auth_basic(running.port, name, "wrong", "2001:db8:1:2::5") == 401
    listed = {(b["kind"], b["name"]) for b in admin_json(running, "bans")[1]["bans"] if b["banned"]}
    assert ("address", "2001:db8:1:2::/64") in listed
    status, body = admin_json(running, "unban", "2001:db8:1:2:ffff::9")  # another address of the /64
    assert status == 0
    assert [(b["kind"], b["name"]) for b in body["lifted"]] == [("address", "2001:db8:1:2::/64")]
    still = {(b["kind"], b["name"]) for b in admin_json(running, "bans")[1]["bans"]}
    assert ("address", "2001:db8:1:2::/64") not in still


# -- sessions --------------------------------------------------------------------------------------

def test_sessions_are_listed_and_revoke_signs_the_user_out_everywhere(running: AdminSidecar) -> None:
    port = running.port
    first = sign_in(port, "alice", "alice-pass", "192.0.2.20")
    second = sign_in(port, "alice", "alice-pass", "192.0.2.21")
    assert auth_session(port, first) == 200 and auth_session(port, second) == 200

    status, body = admin_json(running, "sessions", "alice")
    assert status == 0
    found = body["sessions"]
    assert len(found) == 2
    assert {s["client"] for s in found} == {"192.0.2.20", "192.0.2.21"}
    assert {(s["user"], s["source"]) for s in found} == {("alice", "ldap")}
    assert all(len(s["id"]) == admin.ID_SHOWN for s in found)
    status, out, _ = run_admin("--socket", socket_of(running), "sessions", "alice")
    assert status == 0
    assert "alice: 2 sessions known to this process" in out and "192.0.2.21" in out

    status, body = admin_json(running, "revoke", "ALICE")  # the name as typed; the sessions say alice
    assert status == 0
    assert body["names"] == ["ALICE", "alice"]
    assert body["sources"] == ["ldap", "local"]  # every source a session of theirs may come from
    assert body["known_sessions"] == 2
    assert auth_session(port, first) == 401 and auth_session(port, second) == 401
    assert admin_json(running, "sessions", "alice")[1]["sessions"] == []


def test_a_local_users_session_is_listed_with_its_source(running: AdminSidecar) -> None:
    value = sign_in(running.port, "lena", "lena-pass", "192.0.2.30")
    assert auth_session(running.port, value) == 200
    found = admin_json(running, "sessions", "lena")[1]["sessions"]
    assert [(s["source"], s["client"]) for s in found] == [("local", "192.0.2.30")]
    assert admin_json(running, "status")[1]["sessions"] >= 1


# -- reload ----------------------------------------------------------------------------------------

def test_reload_applies_an_edited_file_and_refuses_a_broken_one(running: AdminSidecar) -> None:
    original = running.config_file.read_text()
    config = yaml.safe_load(original)
    try:
        config["server"]["realm"] = "edited"
        running.config_file.write_text(yaml.safe_dump(config))
        assert admin_json(running, "status")[1]["changed_on_disk"] is True
        status, out, err = run_admin("--config", str(running.config_file), "reload")
        assert (status, err) == (0, "")
        digest = hashlib.sha256(running.config_file.read_bytes()).hexdigest()
        assert out == f"reloaded {running.config_file} (sha256 {digest})\n"
        challenge = request(running.port, "GET", "/auth", {"Host": "app.test", "X-Original-URI": "/"})[1]
        assert challenge["WWW-Authenticate"].startswith('Basic realm="edited"')

        config["server"]["no_such_key"] = 1
        running.config_file.write_text(yaml.safe_dump(config))
        # The file has a problem, so the socket is read from its admin section alone.
        status, out, err = run_admin("--config", str(running.config_file), "reload")
        assert (status, out) == (1, "")
        lines = err.splitlines()
        assert lines[0] == "auth-sidecar admin reload: reload refused, still serving the previous configuration"
        assert any("no_such_key" in line for line in lines[1:])
        assert admin_json(running, "status")[1]["sha256"] == digest  # the running one goes on
    finally:
        running.config_file.write_text(original)
        assert run_admin("--config", str(running.config_file), "reload")[0] == 0


# -- who may connect, and who may not take the socket ----------------------------------------------

def test_a_second_sidecar_does_not_take_the_socket_over(running: AdminSidecar, slapd: Slapd,
                                                       tmp_path: Path) -> None:
    config = yaml.safe_load(running.config_file.read_text())
    config["server"]["listen"] = f"127.0.0.1:{free_port()}"
    with AdminSidecar(tmp_path, config) as second:
        assert "admin channel off: another process answers on" in second.log()
        assert admin_json(running, "status")[1]["pid"] == running.pid
    assert admin_json(running, "status")[1]["pid"] == running.pid  # nor removes it when it stops


def as_nobody(path: str) -> subprocess.CompletedProcess[str]:
    """curl, run as nobody, asking the channel for its status."""
    return subprocess.run([need("curl"), "--silent", "--show-error", "--unix-socket", path, "http://sidecar/v1/status"],
                          capture_output=True, text=True, timeout=60, check=False, user=NOBODY, group=NOBODY,
                          extra_groups=[])


@pytest.mark.skipif(os.geteuid() != 0, reason="runs as another user: needs root")
def test_another_user_cannot_use_the_channel(running: AdminSidecar) -> None:
    path = socket_of(running)
    directory = os.path.dirname(path)
    os.chmod(directory, 0o711)  # another user may reach the socket: its mode alone keeps them out
    try:
        done = as_nobody(path)
        assert (done.returncode, done.stdout) == (7, "")  # could not connect: permission denied
        os.chmod(path, 0o666)  # a socket opened to all still refuses them: the peer's credentials are checked
        done = as_nobody(path)
        assert json.loads(done.stdout) == {"error": "only the sidecar's user and root may use the admin channel"}
    finally:
        os.chmod(path, 0o600)
        os.chmod(directory, 0o700)
    assert "admin channel: refused a connection from uid 65534" in running.log()


def test_permission_denied_says_who_may_open_it() -> None:
    assert admin._why(PermissionError(13, "Permission denied")) == (
        "permission denied (only the sidecar's user and root may open it)")


def test_the_channel_speaks_json_and_refuses_bad_input(running: AdminSidecar) -> None:
    async def ask() -> list[tuple[int, Any]]:
        answers = []
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_of(running))) as client:
            for method, where, body in [
                ("POST", "/v1/unban", "not json"), ("POST", "/v1/unban", '{"name": "a\\u0000b"}'),
                ("POST", "/v1/revoke", '{"user": ""}'), ("GET", "/v1/sessions", None),
                ("GET", "/v1/nothing", None), ("DELETE", "/v1/status", None),
            ]:
                async with client.request(method, "http://sidecar" + where, data=body) as response:
                    answers.append((response.status, await response.json()))
        return answers

    assert asyncio.run(ask()) == [
        (400, {"error": "the request body is not JSON"}),
        (400, {"error": "control, invisible or padding character in username"}),
        (400, {"error": "empty username"}),
        (400, {"error": "user is missing (a string)"}),
        (404, {"error": "404 Not Found"}),
        (405, {"error": "405 Method Not Allowed"}),
    ]


# -- the command, without a sidecar ------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["unban", ""], "argument NAME|ADDRESS: empty username"),
    (["sessions", "al\x1b[2Jice"], "argument USER: control, invisible or padding character in username: al\\x1b[2Jice"),
    (["revoke"], "the following arguments are required: USER"),
    (["unban", "x" * 300], "argument NAME|ADDRESS: username longer than"),
])
def test_bad_input_is_a_clear_usage_error(argv: list[str], message: str) -> None:
    status, out, err = run_admin("--socket", "/nonexistent/admin.sock", *argv)
    assert (status, out) == (2, "")
    assert message in err and "Traceback" not in err
    assert "\x1b" not in err  # nothing typed reaches the terminal unescaped


def test_an_unreachable_socket_is_one_line_and_exit_2(short_dir: Path) -> None:
    missing = short_dir / "missing.sock"
    status, out, err = run_admin("--socket", str(missing), "status")
    assert (status, out) == (2, "")
    assert err == (f"auth-sidecar: cannot reach the admin socket {missing}: no such file: "
                   "is the sidecar running? is admin.socket set?\n")
    stale = short_dir / "stale.sock"
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(stale))
    left.close()  # the file stays, nobody answers: what a crash leaves
    status, _, err = run_admin("--socket", str(stale), "bans")
    assert status == 2
    assert err.count("\n") == 1 and "nothing answers on it" in err


def test_the_socket_path_comes_from_the_configuration(tmp_path: Path) -> None:
    off = tmp_path / "off.yaml"
    off.write_text("admin:\n  enabled: false\n")
    status, _, err = run_admin("--config", str(off), "status")
    assert status == 2
    assert err == f"auth-sidecar: {off} has admin.enabled: false: the sidecar has no admin channel\n"
    absent = tmp_path / "absent.yaml"
    status, _, err = run_admin("--config", str(absent), "status")
    assert status == 2
    assert err == f"auth-sidecar: cannot read {absent}: No such file or directory; give --socket PATH\n"
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("admin:\n  socket: /nonexistent/x.sock\n")  # the rest is missing: still found
    assert run_admin("--config", str(elsewhere), "status")[2].startswith(
        "auth-sidecar: cannot reach the admin socket /nonexistent/x.sock: no such file")


# -- the channel's start, without a sidecar ----------------------------------------------------------

async def test_a_missing_directory_is_one_warning_and_no_channel(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "sidecar.admin"):
        assert await admin.start(object(), "/nonexistent/auth-sidecar/admin.sock") is None  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        "admin channel off: /nonexistent/auth-sidecar does not exist (the systemd unit's RuntimeDirectory= makes it)"]


async def test_a_stale_socket_is_replaced_and_anything_else_left_alone(short_dir: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = short_dir / "unit.sock"
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(path))
    left.close()
    with caplog.at_level(logging.INFO, "sidecar.admin"):
        runner = await admin.start(object(), str(path))  # type: ignore[arg-type]
    assert runner is not None
    try:
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        assert f"removed a stale admin socket {path} (nothing answered on it)" in caplog.messages
    finally:
        await runner.cleanup()
    assert not path.exists()  # removed at stop

    path.write_text("an operator's file")
    caplog.clear()
    with caplog.at_level(logging.INFO, "sidecar.admin"):
        assert await admin.start(object(), str(path)) is None  # type: ignore[arg-type]
    assert caplog.messages == [f"admin channel off: {path} exists and is not a socket: left alone"]
    assert path.read_text() == "an operator's file"
    path.unlink()


# -- what the channel reads: the regulator's bans and the session index -------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_regulator_lists_and_lifts_bans_as_it_counts_them() -> None:
    clock = Clock()
    regulator = Regulator(max_failures=2, window=60, ban=300, clock=clock)
    for name in ("İrİs", "bob"):
        regulator.failed(name, "2001:db8::7")
    regulator.failed("İrİs", "192.0.2.1")
    assert regulator.bans() == [Ban("client", "2001:db8::/64", 300.0, 0), Ban("user", "i̇ri̇s", 300.0, 0),
                                Ban("client", "192.0.2.1", 0.0, 1), Ban("user", "bob", 0.0, 1)]
    assert regulator.lift("nobody") == [] and regulator.lift("10.0.0.1") == []
    assert regulator.lift("İRİS") == [Ban("user", "i̇ri̇s", 300.0, 0)]  # any spelling of the name
    assert regulator.banned("İrİs", None) is None
    assert regulator.lift("2001:db8:0:0:ffff::1") == [Ban("client", "2001:db8::/64", 300.0, 0)]  # its /64
    assert regulator.banned(None, "2001:db8::7") is None
    assert regulator.lift("2001:db8::/64") == []  # lifted already
    clock.now += 61
    assert regulator.bans() == []  # failures out of the window count no more


def test_a_lifted_budget_starts_again_from_nothing() -> None:
    regulator = Regulator(max_failures=2, window=60, ban=300, clock=Clock())
    regulator.failed("carol", None)
    regulator.failed("carol", None)
    assert regulator.banned("carol", None) is not None
    regulator.lift("carol")
    assert regulator.banned("carol", None) is None
    assert regulator.failed("carol", None) == []  # one failure: the budget was not left full
    assert regulator.bans() == [Ban("user", "carol", 0.0, 1)]


def session(username: str, *, session_id: str | None = None) -> Session:
    made = Session(Identity(username=username, source="ldap"), issued_at=1000.0, last_seen=1000.0, checked_at=1000.0)
    return dataclasses.replace(made, id=session_id) if session_id else made


def test_the_session_index_writes_a_cookie_in_use_once_a_minute() -> None:
    clock = Clock()
    index = SessionIndex(lifetime=3600, idle_timeout=600, touch_every=60, clock=clock)
    signed_in = session("alice")
    index.issued(signed_in, None)  # a provider's sign-in: no address yet
    assert index.due(signed_in.id, 1000.0)  # the first /auth fills the address in
    index.touch(signed_in, 1000.0, "192.0.2.1")
    assert not index.due(signed_in.id, 1059.0)
    assert index.due(signed_in.id, 1060.0)
    index.touch(signed_in, 1060.0, "192.0.2.2")
    assert [(k.last_seen, k.client) for k in index.sessions("ALICE")] == [(1060.0, "192.0.2.2")]
    clock.now = 1060.0 + 600 + 60 + 1  # idle for longer than the timeout (and the minute it may lag)
    assert index.sessions("alice") == []
    assert index.counts() == (0, 0)


def test_the_session_index_is_bounded_the_longest_unseen_going_first() -> None:
    clock = Clock()
    index = SessionIndex(lifetime=3600, idle_timeout=3600, max_users=2, per_user=2, clock=clock)
    for n in range(3):
        index.touch(session("alice", session_id=f"alice-session-{n:04}"), 1000.0 + n, "192.0.2.1")
    assert [k.id for k in index.sessions("alice")] == ["alice-session-0002", "alice-session-0001"]
    index.touch(session("bob"), 1010.0, "192.0.2.2")
    index.touch(session("alice", session_id="alice-session-0002"), 1020.0, "192.0.2.1")  # alice seen last
    index.touch(session("carol"), 1030.0, "192.0.2.3")  # a third user: bob goes
    assert index.sessions("bob") == []
    assert index.counts() == (3, 2)
    assert [k.id for k in index.forget("Alice")] == ["alice-session-0001", "alice-session-0002"]
    index.forget_session(index.sessions("carol")[0].id)
    assert index.counts() == (0, 0)
    assert not index._ids and not index._users  # nothing left behind


# -- the channel of a fleet (state.backend: redis) ---------------------------------------------------

def test_the_channel_of_one_replica_acts_on_the_whole_fleet(tmp_path: Path, slapd: Slapd, short_dir: Path) -> None:
    """Two sidecar processes sharing one real redis-server: a ban earned through one is listed and
    lifted through the other's channel; a session made on one is listed, and revoked, through the other."""
    import time

    from tests.testbed.redis import RedisServer

    need("redis-server")
    users = tmp_path / "users.htpasswd"
    users.write_text("# nobody\n")
    with RedisServer(tmp_path / "redis") as redis:
        state = {"state": {"backend": "redis", "url": redis.url, "poll_every": 0.5}}
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        with AdminSidecar(tmp_path / "one", settings(slapd, short_dir / "one.sock", users, **state)) as one, \
                AdminSidecar(tmp_path / "two", settings(slapd, short_dir / "two.sock", users, **state)) as two:
            for n in range(3):
                assert auth_basic(one.port, "jose", f"wrong-{n}", f"192.0.2.{30 + n}") == 401

            def listed() -> dict[tuple[str, str], Any]:
                status, body = admin_json(two, "bans")
                assert status == 0 and body["scope"] == "fleet"
                return {(ban["kind"], ban["name"]): ban for ban in body["bans"]}

            deadline = time.monotonic() + 20
            while not listed().get(("user", "jose"), {}).get("banned"):
                assert time.monotonic() < deadline, "the ban never reached the store"
                time.sleep(0.05)
            status, body = admin_json(two, "unban", "JOSE")
            assert status == 0 and body["scope"] == "fleet"
            assert [(ban["kind"], ban["name"]) for ban in body["lifted"]] == [("user", "jose")]
            deadline = time.monotonic() + 20
            while auth_basic(one.port, "jose", "jose-pass", "192.0.2.40") != 200:  # lifted on one too
                assert time.monotonic() < deadline, "the lift never reached the other replica"
                time.sleep(0.05)

            alice = sign_in(one.port, "alice", "alice-pass", "192.0.2.41")
            deadline = time.monotonic() + 20
            while not admin_json(two, "sessions", "alice")[1]["sessions"]:
                assert time.monotonic() < deadline, "the session never reached the store"
                time.sleep(0.05)
            status, body = admin_json(two, "sessions", "Alice")
            assert status == 0 and body["scope"] == "fleet"
            assert [(s["user"], s["source"]) for s in body["sessions"]] == [("alice", "ldap")]
            assert auth_session(two.port, alice) == 200  # a session made on one works on the other
            status, body = admin_json(two, "revoke", "alice")
            assert status == 0 and body["scope"] == "fleet"
            deadline = time.monotonic() + 20
            while auth_session(one.port, alice) != 401:
                assert time.monotonic() < deadline, "the sign-out never reached the other replica"
                time.sleep(0.05)
