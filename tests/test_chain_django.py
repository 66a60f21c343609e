"""The whole chain with a real Django: nginx (deploy/nginx) -> `auth-sidecar serve` -> slapd, and
gunicorn serving tests/django_project with SidecarMiddleware and SidecarBackend.

Proves what Django ends up with: the directory's user (names in any script, email, groups, flags),
kept up to date on an existing session, and never an identity a client wrote, in any spelling.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import basic, group, ldap_settings, need
from tests.django_project import need_module
from tests.testbed import free_port
from tests.testbed.gunicorn import Gunicorn
from tests.testbed.nginx import Nginx, render_site
from tests.testbed.rawhttp import SPOOFED_VALUES, SPOOFS, Headers, Response, send
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd

NOMAIL = "django-nomail"  # a directory user without mail, added for this module

ALICE = {
    "authenticated": True,
    "username": "alice",
    "first_name": "Alice",
    "last_name": "Liddell",
    "email": "alice@example.com",
    "is_active": True,
    "is_staff": True,
    "is_superuser": True,
    "groups": ["active", "netbox-users", "staff", "superuser"],
}


@dataclass
class Chain:
    port: int
    django: Gunicorn
    sidecar: SidecarProcess

    def get(self, path: str, headers: Headers = ()) -> Response:
        return send(self.port, path, headers)

    def json(self, path: str, headers: Headers = ()) -> dict[str, Any]:
        response = self.get(path, headers)
        assert response.status == 200, (response.status, response.body[:500], self.django.log()[-2000:])
        seen: dict[str, Any] = json.loads(response.body)
        return seen


def auth(user: str, password: str) -> tuple[str, str]:
    (name, value), = basic(user, password).items()
    return name, value


def session_cookie(response: Response) -> str | None:
    """The sessionid Django set in this answer, if any."""
    for value in response.values("Set-Cookie"):
        cookie = SimpleCookie(value)
        if "sessionid" in cookie and cookie["sessionid"].value:
            return cookie["sessionid"].value
    return None


def sidecar_config(slapd: Slapd, port: int, **ldap: Any) -> dict[str, Any]:
    flags = {"is_active": group("active"), "is_staff": group("staff"), "is_superuser": group("superuser")}
    return {
        "server": {"listen": f"127.0.0.1:{port}"},
        "ldap": ldap_settings(slapd, group_type="nested_group_of_names", user_flags_by_group=flags, **ldap),
    }


@contextlib.contextmanager
def chain_to(django_app: Gunicorn, workdir: Path, config: dict[str, Any]) -> Iterator[Chain]:
    """A sidecar with config and an nginx with deploy/nginx in front of django_app."""
    listen = free_port()
    with SidecarProcess(workdir, config) as sidecar:
        site = render_site(listen_port=listen, sidecar_port=sidecar.port, app_port=django_app.port)
        with Nginx(workdir / "nginx", site):
            yield Chain(listen, django_app, sidecar)


@pytest.fixture(scope="module")
def django_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    need("nginx")
    need_module("django")
    with Gunicorn(tmp_path_factory.mktemp("django"), free_port()) as app:
        yield app


@pytest.fixture(scope="module")
def nomail(slapd: Slapd) -> Iterator[str]:
    slapd.add_user(NOMAIL, "nomail-pass", given_name="No", sn="Mail")
    yield NOMAIL
    slapd.delete_user(NOMAIL)


@pytest.fixture(scope="module")
def chain(slapd: Slapd, django_app: Gunicorn, nomail: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with chain_to(django_app, tmp_path_factory.mktemp("chain-django"), sidecar_config(slapd, free_port())) as chain:
        yield chain


def test_alice_reaches_django_with_the_directory_s_identity(chain: Chain) -> None:
    assert chain.json("/whoami", [auth("alice", "alice-pass")]) == ALICE


def test_non_ascii_names_arrive_as_utf8_text(chain: Chain) -> None:
    seen = chain.json("/whoami", [auth("jose", "jose-pass")])
    assert (seen["username"], seen["first_name"], seen["last_name"]) == ("jose", "José", "山田")
    meta = chain.json("/meta", [auth("jose", "jose-pass")])
    assert (meta["HTTP_REMOTE_USER_FIRST_NAME"], meta["HTTP_REMOTE_USER_LAST_NAME"]) == ("José", "山田")


def test_without_credentials_nothing_reaches_django(chain: Chain) -> None:
    before = chain.django.requests()
    assert chain.get("/whoami").status == 401
    assert chain.get("/anon").status == 401
    assert chain.django.requests() == before


@pytest.mark.parametrize("spoof", SPOOFS, ids=lambda s: "+".join(n for n, _ in s))
def test_spoofed_identity_headers_never_reach_django(chain: Chain, spoof: Headers) -> None:
    before = chain.django.requests()
    assert chain.get("/whoami", spoof).status == 401  # anonymous: stopped at the proxy
    assert chain.django.requests() == before
    carol = [*spoof, auth("carol", "carol-pass")]
    seen = chain.json("/whoami", carol)
    assert (seen["username"], seen["email"], seen["is_staff"], seen["is_superuser"]) == \
        ("carol", "carol@example.com", False, False)
    assert not set(seen["groups"]) & set(SPOOFED_VALUES)
    meta = chain.json("/meta", carol)
    assert meta["HTTP_REMOTE_USER"] == "carol"
    assert not set(meta.values()) & set(SPOOFED_VALUES), meta


@pytest.mark.parametrize("spoof", [[("Remote-User-Email", "admin@evil.test")],
                                   [("remote-user-email", "admin@evil.test")],
                                   [("Remote_User_Email", "admin@evil.test")]], ids=lambda s: s[0][0])
def test_a_value_the_sidecar_leaves_empty_cannot_be_filled_in(chain: Chain, nomail: str, spoof: Headers) -> None:
    seen = chain.json("/whoami", [*spoof, auth(nomail, "nomail-pass")])
    assert (seen["username"], seen["first_name"], seen["email"], seen["groups"]) == (nomail, "No", "", ["active"])
    assert "HTTP_REMOTE_USER_EMAIL" not in chain.json("/meta", [*spoof, auth(nomail, "nomail-pass")])


def test_a_directory_change_reaches_an_existing_django_session(slapd: Slapd, django_app: Gunicorn,
                                                                tmp_path: Path) -> None:
    config = sidecar_config(slapd, free_port(), cache_timeout=0)
    # As a browser (which always sends Sec-Fetch-Site): a script gets no session to keep.
    bob = [auth("bob", "bob-pass"), ("Sec-Fetch-Site", "same-origin")]
    with chain_to(django_app, tmp_path, config) as chain:
        first = chain.get("/whoami", bob)
        session = session_cookie(first)
        assert session is not None
        seen = json.loads(first.body)
        assert seen["first_name"] == "Bob" and "netbox-users" in seen["groups"]
        try:
            slapd.modify_user("bob", givenName="Robert")
            slapd.remove_from_group("bob", "netbox-users")
            later = chain.get("/whoami", [*bob, ("Cookie", f"sessionid={session}")])
            seen = json.loads(later.body)
            assert seen["first_name"] == "Robert" and "netbox-users" not in seen["groups"]
            assert session_cookie(later) is None  # the same session, its user updated in place
        finally:
            slapd.modify_user("bob", givenName="Bob")
            slapd.add_to_group("bob", "netbox-users")
