"""The Samba AD fixture answers the way the sidecar's AD tests expect (tests/testbed/samba.py)."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import pytest
from ldap3 import NONE, Connection, Server, Tls

from tests.testbed.samba import SambaDC

ALICE_GROUPS = {"developers", "engineering", "division", "netbox-users", "staff"}
REFUSAL = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {}, v1db1"


def attempt(ad: SambaDC, user: str, password: str) -> dict[str, Any]:
    """The result of a simple bind on ldap://; the connection is closed again."""
    conn = Connection(Server(ad.uri, get_info=NONE), user, password)
    try:
        conn.bind()
        return dict(conn.result)
    finally:
        conn.unbind()


def service(ad: SambaDC, uri: str | None = None) -> Connection:
    """The service account's connection: binds on `with`, raises on failures."""
    server = Server(uri or ad.uri, get_info=NONE)
    return Connection(server, ad.service_dn, ad.service_password, raise_exceptions=True)


@pytest.mark.parametrize("filter_", ["(sAMAccountName=alice)", "(userPrincipalName=alice@example.test)"])
def test_service_account_finds_alice(ad: SambaDC, filter_: str) -> None:
    with service(ad) as conn:
        conn.search(ad.base_dn, filter_, attributes=["givenName", "sn", "mail", "memberOf"])
        [entry] = conn.entries
    assert entry.entry_dn == ad.user_dn("alice") == "CN=Alice Liddell,CN=Users,DC=example,DC=test"
    assert [entry.givenName.value, entry.sn.value, entry.mail.value] == [
        "Alice",
        "Liddell",
        "alice@example.test",
    ]
    assert sorted(entry.memberOf.values) == [ad.group_dn("developers"), ad.group_dn("staff")]


@pytest.mark.parametrize("login", ["alice@example.test", "EXAMPLE\\alice", "dn"])
def test_alice_binds(ad: SambaDC, login: str) -> None:
    user = ad.user_dn("alice") if login == "dn" else login
    assert attempt(ad, user, ad.users["alice"])["result"] == 0


def test_bare_sam_account_name_does_not_bind(ad: SambaDC) -> None:
    assert attempt(ad, "alice", ad.users["alice"])["message"] == REFUSAL.format("52e")


def test_wrong_password_is_52e(ad: SambaDC) -> None:
    result = attempt(ad, "bob@example.test", "not the password")
    assert (result["result"], result["message"]) == (49, REFUSAL.format("52e"))


@pytest.mark.parametrize(
    ("user", "code"),
    [("disabled-user", "533"), ("expired-user", "701"), ("mustchange-user", "773"), ("locked-user", "775")],
)
def test_refusal_sub_codes(ad: SambaDC, user: str, code: str) -> None:
    assert ad.refusals[user] == code
    result = attempt(ad, f"{user}@example.test", ad.users[user])
    assert (result["result"], result["message"]) == (49, REFUSAL.format(code))


def test_bad_passwords_do_not_lock_anyone_out(ad: SambaDC) -> None:
    for _ in range(5):
        assert attempt(ad, "bob@example.test", "wrong")["result"] == 49
    assert attempt(ad, "bob@example.test", ad.users["bob"])["result"] == 0


def test_transitive_groups_of_alice(ad: SambaDC) -> None:
    with service(ad) as conn:
        conn.search(ad.base_dn, f"(member:1.2.840.113556.1.4.1941:={ad.user_dn('alice')})", attributes=["cn"])
        assert {entry.cn.value for entry in conn.entries} == ALICE_GROUPS


def test_global_catalog_answers(ad: SambaDC) -> None:
    with service(ad, ad.gc_uri) as conn:
        conn.search(ad.base_dn, "(sAMAccountName=bob)", attributes=["userPrincipalName"])
        [entry] = conn.entries
    assert entry.userPrincipalName.value == "bob@example.test"


def test_ca_file_verifies_ldaps_with_hostname_checks(ad: SambaDC) -> None:
    context = ssl.create_default_context(cafile=str(ad.ca_file))
    with socket.create_connection((ad.host, ad.relay_ports[636]), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=ad.host) as tls:
            assert tls.version() is not None


# ldap3 checks the certificate's name with ssl.match_hostname, deprecated before Python 3.12.
@pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
def test_ldap3_binds_over_verified_ldaps(ad: SambaDC) -> None:
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(ad.ca_file))
    conn = Connection(Server(ad.ldaps_uri, tls=tls, get_info=NONE), "bob@example.test", ad.users["bob"])
    with conn:
        assert conn.bound
