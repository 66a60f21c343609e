"""A fleet through the real chain: nginx (deploy/nginx, one upstream of three sidecars, round robin)
-> three `auth-sidecar serve` processes sharing one real redis-server (state.backend: redis) ->
slapd, in front of gunicorn serving tests/django_project. Redis runs deploy/kubernetes/redis.yaml's
ACL and the sidecars sign in as its user: whatever the fleet needs of Redis, the shipped ACL allows.

What one sidecar learns, the others enforce: a ban earned through one, a sign-out on one (the time
it took to reach the others is printed, and recorded as the test's ``revocation_seconds``); a
session made on one works on every one; and all of it survives a restart of the three.

The three are asked directly (as nginx asks them) when it matters which one answers, and through
nginx to show that the proxy's round robin meets the same answer on every sidecar.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.conftest import basic, group, ldap_settings, need
from tests.django_project import need_module
from tests.test_deploy_fleet import ShippedAclRedis
from tests.testbed import free_port
from tests.testbed.gunicorn import Gunicorn
from tests.testbed.nginx import Nginx, render_site
from tests.testbed.rawhttp import Headers, Response, send
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd

pytestmark = pytest.mark.server

REPLICAS = 3
MAX_FAILURES = 3
WAIT = 30.0  # seconds a condition the fleet will reach is waited for (a bound, not a measure)
BROWSER = ("Accept", "text/html,application/xhtml+xml")
CSRF = "c" * 43  # the forms accept a token the browser already holds in its cookie
# Client addresses (X-Forwarded-For); an address that earned a ban is banned too: one per test.
ATTACKER, ANOTHER_ATTACKER, ELSEWHERE = "198.51.100.7", "198.51.100.9", "198.51.100.8"


@dataclass
class Fleet:
    port: int  # nginx
    sidecars: list[SidecarProcess]
    django: Gunicorn
    redis: ShippedAclRedis

    @property
    def base(self) -> str:
        return f"http://localhost:{self.port}"

    def get(self, path: str, headers: Headers = ()) -> Response:
        return send(self.port, path, headers)

    def check(self, sidecar: SidecarProcess, headers: Headers, client: str = ELSEWHERE) -> Response:
        """/auth on one sidecar, as nginx asks it (deploy/nginx/auth-sidecar.conf) for a client."""
        return send(sidecar.port, "/auth", [
            ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", f"localhost:{self.port}"),
            ("X-Forwarded-Uri", "/whoami"), ("X-Forwarded-Method", "GET"), ("X-Forwarded-For", client),
            *headers])

    def post_form(self, port: int, path: str, fields: dict[str, str], cookies: str = "") -> Response:
        """POST a form as a browser holding the form's CSRF cookie would: to nginx, or one sidecar."""
        body = urlencode({**fields, "csrf": CSRF}).encode()
        headers = [BROWSER, ("Content-Type", "application/x-www-form-urlencoded"), ("Origin", self.base),
                   ("Cookie", f"sidecar_csrf={CSRF}" + (f"; {cookies}" if cookies else ""))]
        if port != self.port:
            headers += [("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", f"localhost:{self.port}"),
                        ("X-Forwarded-Prefix", "/_sidecar")]
        return send(port, path, headers, method="POST", body=body)

    def sign_in(self, user: str, password: str) -> str:
        """A session cookie (name=value), made by whichever sidecar nginx chose."""
        response = self.post_form(self.port, "/_sidecar/login", {"username": user, "password": password,
                                                                 "rd": f"{self.base}/whoami"})
        assert response.status == 303, (response.status, response.body[:300], self.logs())
        (cookie,) = [c.split(";", 1)[0] for c in response.values("Set-Cookie") if c.startswith("sidecar_session=")]
        return cookie

    def whoami(self, cookie: str) -> dict[str, Any]:
        """What Django sees through nginx with this cookie ({} when nginx did not let it in)."""
        response = self.get("/whoami", [("Cookie", cookie)])
        if response.status != 200:
            return {}
        seen: dict[str, Any] = json.loads(response.body)
        return seen

    def restart(self) -> None:
        for sidecar in self.sidecars:
            sidecar.stop()
        for sidecar in self.sidecars:
            sidecar.start()

    def logs(self) -> str:
        return "\n".join(f"--- sidecar {i}\n{s.log()[-2000:]}" for i, s in enumerate(self.sidecars))


def sidecar_config(slapd: Slapd, redis: ShippedAclRedis, *, port: int, listen_port: int) -> dict[str, Any]:
    base = f"http://localhost:{listen_port}"
    flags = {"is_active": group("active"), "is_staff": group("staff"), "is_superuser": group("superuser")}
    return {
        "server": {"listen": f"127.0.0.1:{port}", "public_url": f"{base}/_sidecar", "access_log": True},
        "ldap": ldap_settings(slapd, group_type="nested_group_of_names", user_flags_by_group=flags),
        # One key for the fleet: a cookie sealed by one is opened by every one.
        "sessions": {"keys": [{"id": "k1", "secret": "s" * 40}], "secure": False, "default_redirect": f"{base}/"},
        "regulation": {"max_failures": MAX_FAILURES, "ban": 600},
        # The shipped ACL's user, under its prefix (the default). A loaded machine must not turn a slow
        # answer into the degraded mode (counted locally) that test_redis_faults is about.
        "state": {**redis.state(), "timeout": 5},
        "admin": {"enabled": False},
    }


def round_robin(site: str, first: int, ports: list[int]) -> str:
    """The rendered site's auth_sidecar upstream, with every sidecar instead of the first alone."""
    line = f"    server 127.0.0.1:{first};\n"
    assert site.count(line) == 1, site
    return site.replace(line, "".join(f"    server 127.0.0.1:{port};\n" for port in ports))


