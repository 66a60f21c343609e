"""Every ``ldap:`` key, proven against a real slapd (tests/testbed/slapd.py has the directory)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sidecar.errors import AuthError, ConfigError, DirectoryUnavailable, InvalidCredentials, Throttled
from sidecar.ldap import Directory
from tests.conftest import (
    GROUPS,
    PEOPLE,
    StartApp,
    StartSidecar,
    basic,
    config_for,
    group,
    identity_headers,
    need,
    sidecar_for,
)
from tests.testbed.slapd import Slapd

pytestmark = pytest.mark.usefixtures("slapd")


class ClosingServer:
    """Accepts TCP connections and closes them at once, counting them: a broken directory."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.uri = f"ldap://127.0.0.1:{self.port}"
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def broken() -> Iterator[ClosingServer]:
    server = ClosingServer()
    yield server
    server.close()


# -- finding users ------------------------------------------------------------------------------

async def test_user_search_with_service_account(sidecar: StartSidecar) -> None:
    client = await sidecar()
    response = await client.get("/auth", headers=basic("alice", "alice-pass"))
    assert response.status == 200
    assert identity_headers(response) == {
        "Remote-User": "alice",
        "Remote-User-First-Name": "Alice",
        "Remote-User-Last-Name": "Liddell",
        "Remote-User-Email": "alice@example.com",
        "Remote-User-Group": "active|netbox-users|staff|superuser",
        "Remote-User-Staff": "false",
        "Remote-User-Superuser": "false",
        "Remote-User-Assertion": "",  # present and empty: this sidecar has no signing key
        "Remote-User-Auth-Methods": "pwd",  # a password
    }


async def test_anonymous_search(sidecar: StartSidecar) -> None:
    client = await sidecar(bind_dn=None, bind_password=None)
    assert (await client.get("/auth", headers=basic("bob", "bob-pass"))).status == 200
    assert (await client.get("/auth", headers=basic("bob", "wrong"))).status == 401


@pytest.mark.parametrize("uid", ["alice", "a+b", "x,y", "o'brien", "star*"])
async def test_user_dn_template_escapes_the_dn(sidecar: StartSidecar, slapd: Slapd, uid: str) -> None:
    client = await sidecar(user_search=None, user_dn_template=f"uid=%(user)s,{PEOPLE}")
    response = await client.get("/auth", headers=basic(uid, slapd.users[uid]))
    assert response.status == 200
    assert response.headers["Remote-User"] == uid


async def test_user_dn_template_without_service_account_reads_as_the_user(sidecar: StartSidecar) -> None:
    client = await sidecar(user_search=None, user_dn_template=f"uid=%(user)s,{PEOPLE}",
                           bind_dn=None, bind_password=None)
    response = await client.get("/auth", headers=basic("carol", "carol-pass"))
    assert response.status == 200
    assert response.headers["Remote-User-Email"] == "carol@example.com"
    assert "level1" in response.headers["Remote-User-Group"].split("|")


async def test_user_attr_map_with_extra_attributes(sidecar: StartSidecar) -> None:
    client = await sidecar(
        user_attr_map={"first_name": "cn", "email": "mail", "employee": "uidNumber"},
        top={"headers": {"extra": {"employee": "Remote-User-Employee"}}},
    )
    response = await client.get("/auth", headers=basic("alice", "alice-pass"))
    assert response.headers["Remote-User-First-Name"] == "Alice Liddell"
    assert response.headers["Remote-User-Last-Name"] == ""  # not mapped: present and empty
    assert response.headers["Remote-User-Employee"] == "10001"


# -- servers: failover, TLS, referrals ----------------------------------------------------------

async def test_failover_remembers_a_dead_server(sidecar: StartSidecar, slapd: Slapd,
                                                broken: ClosingServer) -> None:
    client = await sidecar(server_uri=[broken.uri, slapd.uri], retry_dead_after=3600)
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 200
    tried = broken.accepted
    assert tried >= 1
    # Other credentials miss the cache; the dead server is skipped, not paid for again.
    assert (await client.get("/auth", headers=basic("bob", "bob-pass"))).status == 200
    assert (await client.get("/auth", headers=basic("carol", "carol-pass"))).status == 200
    assert broken.accepted == tried


