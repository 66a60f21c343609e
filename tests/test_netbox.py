"""Real NetBox (the PyPI wheel) behind the shipped chain, for every setup examples/netbox/ documents.

client -> nginx (deploy/nginx) -> `auth-sidecar serve` -> slapd, and NetBox 4.7 under gunicorn
(deploy/gunicorn/gunicorn.conf.py) with PostgreSQL and Redis (tests/testbed/netbox.py), its
configuration.py made of the test instance's own settings plus an example file exactly as written.

What NetBox ends up with is read from NetBox itself: its REST API straight at gunicorn, with the
admin's token. The README's NetBox table is what these tests find; where a setup behaves
differently (the stock backend's garbled names, its CSRF refusal of Basic writes, its stale
rights), the test says so, setup by setup.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from sidecar.assertion import generate_key
from sidecar.config import SessionConfig
from tests.conftest import basic, group, ldap_settings, need
from tests.testbed import ROOT, free_port, in_ci, substitute
from tests.testbed.netbox import (
    V1_TOKEN,
    Environment,
    NetBox,
    Postgres,
    Redis,
    Unavailable,
    base_configuration,
    environment,
    v2_header,
)
from tests.testbed.nginx import Nginx, render_site
from tests.testbed.rawhttp import SPOOFED_VALUES, SPOOFS, Headers, Response, send, utf8
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd

EXAMPLES = ROOT / "examples" / "netbox"
STATIC_ALIAS = "alias /opt/netbox/netbox/static/;"
BROWSER: Headers = [("Accept", "text/html,application/xhtml+xml"), ("Sec-Fetch-Site", "same-origin")]
HTMX: Headers = [("HX-Request", "true"), ("Accept", "*/*"), ("Sec-Fetch-Site", "same-origin")]
CSRF = "c" * 43  # the sidecar's forms accept a token the browser already holds in its cookie
# This module's own directory users and group (the shared slapd's demo users stay as they are).
ADMIN, ADMIN_PASS = "nb-alice", "nb-alice-pass"
USER, USER_PASS = "nb-bob", "nb-bob-pass"
JOSE, JOSE_PASS = "nb-jose", "nb-jose-pass"
ERIN, ERIN_PASS = "NB-Erin", "nb-erin-pass"  # the directory spells it in capitals; django-auth-ldap did not
BREAK_GLASS, BREAK_GLASS_PASS = "netbox-admin", "example-only-password"  # examples/users.yaml


@dataclass(frozen=True)
class Setup:
    """One way of running NetBox behind the sidecar: which example files, and what they give."""

    configuration: str
    local_settings: tuple[str, ...] = ()
    utf8: bool = True           # José 山田 stored right
    basic_writes: bool = True   # REST writes with Basic (no CSRF cookie) accepted
    every_request: bool = False  # directory changes reach an existing NetBox session
    assertion: bool = False


def readme_utf8_snippet() -> str:
    """The local_settings.py lines README.md gives for the stock backend with Utf8HeadersMiddleware."""
    text = (EXAMPLES / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "Utf8HeadersMiddleware" in b]
    return textwrap.dedent(block)  # as written, but out of the README's list item


SETUPS = {
    "stock": Setup("configuration_stock.py", utf8=False, basic_writes=False),
    "stock-utf8": Setup("configuration_stock.py", ("README.md",), basic_writes=False),
    "backend": Setup("configuration_sidecar.py"),
    "middleware": Setup("configuration_sidecar.py", ("local_settings.py",), every_request=True),
    "assertion": Setup("configuration_sidecar.py", ("local_settings.py", "local_settings_assertion.py"),
                       every_request=True, assertion=True),
}


@dataclass
class Site:
    name: str
    setup: Setup
    base: str
    port: int
    netbox: NetBox
    sidecar: SidecarProcess
    db: Postgres
    database: str

    def get(self, path: str, headers: Headers = (), method: str = "GET", body: bytes = b"") -> Response:
        return send(self.port, path, headers, method=method, body=body)  # Host: localhost:port

    def user(self, username: str) -> dict[str, Any] | None:
        """NetBox's user: its API's view, and is_superuser from its model's table (the API hides it)."""
        user = self.netbox.user(username)
        if user is not None:
            flag = self.db.psql(f"SELECT is_superuser FROM users_user WHERE id = {int(user['id'])}", self.database)
            user["is_superuser"] = flag.strip() == "t"
        return user


