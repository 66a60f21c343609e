"""One list of attacks, sent through every shipped proxy to a real Django under gunicorn.

client -> nginx | Apache | Caddy | HAProxy (deploy/*) -> `auth-sidecar serve` -> slapd, and
gunicorn serving tests/django_project, which writes down every request that reaches it
(tests/django_project/wsgi.py). Each proxy starts once for the module. Every case is sent
anonymously, with Basic credentials and with a session cookie, by a user in `staff` (alice) and
one who is not (carol), against three rules: the path `/admin`, the host `admin.app.test` and DELETE under `/writes` are
for `staff` only.

What must hold for every case, proxy and user (`check`):
- never a 5xx; a malformed or ambiguous request gets a 4xx and never reaches the application;
- an anonymous request never reaches the application;
- carol never reaches anything under /admin or on admin.app.test, by any reading of the path
  (raw, decoded, dot segments resolved, backslashes as slashes) or of the host (case, port,
  trailing dot, userinfo, anything after ? or #);
- what reaches the application carries exactly the identity headers the sidecar answered for
  that user (none dropped, none added, none of the client's), a valid signed assertion, and no
  Basic password in any header; Django logs in exactly that user.

Requests are written byte for byte (tests/testbed/rawhttp.py): an HTTP client would normalise
exactly what these cases are about.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode

import pytest

from sidecar.assertion import AssertionSigner, generate_key
from sidecar.contrib.assertion import AssertionVerifier
from sidecar.contrib.headers import decode
from tests.conftest import basic, group, ldap_settings, need
from tests.django_project import need_module
from tests.testbed import free_port
from tests.testbed.gunicorn import Gunicorn
from tests.testbed.proxies import BINARIES, PROXIES, mode, proxy_server
from tests.testbed.rawhttp import SPOOFS, Headers, Response, exchange, raw_request, send, utf8
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd

HOST = "app.test"
ADMIN_HOST = "admin.app.test"
EXTRA = "Remote-User-Department"  # headers.extra: department, from the directory's cn
PASSWORDS = {"alice": "alice-pass", "carol": "carol-pass"}
SIGNING_KEY = generate_key()
VERIFIER = AssertionVerifier(issuer="https://sidecar.test", audience="app",
                             jwks=AssertionSigner([("k1", SIGNING_KEY)], issuer="https://sidecar.test",
                                                  audience="app").jwks())
PLAIN = {"user": "HTTP_REMOTE_USER", "first_name": "HTTP_REMOTE_USER_FIRST_NAME",
         "last_name": "HTTP_REMOTE_USER_LAST_NAME", "email": "HTTP_REMOTE_USER_EMAIL",
         "groups": "HTTP_REMOTE_USER_GROUP", "is_staff": "HTTP_REMOTE_USER_STAFF",
         "is_superuser": "HTTP_REMOTE_USER_SUPERUSER"}
ASSERTION = "HTTP_REMOTE_USER_ASSERTION"
CSRF = "c" * 43  # the login form accepts a token the browser already holds in its cookie
FORGED = "forged"


def token(user: str) -> str:
    """The base64 of user:password, as Basic sends it."""
    return basic(user, PASSWORDS[user])["Authorization"].split()[1]


# -- the attack cases ----------------------------------------------------------------------------

# What a case is, and so what each user must get:
# refused  malformed or ambiguous: a 4xx for everyone, never reaches the application
# admin    a valid request for what only staff may see: 401 anonymous, 403 carol, 200 alice
# open     a valid request anyone signed in may make: 401 anonymous, 200 signed in
# either   a proxy may refuse it (4xx) or pass it on consistently: the invariants decide
REFUSED, ADMIN, OPEN, EITHER = "refused", "admin", "open", "either"


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    target: str = "/"
    method: str = "GET"
    host: str | None = HOST  # {port} is the proxy's port; None: no Host header at all
    headers: Headers = ()
    users: tuple[str, ...] = ("anonymous", "carol-basic", "carol-cookie", "alice-basic", "alice-cookie")
    # nginx hands a Remote-User-* name it does not blank in /_auth to the sidecar, which refuses it.
    nginx_refuses: bool = False


SIGNED_IN = ("anonymous", "carol-cookie", "alice-cookie")  # for cases that bring their own Authorization

CASES: list[Case] = [
    Case("baseline", OPEN, "/devices/?q=1"),
    Case("admin-path", ADMIN, "/admin/users"),
    Case("admin-path-encoded", ADMIN, "/%61dmin/users"),
    Case("admin-path-slashes", ADMIN, "//admin//users"),
    Case("admin-path-query", ADMIN, "/admin?next=/x"),
    # A method rule judges the method the application receives, whatever the client says it is.
    Case("writes-get-is-open", OPEN, "/writes/1"),
    Case("writes-delete-is-staff-only", ADMIN, "/writes/1", method="DELETE"),
    Case("writes-delete-claiming-get", ADMIN, "/writes/1", method="DELETE",
         headers=[("X-Original-Method", "GET"), ("X-Forwarded-Method", "GET"), ("X-HTTP-Method-Override", "GET")]),
    Case("query-is-not-judged", OPEN, "/x?next=/admin/../admin/users"),
    Case("admin-host", ADMIN, host=f"{ADMIN_HOST}:{{port}}"),
    Case("admin-host-no-port", ADMIN, host=ADMIN_HOST),
    Case("admin-host-trailing-dot", ADMIN, host=f"{ADMIN_HOST}."),
    Case("admin-host-trailing-dot-port", ADMIN, host=f"{ADMIN_HOST}.:{{port}}"),
    Case("admin-host-case", ADMIN, host="ADMIN.App.Test"),
    Case("admin-host-other-port", ADMIN, host=f"{ADMIN_HOST}:8080"),
    # The Host header: nothing but a host and a port, or 400.
    Case("host-question-mark", REFUSED, "/admin/users", host="app.test?"),
    Case("host-hash", REFUSED, "/admin/users", host="app.test#"),
    Case("host-question-mark-port", REFUSED, "/admin/users", host="app.test?:{port}"),
    Case("host-userinfo", REFUSED, host=f"x@{ADMIN_HOST}"),
    Case("host-userinfo-port", REFUSED, host=f"x@{ADMIN_HOST}:{{port}}"),
    Case("host-two-ports", REFUSED, host=f"{ADMIN_HOST}:80:80"),
    Case("host-empty-port", REFUSED, host=f"{ADMIN_HOST}:"),
    Case("host-port-too-big", REFUSED, host=f"{ADMIN_HOST}:99999"),
    Case("host-bracketed-name", REFUSED, host="[app.test]"),
    Case("host-empty-label", REFUSED, host="admin..app.test"),
    Case("host-two-trailing-dots", REFUSED, host=f"{ADMIN_HOST}.."),
    Case("host-slash", REFUSED, host="app.test/admin"),
    Case("host-backslash", REFUSED, host="app.test\\admin"),
    Case("host-percent", REFUSED, host="admin%2eapp.test"),
    Case("host-comma", REFUSED, host=f"app.test, {ADMIN_HOST}"),
    Case("host-empty", REFUSED, host=""),
    Case("host-missing", REFUSED, host=None),
    Case("host-twice", REFUSED, headers=[("Host", ADMIN_HOST)]),
    Case("absolute-form-other-host", EITHER, f"http://{ADMIN_HOST}/"),
    Case("absolute-form-admin-path", EITHER, "http://app.test/admin/users"),
    Case("absolute-form-dot-segment", REFUSED, "http://app.test/admin/../x"),
    # Dot segments, encoded slashes, backslashes: what the app dispatches on differs from the path.
    Case("dot-dot-out-of-admin", REFUSED, "/admin/../x"),
    Case("dot-dot-into-admin", REFUSED, "/x/../admin/users"),
    Case("dot-dot-encoded", REFUSED, "/admin/%2e%2e/x"),
    Case("dot-dot-encoded-upper", REFUSED, "/admin/%2E%2E/x"),
    Case("dot-dot-half-encoded", REFUSED, "/admin/.%2e/x"),
    Case("dot-dot-at-the-end", REFUSED, "/admin/.."),
    Case("dot-dot-above-root", REFUSED, "/../admin/users"),
    Case("dot-dot-encoded-into-admin", REFUSED, "/x/%2e%2e/admin/users"),
    Case("dot", REFUSED, "/./admin/users"),
    Case("dot-in-admin", REFUSED, "/admin/./users"),
    Case("dot-encoded", REFUSED, "/%2e/admin/users"),
    Case("encoded-slash", REFUSED, "/x/..%2fadmin/users"),
    Case("encoded-slash-upper", REFUSED, "/x/..%2Fadmin/users"),
    Case("encoded-slash-in-admin", REFUSED, "/admin%2fusers"),
    Case("all-encoded", REFUSED, "/x/%2e%2e%2fadmin/users"),
    Case("encoded-backslash", REFUSED, "/x/..%5cadmin/users"),
    Case("encoded-backslashes", REFUSED, "/x%5c..%5cadmin/users"),
    Case("backslash", REFUSED, "/x/..\\admin/users"),
    Case("encoded-nul", REFUSED, "/admin%00/users"),
    # Not a valid target: refused, or (Caddy) re-encoded as /admin%23/users for both sidecar and app.
    Case("raw-hash", EITHER, "/admin#/users"),
    # Directory passwords never reach the application, whatever the spelling of Basic.
    *[Case(f"basic-{name}", EITHER, headers=[("Authorization:", f"{prefix}{scheme}{gap}{{token}}")],
           users=SIGNED_IN)
      for name, prefix, scheme, gap in [
          ("tab", "\t", "Basic", " "), ("nbsp", utf8("\u00a0"), "Basic", " "),
          ("em-space", utf8("\u2003"), "Basic", " "), ("ideographic-space", utf8("\u3000"), "Basic", " "),
          ("lower", " ", "basic", " "), ("upper", " ", "BASIC", " "), ("mixed", " ", "bAsIc", " "),
          ("spaces", " ", "Basic", "    "), ("tab-after", " ", "Basic", "\t"), ("comma", " ", ",Basic", " "),
          ("in-a-list", " ", "Token abc, Basic", " ")]],
    Case("two-basic", REFUSED, headers=[("Authorization", "Basic {token}"), ("Authorization", "Basic {token}")],
         users=SIGNED_IN),
    Case("two-token-then-basic", REFUSED, headers=[("Authorization", "Token abc"), ("Authorization", "Basic {token}")],
         users=SIGNED_IN),
    Case("two-basic-then-token", REFUSED, headers=[("Authorization", "Basic {token}"), ("Authorization", "Token abc")],
         users=SIGNED_IN),
    Case("two-token-then-nbsp-basic", REFUSED,
         headers=[("Authorization", "Token abc"), ("Authorization", utf8("\u00a0") + "Basic {token}")],
         users=SIGNED_IN),
    # A client must not delete what the sidecar says: Connection names hop-by-hop headers.
    Case("connection-identity", OPEN,
         headers=[("Connection", "Remote-User, Remote-User-Group, Remote-User-Superuser")]),
    Case("connection-lower-case", OPEN, headers=[("Connection", "remote-user-superuser,remote-user-staff")]),
    Case("connection-every-name", OPEN, headers=[("Connection", ", ".join(
        ["Remote-User", "Remote-User-First-Name", "Remote-User-Last-Name", "Remote-User-Email", "Remote-User-Group",
         "Remote-User-Staff", "Remote-User-Superuser", "Remote-User-Assertion", EXTRA]))]),
    Case("connection-keep-alive", OPEN, headers=[("Connection", "keep-alive, Remote-User-Group"),
                                                 ("Keep-Alive", "timeout=5, Remote-User-Superuser")]),
    Case("connection-te", OPEN, headers=[("Connection", "TE, Remote-User-Superuser"), ("TE", "trailers")]),
    Case("connection-upgrade", OPEN, headers=[("Connection", "Upgrade, Remote-User-Superuser"), ("Upgrade", "h2c")]),
    Case("connection-two-lines", OPEN, headers=[("Connection", "Remote-User"), ("Connection", "Remote-User-Staff")]),
    Case("connection-extra", OPEN, headers=[("Connection", EXTRA)]),
    # headers.extra: configured, so the sidecar sends it; the client's own must never arrive.
    Case("extra-forged", OPEN, headers=[(EXTRA, FORGED)], nginx_refuses=True),
    Case("extra-forged-lower", OPEN, headers=[(EXTRA.lower(), FORGED)], nginx_refuses=True),
    Case("extra-forged-underscores", OPEN, headers=[(EXTRA.replace("-", "_"), FORGED)]),
    Case("unconfigured-forged", OPEN, headers=[("Remote-User-Tenant", FORGED)], nginx_refuses=True),
    # The spoofing list every proxy test uses.
    *[Case("spoof-" + "+".join(name for name, _ in spoof), OPEN, headers=spoof) for spoof in SPOOFS],
]


# -- the stack -----------------------------------------------------------------------------------

@dataclass
class Stack:
    proxy: str
    port: int
    sidecar: SidecarProcess
    django: Gunicorn
    server: Any
    cookies: dict[str, str] = field(default_factory=dict)
    answers: dict[str, dict[str, str]] = field(default_factory=dict)  # user: the sidecar's identity

    def log(self) -> str:
        return (f"--- {self.proxy}\n{self.server.log()[-3000:]}\n--- sidecar\n{self.sidecar.log()[-3000:]}"
                f"\n--- gunicorn\n{self.django.log()[-1500:]}")


def sidecar_config(proxy: str, slapd: Slapd, *, sidecar_port: int, listen_port: int) -> dict[str, Any]:
    base = f"http://{HOST}:{listen_port}"
    staff_only: list[dict[str, Any]] = [{"groups": ["staff"]}, {"policy": "deny"}]
    return {
        # Caddy hands non-2xx answers to the client as they are: browsers need the 302 itself.
        "server": {"listen": f"127.0.0.1:{sidecar_port}", "public_url": f"{base}/_sidecar",
                   "mode": mode(proxy)},
        "ldap": ldap_settings(
            slapd,
            group_type="nested_group_of_names",
            find_group_perms=True,
            user_attr_map={"first_name": "givenName", "last_name": "sn", "email": "mail", "department": "cn"},
            user_flags_by_group={"is_active": group("active"), "is_staff": group("staff"),
                                 "is_superuser": group("superuser")},
        ),
        "headers": {"extra": {"department": EXTRA}},
        "access": {"rules": [*({"host": ADMIN_HOST, **rule} for rule in staff_only),
                             *({"path": "/admin", **rule} for rule in staff_only),
                             *({"path": "/writes", "methods": ["DELETE"], **rule} for rule in staff_only)]},
        "sessions": {"keys": [{"id": "k1", "secret": "s" * 40}], "secure": False, "default_redirect": f"{base}/"},
        "assertion": {"keys": [{"id": "k1", "private_key": SIGNING_KEY}], "audience": "app",
                      "issuer": "https://sidecar.test"},
    }




@pytest.fixture(scope="module")
def django(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    need_module("django")
    workdir = tmp_path_factory.mktemp("attacks-django")
    with Gunicorn(workdir, free_port(), record=workdir / "received") as app:
        yield app


@pytest.fixture(scope="module", params=PROXIES)
def stack(request: pytest.FixtureRequest, slapd: Slapd, django: Gunicorn,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    proxy: str = request.param
    need(BINARIES[proxy])
    workdir = tmp_path_factory.mktemp(f"attacks-{proxy}")
    sidecar_port, listen_port = free_port(), free_port()
    config = sidecar_config(proxy, slapd, sidecar_port=sidecar_port, listen_port=listen_port)
    with SidecarProcess(workdir, config) as sidecar:
        with proxy_server(proxy, workdir / proxy, listen_port=listen_port, sidecar_port=sidecar_port, extra=[EXTRA],
                          app_port=django.port) as server:
            stack = Stack(proxy, listen_port, sidecar, django, server)
            for user in PASSWORDS:
                stack.cookies[user] = sign_in(stack, user)
                stack.answers[user] = sidecar_answer(stack, sidecar_port, config["server"]["mode"], user)
            yield stack


def sign_in(stack: Stack, user: str) -> str:
    """The session cookie (name=value) of user, signed in through the proxy's /_sidecar/login."""
    base = f"http://{HOST}:{stack.port}"
    body = urlencode({"username": user, "password": PASSWORDS[user], "csrf": CSRF, "rd": f"{base}/"}).encode()
    headers = [("Host", f"{HOST}:{stack.port}"), ("Content-Type", "application/x-www-form-urlencoded"),
               ("Cookie", f"sidecar_csrf={CSRF}"), ("Origin", base)]
    response = exchange(stack.port, raw_request("POST", "/_sidecar/login", headers, body=body), method="POST")
    assert response.status == 303, (response.status, response.body[:300], stack.log())
    (cookie,) = [c.split(";", 1)[0] for c in response.values("Set-Cookie") if c.startswith("sidecar_session=")]
    return cookie


