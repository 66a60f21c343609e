"""Configuration: typed, frozen, every problem reported at once with its YAML path; secrets masked."""

from __future__ import annotations

import dataclasses
import pickle
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sidecar.config import GROUP_TYPES, load_config, parse_config
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
        "ldap.user_dn_template: set either user_search or user_dn_template, not both (or refresh_dn_on_bind: "
        "true: bind with the template, then find the entry with the search)",
        f"ldap.group_type: must be one of {', '.join(GROUP_TYPES)}, got 'weird'",
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
           "SIDECAR_SIGNING_KEY": generate_key(), "OIDC_CLIENT_SECRET": "example-Secret",
           "GITHUB_CLIENT_SECRET": "example-Secret", "SIDECAR_FACTOR_KEY": "f" * 40}
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


# Where a field's YAML key is not its name, and keys that set no field of their own.
YAML_KEYS = {("ServerConfig", "host"): "listen", ("ServerConfig", "port"): "listen",
             ("MetricsConfig", "host"): "listen", ("MetricsConfig", "port"): "listen",
             ("AccessRule", "allow"): "policy", ("AccessRule", "queries"): "groups",
             ("Config", "directories"): "ldap"}
YAML_ONLY = {"AdminConfig": ("enabled",)}
FLATTENED = ("GroupRules",)  # its keys are written in the section that holds it


def documented_keys(cls: type, path: str = "") -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(YAML path, key, the Literal values it takes) for every field of ``cls`` and of every dataclass
    it holds, through optionals and lists (``[]`` in the path): the whole configuration's tree."""
    hints = get_type_hints(cls)
    keys = [(YAML_KEYS.get((cls.__name__, f.name), f.name), hints[f.name]) for f in dataclasses.fields(cls)]
    keys += [(key, bool) for key in YAML_ONLY.get(cls.__name__, ())]
    for key, hint in dict(keys).items():
        where = f"{path}.{key}" if path else key
        # A group query (sidecar.queries) is a value, not a section of keys.
        nested = [(arg, suffix) for arg, suffix in _unwrap(hint)
                  if dataclasses.is_dataclass(arg) and getattr(arg, "__module__", "") != "sidecar.queries"]
        if any(getattr(arg, "__name__", "") in FLATTENED for arg, _ in nested):
            yield from documented_keys(nested[0][0], path)  # type: ignore[arg-type]
            continue
        if not path:  # a section: a heading of the file, not a key to look up in the text
            yield where, "", ()
        else:
            yield where, key, tuple(value for arg, _ in _unwrap(hint) for value in _literals(arg))
        for arg, suffix in nested:
            assert isinstance(arg, type)
            yield from documented_keys(arg, where + suffix)
        for arg, _ in _unwrap(hint):  # a mapping with fixed keys (user_flags_by_group): each key too
            if get_origin(arg) is Mapping and (fixed := _literals(get_args(arg)[0])):
                yield from ((f"{where}.{name}", name, ()) for name in fixed)


def _unwrap(hint: Any, suffix: str = "") -> list[tuple[Any, str]]:
    """The types a field may hold, each with "[]" when it is an item of a list."""
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        return [found for arg in get_args(hint) if arg is not type(None) for found in _unwrap(arg, suffix)]
    if (origin is tuple and get_args(hint)[-1] is Ellipsis) or origin is frozenset:
        return _unwrap(get_args(hint)[0], suffix + "[]")
    return [(hint, suffix)]


def _literals(hint: Any) -> tuple[str, ...]:
    return get_args(hint) if get_origin(hint) is Literal else ()


def _present(data: Any, path: str) -> bool:
    """Whether the parsed file has this path (for a list, in at least one of its items)."""
    values = [data]
    for part in path.split("."):
        values = [item for value in values for item in (value if isinstance(value, list) else [value])]
        key = part.removesuffix("[]")
        values = [value[key] for value in values if isinstance(value, dict) and key in value]
    return bool(values)


