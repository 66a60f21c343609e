"""django-auth-ldap's features, each against a real slapd of this module's own (the demo directory
plus the entries below, so the shared directory's other tests see nothing new)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sidecar.config import parse_config
from sidecar.errors import ConfigError
from sidecar.local import hash_password
from tests.conftest import GROUPS, PEOPLE, StartApp, basic, group, ldap_settings, need
from tests.testbed.slapd import Slapd, ssha

pytestmark = pytest.mark.server  # the module's own slapd (the directory fixture)

ADMINS = "ou=admins,dc=example,dc=com"
ROLES = "ou=roles,dc=example,dc=com"
EXTRA = f"""\
dn: uid=Erin,{PEOPLE}
objectClass: inetOrgPerson
uid: Erin
cn: Erin Upper
givenName: Erin
sn: Upper
userPassword: {ssha("erin-pass")}

dn: {ADMINS}
objectClass: organizationalUnit
ou: admins

dn: uid=frank,{ADMINS}
objectClass: inetOrgPerson
uid: frank
cn: Frank Admin
sn: Admin
userPassword: {ssha("frank-pass")}

dn: uid=henry,{ADMINS}
objectClass: inetOrgPerson
uid: henry
cn: Henry Twice
sn: Twice
userPassword: {ssha("henry-pass")}

dn: uid=henry,{PEOPLE}
objectClass: inetOrgPerson
uid: henry
cn: Henry Twice
sn: Twice
userPassword: {ssha("henry-pass")}

dn: {ROLES}
objectClass: organizationalUnit
ou: roles

dn: cn=operators,{ROLES}
objectClass: organizationalRole
cn: operators
roleOccupant: uid=carol,{PEOPLE}

dn: cn=leads,{ROLES}
objectClass: organizationalRole
cn: leads
roleOccupant: cn=operators,{ROLES}

dn: cn=role-admins,{ROLES}
objectClass: groupOfNames
cn: role-admins
member: uid=frank,{ADMINS}
member: uid=alice,{PEOPLE}

