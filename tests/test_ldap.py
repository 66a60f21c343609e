"""Every ``ldap:`` key, proven against a real slapd (tests/testbed/slapd.py has the directory)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.conftest import GROUPS, PEOPLE, StartSidecar, basic, group, identity_headers
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


async def test_nesting_stops_at_max_nesting(sidecar: StartSidecar, caplog: pytest.LogCaptureFixture) -> None:
    client = await sidecar(group_type="nested_group_of_names", max_nesting=2)
    response = await client.get("/auth", headers=basic("carol", "carol-pass"))
    assert "level3" not in groups_of(response) and "level2" in groups_of(response)
    assert any("max_nesting" in r.getMessage() for r in caplog.records)


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
    assert await status("carol", "carol-pass", "https://app.test/public/../admin") == 403
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
