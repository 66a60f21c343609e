"""django-auth-ldap's features that Active Directory makes matter, against a real Samba AD DC (the
session's): REFRESH_DN_ON_BIND with a UPN template, user names as django-auth-ldap creates them, and
an AD forest as the second of several directories."""

from __future__ import annotations

from typing import Any

from sidecar.config import parse_config
from tests.conftest import StartApp, basic, ldap_settings
from tests.test_active_directory import ad_settings
from tests.testbed.samba import SambaDC
from tests.testbed.slapd import Slapd


async def start(app_client: StartApp, ad: SambaDC, **overrides: Any) -> Any:
    return await app_client(parse_config({"ldap": ad_settings(ad, **overrides)}))


async def test_a_upn_template_binds_then_finds_the_real_entry(app_client: StartApp, ad: SambaDC) -> None:
    # No service account: the bind is as alice@example.test (no DN), the search then runs as alice.
    client = await start(app_client, ad, bind_dn=None, bind_password=None,
                         user_dn_template=f"%(user)s@{ad.realm.lower()}", refresh_dn_on_bind=True,
                         user_search={"base_dn": ad.base_dn, "filter": "(sAMAccountName=%(user)s)"})
    response = await client.get("/auth", headers=basic("alice", ad.users["alice"]))
    assert response.status == 200
    assert (response.headers["Remote-User"], response.headers["Remote-User-Last-Name"]) == ("alice", "Liddell")
    assert (await client.get("/auth", headers=basic("alice", "wrong"))).status == 401
    assert (await client.get("/auth", headers=basic("no-such-person", "x"))).status == 401


async def test_an_upper_case_account_arrives_as_django_auth_ldap_named_it(app_client: StartApp, ad: SambaDC) -> None:
    if "Erin" not in ad.users:
        ad.add_user("Erin", "Passw0rd!Erin")
    lower = await start(app_client, ad)
    response = await lower.get("/auth", headers=basic("Erin", "Passw0rd!Erin"))
    assert response.status == 200 and response.headers["Remote-User"] == "erin"
    preserve = await start(app_client, ad, username_case="preserve")
    response = await preserve.get("/auth", headers=basic("erin", "Passw0rd!Erin"))
    assert response.status == 200 and response.headers["Remote-User"] == "Erin"


async def test_an_openldap_directory_then_active_directory_each_with_its_own_groups(
        app_client: StartApp, ad: SambaDC, slapd: Slapd) -> None:
    """Two directories of different kinds, as two forests would be: each its own servers, service
    account, searches and group type; a name the first does not know is the second's."""
    if "zoe" not in ad.users:
        ad.add_user("zoe", "Passw0rd!Zoe")
    corp = {**ldap_settings(slapd), "name": "corp"}
    forest = {**ad_settings(ad), "name": "forest", "user_flags_by_group": {"is_staff": {"not": ad.group_dn("staff")}}}
    config = parse_config({"ldap": [corp, forest]})
    assert [d.source_id for d in config.directories] == ["ldap:corp", "ldap:forest"]
    client = await app_client(config)
    from_corp = await client.get("/auth", headers=basic("carol", "carol-pass"))
    assert from_corp.status == 200 and from_corp.headers["Remote-User-Staff"] == "false"
    from_forest = await client.get("/auth", headers=basic("zoe", "Passw0rd!Zoe"))
    assert from_forest.status == 200 and from_forest.headers["Remote-User"] == "zoe"
    assert from_forest.headers["Remote-User-Staff"] == "true"  # the forest's own rule, a query of its DNs
    # alice is in both: the first directory answers, and its password is the one that counts.
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 200
    assert (await client.get("/auth", headers=basic("alice", ad.users["alice"]))).status == 401
