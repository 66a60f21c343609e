"""The test beds themselves: slapd's demo directory, TLS, referrals and helpers; HangingServer."""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from ldap3 import BASE, NONE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPBindError, LDAPSocketOpenError, LDAPSocketReceiveError

from tests.conftest import need
from tests.testbed.hang import HangingServer
from tests.testbed.slapd import DEMO_USERS, Slapd

Response = list[dict[str, Any]]  # ldap3's conn.response after a search


def need_slapd() -> None:
    need("slapd")
    need("ldapadd")  # loads the demo data


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A private slapd, not conftest's shared one, so the demo data is as loaded."""
    need_slapd()
    with Slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@contextmanager
def connect(
    uri: str,
    user: str | None = None,
    password: str | None = None,
    tls: Tls | None = None,
    **options: Any,
) -> Iterator[Connection]:
    """A bound ldap3 connection (anonymous without user); raises LDAPBindError when refused."""
    server = Server(uri, tls=tls, get_info=NONE)  # ldaps:// in uri turns on use_ssl
    conn = Connection(server, user, password, auto_bind=True, **options)
    try:
        yield conn
    finally:
        conn.unbind()  # ldap3's own `with` leaves an already bound connection open


def stored_dn(slapd: Slapd, dn: str) -> str:
    """The entry's DN as slapd spells it: it returns uid=a\\2Bb for the uid=a\\+b we wrote."""
    with connect(slapd.uri) as conn:
        conn.search(dn, "(objectClass=*)", BASE)
        return str(cast(Response, conn.response)[0]["dn"])


def test_start_is_fast_and_stop_leaves_no_process(tmp_path: Path) -> None:
    need_slapd()
    server = Slapd(tmp_path)
    began = time.monotonic()
    server.start()
    elapsed = time.monotonic() - began
    pid = server.pid
    server.stop()
    assert elapsed < 2.0
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    server.stop()  # a second stop is harmless


def test_service_account_searches(slapd: Slapd) -> None:
    with connect(slapd.uri, slapd.service_dn, slapd.service_password) as conn:
        conn.search(f"ou=people,{slapd.base_dn}", "(objectClass=inetOrgPerson)", attributes=["uid"])
        assert {entry.uid.value for entry in conn.entries} == set(DEMO_USERS)


def test_anonymous_search_sees_everything_but_passwords(slapd: Slapd) -> None:
    with connect(slapd.uri) as conn:
        conn.search(slapd.base_dn, "(uid=jose)", attributes=["givenName", "sn", "userPassword"])
        (entry,) = conn.entries
    assert (entry.givenName.value, entry.sn.value) == ("José", "山田")
    assert entry.userPassword.values == []


def test_groups_match_the_spec(slapd: Slapd) -> None:
    user = {uid: stored_dn(slapd, slapd.user_dn(uid)) for uid in DEMO_USERS}
    group = slapd.group_dn
    expected_members = {
        "active": {user[uid] for uid in DEMO_USERS if uid != "dave"},
        "staff": {user["alice"]},
        "superuser": {user["alice"]},
        "netbox-users": {user["alice"], user["bob"], user["carol"], user["jose"]},
        "banned": {user["bob"]},
        "level1": {user["carol"]},
        "level2": {group("level1")},
        "level3": {group("level2")},
        "cycle-a": {user["carol"], group("cycle-b")},
        "cycle-b": {group("cycle-a")},
    }
    assert {cn: set(slapd.members(cn)) for cn in expected_members} == expected_members

    with connect(slapd.uri) as conn:
        conn.search(group("unique-team"), "(objectClass=groupOfUniqueNames)", BASE, attributes=["*"])
        assert conn.entries[0].uniqueMember.values == [user["alice"]]
        conn.search(group("ops"), "(objectClass=posixGroup)", BASE, attributes=["*"])
        assert (conn.entries[0].gidNumber.value, conn.entries[0].memberUid.values) == ("5000", ["bob"])