def netbox_env() -> Environment:
    need("nginx")
    need("redis-server")
    try:
        return environment()
    except Unavailable as exc:
        if in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def env() -> Environment:
    return netbox_env()


@pytest.fixture(scope="module")
def services(env: Environment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Postgres, Redis]]:
    workdir = tmp_path_factory.mktemp("netbox-services")
    with Postgres(env, workdir) as db, Redis(workdir, free_port()) as redis:
        yield db, redis


@pytest.fixture(scope="module")
def people(slapd: Slapd) -> Iterator[None]:
    slapd.add_user(ADMIN, ADMIN_PASS, given_name="Alice", sn="Admin", mail="nb-alice@example.com",
                   groups=("active", "netbox-users"))
    slapd.add_groups(["netbox-admins"], [ADMIN])
    slapd.add_user(USER, USER_PASS, given_name="Bob", sn="User", mail="nb-bob@example.com",
                   groups=("active", "netbox-users"))
    slapd.add_user(JOSE, JOSE_PASS, given_name="José", sn="山田", mail="nb-jose@example.com")
    slapd.add_user(ERIN, ERIN_PASS, given_name="Erin", sn="Upper", mail="nb-erin@example.com",
                   groups=("active", "netbox-users"))
    yield
    for uid in (ADMIN, USER, JOSE, ERIN):
        slapd.delete_user(uid)


def sidecar_config(slapd: Slapd, port: int, base: str, setup: Setup, **ldap: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}", "public_url": f"{base}/_sidecar"},
        "ldap": ldap_settings(slapd, group_type="nested_group_of_names", cache_timeout=1,
                              user_flags_by_group={"is_active": group("active"),
                                                   "is_superuser": group("netbox-admins")}, **ldap),
        # The break-glass user of examples/users.yaml, as written.
        "local_users": {"file": str(ROOT / "examples" / "users.yaml")},
        # Plain http on loopback: no Secure cookie. Signing out returns to NetBox.
        # A session is re-checked against the directory every second (the default is 300 s).
        "sessions": {"keys": [{"id": "k1", "secret": "n" * 40}], "secure": False, "recheck_every": 1,
                     "default_redirect": f"{base}/", "logout_redirect": f"{base}/"},
        # NetBox's own API tokens: NetBox authenticates them itself.
        "app_tokens": {"rules": [{"scheme": "Token", "paths": ["/api/", "/graphql/"]},
                                 {"scheme": "Bearer", "prefix": "nbt_", "paths": ["/api/", "/graphql/"]}]},
    }
    if setup.assertion:
        config["assertion"] = {"keys": [{"id": "k1", "private_key": generate_key()}], "audience": "netbox"}
    return config


def configuration(setup: Setup, db: Postgres, redis: Redis, database: str, redis_db: int, base: str) -> str:
    example = (EXAMPLES / setup.configuration).read_text()
    return base_configuration(database=database, db_port=db.port, redis_port=redis.port, redis_db=redis_db,
                              allowed_hosts=["127.0.0.1", "localhost"]) + "\n" + example


def local_settings(setup: Setup, base: str) -> str | None:
    if not setup.local_settings:
        return None
    parts = []
    for name in setup.local_settings:
        text = readme_utf8_snippet() if name == "README.md" else (EXAMPLES / name).read_text()
        if name == "local_settings_assertion.py":  # the example's site, replaced by this one
            text = substitute(text, {"https://netbox.example.com": base}, name)
        parts.append(text)
    return "\n".join(parts)