async def test_failover_retries_a_dead_server_after_the_pause(sidecar: StartSidecar, slapd: Slapd,
                                                              broken: ClosingServer) -> None:
    client = await sidecar(server_uri=[broken.uri, slapd.uri], retry_dead_after=0)
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 200
    tried = broken.accepted
    assert (await client.get("/auth", headers=basic("bob", "bob-pass"))).status == 200
    assert broken.accepted > tried


async def test_all_servers_down_is_503_and_not_ready(sidecar: StartSidecar, broken: ClosingServer) -> None:
    client = await sidecar(server_uri=[broken.uri])
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 503
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200


async def test_ready_when_the_directory_answers(sidecar: StartSidecar) -> None:
    assert (await (await sidecar()).get("/readyz")).status == 200


async def test_start_tls_with_ca_file(sidecar: StartSidecar, slapd: Slapd) -> None:
    client = await sidecar(start_tls=True, ca_file=str(slapd.pki.ca_file))
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 200


async def test_start_tls_refuses_an_untrusted_certificate(sidecar: StartSidecar, slapd: Slapd) -> None:
    client = await sidecar(start_tls=True, ca_file=str(slapd.pki.other_ca_file))
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 503


async def test_ldaps_with_ca_file(sidecar: StartSidecar, slapd: Slapd) -> None:
    client = await sidecar(server_uri=slapd.ldaps_uri, ca_file=str(slapd.pki.ca_file))
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 200


async def test_ldaps_refuses_an_untrusted_certificate(sidecar: StartSidecar, slapd: Slapd) -> None:
    client = await sidecar(server_uri=slapd.ldaps_uri, ca_file=str(slapd.pki.other_ca_file))
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 503