@pytest.mark.parametrize("uid", sorted(DEMO_USERS))
def test_each_demo_user_binds(slapd: Slapd, uid: str) -> None:
    with connect(slapd.uri, slapd.user_dn(uid), slapd.users[uid]) as conn:
        assert conn.extend.standard.who_am_i() == f"dn:{stored_dn(slapd, slapd.user_dn(uid))}"


def test_wrong_password_is_refused(slapd: Slapd) -> None:
    with pytest.raises(LDAPBindError, match="invalidCredentials"):
        with connect(slapd.uri, slapd.user_dn("alice"), "bob-pass"):
            pass


def test_empty_password_is_refused_by_the_server(slapd: Slapd) -> None:
    # ldap3 refuses to send an empty simple bind itself, so ask ldapwhoami.
    command = [need("ldapwhoami"), "-x", "-H", slapd.uri, "-D", slapd.user_dn("alice"), "-w", ""]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 53, result.stderr  # unwillingToPerform: unauthenticated bind


def test_member_of_lists_direct_groups_only(slapd: Slapd) -> None:
    with connect(slapd.uri) as conn:
        conn.search(slapd.user_dn("carol"), "(objectClass=*)", BASE, attributes=["memberOf"])
        groups = set(conn.entries[0].memberOf.values)
    assert {slapd.group_dn(cn) for cn in ("level1", "cycle-a", "active")} <= groups
    assert slapd.group_dn("level2") not in groups


def test_dave_is_in_no_group(slapd: Slapd) -> None:
    with connect(slapd.uri) as conn:
        conn.search(slapd.user_dn("dave"), "(objectClass=*)", BASE, attributes=["memberOf"])
        assert conn.entries[0].memberOf.values == []


def test_ldaps_validates_with_the_ca(slapd: Slapd) -> None:
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd.pki.ca_file))
    with connect(slapd.ldaps_uri, tls=tls) as conn:
        assert conn.bound and isinstance(conn.socket, ssl.SSLSocket)


def test_ldaps_fails_with_another_ca(slapd: Slapd) -> None:
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd.pki.other_ca_file))
    with pytest.raises(LDAPSocketOpenError, match="CERTIFICATE_VERIFY_FAILED"):
        with connect(slapd.ldaps_uri, tls=tls):
            pass


def test_start_tls(slapd: Slapd) -> None:
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd.pki.ca_file))
    server = Server(slapd.uri, tls=tls, get_info=NONE)
    conn = Connection(server, slapd.service_dn, slapd.service_password)
    conn.open()
    try:
        assert conn.start_tls()
        assert conn.bind()
        assert conn.extend.standard.who_am_i() == f"dn:{slapd.service_dn}"
    finally:
        conn.unbind()


def test_key_file_is_private(slapd: Slapd) -> None:
    assert os.stat(slapd.pki.key_file).st_mode & 0o777 == 0o600


def test_subtree_search_returns_a_continuation_reference(slapd: Slapd) -> None:
    # ldap3 never follows these (auto_referrals only follows a referral *result*): the client must.
    with connect(slapd.uri, auto_referrals=True) as conn:
        conn.search(slapd.base_dn, "(uid=remote)")
        assert conn.response == [
            {"type": "searchResRef", "uri": [f"{slapd.uri}/ou=people,dc=other,dc=com??sub"]}
        ]
        assert conn.result["result"] == 0


def test_following_the_reference_finds_remote(slapd: Slapd) -> None:
    with connect(slapd.uri, slapd.service_dn, slapd.service_password) as conn:
        conn.search("ou=people,dc=other,dc=com", "(uid=remote)", attributes=["mail"])
        assert conn.entries[0].entry_dn == "uid=remote,ou=people,dc=other,dc=com"
        assert conn.entries[0].mail.value == "remote@other.com"


def test_search_below_the_referral_gets_a_referral_result(slapd: Slapd) -> None:
    partners = f"ou=partners,{slapd.base_dn}"
    service = (slapd.service_dn, slapd.service_password)
    with connect(slapd.uri, *service, auto_referrals=False) as conn:
        conn.search(partners, "(uid=remote)")
        assert conn.result["result"] == 10  # referral
        assert conn.result["referrals"] == [f"{slapd.uri}/ou=people,dc=other,dc=com??sub"]

    with connect(slapd.uri, *service, auto_referrals=True) as conn:
        conn.search(partners, "(uid=remote)", attributes=["mail"])
        assert [r["dn"] for r in cast(Response, conn.response)] == ["uid=remote,ou=people,dc=other,dc=com"]


