"""Configuration: typed, frozen, every problem reported at once with its YAML path; secrets masked."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import load_config, parse_config
from sidecar.errors import ConfigError
from sidecar.secrets import Secret

ROOT = Path(__file__).resolve().parents[1]
MINIMAL: dict[str, Any] = {
    "ldap": {"server_uri": "ldap://127.0.0.1", "user_dn_template": "uid=%(user)s,dc=x"},
}


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def with_ldap(**ldap: Any) -> dict[str, Any]:
    return {"ldap": {**MINIMAL["ldap"], **ldap}}


def test_minimal_config_has_the_seed_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.ldap is not None
    assert config.ldap.cache_timeout == 3600
    assert config.ldap.referrals is False
    assert config.ldap.username_attr == "uid"
    assert config.headers.user == "Remote-User" and config.headers.group_separator == "|"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9180)


def test_config_is_frozen() -> None:
    config = parse_config(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    found = problems({
        "bogus": 1,
        "server": {"listen": "nowhere", "access_log": "yes"},
        "headers": {"user": "Remote_User", "email": "X-Mail", "groups": "x-mail"},
        "ldap": {
            "server_uri": ["http://x", "ldap://ok"],
            "user_search": {"base_dn": "dc=x", "filter": "(uid=bob)"},
            "user_dn_template": "uid=%(user)s,dc=x",
            "group_type": "weird",
            "cache_timeout": True,
            "colour": "blue",
        },
    })
    expected = [
        "bogus: unknown key",
        "server.listen: expected HOST:PORT, got 'nowhere'",
        "server.access_log: expected true or false, got a string 'yes'",
        "headers.user: not a header name without underscores: 'Remote_User'",
        "headers: header name 'x-mail' is used twice",
        "ldap.server_uri: expected ldap://HOST[:PORT] or ldaps://..., got 'http://x'",
        "ldap.user_search.filter: must contain %(user)s (the login name), got '(uid=bob)'",
        "ldap.user_dn_template: set either user_search or user_dn_template, not both",
        "ldap.group_type: must be one of group_of_names, nested_group_of_names, "
        "group_of_unique_names, posix_group, member_of, active_directory, got 'weird'",
        "ldap.cache_timeout: expected an integer, got a boolean True",
        "ldap.colour: unknown key",
    ]
    assert sorted(found) == sorted(expected)


@pytest.mark.parametrize(("ldap", "message"), [
    ({"user_dn_template": None}, "ldap.user_search: set user_search or user_dn_template"),
    ({"user_dn_template": "uid=bob,dc=x"}, "ldap.user_dn_template: must contain %(user)s"),
    ({"bind_dn": "cn=sa"}, "ldap.bind_password: is required with bind_dn"),
    ({"bind_password": "x"}, "ldap.bind_password: is set but bind_dn is empty"),
    ({"start_tls": True, "server_uri": "ldaps://x"}, "ldap.start_tls: StartTLS goes with ldap://"),
    ({"group_search": {"base_dn": "dc=x"}}, "ldap.group_type: is required with group_search"),
    ({"group_type": "group_of_names"}, "ldap.group_search: is required with group_type"),
    ({"require_group": "cn=a"}, "ldap.group_type: is required by require_group"),
    ({"ca_file": "/nonexistent/ca.pem"}, "ldap.ca_file: no such file"),
    ({"timeout": 0}, "ldap.timeout: must be at least 1"),
    ({"server_uri": None}, "ldap.server_uri: is required"),
    ({"server_uri": []}, "ldap.server_uri: an empty list"),
    ({"user_dn_template": None, "user_search": {"base_dn": "dc=x",
      "filter": "(|(a=%(user)s)(b=%(user)s))"}}, "ldap.username_attr: cannot be derived"),
    ({"group_search": {"base_dn": "dc=x", "filter": "(cn=%(user)s)"}, "group_type": "group_of_names"},
     "ldap.group_search.filter: placeholders are not allowed"),
])
def test_impossible_combinations(ldap: dict[str, Any], message: str) -> None:
    found = problems(with_ldap(**{k: v for k, v in ldap.items()}) if ldap.get("user_dn_template", 1)
                     else {"ldap": {**{k: v for k, v in MINIMAL["ldap"].items() if k != "user_dn_template"},
                                    **{k: v for k, v in ldap.items() if v is not None}}})
    assert any(p.startswith(message) for p in found), found


def test_access_rules_on_groups_need_find_group_perms() -> None:
    found = problems({**with_ldap(), "access": {"rules": [{"path": "/x", "groups": ["a"]}]}})
    assert any("find_group_perms" in p for p in found)
    parse_config({**with_ldap(find_group_perms=True, group_type="member_of"),
                  "access": {"rules": [{"path": "/x", "groups": ["a"]}]}})


def test_username_attr_is_derived_from_the_filter_or_template() -> None:
    config = parse_config({"ldap": {"server_uri": "ldap://x", "user_search": {
        "base_dn": "dc=x", "filter": "(&(objectClass=user)(sAMAccountName=%(user)s))"}}})
    assert config.ldap is not None and config.ldap.username_attr == "sAMAccountName"


def test_secrets_from_env_and_file_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_TEST_PW", "from-env-Secret")
    (tmp_path / "pw").write_text("from-file-Secret\n")
    for spec, value in [({"env": "SIDECAR_TEST_PW"}, "from-env-Secret"),
                        ({"file": str(tmp_path / "pw")}, "from-file-Secret"),
                        ("inline-Secret", "inline-Secret")]:
        config = parse_config(with_ldap(bind_dn="cn=sa", bind_password=spec))
        assert config.ldap is not None and config.ldap.bind_password is not None
        assert config.ldap.bind_password.reveal() == value
        for text in (repr(config), str(config), repr(config.ldap.bind_password), f"{config.ldap}"):
            assert value not in text


def test_missing_secret_sources_name_the_source_not_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIDECAR_NOPE", raising=False)
    found = problems(with_ldap(bind_dn="cn=sa", bind_password={"env": "SIDECAR_NOPE"}))
    assert "ldap.bind_password: environment variable SIDECAR_NOPE is not set" in found
    found = problems(with_ldap(bind_dn="cn=sa", bind_password={"file": "/nonexistent/pw"}))
    assert any(p.startswith("ldap.bind_password: cannot read /nonexistent/pw") for p in found)
    found = problems(with_ldap(bind_dn="cn=sa", bind_password={"vault": "x"}))
    assert any("expected a string, {env: NAME} or {file: PATH}" in p for p in found)


def test_a_secret_cannot_be_pickled_or_printed() -> None:
    secret = Secret("hunter2")
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert "hunter2" not in repr(secret) + str(secret) + f"{secret}"
    assert secret == Secret("hunter2") and secret != Secret("hunter3")


def test_invalid_yaml_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ldap: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "absent.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"\(top\): expected a mapping, got a list"):
        load_config(top)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60)


def test_check_config_accepts_the_documented_example() -> None:
    import os

    from sidecar.assertion import generate_key

    env = {**os.environ, "LDAP_BIND_PASSWORD": "example-Secret", "SIDECAR_SESSION_SECRET": "s" * 40,
           "SIDECAR_SIGNING_KEY": generate_key()}
    result = run_cli("check-config", str(ROOT / "examples" / "config.yaml"), env=env)
    assert result.returncode == 0, result.stderr
    assert "example-Secret" not in result.stdout + result.stderr


def test_check_config_exits_2_listing_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("ldap:\n  server_uri: http://x\n  bind_dn: cn=sa\n  bind_password: topsecret\n  oops: 1\n")
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert "ldap.server_uri" in result.stderr and "ldap.oops: unknown key" in result.stderr
    assert "ldap.user_search" in result.stderr
    assert "topsecret" not in result.stderr + result.stdout


def test_example_config_documents_every_key() -> None:
    text = (ROOT / "examples" / "config.yaml").read_text()
    from sidecar import config as c

    sections = (c.ServerConfig, c.HeaderConfig, c.LdapConfig, c.CacheConfig, c.LogConfig, c.SessionConfig,
                c.LoginPageConfig, c.LocalUsersConfig, c.RegulationConfig)
    for section in sections:
        for f in dataclasses.fields(section):
            key = {"host": "listen", "port": "listen"}.get(f.name, f.name)
            assert f"{key}:" in text, f"{section.__name__}.{f.name} is not in examples/config.yaml"


@pytest.mark.parametrize("ldap", [
    {"require_group": []},  # read as "nobody is required": everyone would be let in
    {"deny_group": []},
    {"mirror_groups": []},
    {"user_flags_by_group": {"is_active": []}},  # would refuse everyone
    {"user_flags_by_group": {"is_staff": []}},
    {"user_flags_by_group": {"is_superuser": []}},
])
def test_empty_lists_are_refused_not_guessed(ldap: dict[str, Any]) -> None:
    found = problems(with_ldap(group_type="member_of", **ldap))
    assert any("an empty list" in p for p in found), found


@pytest.mark.parametrize("rule", [{"groups": []}, {"users": []}, {"methods": []}])
def test_an_access_rule_with_an_empty_list_is_refused(rule: dict[str, Any]) -> None:
    # With no users and no groups a rule applies to everyone: "groups: []" must not mean that.
    found = problems({**with_ldap(find_group_perms=True, group_type="member_of"),
                      "access": {"rules": [{"path": "/admin", **rule}], "default": "deny"}})
    assert any(p.startswith("access.rules[0].") and "an empty list" in p for p in found), found


def test_extra_headers_share_the_user_header_prefix() -> None:
    found = problems({**with_ldap(), "headers": {"extra": {"department": "X-Department"}}})
    assert any(p.startswith("headers.extra.department: must start with Remote-User-") for p in found), found
    parse_config({**with_ldap(), "headers": {"extra": {"department": "Remote-User-Department"}}})
    renamed = {"user": "X-Auth-User", "extra": {"department": "x-auth-user-department"}}
    parse_config({**with_ldap(), "headers": renamed})


BEARER = {"issuer": "https://idp.test", "audiences": ["api"]}
GITHUB = {"name": "github", "type": "oauth2", "client_id": "x", "client_secret": "y",
          "authorization_url": "https://github.com/login/oauth/authorize",
          "token_url": "https://github.com/login/oauth/access_token", "userinfo_url": "https://api.github.com/user",
          "claims": {"username": "login"}}
SESSIONS = {"keys": [{"id": "k1", "secret": "s" * 40}], "recheck_every": 0}


def test_other_sources_cannot_produce_a_directory_name_unless_told() -> None:
    server = {"public_url": "https://app.test/_sidecar"}
    found = problems({**with_ldap(), "server": server, "sessions": SESSIONS,
                      "oidc": {"providers": [GITHUB], "bearer": [BEARER]}})
    assert any(p.startswith("oidc.providers: 'github' shares one Remote-User namespace") for p in found), found
    assert any(p.startswith("oidc.bearer: 'https://idp.test' shares one") for p in found), found
    config = parse_config({**with_ldap(), "server": server, "sessions": SESSIONS,
                           "oidc": {"providers": [{**GITHUB, "username_prefix": "github:"}],
                                    "bearer": [{**BEARER, "shares_usernames": True}]}})
    assert config.oidc.providers[0].username_prefix == "github:" and config.oidc.bearer[0].shares_usernames
    # One source alone has nobody to collide with.
    parse_config({"oidc": {"bearer": [BEARER]}})
    found = problems({"oidc": {"bearer": [{**BEARER, "username_prefix": "a b", "shares_usernames": True}]}})
    assert any(p.startswith("oidc.bearer[0].username_prefix: expected") for p in found), found
    assert any(p.startswith("oidc.bearer[0].shares_usernames: is true, but") for p in found), found


def test_a_key_written_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('server:\n  listen: "127.0.0.1:9180"\n  listen: "0.0.0.0:9180"\n'
                    'ldap: {server_uri: "ldap://x", user_dn_template: "uid=%(user)s,dc=x"}\n')
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert refused.value.problems == [f"{path}: not valid YAML (line 3): key 'listen' appears twice (lines 2 and 3)"]


def test_rule_hosts_and_paths_are_read_as_requests_are_compared() -> None:
    rules = [{"host": "Admin.App.Test.", "path": "/admin//x/"}, {"path": "/"}]
    config = parse_config({**with_ldap(), "access": {"rules": rules}})
    assert [(r.host, r.path) for r in config.access.rules] == [("admin.app.test", "/admin/x"), (None, "/")]
    for rule, where in [({"host": "admin.app.test:443"}, "host"), ({"host": "x@admin.app.test"}, "host"),
                        ({"path": "/caf%C3%A9"}, "path"), ({"path": "admin"}, "path"), ({"path": "/a/../b"}, "path"),
                        ({"path": "/a\\\\b"}, "path")]:
        found = problems({**with_ldap(), "access": {"rules": [rule]}})
        assert any(p.startswith(f"access.rules[0].{where}: ") for p in found), (rule, found)


def test_rule_names_meet_only_their_own_spelling() -> None:
    # Unicode case folding would make the long s of "ſtaff" an "s", and "straße" "strasse".
    rules = [{"users": ["straße", "Bob"], "groups": ["Staff"]}]
    config = parse_config({**with_ldap(find_group_perms=True, group_type="member_of"),
                           "access": {"rules": rules, "default": "deny"}})
    rule = config.access.rules[0]
    assert rule.users == {"straße", "bob"} and rule.groups == {"staff"}