def sidecar_answer(stack: Stack, sidecar_port: int, mode: str, user: str) -> dict[str, str]:
    """The identity headers the sidecar itself answers for user, as environ keys (empty ones left out)."""
    original = [("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", HOST), ("X-Forwarded-Uri", "/"),
                ("X-Forwarded-Method", "GET")]
    if mode == "auth_request":
        original.append(("X-Original-URL", f"http://{HOST}/"))  # what a sidecar before X-Forwarded-* read
    response = send(sidecar_port, "/auth", [*original, ("Authorization", f"Basic {token(user)}")])
    assert response.status == 200, (response.status, stack.sidecar.log()[-2000:])
    answer = {environ_key(name): value for name, value in response.headers if is_identity_key(environ_key(name))}
    assert answer["HTTP_REMOTE_USER"] == user and answer[environ_key(EXTRA)]  # the extra is really sent
    return {key: value for key, value in answer.items() if value and key != ASSERTION}


def environ_key(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


def is_identity_key(key: str) -> bool:
    """An environ key an application might read as identity: Remote-User or Remote-User-*/_*."""
    return key == "HTTP_REMOTE_USER" or key.startswith("HTTP_REMOTE_USER_")


# -- reading what the application got -------------------------------------------------------------

def path_readings(target: str, *, decoded: bool = False) -> set[str]:
    """Every way an application might read the path of a request target (or of a path already
    decoded, like PATH_INFO, where a ? or # is part of the path)."""
    if "://" in target:
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    path = target if decoded else target.split("?", 1)[0].split("#", 1)[0]
    readings = {path, unquote(path), unquote(unquote(path))}
    readings |= {p.replace("\\", "/") for p in readings}
    readings |= {posixpath.normpath("/" + p) for p in readings}
    readings |= {"/" + "/".join(part for part in p.split("/") if part) for p in readings}
    return readings


def host_readings(host: str) -> set[str]:
    """Every way an application might read the host of a Host header."""
    readings = {host.lower().strip()}
    for separator in ("?", "#", "/", "\\", ",", " "):
        readings |= {r.split(separator, 1)[0] for r in readings} | {r.rsplit(separator, 1)[-1] for r in readings}
    readings |= {r.rsplit("@", 1)[-1] for r in readings}
    readings |= {unquote(r) for r in readings}
    readings |= {r.split(":", 1)[0] for r in readings if not r.startswith("[")}
    readings |= {r.strip("[]").rstrip(".") for r in readings}
    return readings


def protected(received: dict[str, str]) -> bool:
    """Whether any reading of what the application received is a staff-only request."""
    paths = path_readings(received.get("RAW_URI", "")) | path_readings(received.get("PATH_INFO", ""), decoded=True)
    return (any(p == "/admin" or p.startswith("/admin/") for p in paths)
            or ADMIN_HOST in host_readings(received.get("HTTP_HOST", "")))


# -- the test ------------------------------------------------------------------------------------

def owner(case: Case, user: str) -> str | None:
    """Whose identity may reach the application: the signed-in user's, or alice's for a case that
    brings alice's Basic credentials in a spelling of its own."""
    if user != "anonymous":
        return user.split("-")[0]
    return "alice" if any("{token}" in value for _, value in case.headers) else None


def request_for(stack: Stack, case: Case, user: str, test_id: str) -> bytes:
    owner = user.split("-")[0] if user != "anonymous" else "alice"
    headers: list[tuple[str, str]] = []
    if case.host is not None:
        headers.append(("Host", case.host.replace("{port}", str(stack.port))))
    headers += [(name, value.replace("{token}", token(owner))) for name, value in case.headers]
    if user.endswith("-basic"):
        headers.append(("Authorization", f"Basic {token(owner)}"))
    elif user.endswith("-cookie"):
        headers.append(("Cookie", stack.cookies[owner]))
    headers.append(("X-Test-Id", test_id))
    return raw_request(case.method, case.target, headers)


@pytest.mark.parametrize(("case", "user"), [pytest.param(case, user, id=f"{case.name}-{user}")
                                            for case in CASES for user in case.users])
def test_attack(stack: Stack, case: Case, user: str) -> None:
    test_id = uuid.uuid4().hex
    raw = request_for(stack, case, user, test_id)
    response = exchange(stack.port, raw)
    received = stack.django.received(test_id)
    check(stack, case, user, response, received, raw)


def check(stack: Stack, case: Case, user: str, response: Response, received: dict[str, str] | None,
          raw: bytes) -> None:
    status = response.status
    where = f"{stack.proxy} {case.name} as {user}: {status}, sent {raw!r}, the app received {received}"
    assert status < 500, f"{where}\n{stack.log()}"
    who = owner(case, user)
    if received is not None:
        assert who is not None, f"an anonymous request reached the app: {where}"
        check_received(stack, who, response, received, where)
    if user == "anonymous" and who is not None:  # alice's Basic, in some spelling: if it is Basic, she is in
        assert status in (200, 400, 401), where
        return
    if user == "anonymous":
        if case.kind in (ADMIN, OPEN) and not (case.nginx_refuses and stack.proxy == "nginx"):
            assert status == 401, where
        else:
            assert status in (400, 401, 404), where
        return
    member = user.startswith("alice")
    if case.kind == REFUSED:
        assert 400 <= status < 500 and received is None, where
    elif case.kind == ADMIN:
        assert (status, received is not None) == ((200, True) if member else (403, False)), where
    elif case.kind == OPEN:
        if case.nginx_refuses and stack.proxy == "nginx":
            assert status in (200, 400), where
        else:
            assert (status, received is not None) == (200, True), where
    else:
        assert status == 200 or (400 <= status < 500 and received is None), where
    if not member and received is not None:
        assert not protected(received), f"carol reached a staff-only request: {where}"


def check_received(stack: Stack, owner: str, response: Response, received: dict[str, str], where: str) -> None:
    identity = {key: value for key, value in received.items() if is_identity_key(key) and value}
    assertion = identity.pop(ASSERTION, None)
    assert identity == stack.answers[owner], f"not the sidecar's identity: {where}"
    # The signed statement came through too, and vouches for exactly these plain headers.
    assert assertion is not None, where
    plain = {key: decode(received.get(name, "")) for key, name in PLAIN.items()}
    assert VERIFIER.verify(assertion, plain)["sub"] == owner, where
    for secret in (token(owner), PASSWORDS[owner]):
        assert not any(secret in value for value in received.values()), f"a password reached the app: {where}"
    if response.status == 200:
        seen = json.loads(response.body)
        assert (seen["username"], seen["is_superuser"]) == (owner, owner == "alice"), where
