"""auth-sidecar test-login's less travelled steps: usage errors, the local users file first,
server.basic_auth off, a --url without rules, the regulation off or asked of a daemon, and what
the headers look like when printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar import troubleshoot
from sidecar.config import parse_config
from sidecar.local import hash_password
from tests.testbed import ROOT, free_port


def run(tmp_path: Path, settings: dict[str, Any], user: str, password: str,
        *options: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    result = subprocess.run([sys.executable, "-m", "sidecar", "test-login", "--config", str(config), *options, user],
                            input=password + "\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert password not in result.stdout + result.stderr
    return result


def users_file(tmp_path: Path) -> Path:
    users = tmp_path / "users.yaml"
    users.write_text(yaml.safe_dump({"users": {"ann": {"password": hash_password("Ann's pass")}}}))
    return users


def test_without_a_password_source_there_is_nothing_to_try(tmp_path: Path) -> None:
    bearer = {"issuer": "https://idp.test", "audiences": ["api"]}
    result = run(tmp_path, {"admin": {"enabled": False}, "oidc": {"bearer": [bearer]}}, "ann", "pw")
    assert result.returncode == 2 and result.stdout == ""
    assert "no password source is configured (ldap, local_users)" in result.stderr


def test_a_name_with_a_colon_cannot_be_sent_as_basic(tmp_path: Path) -> None:
    result = run(tmp_path, {"admin": {"enabled": False}, "local_users": {"file": str(users_file(tmp_path))}},
                 "ann:x", "pw")
    assert result.returncode == 2 and result.stdout == ""
    assert "a name with ':' cannot be tried" in result.stderr


def test_local_first_with_basic_off_a_url_without_rules_and_no_regulation(tmp_path: Path) -> None:
    down = f"ldap://127.0.0.1:{free_port()}"
    github = {"name": "github", "type": "oauth2", "client_id": "x", "client_secret": "y",
              "authorization_url": "https://github.com/login/oauth/authorize",
              "token_url": "https://github.com/login/oauth/access_token", "userinfo_url": "https://api.github.com/user",
              "claims": {"username": "login"}, "username_prefix": "github:"}
    settings = {"admin": {"enabled": False}, "regulation": {"enabled": False},
                "server": {"basic_auth": False, "public_url": "https://app.example.com/_sidecar"},
                "sessions": {"keys": [{"id": "k1", "secret": "s" * 40}], "recheck_every": 0},
                "oidc": {"providers": [github]},
                "local_users": {"file": str(users_file(tmp_path)), "order": "local_first"},
                "ldap": {"server_uri": down, "user_search": {"base_dn": "dc=example,dc=com",
                                                             "filter": "(uid=%(user)s)"}}}
    result = run(tmp_path, settings, "ann", "Ann's pass", "--url", "https://app.example.com/x")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "sources     local, then ldap (in this order:" in out
    assert "not tried: oidc provider github (they take no password" in out
    assert "basic       server.basic_auth is off: tried as HTTP Basic all the same" in out
    assert "access      no access rules: access.default (" in out
    assert ("regulation  not applied by test-login: nothing was counted or banned; the daemon has "
            "regulation.enabled: false as well") in out
    assert "Remote-User: ann\n" in out
    assert down not in out  # the local users file knew ann: the directory was not asked


def test_a_daemon_that_cannot_be_asked_is_said(tmp_path: Path) -> None:
    socket = tmp_path / "admin.sock"
    settings = {"admin": {"socket": str(socket)}, "local_users": {"file": str(users_file(tmp_path))}}
    result = run(tmp_path, settings, "ann", "Not Ann's")
    assert result.returncode == 1, result.stdout + result.stderr
    regulation = result.stdout.split("\nregulation  ", 1)[1]
    assert "; this attempt would count there" in regulation
    assert "the running daemon cannot be asked: " in regulation


@pytest.mark.parametrize(("status", "body", "said"), [
    (500, {"error": "busy"}, "the running daemon did not say (busy)"),
    (200, {"bans": [{"kind": "address", "name": "ann"},
                    {"kind": "user", "name": "ann", "banned": True, "remaining": 42}]},
     "the running daemon bans 'Ann' for 42 more s: a sign-in there is refused now (auth-sidecar admin unban Ann)"),
    (200, {"bans": [{"kind": "user", "name": "ann", "banned": False, "failures": 3}]},
     "the running daemon has counted 3 wrong passwords for 'Ann'"),
    (200, {"bans": [{"kind": "user", "name": "bob", "failures": 3}]},
     "the running daemon counts no wrong password for 'Ann'"),
])
async def test_the_daemon_s_count_for_the_name(monkeypatch: pytest.MonkeyPatch, status: int, body: dict[str, Any],
                                               said: str) -> None:
    asked = []

    async def ask(path: str, verb: str, target: str | None) -> tuple[int, dict[str, Any]]:
        asked.append((path, verb, target))
        return status, body

    monkeypatch.setattr("sidecar.admin._ask", ask)
    assert await troubleshoot._daemon_count("/run/x.sock", "Ann") == said  # the name casefolded to match
    assert asked == [("/run/x.sock", "bans", None)]


def test_a_cookie_and_an_assertion_are_never_printed(tmp_path: Path) -> None:
    config = parse_config({"local_users": {"file": str(users_file(tmp_path))}})
    assert troubleshoot._masked("Set-Cookie", "sidecar_session=secret; Path=/", config) == (
        "(sidecar_session: a cookie, not shown)")
    assert troubleshoot._masked(config.headers.assertion, "eyJabc", config) == "(a signed assertion, 6 characters)"
    assert troubleshoot._masked("Remote-User", "ann", config) == "ann"


def test_output_that_stops_being_read_ends_the_printing(capfd: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = troubleshoot.Output()
    out.say("first", "one\ntwo")
    assert capfd.readouterr().out == "first       one\n            two\n"

    def broken(*args: Any, **kwargs: Any) -> None:
        raise BrokenPipeError

    monkeypatch.setattr("builtins.print", broken)
    out.say("second", "lost")
    assert out.closed
    monkeypatch.undo()
    out.say("third", "not printed")
    assert capfd.readouterr().out == ""