def can_bind(slapd: Slapd, dn: str, password: str) -> bool:
    try:
        with connect(slapd.uri, dn, password):
            return True
    except LDAPBindError:
        return False


def test_mutation_helpers(slapd: Slapd) -> None:
    uid = "x,tmp+1"
    dn = slapd.add_user(uid, "first-pass", mail="tmp@example.com", groups=("active", "staff"))
    assert dn == f"uid=x\\,tmp\\+1,ou=people,{slapd.base_dn}"
    stored = stored_dn(slapd, dn)
    assert stored in slapd.members("staff")
    assert can_bind(slapd, dn, "first-pass")

    slapd.set_password(uid, "second-pass")
    assert can_bind(slapd, dn, slapd.users[uid])
    assert not can_bind(slapd, dn, "first-pass")

    slapd.modify_user(uid, givenName="Temporary", mail=None)
    with connect(slapd.uri) as conn:
        conn.search(dn, "(objectClass=*)", BASE, attributes=["givenName", "mail"])
        assert (conn.entries[0].givenName.value, conn.entries[0].mail.values) == ("Temporary", [])

    slapd.remove_from_group(uid, "staff")
    assert stored not in slapd.members("staff")
    slapd.add_to_group(uid, "banned")
    assert stored in slapd.members("banned")

    slapd.delete_user(uid)
    assert stored not in slapd.members("active") and stored not in slapd.members("banned")
    assert uid not in slapd.users


def test_hanging_server_accepts_and_never_answers() -> None:
    with HangingServer() as hang:
        began = time.monotonic()
        with pytest.raises(LDAPSocketReceiveError):
            with connect(hang.uri, receive_timeout=1):
                pass
        assert 0.9 < time.monotonic() - began < 5
        assert hang.accepted == 1


def test_size_limit_cuts_every_search_but_the_pagers_paged_ones(tmp_path: Path) -> None:
    need_slapd()
    with Slapd(tmp_path, size_limit=5) as server:
        server.add_user("many", "many-pass", groups=())
        server.add_groups([f"many-{i:02d}" for i in range(12)], ["many"])
        query = f"(member={server.user_dn('many')})"
        groups = f"ou=groups,{server.base_dn}"

        def paged(conn: Connection) -> tuple[int, int]:
            cookie, found = None, 0
            while True:
                conn.search(groups, query, attributes=["cn"], paged_size=5, paged_cookie=cookie)
                found += sum(1 for e in cast(Response, conn.response) if e["type"] == "searchResEntry")
                cookie = conn.result.get("controls", {}).get("1.2.840.113556.1.4.319", {}).get("value", {}).get(
                    "cookie")
                if conn.result["result"] != 0 or not cookie:
                    return conn.result["result"], found

        with connect(server.uri, server.service_dn, server.service_password) as conn:
            conn.search(groups, query, attributes=["cn"])
            assert (conn.result["description"], len(cast(Response, conn.response))) == ("sizeLimitExceeded", 5)
            assert paged(conn) == (4, 5)  # paging does not lift the limit for the service account
        with connect(server.uri, server.pager_dn, server.pager_password) as conn:
            conn.search(groups, query, attributes=["cn"])
            assert conn.result["description"] == "sizeLimitExceeded"
            assert paged(conn) == (0, 12)


def test_operation_counters(slapd: Slapd) -> None:
    before = slapd.operations()
    with connect(slapd.uri, slapd.service_dn, slapd.service_password) as conn:
        conn.search(slapd.base_dn, "(uid=alice)")
        conn.search(slapd.base_dn, "(uid=bob)")
    after = slapd.operations()
    # Ours: one bind, two searches; reading the counters: its bind, and the first read's search.
    assert (after["bind"] - before["bind"], after["search"] - before["search"]) == (2, 3)