def test_example_config_documents_every_key() -> None:
    """Every field of the Config tree is in examples/config.yaml: written at its path, or (an
    alternative, like user_dn_template beside user_search) commented out in its section; every value
    of an enumeration is named there."""
    from sidecar.config import Config

    text = (ROOT / "examples" / "config.yaml").read_text()
    data = yaml.safe_load(text)
    # Each section's text: its line and the indented (or empty) lines after it.
    sections = dict(re.findall(r"^([a-z_]+):.*\n((?:(?: .*)?\n)*)", text, re.M))
    missing = []
    for path, key, values in documented_keys(Config):
        section = path.split(".")[0].removesuffix("[]")
        if not key:
            assert section in data, f"the {section} section is not in examples/config.yaml"
            continue
        body = sections[section]
        if not _present(data, path) and not re.search(rf"^\s*#\s*{key}:", body, re.M):
            missing.append(path)
        missing += [f"{path}: {value}" for value in values if not re.search(rf"\b{re.escape(value)}\b", body)]
    assert missing == [], f"not in examples/config.yaml: {missing}"


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


# -- one validator: check-config refuses exactly what serve would refuse ------------------------

PUBLIC = {"public_url": "https://app.test/_sidecar"}
WITH_SESSIONS: dict[str, Any] = {**with_ldap(), "server": PUBLIC, "sessions": SESSIONS}


def fast_argon2(password: str) -> str:
    from argon2 import PasswordHasher, profiles

    fast = dataclasses.replace(profiles.RFC_9106_LOW_MEMORY, time_cost=1, memory_cost=8, parallelism=1)
    return PasswordHasher.from_parameters(fast).hash(password)


def builds(data: dict[str, Any]) -> None:
    from sidecar.app import make_app

    make_app(parse_config(data))


@pytest.mark.parametrize(("section", "values", "message"), [
    # Each passed check-config and then stopped serve with a traceback: the runtime had other rules.
    ("login_page", {"logo_url": "https://cdn.example.com/logo.png"},
     "login_page.logo_url: expected a data:image/... URI or a path starting with /"),
    ("login_page", {"title": "  "}, "login_page.title: must not be empty"),
    ("sessions", {"redirect_hosts": ["bad host"]}, "sessions.redirect_hosts: must be NAME, NAME:PORT"),
    ("sessions", {"default_redirect": "https://app.test/done%0d"}, "sessions.default_redirect: must be an absolute"),
    ("sessions", {"default_redirect": "/done%0d"}, "sessions.default_redirect: must be an absolute"),
    ("sessions", {"logout_redirect": "/bye%250a"}, "sessions.logout_redirect: must be an absolute"),
    ("sessions", {"cookie_domain": "app test"}, "sessions.cookie_domain: not a domain name"),
    ("sessions", {"keys": []}, "sessions.keys: is required"),
    ("server", {"public_url": "https://user@app.test/_sidecar"}, "server.public_url: must be NAME, NAME:PORT"),
    ("server", {"public_url": "https://app.test:99999/_sidecar"}, "server.public_url: must be NAME, NAME:PORT"),
    ("server", {"public_url": "https://app.test//_sidecar"}, "server.public_url: expected a path starting with /"),
])
def test_what_serve_would_refuse_check_config_refuses(section: str, values: dict[str, Any], message: str) -> None:
    data = {**WITH_SESSIONS, section: {**WITH_SESSIONS.get(section, {}), **values}}
    found = problems(data)
    assert any(p.startswith(message) for p in found), found