async def test_ignore_cert_errors_works_and_warns_loudly(
    sidecar: StartSidecar, slapd: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sidecar"):
        client = await sidecar(server_uri=slapd.ldaps_uri, ca_file=str(slapd.pki.other_ca_file),
                               ignore_cert_errors=True)
    assert any("ignore_cert_errors" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 200


@pytest.mark.parametrize(("referrals", "status"), [(True, 200), (False, 401)])
async def test_referrals(sidecar: StartSidecar, referrals: bool, status: int) -> None:
    # ou=partners is a referral to the second database, where uid=remote lives.
    client = await sidecar(referrals=referrals,
                           user_search={"base_dn": "ou=partners,dc=example,dc=com",
                                        "filter": "(uid=%(user)s)"},
                           group_type=None, group_search=None)
    response = await client.get("/auth", headers=basic("remote", "remote-pass"))
    assert response.status == status
    if status == 200:
        assert response.headers["Remote-User-Email"] == "remote@other.com"


# -- groups --------------------------------------------------------------------------------------

def groups_of(response: object) -> set[str]:
    value = response.headers["Remote-User-Group"]  # type: ignore[attr-defined]
    return set(value.split("|")) if value else set()


async def test_group_of_names_is_direct_membership(sidecar: StartSidecar) -> None:
    client = await sidecar(group_type="group_of_names")
    response = await client.get("/auth", headers=basic("carol", "carol-pass"))
    assert groups_of(response) == {"active", "netbox-users", "level1", "cycle-a"}


async def test_nested_group_of_names_three_levels_and_a_cycle(sidecar: StartSidecar) -> None:
    client = await sidecar(group_type="nested_group_of_names")
    response = await client.get("/auth", headers=basic("carol", "carol-pass"))
    assert groups_of(response) == {"active", "netbox-users", "level1", "level2", "level3",
                                   "cycle-a", "cycle-b"}


async def test_nesting_deeper_than_max_nesting_is_an_incomplete_answer(
    sidecar: StartSidecar, caplog: pytest.LogCaptureFixture
) -> None:
    # carol's groups go three levels up: with max_nesting 2 the list would lack level3.
    client = await sidecar(group_type="nested_group_of_names", max_nesting=2)
    assert (await client.get("/auth", headers=basic("carol", "carol-pass"))).status == 503
    assert any("max_nesting=2" in r.getMessage() for r in caplog.records)
    # Exactly as deep as allowed is complete.
    client = await sidecar(group_type="nested_group_of_names", max_nesting=3)
    response = await client.get("/auth", headers=basic("carol", "carol-pass"))
    assert response.status == 200 and "level3" in groups_of(response)


async def test_group_of_unique_names(sidecar: StartSidecar) -> None:
    client = await sidecar(group_type="group_of_unique_names",
                           group_search={"base_dn": GROUPS, "filter": "(objectClass=groupOfUniqueNames)"})
    assert groups_of(await client.get("/auth", headers=basic("alice", "alice-pass"))) == {"unique-team"}
    assert groups_of(await client.get("/auth", headers=basic("bob", "bob-pass"))) == set()


async def test_posix_group_by_primary_gid_and_member_uid(sidecar: StartSidecar) -> None:
    client = await sidecar(group_type="posix_group",
                           group_search={"base_dn": GROUPS, "filter": "(objectClass=posixGroup)"})
    assert groups_of(await client.get("/auth", headers=basic("alice", "alice-pass"))) == {"ops"}
    assert groups_of(await client.get("/auth", headers=basic("bob", "bob-pass"))) == {"ops"}
    assert groups_of(await client.get("/auth", headers=basic("carol", "carol-pass"))) == set()


async def test_member_of_reads_the_user_entry(sidecar: StartSidecar) -> None:
    client = await sidecar(group_type="member_of", group_search=None)
    response = await client.get("/auth", headers=basic("alice", "alice-pass"))
    assert groups_of(response) == {"active", "netbox-users", "staff", "superuser"}


async def test_require_group(sidecar: StartSidecar) -> None:
    client = await sidecar(require_group=group("netbox-users"))
    assert (await client.get("/auth", headers=basic("carol", "carol-pass"))).status == 200
    assert (await client.get("/auth", headers=basic("o'brien", "obrien-pass"))).status == 403


async def test_require_group_through_nesting(sidecar: StartSidecar) -> None:
    client = await sidecar(group_type="nested_group_of_names", require_group=[group("level3")])
    assert (await client.get("/auth", headers=basic("carol", "carol-pass"))).status == 200
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 403


async def test_deny_group(sidecar: StartSidecar) -> None:
    client = await sidecar(deny_group=group("banned"))
    assert (await client.get("/auth", headers=basic("bob", "bob-pass"))).status == 403
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 200


async def test_mirror_groups_off_publishes_none(sidecar: StartSidecar) -> None:
    client = await sidecar(mirror_groups=False)
    response = await client.get("/auth", headers=basic("alice", "alice-pass"))
    assert response.status == 200 and response.headers["Remote-User-Group"] == ""


async def test_mirror_groups_list_publishes_only_those(sidecar: StartSidecar) -> None:
    client = await sidecar(mirror_groups=["staff", "ops"])
    response = await client.get("/auth", headers=basic("alice", "alice-pass"))
    assert response.headers["Remote-User-Group"] == "staff"


async def test_user_flags_by_group(sidecar: StartSidecar) -> None:
    client = await sidecar(user_flags_by_group={
        "is_active": group("active"), "is_staff": group("staff"), "is_superuser": [group("superuser")],
    })
    alice = await client.get("/auth", headers=basic("alice", "alice-pass"))
    assert alice.headers["Remote-User-Staff"] == "true"
    assert alice.headers["Remote-User-Superuser"] == "true"
    carol = await client.get("/auth", headers=basic("carol", "carol-pass"))
    assert (carol.headers["Remote-User-Staff"], carol.headers["Remote-User-Superuser"]) == ("false", "false")
    # dave's password is right, but he is in no is_active group: valid, not allowed.
    assert (await client.get("/auth", headers=basic("dave", "dave-pass"))).status == 403


async def test_find_group_perms_feeds_access_rules(sidecar: StartSidecar) -> None:
    client = await sidecar(find_group_perms=True, top={"access": {"rules": [
        {"path": "/admin", "groups": ["staff"]},
        {"path": "/admin", "policy": "deny"},
    ]}})

    async def status(user: str, password: str, url: str) -> int:
        headers = {**basic(user, password), "X-Original-URL": url}
        return (await client.get("/auth", headers=headers)).status

    assert await status("alice", "alice-pass", "https://app.test/admin/users") == 200
    assert await status("carol", "carol-pass", "https://app.test/admin/users") == 403
    assert await status("carol", "carol-pass", "https://app.test/public/../admin") == 400  # ambiguous
    assert await status("carol", "carol-pass", "https://app.test/%61dmin") == 403
    assert await status("carol", "carol-pass", "https://app.test/administrators") == 200


# -- the cache -----------------------------------------------------------------------------------

async def test_changed_password_stops_working_within_the_ttl(sidecar: StartSidecar, slapd: Slapd) -> None:
    slapd.add_user("pw-change", "old-pass")
    client = await sidecar(cache_timeout=1)
    assert (await client.get("/auth", headers=basic("pw-change", "old-pass"))).status == 200
    slapd.set_password("pw-change", "new-pass")
    assert (await client.get("/auth", headers=basic("pw-change", "old-pass"))).status == 200  # cached
    await asyncio.sleep(1.2)
    assert (await client.get("/auth", headers=basic("pw-change", "old-pass"))).status == 401
    assert (await client.get("/auth", headers=basic("pw-change", "new-pass"))).status == 200


async def test_removed_group_stops_granting_access_within_the_ttl(sidecar: StartSidecar,
                                                                  slapd: Slapd) -> None:
    slapd.add_user("grp-change", "pass", groups=("active", "netbox-users"))
    client = await sidecar(cache_timeout=1, require_group=group("netbox-users"))
    assert (await client.get("/auth", headers=basic("grp-change", "pass"))).status == 200
    slapd.remove_from_group("grp-change", "netbox-users")
    await asyncio.sleep(1.2)
    assert (await client.get("/auth", headers=basic("grp-change", "pass"))).status == 403


async def test_cache_off_sees_every_change_at_once(sidecar: StartSidecar, slapd: Slapd) -> None:
    slapd.add_user("no-cache", "pass", groups=("active",), given_name="Before")
    client = await sidecar(cache_timeout=0)
    assert (await client.get("/auth", headers=basic("no-cache", "pass"))).headers[
        "Remote-User-First-Name"] == "Before"
    slapd.modify_user("no-cache", givenName="After")
    assert (await client.get("/auth", headers=basic("no-cache", "pass"))).headers[
        "Remote-User-First-Name"] == "After"
    slapd.delete_user("no-cache")
    assert (await client.get("/auth", headers=basic("no-cache", "pass"))).status == 401


async def test_failures_are_cached_only_briefly(sidecar: StartSidecar, slapd: Slapd) -> None:
    slapd.add_user("late-pass", "first")
    client = await sidecar(top={"cache": {"failure_timeout": 1}})
    assert (await client.get("/auth", headers=basic("late-pass", "second"))).status == 401
    slapd.set_password("late-pass", "second")
    await asyncio.sleep(1.2)
    assert (await client.get("/auth", headers=basic("late-pass", "second"))).status == 200


# -- partial group lists never decide (RFC 2696 paging; incomplete answers are 503) --------------

CROWD_GROUPS = [f"crowd-{i:04d}" for i in range(2000)]
CROWD_DENY = "crowd-deny"  # added last: beyond any size limit's cut


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A slapd of its own with a size limit of 500, where crowd is in 2,000 groups + crowd-deny."""
    need("slapd")
    need("ldapadd")
    with Slapd(tmp_path_factory.mktemp("crowded"), size_limit=500) as server:
        server.add_user("crowd", "crowd-pass", groups=())
        server.add_user("loner", "loner-pass", groups=())
        server.add_groups(CROWD_GROUPS, ["crowd"])
        server.add_groups([CROWD_DENY], ["crowd"])
        yield server


@pytest.fixture
def crowd_sidecar(crowded: Slapd, app_client: StartApp) -> StartSidecar:
    return sidecar_for(crowded, app_client)


def pager(server: Slapd) -> dict[str, str]:
    return {"bind_dn": server.pager_dn, "bind_password": server.pager_password}


@pytest.mark.parametrize("group_type", ["group_of_names", "nested_group_of_names"])
async def test_a_group_search_cut_by_a_size_limit_is_503_never_200(
    crowd_sidecar: StartSidecar, caplog: pytest.LogCaptureFixture, group_type: str
) -> None:
    # The service account may see 500 entries per search, paged or not: the list is incomplete.
    client = await crowd_sidecar(group_type=group_type, deny_group=group(CROWD_DENY))
    assert (await client.get("/auth", headers=basic("crowd", "crowd-pass"))).status == 503
    assert any("sizeLimitExceeded" in r.getMessage() and "partial group list" in r.getMessage()
               for r in caplog.records)
    client = await crowd_sidecar(group_type=group_type)  # no deny_group: still no verdict
    assert (await client.get("/auth", headers=basic("crowd", "crowd-pass"))).status == 503
    # A user with few groups is not affected by the limit.
    assert (await client.get("/auth", headers=basic("loner", "loner-pass"))).status == 200


@pytest.mark.parametrize("group_type", ["group_of_names", "nested_group_of_names", "member_of"])
async def test_paging_reads_every_one_of_2000_groups(
    crowd_sidecar: StartSidecar, crowded: Slapd, group_type: str
) -> None:
    settings: dict[str, Any] = {"group_type": group_type, **pager(crowded)}
    if group_type == "member_of":
        settings["group_search"] = None
    client = await crowd_sidecar(deny_group=group(CROWD_DENY), **settings)
    assert (await client.get("/auth", headers=basic("crowd", "crowd-pass"))).status == 403
    client = await crowd_sidecar(mirror_groups=[CROWD_GROUPS[-1], CROWD_DENY], **settings)
    response = await client.get("/auth", headers=basic("crowd", "crowd-pass"))
    assert response.status == 200
    assert groups_of(response) == {CROWD_GROUPS[-1], CROWD_DENY}

    directory = Directory(config_for(crowded, **settings).ldap)  # type: ignore[arg-type]
    try:
        user = await directory.check_password("crowd", "crowd-pass")
    finally:
        directory.close()
    assert {g.name for g in user.groups} >= {*CROWD_GROUPS, CROWD_DENY}
    assert len(user.groups) == len(CROWD_GROUPS) + 1


# -- one login, one identity: values are never cleaned into other values -------------------------

async def test_a_second_uid_with_a_control_character_never_logs_in_as_another_user(
    sidecar: StartSidecar, slapd: Slapd
) -> None:
    # The exploit: uid "alice\x01" next to "mallory" made mallory's login come out as alice.
    slapd.add_user("mallory", "mallory-pass", groups=("active",))
    slapd.modify_user("mallory", uid=["alice\x01", "mallory"])
    client = await sidecar()
    response = await client.get("/auth", headers=basic("mallory", "mallory-pass"))
    assert response.status == 200 and response.headers["Remote-User"] == "mallory"
    assert (await client.get("/auth", headers=basic("alice", "mallory-pass"))).status == 401
    alice = await client.get("/auth", headers=basic("alice", "alice-pass"))
    assert alice.status == 200 and alice.headers["Remote-User"] == "alice"


async def test_of_several_uids_the_one_typed_is_the_identity(sidecar: StartSidecar, slapd: Slapd) -> None:
    slapd.add_user("two-names", "two-pass", groups=("active",))
    slapd.modify_user("two-names", uid=["two-names", "Second-Name"])
    client = await sidecar(username_case="preserve")  # the directory's spelling of the one typed
    for login, expected in (("two-names", "two-names"), ("second-name", "Second-Name"),
                            ("SECOND-NAME", "Second-Name")):
        response = await client.get("/auth", headers=basic(login, "two-pass"))
        assert response.status == 200 and response.headers["Remote-User"] == expected


async def test_several_uids_and_a_login_by_another_attribute_is_refused(
    sidecar: StartSidecar, slapd: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    slapd.add_user("by-mail", "mail-pass", mail="by-mail@example.com")
    slapd.modify_user("by-mail", uid=["by-mail", "other-name"])
    client = await sidecar(user_search={"base_dn": PEOPLE, "filter": "(|(uid=%(user)s)(mail=%(user)s))"},
                           username_attr="uid")
    assert (await client.get("/auth", headers=basic("by-mail@example.com", "wrong"))).status == 401
    assert (await client.get("/auth", headers=basic("by-mail@example.com", "mail-pass"))).status == 403
    assert any("no single clean uid value" in r.getMessage() for r in caplog.records)
    assert (await client.get("/auth", headers=basic("other-name", "mail-pass"))).status == 200


async def test_a_user_name_with_a_control_character_cannot_log_in(
    sidecar: StartSidecar, slapd: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    slapd.add_user("ctl\x01name", "ctl-pass", mail="ctl@example.com")
    client = await sidecar(user_search={"base_dn": PEOPLE, "filter": "(|(uid=%(user)s)(mail=%(user)s))"},
                           username_attr="uid")
    response = await client.get("/auth", headers=basic("ctl@example.com", "ctl-pass"))
    assert response.status == 403 and "Remote-User" not in response.headers
    assert any("ctl" in r.getMessage() and "uid" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("attribute", ["givenName", "sn", "mail", "departmentNumber"])
async def test_a_user_attribute_with_a_control_character_is_refused(
    sidecar: StartSidecar, slapd: Slapd, caplog: pytest.LogCaptureFixture, attribute: str
) -> None:
    uid = f"dirty-{attribute.lower()}"
    slapd.add_user(uid, "dirty-pass", mail=f"{uid}@example.com")
    value = "Sales\x85" if attribute == "departmentNumber" else "Evil\x07Value"  # C1 NEL / C0 BEL
    slapd.modify_user(uid, **{attribute: value})
    client = await sidecar(
        user_attr_map={"first_name": "givenName", "last_name": "sn", "email": "mail", "department": "departmentNumber"},
        top={"headers": {"extra": {"department": "Remote-User-Department"}}},
    )
    assert (await client.get("/auth", headers=basic(uid, "dirty-pass"))).status == 403
    assert any(f"attribute {attribute} holds a control character" in r.getMessage() for r in caplog.records)


async def test_a_group_name_with_a_control_character_is_not_published_but_still_counts(
    sidecar: StartSidecar, slapd: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    slapd.add_user("in-dirty-group", "pass", groups=("active",))
    slapd.add_groups(["st\x01aff"], ["in-dirty-group"])
    client = await sidecar()
    with caplog.at_level(logging.INFO, logger="sidecar.ldap"):
        response = await client.get("/auth", headers=basic("in-dirty-group", "pass"))
    assert response.status == 200 and groups_of(response) == {"active"}
    assert any("is not published" in r.getMessage() for r in caplog.records)
    # Its DN still decides: deny_group by DN refuses, require_group by DN admits.
    denied = await sidecar(deny_group=group("st\x01aff"))
    assert (await denied.get("/auth", headers=basic("in-dirty-group", "pass"))).status == 403
    required = await sidecar(require_group=group("st\x01aff"))
    assert (await required.get("/auth", headers=basic("in-dirty-group", "pass"))).status == 200


# -- passwords as typed ----------------------------------------------------------------------------

@pytest.mark.parametrize("password", [
    "heart\u2764\ufe0f",          # a variation selector: SASLprep maps it to nothing
    "family\U0001f468\u200d\U0001f469",  # a zero-width joiner: mapped to nothing too
    "private\ue000use",           # private use: SASLprep refuses the whole password
    "nbsp\u00a0inside",           # SASLprep maps it to SP
    "\uff21wide",                 # NFKC would make it "Awide"
])
async def test_a_password_is_sent_as_typed(sidecar: StartSidecar, slapd: Slapd, password: str) -> None:
    uid = f"typed-{len(slapd.users)}"
    slapd.add_user(uid, password)
    client = await sidecar()
    assert (await client.get("/auth", headers=basic(uid, password))).status == 200
    # What SASLprep would have made of it is not the password.
    for other in {password.replace("\ufe0f", "").replace("\u200d", "").replace("\u00a0", " "),
                  password.replace("\uff21", "A")} - {password}:
        assert (await client.get("/auth", headers=basic(uid, other))).status == 401


# -- an unknown name costs what a wrong password costs (counted by slapd, not timed) --------------

def operations_of(slapd: Slapd, before: dict[str, int]) -> dict[str, int]:
    after = slapd.operations()
    return {kind: after[kind] - before[kind] for kind in ("bind", "search") if after[kind] != before[kind]}


@pytest.mark.parametrize("mode", ["search", "template", "template-without-service-account"])
async def test_an_unknown_name_costs_the_operations_of_a_wrong_password(
    sidecar: StartSidecar, slapd: Slapd, mode: str
) -> None:
    settings: dict[str, Any] = {"threads": 1, "group_type": "group_of_names"}
    if mode != "search":
        settings.update(user_search=None, user_dn_template=f"uid=%(user)s,{PEOPLE}")
    if mode == "template-without-service-account":
        settings.update(bind_dn=None, bind_password=None)
    client = await sidecar(**settings)
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).status == 200  # connect
    # Without a service account a refused bind is followed by an anonymous look at the entry (is the
    # name unknown?): its connection is made once, here, like the others above.
    assert (await client.get("/auth", headers=basic("alice", "warm-up"))).status == 401
    nothing = slapd.operations()
    reading = operations_of(slapd, nothing)  # what reading the counters costs by itself

    def spent(before: dict[str, int]) -> dict[str, int]:
        used = operations_of(slapd, before)
        return {kind: used.get(kind, 0) - reading.get(kind, 0) for kind in ("bind", "search")}

    costs = {}
    for case, user, password in (("wrong", "bob", "wrong-1"), ("unknown", "nobody-here", "wrong-2"),
                                 ("wrong again", "carol", "wrong-3"), ("unknown again", "no-one", "x")):
        before = slapd.operations()
        assert (await client.get("/auth", headers=basic(user, password))).status == 401
        costs[case] = spent(before)
    assert costs["wrong"] == costs["unknown"] == costs["wrong again"] == costs["unknown again"]
    # One bind with the password; a search first where a service account (or anonymous) can look,
    # else one after the refusal (does the entry exist?), for an unknown name and a wrong password alike.
    assert costs["wrong"] == {"bind": 1, "search": 1}


# -- admission: the regulation's hook, called with the directory's spelling before the bind -------

class Admissions:
    def __init__(self, refuse: BaseException | None = None) -> None:
        self.names: list[str] = []
        self.threads: set[str] = set()
        self.refuse = refuse

    def __call__(self, name: str) -> None:
        self.names.append(name)
        self.threads.add(threading.current_thread().name)
        if self.refuse is not None:
            raise self.refuse


@pytest.fixture
def directory_for(slapd: Slapd) -> Iterator[Any]:
    made: list[Directory] = []

    def make(**ldap: Any) -> Directory:
        config = config_for(slapd, **ldap).ldap
        assert config is not None
        made.append(Directory(config))
        return made[-1]

    yield make
    for directory in made:
        directory.close()


@pytest.mark.parametrize(("mode", "login", "admitted"), [
    ("search", "ALICE", "alice"),
    ("search", "nobody-at-all", "nobody-at-all"),
    ("template", "ALICE", "alice"),
    ("template", "nobody-at-all", "nobody-at-all"),
    ("template-without-service-account", "ALICE", "ALICE"),
])
async def test_admit_gets_the_directory_spelling_in_the_worker(
    directory_for: Any, mode: str, login: str, admitted: str
) -> None:
    settings: dict[str, Any] = {}
    if mode != "search":
        settings.update(user_search=None, user_dn_template=f"uid=%(user)s,{PEOPLE}")
    if mode == "template-without-service-account":
        settings.update(bind_dn=None, bind_password=None)
    directory = directory_for(**settings)
    admit = Admissions()
    with pytest.raises(InvalidCredentials):
        await directory.check_password(login, "not-the-password", admit)
    assert admit.names == [admitted]
    assert all(name.startswith("ldap") for name in admit.threads)
    if "nobody" not in login:
        user = await directory.check_password(login, "alice-pass", admit)
        assert user.username == "alice"


async def test_what_admit_raises_propagates_and_no_bind_happens(directory_for: Any, slapd: Slapd) -> None:
    directory = directory_for(threads=1)
    await directory.check_password("alice", "alice-pass")  # connected
    refusal = Throttled("too many failures for alice")
    before = slapd.operations()
    with pytest.raises(Throttled) as raised:
        await directory.check_password("alice", "alice-pass", Admissions(refuse=refusal))
    assert raised.value is refusal
    baseline = slapd.operations()
    used, reading = operations_of(slapd, before), operations_of(slapd, baseline)
    assert used.get("bind", 0) - reading.get("bind", 0) == 0  # the search, but no bind as alice
    assert used.get("search", 0) - reading.get("search", 0) == 1


# -- nothing the worker raises keeps the password --------------------------------------------------

def holds(value: Any, secret: str, depth: int = 0) -> bool:
    if isinstance(value, str):
        return secret in value
    if isinstance(value, bytes | bytearray):
        return secret.encode() in value
    if depth < 3 and isinstance(value, list | tuple | set | frozenset):
        return any(holds(v, secret, depth + 1) for v in value)
    if depth < 3 and isinstance(value, dict):
        return any(holds(v, secret, depth + 1) for v in value.values())
    return False


def frames_holding(error: BaseException, secret: str) -> list[str]:
    found = []
    chained: BaseException | None = error
    while chained is not None:
        tb = chained.__traceback__
        tb = tb.tb_next if chained is error and tb is not None else tb  # the test's own frame
        while tb is not None:
            frame = tb.tb_frame
            if any(holds(v, secret) for v in frame.f_locals.values()):
                found.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")
            tb = tb.tb_next
        chained = chained.__cause__ or chained.__context__
    if holds(list(error.args), secret) or holds(getattr(error, "reason", ""), secret):
        found.append("the exception's own text")
    return found


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "throttled", "server down"])
async def test_no_refusal_keeps_the_password_in_its_traceback(
    directory_for: Any, broken: ClosingServer, case: str
) -> None:
    secret = f"Secret-{case.replace(' ', '-')}-4711"
    settings: dict[str, Any] = {"server_uri": [broken.uri]} if case == "server down" else {}
    directory = directory_for(**settings)
    admit = Admissions(refuse=Throttled("no")) if case == "throttled" else None
    with pytest.raises(AuthError) as raised:
        await directory.check_password("nobody-at-all" if case == "unknown user" else "bob", secret, admit)
    assert frames_holding(raised.value, secret) == []


# -- a group type the directory cannot answer is refused, not an empty group list ----------------

async def test_active_directory_group_type_against_openldap_is_refused(
    sidecar: StartSidecar, directory_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"group_type": "active_directory", "deny_group": group("banned")}
    with pytest.raises(ConfigError, match="not Active Directory"):
        await directory_for(**settings).check_group_type()
    # The app refuses to start; and should the start-up check not have run, no verdict is given.
    with pytest.raises(ConfigError, match="not Active Directory"):
        await sidecar(**settings)
    directory = directory_for(**settings)
    for user, password in [("bob", "bob-pass"), ("alice", "alice-pass")]:
        with pytest.raises(DirectoryUnavailable):
            await directory.check_password(user, password)
    assert any("not Active Directory" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("group_type", ["group_of_names", "nested_group_of_names", "member_of", None])
async def test_group_types_openldap_answers_pass_the_check(directory_for: Any, group_type: str | None) -> None:
    settings: dict[str, Any] = {"group_type": group_type}
    if group_type in ("member_of", None):
        settings["group_search"] = None
    await directory_for(**settings).check_group_type()


async def test_the_group_type_check_without_any_server_is_unavailable(
    directory_for: Any, broken: ClosingServer
) -> None:
    with pytest.raises(DirectoryUnavailable):
        await directory_for(server_uri=[broken.uri], group_type="active_directory").check_group_type()
