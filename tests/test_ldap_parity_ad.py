"""django-auth-ldap's features that Active Directory makes matter, against a real Samba AD DC (the
session's): REFRESH_DN_ON_BIND with a UPN template, and user names as django-auth-ldap creates them."""

from __future__ import annotations

from typing import Any

from sidecar.config import parse_config
from tests.conftest import StartApp, basic
from tests.test_active_directory import ad_settings
from tests.testbed.samba import SambaDC


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
