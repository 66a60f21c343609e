"""Active Directory, against a real Samba AD domain controller (tests/testbed/samba.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sidecar.config import parse_config
from sidecar.ldap import Directory
from tests.conftest import StartApp, basic, identity_headers
from tests.testbed.samba import SambaDC

USERS = "CN=Users,DC=example,DC=test"
ALICE_GROUPS = {"developers", "engineering", "division", "netbox-users", "staff"}


def ad_settings(ad: SambaDC, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "server_uri": ad.uri,
        "bind_dn": ad.service_dn,
        "bind_password": ad.service_password,
        "user_search": {
            "base_dn": ad.base_dn,
            "filter": "(&(objectClass=user)(|(sAMAccountName=%(user)s)(userPrincipalName=%(user)s)))",
        },
        "username_attr": "sAMAccountName",
        "group_search": {"base_dn": ad.base_dn, "filter": "(objectClass=group)"},
        "group_type": "active_directory",
    }
    settings.update(overrides)
    return settings


@pytest.fixture
def start(ad: SambaDC, app_client: StartApp) -> Any:
    async def start(**overrides: Any) -> TestClient[Any, Any]:
        return await app_client(parse_config({"ldap": ad_settings(ad, **overrides)}))

    return start


def groups(response: Any) -> set[str]:
    return set(filter(None, response.headers["Remote-User-Group"].split("|")))


@pytest.mark.parametrize("login", ["alice", "alice@example.test", "ALICE", "Alice@Example.Test"])
async def test_login_by_sam_account_name_or_upn_is_one_identity(start: Any, login: str) -> None:
    client = await start()
    response = await client.get("/auth", headers=basic(login, "Passw0rd!Alice"))
    assert response.status == 200
    assert identity_headers(response) | {"Remote-User-Group": ""} == {
        "Remote-User": "alice",
        "Remote-User-First-Name": "Alice",
        "Remote-User-Last-Name": "Liddell",
        "Remote-User-Email": "alice@example.test",
        "Remote-User-Group": "",
        "Remote-User-Staff": "false",
        "Remote-User-Superuser": "false",
        "Remote-User-Assertion": "",  # present and empty: this sidecar has no signing key
        "Remote-User-Auth-Methods": "pwd",  # a password
    }


async def test_nested_groups_through_the_in_chain_matching_rule(start: Any) -> None:
    client = await start()
    response = await client.get("/auth", headers=basic("alice", "Passw0rd!Alice"))
    assert groups(response) >= ALICE_GROUPS
    assert groups(await client.get("/auth", headers=basic("bob", "Passw0rd!Bob"))) & ALICE_GROUPS == set()


async def test_require_group_three_levels_up(start: Any) -> None:
    client = await start(require_group=f"CN=netbox-users,{USERS}",
                         user_flags_by_group={"is_staff": f"CN=staff,{USERS}"})
    alice = await client.get("/auth", headers=basic("alice", "Passw0rd!Alice"))
    assert alice.status == 200 and alice.headers["Remote-User-Staff"] == "true"
    assert (await client.get("/auth", headers=basic("bob", "Passw0rd!Bob"))).status == 403


async def test_member_of_gives_direct_groups_only(start: Any) -> None:
    client = await start(group_type="member_of", group_search=None)
    response = await client.get("/auth", headers=basic("alice", "Passw0rd!Alice"))
    assert groups(response) == {"developers", "staff"}


async def test_global_catalog_port(start: Any, ad: SambaDC) -> None:
    client = await start(server_uri=ad.gc_uri)
    response = await client.get("/auth", headers=basic("alice@example.test", "Passw0rd!Alice"))
    assert response.status == 200 and response.headers["Remote-User"] == "alice"
    assert groups(response) >= ALICE_GROUPS


async def test_ldaps_with_ca_file(start: Any, ad: SambaDC) -> None:
    client = await start(server_uri=ad.ldaps_uri, ca_file=str(ad.ca_file))
    assert (await client.get("/auth", headers=basic("alice", "Passw0rd!Alice"))).status == 200


async def test_start_tls_with_ca_file(start: Any, ad: SambaDC) -> None:
    client = await start(start_tls=True, ca_file=str(ad.ca_file))
    assert (await client.get("/auth", headers=basic("alice", "Passw0rd!Alice"))).status == 200


@pytest.mark.parametrize(("user", "reason", "status"), [
    # AD says these only for the right password: the owner is told the account may not sign in (403).
    ("disabled-user", "account disabled (AD sub-code 533)", 403),
    ("expired-user", "account expired (AD sub-code 701)", 403),
    ("mustchange-user", "user must change password (AD sub-code 773)", 403),
    # A locked account answers 775 to a wrong password too: it says nothing of the password.
    ("locked-user", "account locked out (AD sub-code 775)", 401),
])
async def test_refusal_sub_codes_are_logged_and_hidden_from_the_client(
    start: Any, ad: SambaDC, caplog: pytest.LogCaptureFixture, user: str, reason: str, status: int
) -> None:
    client = await start()
    with caplog.at_level(logging.INFO, logger="sidecar"):
        response = await client.get("/auth", headers=basic(user, ad.users[user]))
    assert response.status == status
    body = await response.text()
    assert "533" not in body and "775" not in body and "AD" not in body
    lines = [r.getMessage() for r in caplog.records if r.name == "sidecar.auth"]
    assert len(lines) == 1 and reason in lines[0], lines
    wrong = await client.get("/auth", headers=basic(user, "not-the-password"))
    assert wrong.status == 401  # a wrong password learns nothing of the account's state


async def test_wrong_password_is_logged_as_such(start: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = await start()
    with caplog.at_level(logging.INFO, logger="sidecar"):
        assert (await client.get("/auth", headers=basic("bob", "not-it"))).status == 401
    assert any("wrong password (AD sub-code 52e)" in r.getMessage() for r in caplog.records)


# -- 2,000 groups: paged in-chain and memberOf reads; never a verdict on part of them -------------

CROWD_GROUPS = [f"crowd-{i:04d}" for i in range(2000)]


@pytest.fixture(scope="module")
def crowd(ad: SambaDC) -> str:
    """crowd: a user in 2,000 groups and then crowd-deny (Samba's MaxPageSize is 1000)."""
    if "crowd" not in ad.users:
        dn = ad.add_user("crowd", "Passw0rd!Crowd")
        ad.add_groups(CROWD_GROUPS, [dn])
        ad.add_groups(["crowd-deny"], [dn])
    return ad.group_dn("crowd-deny")


@pytest.mark.parametrize("group_type", ["active_directory", "member_of"])
async def test_a_user_in_deny_group_and_2000_others_is_refused(start: Any, crowd: str, group_type: str) -> None:
    extra: dict[str, Any] = {"group_search": None} if group_type == "member_of" else {}
    client = await start(group_type=group_type, deny_group=crowd, **extra)
    assert (await client.get("/auth", headers=basic("crowd", "Passw0rd!Crowd"))).status == 403
    client = await start(group_type=group_type, mirror_groups=["crowd-1999", "crowd-deny"], **extra)
    response = await client.get("/auth", headers=basic("crowd", "Passw0rd!Crowd"))
    assert response.status == 200 and groups(response) == {"crowd-1999", "crowd-deny"}


async def test_every_one_of_2000_groups_is_read(ad: SambaDC, crowd: str) -> None:
    config = parse_config({"ldap": ad_settings(ad)}).ldap
    assert config is not None
    directory = Directory(config)
    try:
        user = await directory.check_password("crowd", "Passw0rd!Crowd")
    finally:
        directory.close()
    assert {g.name for g in user.groups} == {*CROWD_GROUPS, "crowd-deny"}


# -- passwords as typed; the group type the server answers -----------------------------------------

@pytest.mark.parametrize("password", ["Heart\u2764\ufe0f!1", "Join\u200dEd!1", "Private\ue000!1"])
async def test_a_password_is_sent_as_typed(start: Any, ad: SambaDC, password: str) -> None:
    sam = f"typed-{sum(map(ord, password)) % 100000}"
    if sam not in ad.users:
        ad.add_user(sam, password)
    client = await start()
    response = await client.get("/auth", headers=basic(sam, password))
    assert response.status == 200 and response.headers["Remote-User"] == sam


@pytest.mark.parametrize("group_type", ["active_directory", "member_of", "group_of_names"])
async def test_group_types_active_directory_answers_pass_the_check(ad: SambaDC, group_type: str) -> None:
    settings = ad_settings(ad, group_type=group_type)
    if group_type == "member_of":
        settings.pop("group_search")
    config = parse_config({"ldap": settings}).ldap
    assert config is not None
    directory = Directory(config)
    try:
        await directory.check_group_type()
    finally:
        directory.close()
