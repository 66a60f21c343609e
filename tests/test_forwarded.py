"""The original request and the client address behind an auth subrequest."""

from __future__ import annotations

import ipaddress
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from sidecar.forwarded import ClientAddress, original, original_url

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


def test_forward_auth_reads_only_x_forwarded() -> None:
    spoofed = request("127.0.0.1", X_Original_URL="https://app.test/public", X_Original_Method="GET",
                      X_Forwarded_Proto="https", X_Forwarded_Host="app.test", X_Forwarded_Uri="/admin/x?a=1",
                      X_Forwarded_Method="POST")
    seen = original(spoofed, forward_auth=True)  # type: ignore[arg-type]
    assert (seen.method, seen.host, seen.path) == ("POST", "app.test", "/admin/x")
    assert original_url(spoofed, forward_auth=True) == "https://app.test/admin/x?a=1"  # type: ignore[arg-type]
    assert original(spoofed).path == "/public"  # auth_request mode: nginx sets X-Original-URL itself
