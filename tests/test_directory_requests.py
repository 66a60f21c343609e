"""auth_sidecar_directory_requests_total: each round trip a directory server is asked, counted by
kind, against the real slapd; what the bench's "round trips per login" column reads."""

from __future__ import annotations

import pytest

from sidecar.errors import InvalidCredentials, UnknownUser
from sidecar.ldap import Directory
from sidecar.metrics import Metrics
from tests.conftest import config_for
from tests.testbed.slapd import Slapd

KINDS = ("connect", "bind", "search")


def requests(metrics: Metrics, slapd: Slapd) -> dict[str, float]:
    assert metrics.registry is not None
    return {kind: metrics.registry.get_sample_value("auth_sidecar_directory_requests_total",
                                                    {"server": slapd.uri, "request": kind}) or 0.0
            for kind in KINDS}


def since(before: dict[str, float], now: dict[str, float]) -> dict[str, float]:
    return {kind: now[kind] - before[kind] for kind in KINDS}


async def test_a_login_costs_a_search_a_bind_and_a_group_search_on_kept_connections(slapd: Slapd) -> None:
    metrics = Metrics()
    directory = Directory(config_for(slapd, threads=1).ldap, metrics)  # type: ignore[arg-type]
    try:
        await directory.check_password("alice", "alice-pass")
        first = requests(metrics, slapd)
        await directory.check_password("alice", "alice-pass")
        second = since(first, requests(metrics, slapd))
        with pytest.raises(InvalidCredentials):
            await directory.check_password("alice", "wrong")
        wrong = since(first, requests(metrics, slapd))
        with pytest.raises(UnknownUser):
            await directory.check_password("nobody-at-all", "whatever")
        unknown = since(first, requests(metrics, slapd))
    finally:
        directory.close()
    # The first login opens the service account's connection and the users' one, and binds both.
    assert first == {"connect": 2, "bind": 2, "search": 2}
    # Afterwards both are kept: the user search, the user's bind, the group search.
    assert second == {"connect": 0, "bind": 1, "search": 2}
    # A wrong password and an unknown name cost the same: the search and a bind (no groups).
    assert since(second, wrong) == {"connect": 0, "bind": 1, "search": 1}
    assert since(wrong, unknown) == {"connect": 0, "bind": 1, "search": 1}
