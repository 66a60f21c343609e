"""Single sign-on under the directory's policy (django-auth-ldap's AUTHORIZE_ALL_USERS): a token
from a real OpenID provider (panva oidc-provider) for a name the directory knows takes that user's
groups and flags from slapd; the directory's rules refuse whom they refuse; the source's own rules
act on its claims' groups; and a source whose names are set apart by a prefix may not borrow a
directory user's groups."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from jose import jwt

from sidecar.config import parse_config
from sidecar.errors import ConfigError
from tests.conftest import StartApp, group, ldap_settings, need
from tests.testbed.oidc import RESOURCE, OidcProvider, oidc_client
from tests.testbed.slapd import Slapd

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    need("node")
    with OidcProvider(tmp_path_factory.mktemp("op"), clients=[oidc_client("api-client", "api-secret")],
                      resource_servers={RESOURCE: "api:read"}) as op:
        yield op


def token(provider: OidcProvider, subject: str, groups: list[str] | None = None) -> dict[str, str]:
    """A token signed with the provider's own key for ``subject`` (its real tokens are for clients)."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": provider.issuer, "aud": RESOURCE, "sub": subject, "iat": now, "exp": now + 60}
    if groups is not None:
        claims["groups"] = groups
    key = provider.keys[0]
    return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="RS256", headers={"kid": key["kid"]})}


def settings(provider: OidcProvider, slapd: Slapd, **bearer: Any) -> dict[str, Any]:
    return {
        "ldap": ldap_settings(slapd, require_group=group("active"), deny_group=group("banned"),
                              user_flags_by_group={"is_staff": group("staff"), "is_superuser": group("superuser")}),
        "oidc": {"bearer": [{"issuer": provider.issuer, "audiences": [RESOURCE],
                             "claims": {"username": "sub", "groups": "groups"}, "shares_usernames": True,
                             **bearer}]},
    }


async def start(app_client: StartApp, provider: OidcProvider, slapd: Slapd, **bearer: Any) -> TestClient[Any, Any]:
    return await app_client(parse_config(settings(provider, slapd, **bearer)))


async def test_a_provider_s_user_takes_groups_and_flags_from_the_directory(
        app_client: StartApp, provider: OidcProvider, slapd: Slapd) -> None:
    client = await start(app_client, provider, slapd, groups_from_directory=True)
    alice = await client.get("/auth", headers=token(provider, "alice"))
    assert alice.status == 200
    assert (alice.headers["Remote-User-Staff"], alice.headers["Remote-User-Superuser"]) == ("true", "true")
    assert {"active", "staff", "superuser"} <= set(alice.headers["Remote-User-Group"].split("|"))
    # The directory's deny_group and require_group decide for these users too.
    assert (await client.get("/auth", headers=token(provider, "bob"))).status == 403  # banned
    assert (await client.get("/auth", headers=token(provider, "nobody-here"))).status == 403  # in no group
    # Without groups_from_directory the same token is the provider's claims only.
    plain = await start(app_client, provider, slapd)
    claims_only = await plain.get("/auth", headers=token(provider, "alice", ["ops"]))
    assert claims_only.status == 200
    assert (claims_only.headers["Remote-User-Group"], claims_only.headers["Remote-User-Superuser"]) == ("ops", "false")


async def test_a_provider_s_own_rules_act_on_its_groups_claim(
        app_client: StartApp, provider: OidcProvider, slapd: Slapd) -> None:
    client = await start(app_client, provider, slapd, require_group="ops",
                         user_flags_by_group={"is_superuser": {"and": ["ops", "admins"]}})
    both = await client.get("/auth", headers=token(provider, "robot", ["ops", "admins"]))
    assert both.status == 200 and both.headers["Remote-User-Superuser"] == "true"
    one = await client.get("/auth", headers=token(provider, "robot", ["ops"]))
    assert one.status == 200 and one.headers["Remote-User-Superuser"] == "false"
    assert (await client.get("/auth", headers=token(provider, "robot", ["dev"]))).status == 403


def test_a_prefixed_source_may_not_borrow_a_directory_user_s_groups(provider: OidcProvider, slapd: Slapd) -> None:
    config = settings(provider, slapd, groups_from_directory=True)
    config["oidc"]["bearer"][0] |= {"shares_usernames": False, "username_prefix": "op:"}
    with pytest.raises(ConfigError) as refused:
        parse_config(config)
    assert any("bearer[0].groups_from_directory: reads the groups of the directory's user of the same name, "
               "but username_prefix 'op:'" in problem for problem in refused.value.problems), refused.value.problems
