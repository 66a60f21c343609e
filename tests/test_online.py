"""check-config --online against the real slapd, Samba AD and oidc-provider (python -m sidecar, as
the operator runs it), and what the running sidecar says of the same problems: its log lines and
the body of /readyz."""

from __future__ import annotations

import email.utils
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar import online
from sidecar.config import parse_config
from tests.conftest import GROUPS, PEOPLE, StartSidecar, basic, ldap_settings
from tests.test_active_directory import ad_settings
from tests.test_testbed_oidc import need_provider
from tests.testbed import ROOT, free_port
from tests.testbed.oidc import OidcProvider, oidc_client, public_jwk, rsa_jwk
from tests.testbed.samba import SambaDC
from tests.testbed.slapd import Slapd

WRONG_PEOPLE = "ou=peple,dc=example,dc=com"


def check_online(tmp_path: Path, settings: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump({"admin": {"enabled": False}, **settings}))
    return subprocess.run([sys.executable, "-m", "sidecar", "check-config", "--online", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def checks(output: str) -> list[str]:
    """The checklist's lines, each "ok  ", "FAIL" or "--  " and its text."""
    return [line.strip() for line in output.splitlines() if line.startswith("  ")]


def test_a_directory_that_fits_passes_every_check(tmp_path: Path, slapd: Slapd) -> None:
    settings = ldap_settings(slapd, server_uri=slapd.ldaps_uri, ca_file=str(slapd.pki.ca_file))
    result = check_online(tmp_path, {"ldap": settings})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = checks(result.stdout)
    assert lines[:4] + lines[5:] == [
        f"ok    reachable: TLS (ldaps), the certificate checked against {slapd.pki.ca_file}",
        f"ok    service bind as {slapd.service_dn}: accepted",
        f"ok    ldap.user_search.base_dn {PEOPLE} exists",
        f"ok    ldap.group_search.base_dn {GROUPS} exists",
        "ok    ldap.group_type group_of_names needs nothing the server must announce",
        "--    clock: not published by the server (Active Directory's rootDSE currentTime)",
    ]
    assert lines[4].startswith(f"ok    group search (objectClass=groupOfNames) under {GROUPS} answers (a group: cn=")
    assert result.stdout.endswith("every check passed\n")


def test_a_base_dn_that_does_not_exist_fails_and_is_named(tmp_path: Path, slapd: Slapd) -> None:
    settings = ldap_settings(slapd, user_search={"base_dn": WRONG_PEOPLE, "filter": "(uid=%(user)s)"})
    result = check_online(tmp_path, {"ldap": settings})
    assert result.returncode == 1
    assert (f"FAIL  ldap.user_search.base_dn {WRONG_PEOPLE}: base DN does not exist "
            "(the nearest entry that does: dc=example,dc=com)") in checks(result.stdout)
    assert result.stdout.endswith("1 check failed\n")


def test_the_parent_of_the_user_dn_template_must_exist(tmp_path: Path, slapd: Slapd) -> None:
    settings = ldap_settings(slapd, user_search=None, user_dn_template=f"uid=%(user)s,{WRONG_PEOPLE}")
    result = check_online(tmp_path, {"ldap": settings})
    assert result.returncode == 1
    assert any(line.startswith(f"FAIL  the parent of ldap.user_dn_template {WRONG_PEOPLE}: base DN does not exist")
               for line in checks(result.stdout))


def test_an_untrusted_certificate_and_a_refused_connection_in_plain_words(tmp_path: Path, slapd: Slapd) -> None:
    down = f"ldap://127.0.0.1:{free_port()}"
    settings = ldap_settings(slapd, server_uri=[slapd.ldaps_uri, down], ca_file=str(slapd.pki.other_ca_file))
    result = check_online(tmp_path, {"ldap": settings})
    assert result.returncode == 1
    assert checks(result.stdout) == [
        "FAIL  reachable: TLS failed: the server's certificate is not trusted (self-signed certificate in "
        "certificate chain): ldap.ca_file must be the CA that signed it",
        "FAIL  reachable: cannot connect: connection refused",
    ]
    assert result.stdout.endswith("2 checks failed\n")


def test_a_refused_service_bind_and_a_group_type_the_server_cannot_answer(tmp_path: Path, slapd: Slapd) -> None:
    refused = check_online(tmp_path, {"ldap": ldap_settings(slapd, bind_password="not-the-password")})
    assert refused.returncode == 1
    assert f"FAIL  service bind as {slapd.service_dn}: refused: invalidCredentials" in checks(refused.stdout)
    mismatch = check_online(tmp_path, {"ldap": ldap_settings(slapd, group_type="active_directory")})
    assert mismatch.returncode == 1
    assert any(line.startswith("FAIL  ldap.group_type is active_directory, but ldap://") and
               "is not Active Directory" in line for line in checks(mismatch.stdout))


def test_active_directory_fits_and_tells_its_time(tmp_path: Path, ad: SambaDC) -> None:
    result = check_online(tmp_path, {"ldap": ad_settings(ad, server_uri=ad.ldaps_uri, ca_file=str(ad.ca_file))})
    assert result.returncode == 0, result.stdout
    lines = checks(result.stdout)
    assert "ok    ldap.group_type active_directory fits: the server is Active Directory" in lines
    assert "ok    clock: the server's agrees with ours (oidc.leeway 30 s)" in lines


# -- single sign-on providers and Bearer issuers ------------------------------------------------

def oidc_settings(issuer: str) -> dict[str, Any]:
    return {"server": {"public_url": "https://app.example.com/_sidecar"},
            "sessions": {"keys": [{"id": "k1", "secret": "s" * 43}]},
            "oidc": {"providers": [{"name": "op", "label": "OP", "issuer": issuer, "client_id": "sidecar",
                                    "client_secret": "sidecar-secret", "username_prefix": "op:"}],
                     "bearer": [{"issuer": issuer, "audiences": ["https://api.example.test"],
                                 "username_prefix": "api:"}]}}


@pytest.mark.server
def test_a_provider_that_answers_then_one_that_stopped(tmp_path: Path) -> None:
    need_provider()
    with OidcProvider(tmp_path / "op", clients=[oidc_client("sidecar", "sidecar-secret",
                                                            ["https://app.example.com/_sidecar/oidc/callback"])]) as op:
        settings = oidc_settings(op.issuer)
        answered = check_online(tmp_path, settings)
        assert answered.returncode == 0, answered.stdout + answered.stderr
        for section in (f"oidc provider op: {op.issuer}\n", f"bearer issuer {op.issuer}\n"):
            lines = checks(answered.stdout.split(section, 1)[1])[:4]
            assert lines == [
                f"ok    discovery {op.discovery_url}: for this issuer, with every endpoint a sign-in needs",
                f"ok    signing keys {op.jwks_url}: 1 (rsa-1)",
                "ok    algorithms accepted: RS256",
                "ok    clock: the issuer's agrees with ours (oidc.leeway 30 s)",
            ]
        op.stop()
        stopped = check_online(tmp_path, settings)
    assert stopped.returncode == 1
    lines = checks(stopped.stdout)
    assert len(lines) == 2  # the provider's and the issuer's discovery: nothing more can be asked
    assert all(line.startswith(f"FAIL  discovery: cannot fetch {op.discovery_url}: ") for line in lines)
    assert stopped.stdout.endswith("2 checks failed\n")


async def test_an_issuer_whose_clock_is_off_fails(capsys: pytest.CaptureFixture[str]) -> None:
    # An issuer of our own on 127.0.0.1 whose Date says ten minutes from now.
    key = public_jwk(rsa_jwk("k1"))

    async def document(request: web.Request) -> web.Response:
        ahead = email.utils.formatdate(time.time() + 600, usegmt=True)
        issuer = str(request.url.origin())
        body = ({"keys": [key]} if request.path == "/jwks" else
                {"issuer": issuer, "authorization_endpoint": f"{issuer}/auth", "token_endpoint": f"{issuer}/token",
                 "jwks_uri": f"{issuer}/jwks", "id_token_signing_alg_values_supported": ["RS256"]})
        return web.json_response(body, headers={"Date": ahead})

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", document)
    app.router.add_get("/jwks", document)
    async with TestServer(app, host="127.0.0.1") as server:
        issuer = str(server.make_url("")).rstrip("/")
        config = parse_config({"oidc": {"bearer": [{"issuer": issuer, "audiences": ["api"]}]}})
        failed = await online.checklist(config)
    assert failed == 1
    # A Date is whole seconds: 599 or 600.
    assert re.search(r"\n  FAIL  clock: the issuer's is (599|600) s ahead of ours, more than oidc.leeway \(30 s\): "
                     "tokens would be refused as expired or not yet valid", capsys.readouterr().out)


@pytest.mark.parametrize(("skew", "passed"), [(None, None), (0.4, True), (-29.0, True), (30.8, True), (-32.0, False)])
def test_clock_skew_against_the_leeway(skew: float | None, passed: bool | None) -> None:
    assert online._clock(skew, 30, "its", "unknown", resolution=1.0)[0] is passed


# -- the same problems at run time: log lines and /readyz --------------------------------------

async def test_readyz_names_a_base_dn_that_does_not_exist(sidecar: StartSidecar) -> None:
    client = await sidecar(user_search={"base_dn": WRONG_PEOPLE, "filter": "(uid=%(user)s)"})
    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.text() == (f"not ready: base DN does not exist: {WRONG_PEOPLE} (ldap.user_search.base_dn; "
                                      "the nearest entry that does: dc=example,dc=com)\n")
    # Through a proxy, the body does not name servers and DNs.
    forwarded = await client.get("/readyz", headers={"X-Forwarded-For": "203.0.113.7"})
    assert forwarded.status == 503 and await forwarded.text() == "not ready\n"


@pytest.mark.parametrize("where", ["group_search", "user_dn_template"])
async def test_readyz_checks_every_base_the_service_account_reads(sidecar: StartSidecar, where: str) -> None:
    if where == "group_search":
        client = await sidecar(group_search={"base_dn": "ou=grups,dc=example,dc=com",
                                             "filter": "(objectClass=groupOfNames)"})
    else:
        client = await sidecar(user_search=None, user_dn_template=f"uid=%(user)s,{WRONG_PEOPLE}")
    assert "base DN does not exist" in await (await client.get("/readyz")).text()


async def test_readyz_names_the_server_that_cannot_be_reached(sidecar: StartSidecar) -> None:
    down = f"ldap://127.0.0.1:{free_port()}"
    client = await sidecar(server_uri=down)
    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.text() == f"not ready: directory unreachable: {down}: cannot connect: connection refused\n"


async def test_a_base_dn_that_does_not_exist_is_logged_as_such_not_as_no_such_user(
        sidecar: StartSidecar, caplog: pytest.LogCaptureFixture) -> None:
    client = await sidecar(user_search={"base_dn": WRONG_PEOPLE, "filter": "(uid=%(user)s)"})
    with caplog.at_level(logging.INFO, logger="sidecar"):
        response = await client.get("/auth", headers=basic("alice", "alice-pass"))
    assert response.status == 503  # the directory cannot say: no verdict, and nothing counted against alice
    said = [r.getMessage() for r in caplog.records]
    assert f"base DN does not exist: {WRONG_PEOPLE} (ldap.user_search.base_dn; the nearest entry that does: " \
           "dc=example,dc=com)" in said
    assert not any("no such user" in line for line in said)


async def test_after_a_tls_failure_every_line_says_so_plainly(
        sidecar: StartSidecar, slapd: Slapd, caplog: pytest.LogCaptureFixture) -> None:
    # Every attempt goes to the server again (retry_dead_after 0): the second used to be "invalid server address".
    client = await sidecar(server_uri=slapd.ldaps_uri, ca_file=str(slapd.pki.other_ca_file), retry_dead_after=0)
    with caplog.at_level(logging.WARNING, logger="sidecar.ldap"):
        for user in ("alice", "bob", "carol"):
            assert (await client.get("/auth", headers=basic(user, slapd.users[user]))).status == 503
    failed = [r.getMessage() for r in caplog.records if r.name == "sidecar.ldap"]
    assert len(failed) == 3
    assert set(failed) == {f"directory server {slapd.ldaps_uri} failed: TLS failed: the server's certificate is not "
                           "trusted (self-signed certificate in certificate chain): ldap.ca_file must be the CA "
                           "that signed it"}


async def test_start_tls_with_an_untrusted_certificate_is_said_plainly_too(
        sidecar: StartSidecar, slapd: Slapd, caplog: pytest.LogCaptureFixture) -> None:
    client = await sidecar(start_tls=True, ca_file=str(slapd.pki.other_ca_file))
    with caplog.at_level(logging.WARNING, logger="sidecar.ldap"):
        assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 503
    assert any(r.getMessage().endswith("failed: TLS failed: the server's certificate is not trusted (self-signed "
                                       "certificate in certificate chain): ldap.ca_file must be the CA that signed it")
               for r in caplog.records)


def test_ldap3_s_wrapped_messages_are_unwrapped() -> None:
    from ldap3.core.exceptions import LDAPSocketOpenError

    from sidecar.ldap import failure_text

    wrapped = LDAPSocketOpenError(("('socket ssl wrapping error: [SSL: WRONG_VERSION_NUMBER] wrong version "
                                   "number (_ssl.c:1006)',)",))
    assert failure_text(wrapped) == ("TLS failed: wrong version number: the server does not speak TLS on this port "
                                     "(ldaps:// needs its TLS port, often 636)")
    several = LDAPSocketOpenError("unable to open socket", [
        (LDAPSocketOpenError("socket connection error while opening: [Errno 111] Connection refused"),
         ("::1", 389, 0, 0)),
        (LDAPSocketOpenError("socket connection error while opening: timed out"), ("127.0.0.1", 389))])
    assert failure_text(several) == "::1: cannot connect: connection refused; 127.0.0.1: cannot connect: timed out"


@pytest.mark.server
def test_the_state_store_is_checked_and_a_stopped_one_fails(tmp_path: Path) -> None:
    from tests.conftest import need
    from tests.testbed.redis import RedisServer

    need("redis-server")
    with RedisServer(tmp_path / "redis") as redis:
        settings = {"local_users": {"file": str(tmp_path / "users.yaml")},
                    "state": {"backend": "redis", "url": redis.url, "key_prefix": "checked:"}}
        (tmp_path / "users.yaml").write_text("users: {}\n")
        result = check_online(tmp_path, settings)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = checks(result.stdout)
        assert f"state store {redis.url}" in result.stdout
        assert lines[0] == "ok    reachable (plain, no TLS), signed in"
        assert re.fullmatch(r"ok    version \d+\.\d+\.\d+", lines[1])
        assert lines[2] == "ok    writes and reads under 'checked:', runs scripts (TIME too), publishes"
        assert lines[3].startswith("ok    clock: ")
        with redis.client() as client:
            assert client.keys("checked:*") == []
        redis.stop()
        result = check_online(tmp_path, settings)
        assert result.returncode == 1 and checks(result.stdout)[0].startswith("FAIL  reachable: ConnectionError")
