"""Metrics: a real sidecar process driven through /auth, the login form and a reload, its /metrics
scraped over HTTP and read with prometheus_client's own parser; and the null instruments of
metrics off."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from sidecar import __version__
from sidecar.config import HeaderConfig
from sidecar.errors import (
    AccessDenied,
    AuthError,
    BadRequest,
    DirectoryUnavailable,
    InvalidCredentials,
    MalformedRequest,
    Throttled,
    UnknownUser,
)
from sidecar.headers import HeaderWriter
from sidecar.identity import Identity
from sidecar.metrics import METHODS, NO_METRICS, NULL, Metrics, outcome_of
from sidecar.session_auth import SessionAuthenticator, SessionJar
from sidecar.sessions import CookieSettings, Session, SessionCodec
from sidecar.sources import Registry
from tests.conftest import ldap_settings
from tests.testbed import free_port, wait_for_port
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd

SCRAPE_TIMEOUT = 15.0  # seconds a reload gets to show in the scrape
DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "auth-sidecar.json"


# -- a real process -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def cookie(self, name: str) -> str | None:
        for value in self.headers.get_all("Set-Cookie") or []:
            key, _, rest = value.partition("=")
            if key == name:
                return rest.split(";", 1)[0]
        return None


def fetch(port: int, path: str, headers: Mapping[str, str] | None = None, *, method: str = "GET",
          body: str | None = None) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read().decode(errors="replace"))
    finally:
        connection.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of GET /metrics, read by prometheus_client's parser."""
    answer = fetch(port, "/metrics")
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.body) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not there (a counter never bound is a counter at 0)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports a process listens on, from /proc: its socket inodes in LISTEN state."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with_target = os.readlink(fd) if fd.is_symlink() else ""
        if match := re.fullmatch(r"socket:\[(\d+)\]", with_target):
            inodes.add(match.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def sidecar_config(slapd: Slapd, port: int, metrics_port: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
        "ldap": ldap_settings(slapd),
        "sessions": {"keys": [{"id": "k1", "secret": "m" * 43}], "secure": False},
        "regulation": {"max_failures": 3},
        "access": {"rules": [{"path": "/admin", "users": ["alice"]}, {"path": "/admin", "policy": "deny"}]},
        "log": {"format": "json"},
        "admin": {"enabled": False},
    }
    if metrics_port is not None:
        config["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
    return config


@dataclass
class Running:
    process: SidecarProcess
    port: int
    metrics_port: int

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid


@pytest.fixture
def running(slapd: Slapd, tmp_path: Path) -> Iterator[Running]:
    port, metrics_port = free_port(), free_port()
    while metrics_port == port:
        metrics_port = free_port()
    with SidecarProcess(tmp_path, sidecar_config(slapd, port, metrics_port)) as process:
        wait_for_port(metrics_port)  # bound right after the main port, before "listening" is logged
        yield Running(process, port, metrics_port)


def sign_in(port: int, user: str, password: str) -> str:
    """The login form, as a browser posts it; the session cookie's value."""
    page = fetch(port, "/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.body)
    assert page.status == 200 and token is not None
    form = urlencode({"username": user, "password": password, "csrf": token.group(1)})
    answer = fetch(port, "/login", {"Cookie": f"sidecar_csrf={token.group(1)}",
                                    "Content-Type": "application/x-www-form-urlencoded"}, method="POST", body=form)
    session = answer.cookie("sidecar_session")
    assert answer.status == 303 and session, answer.body
    return session


def sign_out(port: int, session: str) -> None:
    page = fetch(port, "/logout", {"Cookie": f"sidecar_session={session}"})
    token = re.search(r'name="csrf" value="([^"]+)"', page.body)
    assert page.status == 200 and token is not None
    answer = fetch(port, "/logout", {"Cookie": f"sidecar_session={session}; sidecar_csrf={token.group(1)}",
                                     "Content-Type": "application/x-www-form-urlencoded"},
                   method="POST", body=urlencode({"csrf": token.group(1)}))
    assert answer.status == 303


def wait_for(port: int, name: str, at_least: float, **labels: str) -> Samples:
    """Scrape until a counter reaches a value (a reload runs in the background of SIGHUP)."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while True:
        samples = scrape(port)
        if value(samples, name, **labels) >= at_least:
            return samples
        assert time.monotonic() < deadline, f"{name}{labels} stayed at {value(samples, name, **labels)}"
        time.sleep(0.05)


def test_a_scrape_counts_every_decision_lookup_ban_session_and_reload(running: Running, slapd: Slapd) -> None:
    port, scraped = running.port, running.metrics_port
    before = scrape(scraped)
    assert value(before, "auth_sidecar_info", version=__version__) == 1
    assert value(before, "auth_sidecar_decisions_total", method="basic", outcome="allow") == 0
    assert value(before, "process_resident_memory_bytes") > 0

    # Basic: right twice (the second from the verdict cache), no credentials, two Authorization headers.
    assert fetch(port, "/auth", basic("alice", "alice-pass")).status == 200
    assert fetch(port, "/auth", basic("alice", "alice-pass")).status == 200
    assert fetch(port, "/auth").status == 401
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("GET", "/auth")
    for credentials in (basic("alice", "alice-pass"), basic("bob", "bob-pass")):
        connection.putheader("Authorization", credentials["Authorization"])
    connection.endheaders()
    assert connection.getresponse().status == 400
    connection.close()
    # The right password, then the access rules' 403.
    assert fetch(port, "/auth", {**basic("carol", "carol-pass"),
                                 "X-Original-URL": "http://app.test/admin/x"}).status == 403
    # The login form (the verdict cache knows alice), then her cookie twice: decrypted once, then the memo.
    session = sign_in(port, "alice", "alice-pass")
    for _ in range(2):
        assert fetch(port, "/auth", {"Cookie": f"sidecar_session={session}"}).status == 200
    sign_out(port, session)
    assert fetch(port, "/auth", {"Cookie": f"sidecar_session={session}"}).status == 401
    # Three wrong passwords for bob from one address: both are banned, the fourth attempt is throttled.
    away = {"X-Forwarded-For": "192.0.2.7"}
    for attempt in range(3):
        assert fetch(port, "/auth", {**basic("bob", f"wrong-{attempt}"), **away}).status == 401
    assert fetch(port, "/auth", {**basic("bob", "bob-pass"), **away}).status == 401

    samples = scrape(scraped)
    decisions = {(method, outcome): value(samples, "auth_sidecar_decisions_total", method=method, outcome=outcome)
                 for method in METHODS
                 for outcome in ("allow", "deny", "throttled", "forbidden", "bad_request", "unavailable", "error",
                                 "unauthenticated")}
    assert {key: count for key, count in decisions.items() if count} == {
        ("basic", "allow"): 2, ("basic", "forbidden"): 1, ("basic", "deny"): 3, ("basic", "throttled"): 1,
        ("session", "allow"): 2,
        # A signed-out cookie is no credentials.
        ("none", "unauthenticated"): 2, ("none", "bad_request"): 1,
    }
    assert value(samples, "auth_sidecar_auth_duration_seconds_count", method="basic") == 7
    assert value(samples, "auth_sidecar_auth_duration_seconds_count", method="session") == 2
    assert value(samples, "auth_sidecar_auth_duration_seconds_count", method="none") == 3
    assert value(samples, "auth_sidecar_auth_duration_seconds_bucket", method="basic", le="+Inf") == 7
    assert 0 < value(samples, "auth_sidecar_auth_duration_seconds_sum", method="basic")

    # Each password the cache did not know went to the directory: alice, carol and bob's three.
    directory = {outcome: value(samples, "auth_sidecar_directory_operations_total", server=slapd.uri,
                                operation="check_password", outcome=outcome)
                 for outcome in ("ok", "deny", "throttled", "forbidden", "unavailable", "error")}
    assert directory == {"ok": 2, "deny": 3, "throttled": 0, "forbidden": 0, "unavailable": 0, "error": 0}
    assert value(samples, "auth_sidecar_directory_operation_duration_seconds_count", server=slapd.uri,
                 operation="check_password") == 5

    # The verdict cache: alice (miss, hit, and the form's hit), carol, bob three times; the throttled
    # attempt looked too. The session memo: the first read of the cookie decrypts it.
    assert value(samples, "auth_sidecar_cache_lookups_total", cache="verdict", result="hit") == 2
    assert value(samples, "auth_sidecar_cache_lookups_total", cache="verdict", result="miss") == 6
    assert value(samples, "auth_sidecar_cache_lookups_total", cache="session", result="miss") == 1
    assert value(samples, "auth_sidecar_cache_lookups_total", cache="session", result="hit") == 3
    assert value(samples, "auth_sidecar_bans_total", kind="user") == 1
    assert value(samples, "auth_sidecar_bans_total", kind="client") == 1
    assert value(samples, "auth_sidecar_bans_active") == 2
    assert value(samples, "auth_sidecar_sessions_issued_total") == 1
    assert value(samples, "auth_sidecar_sessions_revoked_total", scope="session") == 1
    assert value(samples, "auth_sidecar_sessions_revoked_total", scope="user") == 0

    # A reload the file refuses, then one it takes: counted, and the counters run on in the new application.
    config_file = running.process.config_file
    good = config_file.read_text()
    config_file.write_text(good.replace("max_failures: 3", "max_failures: -1"))
    os.kill(running.pid, signal.SIGHUP)
    samples = wait_for(scraped, "auth_sidecar_reloads_total", 1, result="refused")
    assert value(samples, "auth_sidecar_reloads_total", result="ok") == 0
    assert value(samples, "auth_sidecar_config_last_reload_successful") == 0
    config_file.write_text(good)
    os.kill(running.pid, signal.SIGHUP)
    samples = wait_for(scraped, "auth_sidecar_reloads_total", 1, result="ok")
    assert value(samples, "auth_sidecar_reloads_total", result="refused") == 1
    assert value(samples, "auth_sidecar_config_last_reload_successful") == 1
    # The new application has a cache of its own (empty), the same counters and the same bans.
    assert fetch(port, "/auth", basic("alice", "alice-pass")).status == 200
    samples = scrape(scraped)
    assert value(samples, "auth_sidecar_decisions_total", method="basic", outcome="allow") == 3
    assert value(samples, "auth_sidecar_cache_lookups_total", cache="verdict", result="miss") == 7
    assert value(samples, "auth_sidecar_directory_operations_total", server=slapd.uri,
                 operation="check_password", outcome="ok") == 3
    assert value(samples, "auth_sidecar_bans_active") == 2
    # And the sign-out too: the State's revocations are the ones the new application reads.
    assert fetch(port, "/auth", {"Cookie": f"sidecar_session={session}"}).status == 401
    assert value(scrape(scraped), "auth_sidecar_decisions_total", method="none", outcome="unauthenticated") == 3


def test_metrics_are_served_on_their_own_listener_only(running: Running) -> None:
    assert listening_ports(running.pid) == {running.port, running.metrics_port}
    assert fetch(running.port, "/metrics").status == 404  # never on the port the proxy talks to
    assert fetch(running.metrics_port, "/auth", basic("alice", "alice-pass")).status == 404
    # Series of a name chosen by clients never appear: no username, password or address in a label.
    fetch(running.port, "/auth", {**basic("mallory-label", "secret-label"), "X-Forwarded-For": "198.51.100.9"})
    text = fetch(running.metrics_port, "/metrics").body
    for secret in ("mallory", "secret-label", "198.51.100.9"):
        assert secret not in text


def test_without_a_metrics_section_nothing_listens_but_the_sidecar(slapd: Slapd, tmp_path: Path) -> None:
    port = free_port()
    config = sidecar_config(slapd, port, None)
    with SidecarProcess(tmp_path, config) as process:
        assert fetch(port, "/auth", basic("alice", "alice-pass")).status == 200
        assert process.process is not None
        assert listening_ports(process.process.pid) == {port}
        assert fetch(port, "/metrics").status == 404


# -- in process -------------------------------------------------------------------------------------


def test_metrics_off_records_into_null_instruments() -> None:
    off = Metrics(enabled=False)
    assert off.registry is None
    decisions = off.decisions("basic")
    assert all(child is NULL for child in decisions._by.values()) and decisions._seconds is NULL
    lookups = off.lookups("verdict")
    assert lookups.hit is NULL and lookups.miss is NULL
    assert all(child is NULL for child in off.bans().values())
    assert all(child is NULL for child in off.revocations().values())
    assert all(child is NULL for child in off.fetches("keys").values())
    assert all(o is NULL for per_server in off.directory(["ldap://a", "ldap://b"], ["lookup"]).values()
               for outcomes in per_server.values() for o in outcomes._by.values())
    assert off.sessions_issued is NULL and off.sessions_renewed is NULL
    # Recording does nothing and raises nothing.
    decisions.ok(time.perf_counter())
    decisions.refused(InvalidCredentials("x"), time.perf_counter())
    off.refreshes("corp").count("error")
    off.count_bans(lambda: 1 / 0)
    off.reloaded(ok=False)
    NULL.labels("anything").inc()
    NULL.observe(1.0)
    # Nothing is served: there is no route at all.
    assert not [route for route in off.listener_app().router.routes()]
    assert NO_METRICS.registry is None


async def test_the_listener_serves_the_registry_in_prometheus_text_and_openmetrics() -> None:
    metrics = Metrics()
    directory = metrics.directory(["ldap://dc1.test"], ["lookup"])
    directory["lookup"]["ldap://dc1.test"].refused(DirectoryUnavailable("incomplete answer"), time.perf_counter())
    directory["lookup"]["ldap://dc2.test"].ok(time.perf_counter())  # not configured at start-up: bound now
    async with TestClient(TestServer(metrics.listener_app())) as client:
        text = await client.get("/metrics")
        assert text.status == 200 and text.headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(await text.text())}
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for s in families["auth_sidecar_directory_operations"].samples}
        key = ("auth_sidecar_directory_operations_total",
               (("operation", "lookup"), ("outcome", "unavailable"), ("server", "ldap://dc1.test")))
        assert samples[key] == 1
        assert samples[("auth_sidecar_directory_operations_total",
                        (("operation", "lookup"), ("outcome", "ok"), ("server", "ldap://dc2.test")))] == 1
        assert families["auth_sidecar_directory_operation_duration_seconds"].type == "histogram"
        openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await openmetrics.text()).endswith("# EOF\n")
        assert (await client.get("/")).status == 404


def test_two_metrics_objects_in_one_process_never_share_a_series() -> None:
    first, second = Metrics(), Metrics()
    first.decisions("session").ok(time.perf_counter())
    first.lookups("bearer").hit.inc()
    first.reloaded(ok=True)

    def read(metrics: Metrics) -> dict[str, float]:
        assert metrics.registry is not None
        return {f"{s.name}{sorted(s.labels.items())}": s.value for family in metrics.registry.collect()
                for s in family.samples if s.name.startswith("auth_sidecar_")}

    ones = {name for name, count in read(first).items() if count}
    assert "auth_sidecar_decisions_total[('method', 'session'), ('outcome', 'allow')]" in ones
    assert "auth_sidecar_cache_lookups_total[('cache', 'bearer'), ('result', 'hit')]" in ones
    assert "auth_sidecar_reloads_total[('result', 'ok')]" in ones
    assert {name for name, count in read(second).items() if count} == {
        f"auth_sidecar_info[('version', '{__version__}')]", "auth_sidecar_config_last_reload_successful[]"}


@pytest.mark.parametrize(("error", "outcome"), [
    (InvalidCredentials("wrong password"), "deny"),
    (UnknownUser("no such user"), "deny"),
    (BadRequest("not base64"), "deny"),
    (Throttled("banned"), "throttled"),
    (AccessDenied("not in the group"), "forbidden"),
    (MalformedRequest("two hosts"), "bad_request"),
    (DirectoryUnavailable("no server answered"), "unavailable"),
])
def test_every_refusal_has_one_outcome(error: AuthError, outcome: str) -> None:
    assert outcome_of(error) == outcome


def counted(metrics: Metrics, name: str, **labels: str) -> float:
    assert metrics.registry is not None
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_session_cookie_sent_again_counts_as_renewed() -> None:
    now = [1_700_000_000.0]
    metrics = Metrics()
    codec = SessionCodec([("k", bytes(32))], lifetime=8 * 3600, idle_timeout=3600, clock=lambda: now[0],
                         metrics=metrics)

    async def unchanged(session: Session) -> Session:
        return session

    jar = SessionJar(codec, Registry(), keep_for=8 * 3600, metrics=metrics)
    cookie = CookieSettings(secure=False)
    sessions = SessionAuthenticator(jar, cookie, unchanged, HeaderWriter(HeaderConfig()), recheck_every=0,
                                    max_age=8 * 3600, clock=lambda: now[0], metrics=metrics)
    session = codec.start(Identity(username="alice", source="ldap"))
    jar.issued(session, None)
    request = make_mocked_request("GET", "/auth", headers={"Cookie": f"sidecar_session={jar.encode(session)}"})
    verdict = await sessions.authenticate(request)
    assert verdict is not None and verdict.set_cookie is None
    assert counted(metrics, "auth_sidecar_sessions_renewed_total") == 0
    now[0] += 600  # past the refresh of the idle window: the cookie is sent again
    verdict = await sessions.authenticate(request)
    assert verdict is not None and verdict.set_cookie is not None
    assert counted(metrics, "auth_sidecar_sessions_issued_total") == 1
    assert counted(metrics, "auth_sidecar_sessions_renewed_total") == 1
    assert counted(metrics, "auth_sidecar_cache_lookups_total", cache="session", result="miss") == 1
    assert counted(metrics, "auth_sidecar_cache_lookups_total", cache="session", result="hit") == 1


def test_the_dashboard_asks_only_for_series_the_sidecar_exports() -> None:
    metrics = Metrics()
    # A labelled metric shows in a scrape once a child is bound: bind one of each, as components do.
    metrics.decisions("basic")
    metrics.directory(["ldap://a"], ["lookup"])
    metrics.lookups("verdict")
    metrics.bans()
    metrics.revocations()
    metrics.refreshes("corp")
    metrics.fetches("keys")
    assert metrics.registry is not None
    exported = {sample.name for family in metrics.registry.collect() for sample in family.samples}
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [annotation["expr"] for annotation in dashboard["annotations"]["list"]]
    asked = {name for query in queries for name in re.findall(r"\b((?:auth_sidecar|process|python)_\w+)", query)}
    assert asked and asked <= exported, sorted(asked - exported)
    assert all('instance=~"$instance"' in query for query in queries)


def test_a_histogram_bucket_holds_what_is_at_most_its_bound_and_threads_lose_no_count() -> None:
    metrics = Metrics()
    outcomes = metrics.directory(["ldap://a"], ["ping"])["ping"]["ldap://a"]  # recorded from worker threads
    metrics.decisions("basic").ok(time.perf_counter() - 0.001)  # at least 1 ms ago
    seconds = metrics._auth_seconds.labels("basic")
    seconds.observe(0.0005)  # exactly a bound: in that bucket (le is "less than or equal")

    def record() -> None:
        for _ in range(5000):
            outcomes.ok(time.perf_counter())

    workers = [threading.Thread(target=record) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert counted(metrics, "auth_sidecar_directory_operations_total", server="ldap://a", operation="ping",
                   outcome="ok") == 40_000
    assert counted(metrics, "auth_sidecar_directory_operation_duration_seconds_count", server="ldap://a",
                   operation="ping") == 40_000
    assert counted(metrics, "auth_sidecar_auth_duration_seconds_bucket", method="basic", le="0.00025") == 0
    assert counted(metrics, "auth_sidecar_auth_duration_seconds_bucket", method="basic", le="0.0005") == 1
    assert counted(metrics, "auth_sidecar_auth_duration_seconds_bucket", method="basic", le="+Inf") == 2
    assert counted(metrics, "auth_sidecar_auth_duration_seconds_sum", method="basic") >= 0.0015
