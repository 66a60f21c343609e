"""The original request and the client address behind an auth subrequest."""

from __future__ import annotations

import ipaddress
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from sidecar.canonical import parse_host, parse_path
from sidecar.errors import MalformedRequest
from sidecar.forwarded import ClientAddress, original

TRUSTED = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


def request(peer: str, **headers: str) -> object:
    transport = mock.Mock()
    transport.get_extra_info.return_value = (peer, 40000)
    return make_mocked_request("GET", "/auth", headers={k.replace("_", "-"): v for k, v in headers.items()},
                               transport=transport)


@pytest.mark.parametrize(("peer", "headers", "client"), [
    ("192.0.2.7", {"X_Forwarded_For": "203.0.113.9", "X_Real_IP": "203.0.113.9"}, "192.0.2.7"),  # untrusted peer
    ("127.0.0.1", {"X_Forwarded_For": "203.0.113.9"}, "203.0.113.9"),
    ("127.0.0.1", {"X_Forwarded_For": "198.51.100.1, 203.0.113.9, 10.1.1.1"}, "203.0.113.9"),
    # Every hop trusted: the first of them, never an X-Real-IP a proxy may have passed through.
    ("127.0.0.1", {"X_Forwarded_For": "10.2.2.2", "X_Real_IP": "198.51.100.66"}, "10.2.2.2"),
    ("127.0.0.1", {"X_Real_IP": "203.0.113.9"}, "203.0.113.9"),  # no X-Forwarded-For at all
    ("127.0.0.1", {}, "127.0.0.1"),
])
def test_client_address(peer: str, headers: dict[str, str], client: str) -> None:
    assert ClientAddress(TRUSTED)(request(peer, **headers)) == client  # type: ignore[arg-type]


def test_each_chain_is_read_as_itself_however_often_and_however_long() -> None:
    """A chain is walked once and then remembered: the answer for one chain is never another's,
    a chain too long to remember is walked every time, and several X-Forwarded-For fields count."""
    find = ClientAddress(TRUSTED)
    for _ in range(3):
        for i in range(1, 40):
            assert find(request("127.0.0.1", X_Forwarded_For=f"203.0.113.{i}, 10.0.0.{i}")) == f"203.0.113.{i}"  # type: ignore[arg-type]
            assert find(request("192.0.2.1", X_Forwarded_For=f"203.0.113.{i}")) == "192.0.2.1"  # type: ignore[arg-type]
    long = ", ".join(f"198.51.100.{i % 250}" for i in range(200)) + ", 203.0.113.77, 10.9.9.9"
    assert len(long) > 512
    assert find(request("127.0.0.1", X_Forwarded_For=long)) == "203.0.113.77"  # type: ignore[arg-type]
    two = make_mocked_request("GET", "/auth", headers=[("X-Forwarded-For", "198.51.100.1"),
                                                       ("X-Forwarded-For", "203.0.113.5, 10.0.0.1")],
                              transport=mock.Mock(get_extra_info=mock.Mock(return_value=("127.0.0.1", 1))))
    assert find(two) == "203.0.113.5"


def test_forward_auth_reads_only_x_forwarded() -> None:
    spoofed = request("127.0.0.1", X_Original_URL="https://app.test/public", X_Original_Method="GET",
                      X_Forwarded_Proto="https", X_Forwarded_Host="app.test", X_Forwarded_Uri="/admin/x?a=1",
                      X_Forwarded_Method="POST")
    seen = original(spoofed, forward_auth=True)  # type: ignore[arg-type]
    assert (seen.method, seen.host, seen.path) == ("POST", "app.test", "/admin/x")
    assert seen.url == "https://app.test/admin/x?a=1"
    # auth_request mode: the separate host and target win over a URL a client may have written.
    assert original(spoofed).path == "/admin/x"  # type: ignore[arg-type]


def test_x_original_url_is_split_at_the_first_slash() -> None:
    seen = original(request("127.0.0.1", X_Original_URL="https://App.Test:8443/admin/x?a=1"))  # type: ignore[arg-type]
    assert (seen.host, seen.authority, seen.path, seen.target) == ("app.test", "app.test:8443", "/admin/x",
                                                                   "/admin/x?a=1")
    for url in ["https://app.test?/admin", "https://app.test#/admin", "https://x@app.test/admin", "app.test/admin",
                "ftp://app.test/admin", "https://app.test/admin/../x"]:
        with pytest.raises(MalformedRequest):
            original(request("127.0.0.1", X_Original_URL=url))  # type: ignore[arg-type]