@pytest.fixture(scope="module")
def fleet(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    need("nginx")
    need("redis-server")
    need_module("django")
    workdir = tmp_path_factory.mktemp("chain-fleet")
    listen = free_port()
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(ShippedAclRedis(workdir / "redis"))
        django = stack.enter_context(Gunicorn(workdir / "django", free_port()))
        sidecars = []
        for index in range(REPLICAS):
            (workdir / f"sidecar-{index}").mkdir()
            config = sidecar_config(slapd, redis, port=free_port(), listen_port=listen)
            sidecars.append(stack.enter_context(SidecarProcess(workdir / f"sidecar-{index}", config)))
        ports = [sidecar.port for sidecar in sidecars]
        site = round_robin(render_site(listen_port=listen, sidecar_port=ports[0], app_port=django.port),
                           ports[0], ports)
        stack.enter_context(Nginx(workdir / "nginx", site))
        yield Fleet(listen, sidecars, django, redis)


def until(condition: Callable[[], bool], what: str) -> float:
    """Seconds until condition holds (polled); fails past WAIT."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > WAIT:
            raise AssertionError(f"not within {WAIT:g} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def auth(user: str, password: str) -> tuple[str, str]:
    (header,) = basic(user, password).items()
    return header


def test_the_upstream_takes_turns_among_the_three(fleet: Fleet) -> None:
    before = [s.log().count('"GET /auth ') for s in fleet.sidecars]
    for _ in range(REPLICAS * 2):
        assert fleet.get("/whoami", [auth("alice", "alice-pass")]).status == 200
    after = [s.log().count('"GET /auth ') for s in fleet.sidecars]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


def test_a_ban_earned_through_one_is_enforced_by_all(fleet: Fleet) -> None:
    first = fleet.sidecars[0]
    for _ in range(MAX_FAILURES):
        assert fleet.check(first, [auth("bob", "wrong")], client=ATTACKER).status == 401
    assert "banned" in first.log(), first.log()[-2000:]
    for sidecar in fleet.sidecars:  # bob's right password, from another address: not even checked
        until(lambda: fleet.check(sidecar, [auth("bob", "bob-pass")]).status == 401,  # noqa: B023
              f"the ban enforced on :{sidecar.port}")
        assert fleet.check(sidecar, [auth("alice", "alice-pass")]).status == 200  # the ban is bob's alone
    for _ in range(REPLICAS):  # through nginx, on each in turn
        assert fleet.get("/whoami", [auth("bob", "bob-pass")]).status == 401


def test_a_session_made_on_one_works_on_every_one(fleet: Fleet) -> None:
    cookie = fleet.sign_in("carol", "carol-pass")
    for sidecar in fleet.sidecars:
        response = fleet.check(sidecar, [("Cookie", cookie)])
        assert (response.status, response.values("Remote-User")) == (200, ["carol"]), fleet.logs()
    for _ in range(REPLICAS):
        assert fleet.whoami(cookie).get("username") == "carol"


def test_a_sign_out_on_one_is_refused_by_the_other_two(fleet: Fleet, record_property: Any) -> None:
    cookie = fleet.sign_in("alice", "alice-pass")
    first, *others = fleet.sidecars
    assert all(fleet.check(s, [("Cookie", cookie)]).status == 200 for s in fleet.sidecars)
    signed_out = fleet.post_form(first.port, "/logout", {}, cookies=cookie)
    answered = time.monotonic()
    assert signed_out.status == 303, (signed_out.status, signed_out.body[:300], first.log()[-2000:])
    for sidecar in others:
        until(lambda: fleet.check(sidecar, [("Cookie", cookie)]).status == 401,  # noqa: B023
              f"the sign-out refused on :{sidecar.port}")
    took = time.monotonic() - answered  # from the sign-out's answer until both others refuse
    assert fleet.check(first, [("Cookie", cookie)]).status == 401
    record_property("revocation_seconds", round(took, 3))
    print(f"sign-out on one sidecar refused by the other two after {took * 1000:.0f} ms")
    for _ in range(REPLICAS):
        assert fleet.whoami(cookie) == {}


def test_a_restart_of_all_three_keeps_bans_and_sign_outs(fleet: Fleet) -> None:
    kept = fleet.sign_in("jose", "jose-pass")
    gone = fleet.sign_in("alice", "alice-pass")
    assert fleet.post_form(fleet.sidecars[1].port, "/logout", {}, cookies=gone).status == 303
    first = fleet.sidecars[0]
    for _ in range(MAX_FAILURES):
        assert fleet.check(first, [auth("o'brien", "wrong")], client=ANOTHER_ATTACKER).status == 401
    for sidecar in fleet.sidecars:
        until(lambda: fleet.check(sidecar, [("Cookie", gone)]).status == 401, "the sign-out everywhere")  # noqa: B023
        until(lambda: fleet.check(sidecar, [auth("o'brien", "obrien-pass")]).status == 401,  # noqa: B023
              "the ban everywhere")
    fleet.restart()
    for sidecar in fleet.sidecars:
        assert fleet.check(sidecar, [("Cookie", gone)]).status == 401, sidecar.log()[-2000:]
        assert fleet.check(sidecar, [auth("bob", "bob-pass")]).status == 401  # the ban of the test above
        assert fleet.check(sidecar, [auth("o'brien", "obrien-pass")]).status == 401
        response = fleet.check(sidecar, [("Cookie", kept)])
        assert (response.status, response.values("Remote-User")) == (200, ["jose"])