@pytest.fixture(scope="module", params=list(SETUPS))
def site(request: pytest.FixtureRequest, env: Environment, services: tuple[Postgres, Redis], slapd: Slapd,
         people: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    name: str = request.param
    setup = SETUPS[name]
    db, redis = services
    workdir = tmp_path_factory.mktemp(f"netbox-{name}")
    database = "netbox_" + name.replace("-", "_")
    db.create_database(database)  # a copy of the migrated template: every setup starts empty
    listen, sidecar_port, netbox_port = free_port(), free_port(), free_port()
    base = f"http://localhost:{listen}"
    redis_db = 2 * list(SETUPS).index(name)
    netbox = NetBox(env, workdir / "netbox", netbox_port,
                    configuration=configuration(setup, db, redis, database, redis_db, base),
                    local_settings=local_settings(setup, base))
    with netbox, SidecarProcess(workdir, sidecar_config(slapd, sidecar_port, base, setup)) as sidecar:
        conf = render_site(listen_port=listen, sidecar_port=sidecar_port, app_port=netbox_port)
        # NetBox's static files, with the MIME types a packaged nginx.conf would give them (the
        # browser refuses CSS served as text/plain).
        static = f"alias {env.static}/; include /etc/nginx/mime.types;"
        conf = substitute(conf, {STATIC_ALIAS: static}, "deploy/nginx/site.conf")
        with Nginx(workdir / "nginx", conf):
            yield Site(name, setup, base, listen, netbox, sidecar, db, database)


# Helpers

def auth(user: str, password: str) -> tuple[str, str]:
    (name, value), = basic(user, password).items()
    return name, value


def set_cookie(response: Response, name: str) -> str | None:
    for value in response.values("Set-Cookie"):
        cookie = SimpleCookie(value)
        if name in cookie and cookie[name].value:
            return cookie[name].value
    return None


def sign_in(site: Site, user: str, password: str, rd: str = "/") -> str:
    """The sidecar's session cookie (name=value) after signing in with the login form, as a browser."""
    body = urlencode({"username": user, "password": password, "csrf": CSRF, "rd": site.base + rd}).encode()
    response = site.get("/_sidecar/login", [("Content-Type", "application/x-www-form-urlencoded"),
                                            ("Cookie", f"sidecar_csrf={CSRF}"), ("Origin", site.base)],
                        method="POST", body=body)
    assert response.status == 303, (response.status, response.body[:500])
    value = set_cookie(response, "sidecar_session")
    assert value, response.headers
    return f"sidecar_session={value}"


def browse(site: Site, path: str, cookie: str, netbox_session: str | None = None) -> Response:
    cookies = cookie + (f"; sessionid={netbox_session}" if netbox_session else "")
    return site.get(path, [*BROWSER, ("Cookie", cookies)])


def netbox_json(response: Response) -> Any:
    assert response.status in (200, 201), (response.status, response.body[:800])
    return json.loads(response.body)


def wait_until(check: Callable[[], bool], seconds: float) -> bool:
    """Poll check() until it holds or seconds have passed (directory caches expire on their own)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def groups_of(site: Site, username: str) -> list[str]:
    user = site.user(username)
    assert user is not None
    return sorted(g["name"] for g in user["groups"])


# Users, names, groups, flags

def test_a_directory_user_is_created_with_names_email_groups_and_superuser(site: Site) -> None:
    me = netbox_json(site.get("/api/users/config/", [auth(ADMIN, ADMIN_PASS)]))
    assert isinstance(me, dict)
    user = site.user(ADMIN)
    assert user is not None
    assert (user["first_name"], user["last_name"], user["email"], user["is_superuser"], user["is_active"]) == \
        ("Alice", "Admin", "nb-alice@example.com", True, True)
    assert groups_of(site, ADMIN) == ["active", "netbox-admins", "netbox-users"]
    netbox_json(site.get("/api/users/config/", [auth(USER, USER_PASS)]))
    bob = site.user(USER)
    assert bob is not None and bob["is_superuser"] is False


def test_non_ascii_names(site: Site) -> None:
    netbox_json(site.get("/api/users/config/", [auth(JOSE, JOSE_PASS)]))
    user = site.user(JOSE)
    assert user is not None
    if site.setup.utf8:
        assert (user["first_name"], user["last_name"]) == ("José", "山田")
    else:  # NetBox's own backend stores gunicorn's latin-1 reading of the UTF-8 bytes
        assert (user["first_name"], user["last_name"]) == (utf8("José"), utf8("山田"))


def test_an_account_django_auth_ldap_made_is_the_one_a_capitalised_directory_name_signs_in_to(site: Site) -> None:
    """django-auth-ldap created ``nb-erin`` for the directory's ``NB-Erin``; after the migration the
    sidecar (ldap.username_case: lower, its default) signs her in to that account, never a second one."""
    made = site.netbox.api("/api/users/users/", method="POST",
                           body={"username": ERIN.lower(), "password": secrets.token_urlsafe(24)})
    for typed in (ERIN, ERIN.lower(), ERIN.upper()):
        netbox_json(site.get("/api/users/config/", [auth(typed, ERIN_PASS)]))
    accounts = site.db.psql(f"SELECT id FROM users_user WHERE lower(username) = '{ERIN.lower()}'", site.database)
    assert accounts.split() == [str(made["id"])]
    erin = site.user(ERIN.lower())
    assert erin is not None and (erin["first_name"], erin["email"]) == ("Erin", "nb-erin@example.com")


def test_a_group_removed_in_the_directory_leaves_netbox_within_cache_timeout(site: Site, slapd: Slapd) -> None:
    """Within ldap.cache_timeout for Basic, sessions.recheck_every for the sidecar's browser sessions
    (both 1 s here), and for the stock setup's NetBox session only when it logs in again."""
    bob = [auth(USER, USER_PASS)]
    # A browser's NetBox session, opened while bob is in netbox-users.
    cookie = sign_in(site, USER, USER_PASS)
    first = browse(site, "/", cookie)
    assert first.status == 200, first.status
    netbox_session = set_cookie(first, "sessionid")
    assert netbox_session is not None
    assert "netbox-users" in groups_of(site, USER)
    slapd.remove_from_group(USER, "netbox-users")
    try:
        # The browser's session: with SidecarMiddleware, the next request after cache_timeout (1 s);
        # NetBox's own middleware never looks again during the session (LOGIN_TIMEOUT bounds it).
        def browser_sees() -> bool:
            assert browse(site, "/", cookie, netbox_session).status == 200
            return "netbox-users" not in groups_of(site, USER)

        assert wait_until(browser_sees, 10 if site.setup.every_request else 3) is site.setup.every_request
        # A script with Basic and no NetBox cookie logs in anew on each request: every setup syncs.
        assert wait_until(lambda: site.get("/api/status/", bob).status == 200
                          and "netbox-users" not in groups_of(site, USER), 10)
    finally:
        slapd.add_to_group(USER, "netbox-users")


def test_the_stock_session_bound_is_the_sidecar_s_session_lifetime(site: Site) -> None:
    response = browse(site, "/", sign_in(site, USER, USER_PASS))
    (cookie,) = [v for v in response.values("Set-Cookie") if v.startswith("sessionid=")]
    max_age = int(re.search(r"Max-Age=(\d+)", cookie, re.I).group(1))  # type: ignore[union-attr]
    assert max_age == 43200 <= SessionConfig(keys=()).lifetime  # LOGIN_TIMEOUT as the example sets it


# NetBox's API tokens

def token_for(site: Site, username: str) -> str:
    """A v1 token for a NetBox user, made with the admin's token (NetBox shows its value once)."""
    user = site.user(username)
    assert user is not None
    made = site.netbox.api("/api/users/tokens/", method="POST",
                           body={"user": user["id"], "version": 1, "description": "tests"})
    return str(made["token"])


@pytest.mark.parametrize("authorization", [f"Token {V1_TOKEN}", v2_header()], ids=["v1", "v2"])
def test_netbox_api_tokens_pass_through_the_chain(site: Site, authorization: str) -> None:
    before = site.get("/api/status/", [("Authorization", "Token " + "0" * 40)])
    assert before.status == 403  # NetBox itself refuses a wrong token: the sidecar only passed it on
    seen = netbox_json(site.get("/api/dcim/sites/", [("Authorization", authorization)]))
    assert "results" in seen
    query = json.dumps({"query": "{ site_list { name } }"}).encode()
    graphql = netbox_json(site.get("/graphql/", [("Authorization", authorization),
                                                 ("Content-Type", "application/json")], method="POST", body=query))
    assert "errors" not in graphql and "site_list" in graphql["data"]


def test_a_token_request_never_logs_anyone_in_by_header(site: Site) -> None:
    spoofed = [("Authorization", f"Token {V1_TOKEN}"), ("Remote-User", "nb-spoofed"), ("remote-user", "nb-spoofed"),
               ("Remote-User-Superuser", "true")]
    response = site.get("/api/dcim/sites/", spoofed)
    assert response.status == 200
    assert site.user("nb-spoofed") is None
    assert set_cookie(response, "sessionid") is None


def test_an_unconfigured_token_scheme_is_refused_by_the_sidecar(site: Site) -> None:
    assert site.get("/api/status/", [("Authorization", f"Bearer {V1_TOKEN}")]).status == 401
    assert site.get("/dcim/sites/", [("Authorization", f"Token {V1_TOKEN}")]).status == 401  # not an API path


def test_a_netbox_token_outlives_its_owner_s_removal_from_the_directory(site: Site, slapd: Slapd) -> None:
    uid = "nb-leaver"
    slapd.add_user(uid, "leaver-pass", given_name="Lee", sn="Ver", groups=("active", "netbox-users"))
    try:
        netbox_json(site.get("/api/users/config/", [auth(uid, "leaver-pass")]))
        token = token_for(site, uid)
    finally:
        slapd.delete_user(uid)
    assert wait_until(lambda: site.get("/api/users/config/", [auth(uid, "leaver-pass")]).status == 401, 10)
    # NetBox's token is NetBox's: it works until it is deleted or the NetBox user deactivated.
    assert site.get("/api/status/", [("Authorization", f"Token {token}")]).status == 200


# REST writes with Basic (a header-authenticated script has no CSRF cookie)

def test_rest_writes_with_basic(site: Site) -> None:
    body = json.dumps({"name": f"Site {site.name}", "slug": f"site-{site.name}"}).encode()
    headers = [auth(ADMIN, ADMIN_PASS), ("Content-Type", "application/json"), ("Accept", "application/json")]
    response = site.get("/api/dcim/sites/", headers, method="POST", body=body)
    if site.setup.basic_writes:
        assert response.status == 201, response.body[:500]
        assert set_cookie(response, "sessionid") is None or not site.setup.every_request
    else:
        assert response.status == 403 and b"CSRF Failed" in response.body


def test_rest_writes_with_basic_from_a_client_that_keeps_cookies(site: Site) -> None:
    """pynetbox and requests.Session send back what NetBox sets: SidecarMiddleware sets nothing
    for a script; under NetBox's own middleware the session it opened is checked for CSRF."""
    headers = [auth(ADMIN, ADMIN_PASS), ("Content-Type", "application/json"), ("Accept", "application/json")]
    jar: list[tuple[str, str]] = []
    statuses = []
    for n in (1, 2):
        body = json.dumps({"name": f"Kept {site.name} {n}", "slug": f"kept-{site.name}-{n}"}).encode()
        response = site.get("/api/dcim/sites/", [*headers, *jar], method="POST", body=body)
        statuses.append(response.status)
        if (netbox_session := set_cookie(response, "sessionid")) is not None:
            jar = [("Cookie", f"sessionid={netbox_session}")]
    expected = {"stock": [403, 403], "stock-utf8": [403, 403], "backend": [201, 403]}
    assert statuses == expected.get(site.name, [201, 201])


def test_csrf_still_protects_browser_sessions(site: Site) -> None:
    cookie = sign_in(site, ADMIN, ADMIN_PASS)
    first = browse(site, "/", cookie)
    netbox_session = set_cookie(first, "sessionid")
    body = json.dumps({"name": "Forged", "slug": "forged"}).encode()
    for origin in [("Origin", "https://evil.test"), ("Sec-Fetch-Site", "cross-site")]:
        response = site.get("/api/dcim/sites/", [("Cookie", f"{cookie}; sessionid={netbox_session}"), origin,
                                                ("Content-Type", "application/json")], method="POST", body=body)
        assert response.status == 403, response.body[:300]
    assert site.netbox.api("/api/dcim/sites/?slug=forged")["count"] == 0


# NetBox's Log Out, htmx after the session ended

def test_netbox_log_out_goes_through_the_sidecar_s_sign_out_and_back(site: Site) -> None:
    cookie = sign_in(site, USER, USER_PASS)
    first = browse(site, "/", cookie)
    assert first.status == 200
    netbox_session = set_cookie(first, "sessionid")
    out = browse(site, "/logout/", cookie, netbox_session)
    assert (out.status, out.values("Location")) == (302, ["/_sidecar/logout"])
    page = browse(site, "/_sidecar/logout", cookie)
    assert page.status == 200 and b"Sign out" in page.body
    body = urlencode({"csrf": CSRF}).encode()
    signed_out = site.get("/_sidecar/logout", [("Content-Type", "application/x-www-form-urlencoded"),
                                               ("Cookie", f"{cookie}; sidecar_csrf={CSRF}"), ("Origin", site.base)],
                          method="POST", body=body)
    assert signed_out.status == 303
    back = signed_out.values("Location")[0]
    assert back == site.base + "/"
    again = browse(site, "/", cookie, netbox_session)  # the old cookie: signed out, not back in
    assert again.status == 302 and "/_sidecar/login?rd=" in again.values("Location")[0]


def test_htmx_after_the_session_ended_gets_hx_redirect_to_the_login_page(site: Site) -> None:
    cookie = sign_in(site, ADMIN, ADMIN_PASS)  # a superuser: bob may not see NetBox's sites
    assert browse(site, "/dcim/sites/", cookie).status == 200
    here = ("HX-Current-URL", site.base + "/dcim/sites/")
    table = site.get("/dcim/sites/?sort=name", [*HTMX, ("Cookie", cookie), here])
    assert table.status == 200
    body = urlencode({"csrf": CSRF}).encode()
    site.get("/_sidecar/logout", [("Content-Type", "application/x-www-form-urlencoded"),  # another tab
                                  ("Cookie", f"{cookie}; sidecar_csrf={CSRF}"), ("Origin", site.base)],
             method="POST", body=body)
    for ended in (cookie, "sidecar_session=expired-or-from-another-key"):
        response = site.get("/dcim/sites/?sort=name", [*HTMX, ("Cookie", ended),
                                                       ("HX-Current-URL", site.base + "/dcim/sites/")])
        assert response.status == 401
        assert response.values("WWW-Authenticate") == []  # no password prompt
        assert response.values("Location") == []
        (target,) = response.values("HX-Redirect")
        assert target == f"{site.base}/_sidecar/login?rd={quote(site.base + '/dcim/sites/', safe='')}"


# Break-glass access, spoofing, the assertion

def test_break_glass_the_sidecar_s_built_in_user_is_a_netbox_superuser(site: Site) -> None:
    cookie = sign_in(site, BREAK_GLASS, BREAK_GLASS_PASS)
    assert browse(site, "/", cookie).status == 200
    user = site.user(BREAK_GLASS)
    assert user is not None and user["is_superuser"] is True


def test_break_glass_works_with_the_directory_down(site: Site, slapd: Slapd, tmp_path: Path) -> None:
    if site.name not in ("stock", "middleware"):
        pytest.skip("the directory outage is the sidecar's alone: two setups show it")
    # A port bound but never listening: the directory refuses every connection, and no server of
    # this test can be given the same port while the socket holds it.
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        down_uri = f"ldap://127.0.0.1:{dead.getsockname()[1]}"
        run_with_directory_down(site, slapd, tmp_path, down_uri)


def run_with_directory_down(site: Site, slapd: Slapd, tmp_path: Path, server_uri: str) -> None:
    port = free_port()
    config = sidecar_config(slapd, port, site.base, site.setup, server_uri=server_uri)
    with SidecarProcess(tmp_path, config):
        conf = render_site(listen_port=(listen := free_port()), sidecar_port=port, app_port=site.netbox.port)
        with Nginx(tmp_path / "nginx", conf):
            down = Site(site.name, site.setup, f"http://localhost:{listen}", listen, site.netbox, site.sidecar,
                        site.db, site.database)
            response = down.get("/api/users/config/", [auth(BREAK_GLASS, BREAK_GLASS_PASS)])
            assert response.status == 200, response.body[:300]
            assert down.get("/api/users/config/", [auth(ADMIN, ADMIN_PASS)]).status in (401, 503)


@pytest.mark.parametrize("spoof", SPOOFS, ids=lambda s: "+".join(n for n, _ in s))
def test_no_client_sent_identity_header_logs_anyone_in(site: Site, spoof: Headers) -> None:
    assert site.get("/api/users/config/", spoof).status == 401  # anonymous: stopped at nginx
    netbox_json(site.get("/api/users/config/", [*spoof, auth(USER, USER_PASS)]))
    assert site.get("/api/status/", [*spoof, ("Authorization", f"Token {V1_TOKEN}")]).status == 200
    for name in SPOOFED_VALUES:
        assert site.user(name) is None
    bob = site.user(USER)
    assert bob is not None and bob["is_superuser"] is False and bob["email"] == "nb-bob@example.com"
    assert not set(groups_of(site, USER)) & set(SPOOFED_VALUES)


def test_forged_headers_straight_to_gunicorn_are_believed_unless_the_assertion_is_required(site: Site) -> None:
    """Why only the proxy may reach gunicorn (examples/netbox/README.md, Trust)."""
    forged = f"nb-direct-{site.name}"
    headers = [("Remote-User", forged), ("Remote-User-Superuser", "true"), ("Accept", "text/html")]
    response = send(site.netbox.port, "/", headers)
    if not site.setup.assertion:
        assert response.status == 200 and site.user(forged) is not None
        return
    assert response.status == 302 and "/login/" in response.values("Location")[0]
    assert site.user(forged) is None
    # Through the chain, the same NetBox accepts the sidecar's signed identity.
    netbox_json(site.get("/api/users/config/", [auth(USER, USER_PASS)]))
    assert site.user(USER) is not None


# The examples against the real NetBox, and the contrib tests on NetBox's Django

def test_the_examples_set_settings_netbox_reads(env: Environment) -> None:
    settings = (env.site_packages / "netbox" / "settings.py").read_text()
    read = set(re.findall(r"getattr\(configuration, '([A-Z_]+)'", settings))
    for name in ("configuration_stock.py", "configuration_sidecar.py"):
        assigned = set(re.findall(r"^([A-Z][A-Z_]+)\b(?::[^=]*)? =", (EXAMPLES / name).read_text(), re.M))
        assert assigned and assigned <= read, (name, assigned - read)
    assert "from .local_settings import *" in settings
    assert "'netbox.middleware.RemoteUserMiddleware'" in settings


def test_the_contrib_tests_pass_on_netbox_s_django(env: Environment) -> None:
    import subprocess

    run = subprocess.run([str(env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_contrib_django.py", "tests/test_contrib_wsgi.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"\d+ passed", run.stdout), run.stdout[-500:]
    assert env.django_version().startswith("6."), env.django_version()



# A real browser: NetBox's UI, and sorting a table after the sidecar's session ended

def test_a_browser_signs_in_and_sorts_a_table_after_its_session_ended(site: Site, page: Any) -> None:
    if site.name not in ("stock", "middleware"):
        pytest.skip("the browser's part is the proxy's and the sidecar's: two setups show it")
    for name in ("Bravo", "Alpha", "Charlie"):
        slug = f"{site.name}-{name.lower()}"
        if site.netbox.api(f"/api/dcim/sites/?slug={slug}")["count"] == 0:
            site.netbox.api("/api/dcim/sites/", method="POST", body={"name": f"{name} {site.name}", "slug": slug})
    sites = site.base + "/dcim/sites/"

    def sign_in_here() -> None:
        assert "/_sidecar/login?rd=" in page.url
        page.get_by_label("Username").fill(ADMIN)
        page.get_by_label("Password").fill(ADMIN_PASS)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(sites + "**")

    def sort_by_name() -> None:
        page.locator("th a", has_text="Name").first.click()

    page.goto(sites)
    sign_in_here()
    assert "Alice Admin" in page.content() or ADMIN in page.content()
    sort_by_name()
    # Until htmx has the answer and pushed its URL: a column NetBox marks as sorted on the first load
    # says nothing, and a sort still under way when the session ends would land after the sign-out.
    page.wait_for_function("() => new URLSearchParams(location.search).get('sort') !== null")
    # The session ends in another tab of the same browser.
    other = page.context.new_page()
    other.goto(site.base + "/_sidecar/logout")
    other.get_by_role("button", name="Sign out").click()
    other.wait_for_url("**/_sidecar/login**")
    other.close()
    # The table's next in-page request: htmx follows HX-Redirect to the login page, no password prompt.
    sort_by_name()
    page.wait_for_url("**/_sidecar/login?rd=**")
    sign_in_here()  # and back to the table's page
    sort_by_name()
    page.wait_for_function("() => document.querySelectorAll('table tbody tr').length >= 3")
    names = [n.strip() for n in page.locator("table tbody tr td:nth-child(2)").all_inner_texts()]
    assert {f"{name} {site.name}" for name in ("Alpha", "Bravo", "Charlie")} <= set(names), names
    assert names in (sorted(names), sorted(names, reverse=True)), names
    page.screenshot(path=str(ROOT / "artifacts" / f"netbox-{site.name}-sites.png"))