def test_a_users_file_serve_would_refuse_is_refused(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text('users:\n  alice:\n    password: "x"\n')
    found = problems({"local_users": {"file": str(users)}})
    assert found == [f"local_users.file: {users}: users.alice.password: not a password hash; "
                     "only argon2id or bcrypt hashes are accepted"]
    users.write_text(f'users:\n  alice:\n    password: "{fast_argon2("alice-pw")}"\n')
    builds({"local_users": {"file": str(users)}})


@pytest.mark.parametrize("accent", ["navy", "NAVY", "#ABC", "#2563eb"])
def test_what_the_pages_accept_check_config_accepts(accent: str) -> None:
    # The loader refused named colours, which the pages have a table of.
    builds({**WITH_SESSIONS, "login_page": {"accent": accent, "logo_url": "/logo.png", "help_url": "/help"}})


def test_an_accent_outside_the_table_is_refused_naming_the_choices() -> None:
    found = problems({**WITH_SESSIONS, "login_page": {"accent": "pink"}})
    assert len(found) == 1 and found[0].startswith("login_page.accent: expected #rgb, #rrggbb or one of black, navy")


TRICKY = st.sampled_from([
    "", " ", "/", "/x", "/x%0d", "/x%250A", "//evil.test", "/a b", "\\\\evil", "https://app.test/", "https://app.test:8443/x",
    "https://u@app.test/", "http://[::1]:8080/", "javascript:alert(1)", "data:image/png;base64,AA", "data:text/html,x",
    "app.test", "app.test:8443", "app.test.", "bad host", "[::1]", "[nope]", "b\u00fccher.test", "\uff41pp.test",
    ".example.com", "example.com", "navy", "pink", "#fff", "#12345", "#2563EB", "http", "https", "HTTPS", "ftp",
    "x" * 70, "sidecar_session", "a;b", "__Host-x",
])
VALUE = TRICKY | st.text(max_size=12)


def value(good: Any) -> st.SearchStrategy[Any]:
    """Mostly a value that works (so that the other keys decide), else a tricky or random one."""
    return st.one_of(st.just(good), st.just(good), st.just(good), VALUE)


def values(good: str) -> st.SearchStrategy[list[Any]]:
    return st.lists(value(good), min_size=1, max_size=2)


PAGE = st.fixed_dictionaries({}, optional={
    "title": value("Sign in to the wiki"), "logo_url": value("/logo.png"), "accent": value("navy"),
    "help_text": value("Call the desk."), "help_url": value("https://help.example.com/"),
})
SESSION_SETTINGS = st.fixed_dictionaries({"keys": st.just(SESSIONS["keys"]), "recheck_every": st.just(0)}, optional={
    "cookie_name": value("wiki_session"), "cookie_domain": value("app.test"), "secure": st.booleans(),
    "default_redirect": value("https://app.test/"), "logout_redirect": value("/signed-out"),
    "redirect_hosts": values("app.test"), "redirect_domains": values("example.com"),
    "redirect_schemes": values("https"),
})
PUBLIC_URL = value("https://app.test/_sidecar") | VALUE.map(lambda v: "https://" + v) | VALUE.map(
    lambda v: "https://app.test/" + v)


@settings(max_examples=300, deadline=None)
@given(PAGE, SESSION_SETTINGS, PUBLIC_URL)
@example({"logo_url": "https://cdn.example.com/logo.png"}, {"keys": SESSIONS["keys"]}, "https://app.test")
@example({}, {"keys": SESSIONS["keys"], "redirect_hosts": ["bad host"]}, "https://app.test")
@example({}, {"keys": SESSIONS["keys"], "default_redirect": "/x%0d"}, "https://app.test")
@example({}, {"keys": SESSIONS["keys"], "cookie_domain": "a b"}, "https://app.test")
@example({"accent": "navy"}, {"keys": SESSIONS["keys"]}, "https://u@app.test")
def test_every_config_check_config_accepts_builds_an_app(page: dict[str, Any], sessions: dict[str, Any],
                                                         public_url: str) -> None:
    data = {**with_ldap(), "server": {"public_url": public_url}, "sessions": sessions, "login_page": page}
    try:
        config = parse_config(data)
    except ConfigError as exc:
        assert exc.problems and all(": " in p for p in exc.problems)
        return
    from sidecar.app import make_app

    make_app(config)


# -- messages: where the problem is, what was meant, nothing that only follows from it ------------

def test_problems_carry_their_line_when_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("ldap:\n"
                    "  server_uri: ldap://x\n"
                    "  user_dn_template: 'uid=%(user)s,dc=x'\n"
                    "  timeout: 0\n"
                    "sessions:\n"
                    "  keys:\n"
                    "    - id: 'k!'\n"
                    "      secret: short\n"
                    "  recheck_every: 0\n"
                    "server:\n"
                    "  public_url: https://app.test\n"
                    "login_page:\n"
                    "  accent: pink\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    found = refused.value.problems
    assert "ldap.timeout: must be at least 1, got 0 (line 4)" in found
    assert "sessions.keys[0].id: expected 1-32 letters, digits, - or _, got 'k!' (line 7)" in found
    assert any(p.startswith("sessions.keys[0].secret: must be at least 32") and p.endswith("(line 8)") for p in found)
    assert any(p.startswith("login_page.accent: expected #rgb") and p.endswith("(line 13)") for p in found)
    # A problem about something left out points at its section.
    path.write_text("ldap:\n  server_uri: ldap://x\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert refused.value.problems == ["ldap.user_search: set user_search or user_dn_template to find users (line 1)"]


@pytest.mark.parametrize(("data", "expected"), [
    ({"ldpa": MINIMAL["ldap"]}, ["ldpa: unknown key (did you mean ldap?)"]),
    (with_ldap(bind_dn="cn=sa", bind_pasword="x"), ["ldap.bind_pasword: unknown key (did you mean bind_password?)"]),
    ({"ldap": {"server_uri": "ldap://x", "user_dn_templat": "uid=%(user)s,dc=x"}},
     ["ldap.user_dn_templat: unknown key (did you mean user_dn_template?)"]),
    ({"ldap": {"server_uri": "ldap://x", "user_search": {"base_dn": "dc=x", "filtr": "(uid=%(user)s)"}}},
     ["ldap.user_search.filtr: unknown key (did you mean filter?)"]),
    ({**WITH_SESSIONS, "sessions": {"kyes": SESSIONS["keys"], "recheck_every": 0}},
     ["sessions.kyes: unknown key (did you mean keys?)"]),
    ({**with_ldap(), "oidc": {"providers": [{**GITHUB, "username_prefix": "github:"}]}, "sesions": SESSIONS,
      "server": PUBLIC}, ["sesions: unknown key (did you mean sessions?)"]),
    ({**with_ldap(), "servr": PUBLIC, "sessions": SESSIONS}, ["servr: unknown key (did you mean server?)"]),
])
def test_a_typo_is_one_problem_with_a_suggestion(data: dict[str, Any], expected: list[str]) -> None:
    assert problems(data) == expected


@pytest.mark.parametrize(("ldap", "expected"), [
    # A value that cannot be used is reported; what its absence would imply is not.
    ({"group_type": "weird", "group_search": {"base_dn": "dc=x"}},
     [f"ldap.group_type: must be one of {', '.join(GROUP_TYPES)}, got 'weird'"]),
    ({"bind_dn": "cn=sa", "bind_password": {"env": "SIDECAR_SURELY_UNSET"}},
     ["ldap.bind_password: environment variable SIDECAR_SURELY_UNSET is not set"]),
    ({"group_type": 5, "require_group": "cn=a"}, ["ldap.group_type: expected a string, got an integer 5"]),
])
def test_an_unusable_value_brings_no_follow_on_problems(ldap: dict[str, Any], expected: list[str]) -> None:
    assert problems(with_ldap(**ldap)) == expected


# -- the shape: defaults in the dataclasses, enumerations as Literals ----------------------------

def test_sections_left_out_are_their_dataclass_defaults() -> None:
    from sidecar import config as c

    config = parse_config(MINIMAL)
    assert (config.server, config.headers, config.cache, config.access, config.log, config.login_page,
            config.regulation, config.oidc) == (c.ServerConfig(), c.HeaderConfig(), c.CacheConfig(),
                                                c.AccessConfig(), c.LogConfig(), c.LoginPageConfig(),
                                                c.RegulationConfig(), c.OidcConfig())
    assert config.ldap == c.LdapConfig(server_uri=("ldap://127.0.0.1",), user_dn_template="uid=%(user)s,dc=x")
    sessions = parse_config(WITH_SESSIONS).sessions
    assert sessions is not None and sessions == c.SessionConfig(keys=sessions.keys, recheck_every=0)
    github = parse_config({"oidc": {"providers": [GITHUB]}, "server": PUBLIC, "sessions": SESSIONS}).oidc.providers[0]
    assert github.claims == c.ClaimMap(username="login") and github.allow == c.Allow() and github.scopes == ()


def test_enumerations_are_literals_of_the_same_strings() -> None:
    import typing

    from sidecar import config as c

    def choices(cls: type, name: str) -> tuple[str, ...]:
        hint = typing.get_type_hints(cls)[name]  # Literal[...], or Literal[...] | None
        literal = next(a for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is typing.Literal)
        return typing.get_args(literal)

    assert choices(c.LdapConfig, "group_type") == (
        "group_of_names", "nested_group_of_names", "group_of_unique_names", "nested_group_of_unique_names",
        "organizational_role", "nested_organizational_role", "member_dn", "nested_member_dn", "posix_group",
        "member_of", "active_directory")
    assert choices(c.ServerConfig, "mode") == ("auth_request", "forward_auth")
    assert choices(c.LocalUsersConfig, "order") == ("ldap_first", "local_first")
    assert choices(c.Search, "scope") == ("base", "one", "subtree")
    assert choices(c.AccessConfig, "default") == ("allow", "deny")
    assert choices(c.OidcProvider, "type") == ("oidc", "oauth2")
    assert c.GROUP_TYPES == choices(c.LdapConfig, "group_type")


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("x-ldap: &ldap {server_uri: 'ldap://x', user_dn_template: 'uid=%(user)s,dc=x', timeout: 9}\n"
                    "ldap:\n  <<: *ldap\n  timeout: 7\n")
    found = problems_of_file(path)
    assert found == ["x-ldap: unknown key (line 1)"]


def problems_of_file(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    return refused.value.problems


@pytest.mark.parametrize("pem", [
    "-----BEGIN PRIVATE KEY-----\nnot a key at all\n-----END PRIVATE KEY-----\n",
    "no pem here",
])
def test_a_signing_key_serve_would_refuse_is_refused_by_the_loader(pem: str) -> None:
    # It passed check-config on a substring test and then crashed serve (the signer's own rule).
    found = problems({**with_ldap(), "assertion": {"keys": [{"id": "k1", "private_key": pem}], "audience": "app"}})
    assert any(p.startswith("assertion.keys[0].private_key: ") for p in found), found


@pytest.mark.parametrize("uri", ["ldap://x:99999", "ldap://x:0", "ldaps://x:port"])
def test_a_directory_port_out_of_range_is_refused(uri: str) -> None:
    found = problems(with_ldap(server_uri=uri))
    assert any(p.startswith("ldap.server_uri: the port must be 1 to 65535") for p in found), found


# -- what would break for sure, or let everyone in, is refused ----------------------------------

SITE = {"ldap": {"server_uri": "ldap://x", "user_dn_template": "uid=%(user)s,ou=people,dc=x"}}


def sessions_at(public_url: str, **sessions: object) -> dict[str, object]:
    return {**SITE, "server": {"public_url": public_url},
            "sessions": {"keys": [{"id": "k", "secret": "s" * 40}], "recheck_every": 0, **sessions}}


def test_plain_http_with_secure_cookies_is_refused_but_loopback_is_a_secure_origin() -> None:
    (found,) = problems(sessions_at("http://app.test/_sidecar"))
    assert found.startswith("server.public_url: is plain http, but sessions.secure is true")
    parse_config(sessions_at("http://app.test/_sidecar", secure=False))
    for loopback in ("http://localhost:8080/_sidecar", "http://127.0.0.1/_sidecar", "http://[::1]/_sidecar"):
        parse_config(sessions_at(loopback, default_redirect="/"))


@pytest.mark.parametrize(("sessions", "wanted"), [
    ({"redirect_hosts": ["netbox.example.com"]}, "'netbox.example.com', but the session cookie is only sent "
                                                 "to 'auth.example.com' (set sessions.cookie_domain"),
    ({"default_redirect": "https://netbox.example.com/"}, "'netbox.example.com'"),
    ({"cookie_domain": "example.com", "redirect_domains": ["example.org"]}, "'*.example.org'"),
    ({"cookie_domain": "corp.test"}, "which sessions.cookie_domain 'corp.test' does not cover"),
])
def test_a_sign_in_the_session_cookie_cannot_follow_is_refused(sessions: dict[str, object], wanted: str) -> None:
    found = problems(sessions_at("https://auth.example.com/_sidecar", **sessions))
    assert len(found) == 1 and found[0].startswith("server.public_url:") and wanted in found[0], found


def test_a_cookie_domain_both_share_lets_a_sign_in_return_to_another_host() -> None:
    parse_config(sessions_at("https://auth.example.com/_sidecar", cookie_domain="example.com",
                                redirect_hosts=["netbox.example.com:8443"], redirect_domains=["apps.example.com"],
                                default_redirect="https://netbox.example.com/"))


@pytest.mark.parametrize("key", ["require_group", "deny_group"])
def test_a_group_outside_the_group_search_base_is_refused(key: str) -> None:
    ldap = {**SITE["ldap"], "group_search": {"base_dn": "ou=groups,dc=x"}, "group_type": "group_of_names",
            key: "cn=banned,ou=mygroups,dc=x"}
    (found,) = problems({"ldap": ldap})
    assert found.startswith(f"ldap.{key}: 'cn=banned,ou=mygroups,dc=x' is outside group_search.base_dn")
    ldap[key] = "CN=Banned, OU=Groups, DC=x"  # the same base, spelt otherwise
    parse_config({"ldap": ldap})
    flags = {**ldap, key: None, "user_flags_by_group": {"is_staff": "cn=staff,dc=x"}}
    assert problems({"ldap": {k: v for k, v in flags.items() if v is not None}})[0].startswith(
        "ldap.user_flags_by_group: 'cn=staff,dc=x' is outside")


def test_deny_by_default_without_rules_is_refused() -> None:
    (found,) = problems({**SITE, "access": {"default": "deny"}})
    assert found.startswith("access.default: is deny and there are no rules")
    parse_config({**SITE, "access": {"default": "deny", "rules": [{"path": "/", "users": ["ann"]}]}})


def test_state_defaults_to_memory_and_one_worker() -> None:
    config = parse_config(MINIMAL)
    assert config.state.backend == "memory" and config.state.sentinel is None
    assert config.state.key_prefix == "auth-sidecar:" and config.state.timeout == 0.25
    assert config.server.workers == 1


def test_state_redis_reads_every_key(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = parse_config({**MINIMAL, "server": {"workers": 4}, "state": {
        "backend": "redis", "url": "rediss://redis.example:6380", "username": "sidecar",
        "password": {"env": "HOME"}, "ca_file": str(ca), "database": 3, "key_prefix": "prod:",
        "connect_timeout": 2, "timeout": 0.5, "poll_every": 1,
        "sentinel": {"master": "main", "addresses": ["10.0.0.1:26379", "[::1]:26380"], "password": "s3"}}})
    state = config.state
    assert (state.backend, state.url, state.username, state.ca_file) == (
        "redis", "rediss://redis.example:6380", "sidecar", str(ca))
    assert (state.database, state.key_prefix, state.connect_timeout, state.timeout, state.poll_every) == (
        3, "prod:", 2, 0.5, 1)
    assert isinstance(state.password, Secret) and state.sentinel is not None
    assert state.sentinel.master == "main"
    assert state.sentinel.addresses == (("10.0.0.1", 26379), ("::1", 26380))
    assert "s3" not in repr(state) and config.server.workers == 4


def test_workers_over_one_need_redis() -> None:
    found = problems({**MINIMAL, "server": {"workers": 2}})
    assert len(found) == 1 and found[0].startswith("server.workers: is 2 but state.backend is memory")
    assert "use state.backend: redis" in found[0]
    assert problems({**MINIMAL, "server": {"workers": 0}}) == ["server.workers: must be at least 1, got 0"]


def test_state_problems_are_reported_with_their_paths(tmp_path: Path) -> None:
    found = problems({**MINIMAL, "state": {
        "backend": "etcd", "url": "redis://user:pw@h:6379", "ca_file": str(tmp_path / "none.pem"),
        "key_prefix": "a b", "timeout": 0, "database": -1, "sentinel": {"addresses": ["nope"]}, "poll_evry": 1}})
    text = "\n".join(found)
    for path in ("state.backend:", "state.url: holds credentials", "state.ca_file: no such file",
                 "state.key_prefix:", "state.timeout: must be at least", "state.database: must be at least 0",
                 "state.sentinel.master: is required", "state.sentinel.addresses: expected HOST:PORT",
                 "state.poll_evry: unknown key (did you mean poll_every?)"):
        assert path in text, path
    assert "pw" not in text
    for url in ("http://h", "redis://h:port", "redis://h:70000", "redis://"):
        assert problems({**MINIMAL, "state": {"url": url}}) == [
            f"state.url: expected redis://HOST:PORT or rediss://HOST:PORT, got {url!r}"]
