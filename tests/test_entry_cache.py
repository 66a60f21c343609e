"""ldap.entry_cache_timeout: a user's entry (DN, attributes, groups) kept, so that a login the verdict
cache does not know costs the bind alone. Against the real slapd; round trips counted by the
auth_sidecar_directory_requests_total metric."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from ldap3.core.exceptions import LDAPNoSuchObjectResult

from sidecar.config import parse_config
from sidecar.errors import ConfigError, InvalidCredentials, UnknownUser
from sidecar.ldap import Directory
from sidecar.metrics import Metrics
from sidecar.trace import Trace, tracing
from tests.conftest import PEOPLE, config_for, ldap_settings
from tests.test_directory_requests import requests, since
from tests.testbed.slapd import Slapd


@pytest.fixture
def directory(slapd: Slapd) -> Iterator[tuple[Directory, Metrics]]:
    metrics = Metrics()
    found = Directory(config_for(slapd, threads=1, entry_cache_timeout=300).ldap, metrics)  # type: ignore[arg-type]
    try:
        yield found, metrics
    finally:
        found.close()


@pytest.fixture
def erin(slapd: Slapd) -> Iterator[str]:
    slapd.add_user("erin-kept", "erin-pass", given_name="Erin", groups=("active", "staff"))
    try:
        yield "erin-kept"
    finally:
        with slapd._admin() as conn:
            for dn in (slapd.user_dn("erin-kept"), f"cn=Erin Moved,{PEOPLE}"):
                with contextlib.suppress(LDAPNoSuchObjectResult):  # where it is not; refint updates the groups
                    conn.delete(dn)


async def test_a_kept_entry_makes_a_login_one_bind(directory: tuple[Directory, Metrics], slapd: Slapd,
                                                   erin: str) -> None:
    found, metrics = directory
    first = await found.check_password(erin, "erin-pass")
    before = requests(metrics, slapd)
    again = await found.check_password(erin, "erin-pass")
    assert since(before, requests(metrics, slapd)) == {"connect": 0, "bind": 1, "search": 0}
    assert again == first and {g.name for g in again.groups} >= {"active", "staff"}


async def test_a_wrong_password_is_refused_and_costs_what_it_did(directory: tuple[Directory, Metrics],
                                                                 slapd: Slapd, erin: str) -> None:
    found, metrics = directory
    await found.check_password(erin, "erin-pass")
    before = requests(metrics, slapd)
    with pytest.raises(InvalidCredentials):
        await found.check_password(erin, "wrong")
    # The bind to the kept DN, then the search that says the entry is still there: the refusal stands.
    assert since(before, requests(metrics, slapd)) == {"connect": 0, "bind": 1, "search": 1}
    before = requests(metrics, slapd)
    await found.check_password(erin, "erin-pass")  # the entry was forgotten: found again
    assert since(before, requests(metrics, slapd)) == {"connect": 0, "bind": 1, "search": 2}


async def test_a_deleted_user_is_refused_at_once(directory: tuple[Directory, Metrics], slapd: Slapd) -> None:
    found, _ = directory
    slapd.add_user("gone-kept", "gone-pass")
    await found.check_password("gone-kept", "gone-pass")
    slapd.delete_user("gone-kept")
    with pytest.raises(InvalidCredentials):
        await found.check_password("gone-kept", "gone-pass")


async def test_a_user_whose_entry_moved_signs_in_on_the_new_dn(directory: tuple[Directory, Metrics],
                                                               slapd: Slapd, erin: str) -> None:
    found, _ = directory
    assert (await found.check_password(erin, "erin-pass")).dn == slapd.user_dn(erin)
    with slapd._admin() as conn:
        assert conn.modify_dn(slapd.user_dn(erin), "cn=Erin Moved", delete_old_dn=False)  # uid stays
    moved = await found.check_password(erin, "erin-pass")
    assert moved.dn == f"cn=Erin Moved,{PEOPLE}" and moved.username == erin


async def test_a_traced_login_takes_every_step_as_it_is_now(directory: tuple[Directory, Metrics],
                                                            slapd: Slapd, erin: str) -> None:
    found, metrics = directory
    await found.check_password(erin, "erin-pass")
    before = requests(metrics, slapd)
    with tracing(Trace(lambda topic, text: None)):
        await found.check_password(erin, "erin-pass")
    assert since(before, requests(metrics, slapd))["search"] == 2


async def test_unknown_names_are_not_kept(directory: tuple[Directory, Metrics], slapd: Slapd) -> None:
    found, metrics = directory
    for _ in range(2):
        before = requests(metrics, slapd)
        with pytest.raises(UnknownUser):
            await found.check_password("nobody-kept", "whatever")
        assert since(before, requests(metrics, slapd))["search"] == 1


@pytest.mark.parametrize("ldap", [
    {"refresh_dn_on_bind": True, "user_dn_template": "%(user)s@example.com"},
    {"user_search": None, "bind_dn": None, "bind_password": None,
     "user_dn_template": f"uid=%(user)s,{PEOPLE}"},
])
def test_where_the_entry_is_read_after_the_bind_it_is_refused(slapd: Slapd, ldap: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"ldap": ldap_settings(slapd, entry_cache_timeout=60, **ldap)})
    assert any(p.startswith("ldap.entry_cache_timeout: needs a service account") for p in refused.value.problems)
