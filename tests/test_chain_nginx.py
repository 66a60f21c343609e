"""The whole chain, all real: nginx with deploy/nginx -> `auth-sidecar serve` -> slapd, and an app.

Proves what the application receives: the directory's identity for valid credentials, nothing
for anyone else, and never an identity header a client wrote, in any spelling.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar.assertion import generate_key
from sidecar.contrib.assertion import AssertionVerifier
from tests.conftest import basic, group, ldap_settings, need
from tests.testbed import free_port
from tests.testbed.nginx import Nginx, render_site
from tests.testbed.rawhttp import SPOOFED_VALUES, SPOOFS, Headers, Response, identity_seen, send
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd
from tests.testbed.upstream import EchoApp

ALICE = [
    ("Remote-User", "alice"),
    ("Remote-User-First-Name", "Alice"),
    ("Remote-User-Last-Name", "Liddell"),
    ("Remote-User-Email", "alice@example.com"),
    ("Remote-User-Group", "active|netbox-users|staff|superuser"),
    ("Remote-User-Staff", "true"),
    ("Remote-User-Superuser", "true"),
    ("Remote-User-Auth-Methods", "pwd"),  # how the user signed in: a password
]
SIGNING_KEY = generate_key()


@dataclass
class Chain:
    port: int
    app: EchoApp
    sidecar: SidecarProcess
    nginx: Nginx

    def get(self, path: str = "/", headers: Headers = ()) -> Response:
        return send(self.port, path, headers)


def auth(user: str, password: str) -> tuple[str, str]:
    (name, value), = basic(user, password).items()
    return name, value


@pytest.fixture(scope="module")
def chain(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    need("nginx")
    workdir: Path = tmp_path_factory.mktemp("chain")
    sidecar_port, listen_port = free_port(), free_port()
    config = {
        "server": {"listen": f"127.0.0.1:{sidecar_port}"},
        "ldap": ldap_settings(
            slapd,
            group_type="nested_group_of_names",
            find_group_perms=True,
            user_flags_by_group={"is_active": group("active"), "is_staff": group("staff"),
                                 "is_superuser": group("superuser")},
        ),
        "access": {"rules": [{"path": "/admin", "groups": ["staff"]}, {"path": "/admin", "policy": "deny"}]},
        "assertion": {"keys": [{"id": "k1", "private_key": SIGNING_KEY}], "audience": "netbox",
                      "issuer": "https://sidecar.test"},
    }
    with EchoApp() as app, SidecarProcess(workdir, config) as sidecar:
        site = render_site(listen_port=listen_port, sidecar_port=sidecar_port, app_port=app.port)
        with Nginx(workdir / "nginx", site) as nginx:
            yield Chain(listen_port, app, sidecar, nginx)


def test_valid_credentials_reach_the_app_with_the_directorys_identity(chain: Chain) -> None:
    response = chain.get("/devices/?q=1&sort=name", [auth("alice", "alice-pass")])
    assert response.status == 200
    echo = response.echo()
    assert echo["path"] == "/devices/?q=1&sort=name"
    seen = identity_seen(echo)
    assertion = dict(seen).pop("Remote-User-Assertion")
    assert [pair for pair in seen if pair[0] != "Remote-User-Assertion"] == ALICE
    # The application can check the headers against the sidecar's signature and published keys.
    verifier = AssertionVerifier(issuer="https://sidecar.test", audience="netbox",
                                 jwks_url=f"http://127.0.0.1:{chain.sidecar.port}/.well-known/jwks.json")
    plain = {key: dict(seen)[name] for key, name in PLAIN_NAMES.items()}
    assert verifier.verify(assertion, plain)["sub"] == "alice"


def test_the_app_never_sees_a_basic_password_but_keeps_api_tokens(chain: Chain) -> None:
    echo = chain.get("/", [auth("alice", "alice-pass")]).echo()
    assert [v for n, v in echo["headers"] if n.lower() == "authorization"] == []
    assert "alice-pass" not in echo["raw_headers"]
    token = ("Authorization", "Token 0123456789abcdef")
    response = chain.get("/", [token])
    assert response.status == 401  # no credentials the sidecar accepts (yet)


PLAIN_NAMES = {"user": "Remote-User", "first_name": "Remote-User-First-Name", "last_name": "Remote-User-Last-Name",
               "email": "Remote-User-Email", "groups": "Remote-User-Group", "is_staff": "Remote-User-Staff",
               "is_superuser": "Remote-User-Superuser"}


def test_a_spoofed_assertion_never_reaches_the_app(chain: Chain) -> None:
    forged = ("Remote-User-Assertion", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.")
    assert chain.get("/", [forged]).status == 401
    echo = chain.get("/", [forged, auth("carol", "carol-pass")]).echo()
    values = [v for n, v in echo["headers"] if n.lower() == "remote-user-assertion"]
    assert len(values) == 1 and values[0] != forged[1]


def test_non_ascii_names_arrive_as_utf8_bytes(chain: Chain) -> None:
    echo = chain.get("/", [auth("jose", "jose-pass")]).echo()
    seen = dict(identity_seen(echo))
    # The upstream decodes as latin-1 (as gunicorn does): the bytes on the wire are UTF-8.
    assert seen["Remote-User-First-Name"].encode("latin-1").decode("utf-8") == "José"
    assert seen["Remote-User-Last-Name"].encode("latin-1").decode("utf-8") == "山田"


@pytest.mark.parametrize("credentials", [("alice", "wrong"), ("alice", ""), ("*", "alice-pass"),
                                         ("nobody", "x")])
def test_wrong_credentials_get_401_and_never_reach_the_app(chain: Chain, credentials: tuple[str, str]) -> None:
    before = len(chain.app.requests)
    response = chain.get("/", [auth(*credentials)])
    assert response.status == 401
    assert response.values("WWW-Authenticate") == ['Basic realm="auth-sidecar", charset="UTF-8"']
    assert len(chain.app.requests) == before


def test_valid_but_not_allowed_is_403(chain: Chain) -> None:
    before = len(chain.app.requests)
    assert chain.get("/", [auth("dave", "dave-pass")]).status == 403
    assert chain.get("/admin/users", [auth("carol", "carol-pass")]).status == 403
    assert chain.get("/%61dmin/users", [auth("carol", "carol-pass")]).status == 403
    assert len(chain.app.requests) == before
    assert chain.get("/admin/users", [auth("alice", "alice-pass")]).status == 200


@pytest.mark.parametrize("spoof", SPOOFS, ids=lambda s: "+".join(n for n, _ in s))
def test_spoofed_identity_headers_never_reach_the_app(chain: Chain, spoof: Headers) -> None:
    before = len(chain.app.requests)
    assert chain.get("/", spoof).status == 401  # anonymous: stopped at the proxy
    assert len(chain.app.requests) == before
    echo = chain.get("/", [*spoof, auth("carol", "carol-pass")]).echo()
    seen = identity_seen(echo)
    assert dict(seen)["Remote-User"] == "carol"
    assert len(seen) == len({name.lower() for name, _ in seen}) == 9  # one of each, no extras
    assert all(value not in SPOOFED_VALUES
               for _, value in seen)
    assert dict(seen)["Remote-User-Superuser"] == "false"


def test_the_sidecar_sees_the_original_request(chain: Chain) -> None:
    # Access rules work on the original URL nginx passes (query and encoding included).
    assert chain.get("/admin/?next=%2Fadmin%2Fx&a=1", [auth("alice", "alice-pass")]).status == 200
    assert chain.get("/admin/?next=%2F", [auth("carol", "carol-pass")]).status == 403
    assert "GET localhost/admin" in chain.sidecar.log()  # the refusal's log line names it


def test_no_secret_in_the_process_list_or_the_log(chain: Chain, slapd: Slapd) -> None:
    assert chain.sidecar.process is not None
    cmdline = Path(f"/proc/{chain.sidecar.process.pid}/cmdline").read_bytes()
    log = chain.sidecar.log()
    for secret in (slapd.service_password, "alice-pass", "carol-pass"):
        assert secret.encode() not in cmdline
        assert secret not in log


def test_sidecar_down_means_5xx_never_open_access(slapd: Slapd, tmp_path: Path) -> None:
    need("nginx")
    dead_port = free_port()  # nothing listens here
    with EchoApp() as app:
        port = free_port()
        with Nginx(tmp_path, render_site(listen_port=port, sidecar_port=dead_port, app_port=app.port)):
            for headers in ([], [auth("alice", "alice-pass")], [("Remote-User", "admin")]):
                assert send(port, "/", headers).status >= 500
        assert app.requests == []