dn: cn=unique-outer,{GROUPS}
objectClass: groupOfUniqueNames
cn: unique-outer
uniqueMember: cn=unique-team,{GROUPS}
"""


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    need("slapd")
    need("ldapadd")
    with Slapd(tmp_path_factory.mktemp("parity")) as server:
        server._load_text(EXTRA, server.admin_dn, "the parity entries")
        yield server


async def start(app_client: StartApp, server: Slapd, top: dict[str, Any] | None = None, **ldap: Any) -> Any:
    return await app_client(parse_config({"ldap": ldap_settings(server, **ldap), **(top or {})}))


async def who(client: TestClient[Any, Any], user: str, password: str) -> tuple[int, dict[str, str]]:
    response = await client.get("/auth", headers=basic(user, password))
    return response.status, {k: v for k, v in response.headers.items() if k.lower().startswith("remote-user")}


# -- 1. user names as django-auth-ldap creates them -----------------------------------------------

async def test_usernames_are_lower_case_by_default_and_preserved_on_request(app_client: StartApp,
                                                                             directory: Slapd) -> None:
    lower = await start(app_client, directory, group_type=None, group_search=None)
    status, headers = await who(lower, "Erin", "erin-pass")
    assert status == 200 and headers["Remote-User"] == "erin"  # the account django-auth-ldap made
    assert (await who(lower, "ERIN", "erin-pass"))[1]["Remote-User"] == "erin"
    preserve = await start(app_client, directory, group_type=None, group_search=None, username_case="preserve")
    assert (await who(preserve, "erin", "erin-pass"))[1]["Remote-User"] == "Erin"


# -- 2. search unions ------------------------------------------------------------------------------

async def test_a_user_search_union_finds_users_in_exactly_one_entry(app_client: StartApp, directory: Slapd) -> None:
    client = await start(app_client, directory, user_search=[
        {"base_dn": PEOPLE, "filter": "(uid=%(user)s)"}, {"base_dn": ADMINS, "filter": "(uid=%(user)s)"}],
        group_search=[{"base_dn": GROUPS, "filter": "(objectClass=groupOfNames)"},
                      {"base_dn": ROLES, "filter": "(objectClass=groupOfNames)"}])
    assert (await who(client, "alice", "alice-pass"))[0] == 200
    status, headers = await who(client, "frank", "frank-pass")
    assert status == 200 and headers["Remote-User-Group"] == "role-admins"  # from the second group search
    assert "role-admins" in (await who(client, "alice", "alice-pass"))[1]["Remote-User-Group"].split("|")
    assert (await who(client, "henry", "henry-pass"))[0] == 401  # two entries: nobody


async def test_a_union_with_a_search_that_fails_is_no_answer(app_client: StartApp, directory: Slapd) -> None:
    client = await start(app_client, directory, user_search=[
        {"base_dn": PEOPLE, "filter": "(uid=%(user)s)"}, {"base_dn": "ou=nowhere,dc=example,dc=com",
                                                          "filter": "(uid=%(user)s)"}])
    assert (await who(client, "alice", "alice-pass"))[0] == 503  # never "found in the other one"


# -- 3. group queries --------------------------------------------------------------------------------

async def test_group_queries_in_require_deny_flags_and_access_rules(app_client: StartApp, directory: Slapd) -> None:
    client = await start(
        app_client, directory, find_group_perms=True,
        require_group={"and": [group("netbox-users"), {"not": group("banned")}]},
        deny_group={"and": [group("level1"), {"not": group("cycle-a")}]},  # nobody: carol is in both
        user_flags_by_group={"is_superuser": [{"and": [group("staff"), group("superuser")]}],
                             "is_staff": {"or": [group("staff"), group("level1")]}},
        top={"access": {"rules": [{"path": "/ops", "groups": {"not": "staff"}, "policy": "deny"}]}})
    status, alice = await who(client, "alice", "alice-pass")
    assert status == 200 and (alice["Remote-User-Superuser"], alice["Remote-User-Staff"]) == ("true", "true")
    status, carol = await who(client, "carol", "carol-pass")
    assert status == 200 and (carol["Remote-User-Superuser"], carol["Remote-User-Staff"]) == ("false", "true")
    assert (await who(client, "bob", "bob-pass"))[0] == 403  # in netbox-users and banned
    assert (await who(client, "dave", "dave-pass"))[0] == 403  # in neither
    ops = {"X-Original-URL": "http://app.test/ops/x"}
    assert (await client.get("/auth", headers={**basic("alice", "alice-pass"), **ops})).status == 200
    assert (await client.get("/auth", headers={**basic("carol", "carol-pass"), **ops})).status == 403


def test_a_group_query_is_checked_where_it_is_written() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"ldap": {"server_uri": "ldap://x", "user_dn_template": "uid=%(user)s,dc=x",
                               "group_type": "member_of",
                               "require_group": {"and": ["cn=a,dc=x", {"nott": "cn=b,dc=x"}]},
                               "deny_group": [{"or": []}]}})
    assert refused.value.problems == [
        "ldap.require_group.and[1].nott: unknown key (did you mean not?)",
        "ldap.deny_group[0].or: expected a non-empty list of groups or queries, got a list []",
    ]


# -- 4. several directories ----------------------------------------------------------------------------

def two(directory: Slapd, first: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    people = {**ldap_settings(directory), "name": "people"}
    admins = {**ldap_settings(directory, user_search={"base_dn": ADMINS, "filter": "(uid=%(user)s)"}),
              "name": "admins"}
    return [{**people, **(first or {})}, admins]


async def test_several_directories_are_asked_in_order_and_the_identity_says_which(
        app_client: StartApp, directory: Slapd, tmp_path: Path) -> None:
    config = parse_config({"ldap": two(directory)})
    assert [d.source_id for d in config.directories] == ["ldap:people", "ldap:admins"]
    client = await app_client(config)
    assert (await who(client, "alice", "alice-pass"))[0] == 200
    assert (await who(client, "frank", "frank-pass"))[0] == 200  # unknown in the first: the second
    assert (await who(client, "nobody", "x"))[0] == 401


async def test_a_directory_that_cannot_answer_stops_the_directories_after_it(
        app_client: StartApp, directory: Slapd, tmp_path: Path) -> None:
    down = {"server_uri": f"ldap://127.0.0.1:{closed_port()}", "connect_timeout": 0.5}
    client = await app_client(parse_config({"ldap": two(directory, down)}))
    assert (await who(client, "frank", "frank-pass"))[0] == 503  # admins' frank may be somebody else
    users = tmp_path / "users.yaml"
    users.write_text(f"users:\n  frank:\n    password: '{hash_password('local-pass')}'\n")
    with_file = await app_client(parse_config({"ldap": two(directory, down), "local_users": {"file": str(users)}}))
    assert (await who(with_file, "frank", "local-pass"))[0] == 200  # the break-glass file still is asked
    assert (await who(with_file, "frank", "frank-pass"))[0] == 401  # wrong for the file, and admins is not asked
    assert (await who(with_file, "ghost", "x"))[0] == 503  # nobody knows it, and one could not say: no answer


def closed_port() -> int:
    from tests.testbed import free_port

    return free_port()


# -- 5. template mode falls back to the users file for names the directory does not have -----------

async def test_a_name_the_template_finds_no_entry_for_reaches_local_users(
        app_client: StartApp, directory: Slapd, tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"users:\n  breakglass:\n    password: '{hash_password('glass-pass')}'\n"
                     f"  alice:\n    password: '{hash_password('local-alice')}'\n")
    client = await start(app_client, directory, top={"local_users": {"file": str(users)}}, bind_dn=None,
                         bind_password=None, user_search=None, user_dn_template=f"uid=%(user)s,{PEOPLE}",
                         group_type=None, group_search=None)
    assert (await who(client, "breakglass", "glass-pass"))[0] == 200
    assert (await who(client, "alice", "alice-pass"))[0] == 200
    assert (await who(client, "alice", "local-alice"))[0] == 401  # the directory knows alice: a wrong password


# -- 6. group types and mirroring ----------------------------------------------------------------------

@pytest.mark.parametrize(("group_type", "search", "user", "expected"), [
    ("organizational_role", ROLES, "carol", ["operators"]),
    ("nested_organizational_role", ROLES, "carol", ["leads", "operators"]),
    ("nested_group_of_unique_names", GROUPS, "alice", ["unique-outer", "unique-team"]),
    ("group_of_unique_names", GROUPS, "alice", ["unique-team"]),
])
async def test_more_group_types(app_client: StartApp, directory: Slapd, group_type: str, search: str, user: str,
                                expected: list[str]) -> None:
    client = await start(app_client, directory, group_type=group_type,
                         group_search={"base_dn": search, "filter": "(objectClass=*)"})
    status, headers = await who(client, user, directory.users[user])
    assert status == 200 and headers["Remote-User-Group"].split("|") == expected


async def test_member_dn_takes_any_member_attribute(app_client: StartApp, directory: Slapd) -> None:
    client = await start(app_client, directory, group_type="nested_member_dn", member_attr="roleOccupant",
                         group_search={"base_dn": ROLES, "filter": "(objectClass=organizationalRole)"})
    assert (await who(client, "carol", "carol-pass"))[1]["Remote-User-Group"] == "leads|operators"


async def test_mirror_groups_except_publishes_every_other_group(app_client: StartApp, directory: Slapd) -> None:
    client = await start(app_client, directory, mirror_groups_except=["active", "netbox-users"])
    assert (await who(client, "alice", "alice-pass"))[1]["Remote-User-Group"] == "staff|superuser"


# -- 7. TLS: a directory of CAs --------------------------------------------------------------------

async def test_ca_dir_trusts_the_certificates_in_it(app_client: StartApp, directory: Slapd, tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    (good / "a1b2c3d4.0").write_text(directory.pki.ca_file.read_text())
    (good / "README").write_text("not a certificate")
    (bad / "other.pem").write_text(directory.pki.other_ca_file.read_text())
    client = await start(app_client, directory, server_uri=directory.ldaps_uri, ca_dir=str(good))
    assert (await who(client, "alice", "alice-pass"))[0] == 200
    refused = await start(app_client, directory, server_uri=directory.ldaps_uri, ca_dir=str(bad))
    assert (await who(refused, "alice", "alice-pass"))[0] == 503


# -- 8. the users file and single sign-on under the same rules -----------------------------------------

async def test_local_users_take_groups_and_flags_from_the_directory_by_name(
        app_client: StartApp, directory: Slapd, tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"users:\n  alice:\n    password: '{hash_password('file-pass')}'\n    groups: [file-group]\n"
                     f"  outsider:\n    password: '{hash_password('out-pass')}'\n"
                     f"  bob:\n    password: '{hash_password('file-bob')}'\n    groups: [file-group]\n")
    common = {"require_group": group("active"), "deny_group": group("banned"),
              "user_flags_by_group": {"is_superuser": group("superuser")}}
    client = await start(app_client, directory, **common, top={"local_users": {
        "file": str(users), "order": "local_first", "groups_from_directory": True}})
    status, alice = await who(client, "alice", "file-pass")
    assert status == 200 and alice["Remote-User-Superuser"] == "true" and "file-group" not in alice["Remote-User-Group"]
    assert (await who(client, "outsider", "out-pass"))[0] == 403  # the directory's require_group: no such user
    assert (await who(client, "bob", "file-bob"))[0] == 403  # the directory's deny_group


async def test_local_users_have_group_rules_of_their_own(app_client: StartApp, directory: Slapd,
                                                         tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"users:\n  ann:\n    password: '{hash_password('ann-pass')}'\n    groups: [ops, admins]\n"
                     f"  ben:\n    password: '{hash_password('ben-pass')}'\n    groups: [ops, contractors]\n")
    client = await start(app_client, directory, top={"local_users": {
        "file": str(users), "require_group": "ops", "deny_group": {"and": ["contractors", {"not": "admins"}]},
        "user_flags_by_group": {"is_staff": ["admins"]}}})
    status, ann = await who(client, "ann", "ann-pass")
    assert status == 200 and ann["Remote-User-Staff"] == "true"
    assert (await who(client, "ben", "ben-pass"))[0] == 403


def test_groups_from_directory_names_a_directory_that_exists() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"ldap": [{"name": "corp", "server_uri": "ldap://x", "user_dn_template": "uid=%(user)s,dc=x"}],
                      "local_users": {"file": __file__.replace(".py", ".missing"), "groups_from_directory": "forest"}})
    assert any("local_users.groups_from_directory: names no directory: 'forest'" in p for p in refused.value.problems)


# -- 9. refresh_dn_on_bind, and every absent setting says why -------------------------------------------

async def test_refresh_dn_on_bind_finds_the_entry_after_the_bind(app_client: StartApp, directory: Slapd) -> None:
    client = await start(app_client, directory, bind_dn=None, bind_password=None,
                         user_dn_template=f"uid=%(user)s,{PEOPLE}", refresh_dn_on_bind=True)
    status, headers = await who(client, "alice", "alice-pass")
    assert status == 200 and headers["Remote-User-First-Name"] == "Alice" and "staff" in headers["Remote-User-Group"]
    assert (await who(client, "alice", "wrong"))[0] == 401


@pytest.mark.parametrize("key", ["permit_empty_password", "always_update_user", "bind_as_authenticating_user",
                                 "authorize_all_users", "no_new_users", "user_query_field", "user_attrlist",
                                 "connection_options", "global_options", "ca_cert_dir", "cache_groups"])
def test_a_django_auth_ldap_setting_without_a_key_says_why(key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"ldap": {"server_uri": "ldap://x", "user_dn_template": "uid=%(user)s,dc=x", key: True}})
    (problem,) = refused.value.problems
    assert problem.startswith(f"ldap.{key}: django-auth-ldap's AUTH_LDAP_{key.upper()} ")
    assert "remove the line" in problem


async def test_a_client_certificate_for_a_directory_that_requires_one(app_client: StartApp,
                                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    need("slapd")
    with Slapd(tmp_path_factory.mktemp("mtls"), require_client_cert=True) as server:
        pki = server.pki
        assert pki.client_cert_file is not None and pki.client_key_file is not None
        tls: dict[str, Any] = {"server_uri": server.ldaps_uri, "ca_file": str(pki.ca_file)}
        without = await start(app_client, server, **tls)
        assert (await who(without, "alice", "alice-pass"))[0] == 503  # the handshake is refused
        mutual = await start(app_client, server, **tls, client_cert=str(pki.client_cert_file),
                             client_key=str(pki.client_key_file))
        assert (await who(mutual, "alice", "alice-pass"))[0] == 200
        starttls = await start(app_client, server, ca_file=str(pki.ca_file), start_tls=True,
                               client_cert=str(pki.client_cert_file), client_key=str(pki.client_key_file))
        assert (await who(starttls, "alice", "alice-pass"))[0] == 200
