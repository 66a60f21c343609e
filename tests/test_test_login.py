"""auth-sidecar test-login, run as the operator runs it (python -m sidecar test-login), against the
real slapd and Samba AD: every step of one sign-in, the headers /auth answers, never the password."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.local import hash_password
from tests.conftest import PEOPLE, StartApp, basic, config_for, group, identity_headers, ldap_settings
from tests.test_active_directory import ad_settings
from tests.testbed import ROOT, free_port
from tests.testbed.samba import SambaDC
from tests.testbed.slapd import Slapd

NESTED = {"group_type": "nested_group_of_names", "deny_group": group("banned"), "find_group_perms": True,
          "user_flags_by_group": {"is_active": group("active"), "is_staff": group("staff")}}
RULES = {"access": {"rules": [{"path": "/admin", "groups": ["staff"]}, {"path": "/admin", "policy": "deny"}]}}


def run(tmp_path: Path, settings: dict[str, Any], user: str, password: str,
               *options: str) -> subprocess.CompletedProcess[str]:
    """test-login USER with the password on standard input (no terminal: one line is read)."""
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump({"admin": {"enabled": False}, **settings}, allow_unicode=True))
    result = subprocess.run([sys.executable, "-m", "sidecar", "test-login", "--config", str(config), *options, user],
                            input=password + "\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert password not in result.stdout + result.stderr
    return result


def headers_printed(output: str) -> dict[str, str]:
    """The headers of the 'allowed' step, as printed."""
    printed = {}
    for line in output.split("\nallowed ", 1)[1].splitlines()[1:]:
        name, _, value = line.strip().partition(":")
        printed[name] = value.strip()
    return printed


async def test_a_nested_user_is_shown_step_by_step_with_the_headers_auth_answers(
        tmp_path: Path, slapd: Slapd, app_client: StartApp) -> None:
    settings = {"ldap": ldap_settings(slapd, **NESTED), **RULES}
    result = run(tmp_path, settings, "carol", "carol-pass", "--url", "https://app.example.com/dcim/")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"server      {slapd.uri}\n" in out
    assert f"bind        as the service account {slapd.service_dn}: accepted\n" in out
    assert (f"search      base {PEOPLE}, scope subtree, filter (uid=carol): 1 entry: uid=carol,{PEOPLE}\n"
            in out)
    assert f"bind        as uid=carol,{PEOPLE}: password accepted\n" in out
    assert "first_name (givenName): 'Carol'" in out and "email (mail): 'carol@example.com'" in out
    # The groups, each with its way in through the nested groups (level3 holds level2 holds level1).
    assert f"carol → level1 → level2 → level3   ({group('level3')})" in out
    assert f"carol → cycle-a → cycle-b   ({group('cycle-b')})" in out
    assert f"carol → active   ({group('active')})" in out
    assert f"is_active: yes (ldap.user_flags_by_group.is_active {group('active')}: member of {group('active')})" in out
    assert "is_staff: no" in out
    assert f"ldap.deny_group {group('banned')}: a member of none" in out
    assert "GET https://app.example.com/dcim/: allowed by access.default" in out
    # The headers are those /auth answers with for the same configuration and credentials.
    client = await app_client(config_for(slapd, top=RULES, **NESTED))
    response = await client.get("/auth", headers={**basic("carol", "carol-pass"), "X-Forwarded-Proto": "https",
                                                  "X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/dcim/"})
    assert response.status == 200
    assert headers_printed(out) == identity_headers(response)


def test_an_access_rule_that_refuses_is_named(tmp_path: Path, slapd: Slapd) -> None:
    settings = {"ldap": ldap_settings(slapd, **NESTED), **RULES}
    result = run(tmp_path, settings, "carol", "carol-pass", "--url", "https://app.example.com/admin/x",
                        "--method", "post")
    assert result.returncode == 1
    assert ("access      POST https://app.example.com/admin/x: refused by access.rules[1] (path /admin; policy deny)"
            in result.stdout)
    assert "refused     /auth answers 403: access rules refuse carol" in result.stdout
    allowed = run(tmp_path, settings, "alice", "alice-pass", "--url", "https://app.example.com/admin/x")
    assert allowed.returncode == 0
    assert "allowed by access.rules[0] (path /admin; groups staff; policy allow)" in allowed.stdout


def test_a_wrong_password_is_the_directory_s_refusal_and_would_count(tmp_path: Path, slapd: Slapd) -> None:
    result = run(tmp_path, {"ldap": ldap_settings(slapd)}, "alice", "Not-Alice's-Pass")
    assert result.returncode == 1
    out = result.stdout
    assert f"bind        as uid=alice,{PEOPLE}: refused: invalidCredentials\n" in out
    assert ("refused     /auth answers 401: directory refused the password for "
            f"uid=alice,{PEOPLE}: invalidCredentials") in out
    # What the daemon would log, among the steps; the regulation left out, and what it would do.
    assert "log         WARNING sidecar.auth: 401 directory refused the password" in out
    assert "nothing was counted or banned" in out and "this attempt would count there" in out


def test_an_unknown_user_costs_a_bind_and_is_said_plainly(tmp_path: Path, slapd: Slapd) -> None:
    result = run(tmp_path, {"ldap": ldap_settings(slapd)}, "nobody", "whatever")
    assert result.returncode == 1
    out = result.stdout
    assert "filter (uid=nobody): no entry" in out
    assert f"bind        as cn=auth-sidecar-no-such-user,{PEOPLE}: refused" in out
    assert "refused     /auth answers 401: no such user 'nobody'" in out


def test_a_base_dn_that_does_not_exist_is_named(tmp_path: Path, slapd: Slapd) -> None:
    wrong = "ou=peple,dc=example,dc=com"
    settings = {"ldap": ldap_settings(slapd, user_search={"base_dn": wrong, "filter": "(uid=%(user)s)"})}
    result = run(tmp_path, settings, "alice", "alice-pass")
    assert result.returncode == 1
    assert (f"refused     /auth answers 503: base DN does not exist: {wrong} (ldap.user_search.base_dn; "
            "the nearest entry that does: dc=example,dc=com)") in result.stdout
    assert "no such user" not in result.stdout


def test_a_server_that_is_down_then_the_local_users_file(tmp_path: Path, slapd: Slapd) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(yaml.safe_dump({"users": {"ann": {"password": hash_password("Ann's pass"),
                                                       "first_name": "Ann"}}}))
    down = f"ldap://127.0.0.1:{free_port()}"
    settings = {"ldap": ldap_settings(slapd, server_uri=[down, slapd.uri]), "local_users": {"file": str(users)}}
    result = run(tmp_path, settings, "ann", "Ann's pass")
    out = result.stdout
    assert result.returncode == 0, out
    assert "sources     ldap, then local" in out
    assert f"WARNING sidecar.ldap: directory server {down} failed: cannot connect: connection refused" in out
    assert f"server      {slapd.uri}\n" in out  # the next server
    assert "source      ldap cannot say (no such user 'ann'): the next source is asked" in out
    assert f"users file  {users}: password accepted" in out
    assert "Remote-User: ann\n" in out and "Remote-User-First-Name: Ann\n" in out


def test_an_untrusted_certificate_is_said_in_plain_words(tmp_path: Path, slapd: Slapd) -> None:
    settings = {"ldap": ldap_settings(slapd, server_uri=slapd.ldaps_uri, ca_file=str(slapd.pki.other_ca_file))}
    result = run(tmp_path, settings, "alice", "alice-pass")
    assert result.returncode == 1
    assert (f"directory server {slapd.ldaps_uri} failed: TLS failed: the server's certificate is not trusted "
            "(self-signed certificate in certificate chain): ldap.ca_file must be the CA that signed it"
            ) in result.stdout
    assert "('" not in result.stdout  # no tuple's repr


def test_the_signed_assertion_is_not_printed(tmp_path: Path, slapd: Slapd) -> None:
    key = subprocess.run([sys.executable, "-m", "sidecar", "generate-signing-key"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    settings = {"ldap": ldap_settings(slapd), "assertion": {"audience": "netbox", "keys": [
        {"id": "k1", "private_key": key}]}}
    result = run(tmp_path, settings, "alice", "alice-pass")
    assert result.returncode == 0
    printed = headers_printed(result.stdout)["Remote-User-Assertion"]
    assert printed.startswith("(a signed assertion, ") and "eyJ" not in result.stdout


@pytest.mark.parametrize(("options", "said"), [
    (["--url", "app.example.com/x"], "--url must be an absolute http(s) URL"),
    (["--method", "GET /"], "--method is not an HTTP method"),
])
def test_usage_errors_exit_2(tmp_path: Path, options: list[str], said: str) -> None:
    settings = {"ldap": {"server_uri": "ldap://127.0.0.1:1", "user_search": {"base_dn": PEOPLE,
                                                                              "filter": "(uid=%(user)s)"}}}
    result = run(tmp_path, settings, "alice", "pw", *options)
    assert result.returncode == 2 and said in result.stderr and result.stdout == ""


def test_a_configuration_with_problems_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path, {"ldap": {"server_uri": "ldap://x", "user_serch": {}}}, "alice", "pw")
    assert result.returncode == 2 and "user_serch" in result.stderr


def test_active_directory_nested_groups_come_with_their_way_in(tmp_path: Path, ad: SambaDC) -> None:
    settings = {"ldap": ad_settings(ad, require_group=ad.group_dn("netbox-users"))}
    result = run(tmp_path, settings, "alice", ad.users["alice"])
    out = result.stdout
    assert result.returncode == 0, out
    assert "the server walks nested groups (matching rule 1.2.840.113556.1.4.1941)" in out
    assert "announces Active Directory (capability 1.2.840.113556.1.4.800): ldap.group_type fits" in out
    # developers holds alice; engineering holds developers; division holds engineering...
    assert "alice → developers → engineering → division → netbox-users" in out
    assert f"ldap.require_group {ad.group_dn('netbox-users')}: member of" in out
    assert "Remote-User: alice\n" in out


def test_active_directory_says_why_a_disabled_account_is_refused(tmp_path: Path, ad: SambaDC) -> None:
    result = run(tmp_path, {"ldap": ad_settings(ad)}, "disabled-user", ad.users["disabled-user"])
    assert result.returncode == 1
    assert "refused: account disabled (AD sub-code 533)" in result.stdout


def test_at_a_terminal_the_password_is_asked_for_without_echo(tmp_path: Path, slapd: Slapd) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump({"admin": {"enabled": False}, "ldap": ldap_settings(slapd)}))
    pid, terminal = pty.fork()
    if pid == 0:  # the child, with the pseudo-terminal as its controlling terminal
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "sidecar", "test-login", "--config", str(config), "alice"])
    seen = b""
    try:
        while b"Password:" not in seen:
            seen += read_some(terminal)
        os.write(terminal, b"alice-pass\n")
        while chunk := read_some(terminal):
            seen += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    text = seen.decode()
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "alice-pass" not in text  # not echoed, not printed
    assert "Remote-User: alice" in text


def read_some(terminal: int) -> bytes:
    """What the terminal shows next ("" once the child has closed it), within 30 s."""
    ready, _, _ = select.select([terminal], [], [], 30)
    assert ready, "test-login said nothing for 30 s"
    try:
        return os.read(terminal, 4096)
    except OSError:  # EIO: the child is gone
        return b""