@pytest.mark.parametrize(("host", "seen"), [
    ("app.test", ("app.test", None)),
    ("ADMIN.App.Test", ("admin.app.test", None)),
    ("admin.app.test.", ("admin.app.test", None)),  # one trailing dot: the same name for DNS and proxies
    ("admin.app.test.:8443", ("admin.app.test", 8443)),
    ("admin.app.test:80", ("admin.app.test", 80)),
    ("[::1]:8080", ("[::1]", 8080)),
    ("[2001:DB8::1]", ("[2001:db8::1]", None)),
    ("my_host", ("my_host", None)),
])
def test_hosts_are_read_canonically(host: str, seen: tuple[str, int | None]) -> None:
    assert parse_host(host) == seen


@pytest.mark.parametrize("host", [
    "", "app.test?", "app.test#", "app.test?/admin", "x@admin.app.test", "admin.app.test:80:80", "admin.app.test..",
    ".app.test", "app..test", "app.test/", "app.test\\", "app test", " app.test", "app.test:", "app.test:0",
    "app.test:65536", "app.test:+80", "[app.test]", "[::1", "[::g]", "app.test%2e", "аpp.test",  # Cyrillic а
    "app.test\x00", "app.test\r\nX: y", "xn--80ak6aa92e.com:99999",
])
def test_ambiguous_hosts_are_refused(host: str) -> None:
    with pytest.raises(MalformedRequest):
        parse_host(host)


@pytest.mark.parametrize(("target", "path"), [
    ("/", "/"),
    ("/admin/x?a=1&b=/../..", "/admin/x"),  # the query is not judged
    ("/%61dmin", "/admin"),
    ("//admin//x/", "/admin/x"),
    ("/caf%C3%A9", "/café"),
    ("/a.b/.c/..d/...", "/a.b/.c/..d/..."),
])
def test_paths_are_decoded_for_rules(target: str, path: str) -> None:
    assert parse_path(target) == path


@pytest.mark.parametrize("target", [
    "/admin/../x", "/admin/./x", "/admin/..", "/admin/.", "/..", "/admin/%2e%2e/x", "/admin/%2E%2E/x", "/admin/.%2e/x",
    "/admin/%2e/x", "/x/..%2fadmin", "/x%2F..%2Fadmin", "/admin%5c..%5cx", "/admin\\..\\x", "/admin\\x", "/x%00",
    "/x%0a", "/x%7f", "/x%c2%85", "/x%ff",
    "/x%E2%80%A8200%20allow", "/x%e2%80%ae", "/x%E2%81%A6",  # a line separator, direction marks
    "x", "", "*", "http://app.test/admin", "/x#frag", "/x y", "/x\ty", "/café",
])
def test_ambiguous_paths_are_refused(target: str) -> None:
    with pytest.raises(MalformedRequest):
        parse_path(target)


def test_rules_meet_names_only_in_their_own_spelling() -> None:
    from sidecar.access import AccessRules
    from sidecar.config import AccessConfig, AccessRule
    from sidecar.identity import Identity, fold

    rules = AccessRules(AccessConfig(rules=(AccessRule(path="/admin", users=frozenset({fold("straße")}),
                                                       groups=frozenset({fold("Staff")})),
                                            AccessRule(path="/admin", allow=False))))
    admin = original(request("127.0.0.1", X_Forwarded_Host="app.test", X_Forwarded_Uri="/admin"))  # type: ignore[arg-type]
    assert rules.allows(Identity("STAFF-member", rule_groups=frozenset({fold("STAFF")}), source="ldap"), admin)
    assert rules.allows(Identity("straße", source="ldap"), admin)
    for name, groups in [("strasse", set()), ("STRASSE", set()), ("x", {fold("ſtaff")}), ("y", {fold("staﬀ")})]:
        assert not rules.allows(Identity(name, rule_groups=frozenset(groups), source="ldap"), admin), name
