"""The group types on their own: what each asks the directory, through a fake search.

tests/test_ldap.py and tests/test_active_directory.py prove the same types against real servers.
"""

from __future__ import annotations

import logging
import re
import typing
from collections.abc import Mapping
from typing import Any

import pytest

from sidecar import config as config_module
from sidecar.config import LdapConfig, Search
from sidecar.errors import AccessDenied, DirectoryUnavailable
from sidecar.groups import (
    AD_CAPABILITY,
    OR_BATCH,
    TYPES,
    ActiveDirectory,
    Group,
    GroupOfNames,
    GroupOfUniqueNames,
    GroupSearch,
    GroupType,
    MemberDN,
    MemberOf,
    NestedGroupOfNames,
    NestedMemberDN,
    NoGroups,
    PosixGroup,
    UserEntry,
    group_type_for,
)

ALICE = "uid=alice,ou=people,dc=example,dc=com"
GROUPS = "ou=groups,dc=example,dc=com"


def dn(cn: str) -> str:
    return f"cn={cn},{GROUPS}"


class FakeSearch:
    """A GroupSearch that records every clause and answers ``(member=DN)`` terms from a map."""

    def __init__(self, members: Mapping[str, list[str]] | None = None, answer: tuple[Group, ...] = ()) -> None:
        self.members = members or {}  # member DN -> DNs of the groups listing it
        self.answer = answer
        self.clauses: list[str] = []

    def groups(self, clause: str) -> tuple[Group, ...]:
        self.clauses.append(clause)
        if not self.members:
            return self.answer
        asked = re.findall(r"\(member=([^)]*)\)", clause)
        found = {g: None for d in asked for g in self.members.get(d, [])}
        return tuple(Group(g, g.split(",")[0][3:]) for g in found)


def config(group_type: str | None, **settings: Any) -> LdapConfig:
    search = () if group_type in ("member_of", None) else (Search(GROUPS),)
    member_attr = "member" if group_type in ("member_dn", "nested_member_dn") else None
    fields: dict[str, Any] = {"server_uri": ("ldap://127.0.0.1",), "group_type": group_type,
                              "group_search": search, "member_attr": member_attr, **settings}
    return LdapConfig(**fields)


def names_the_configuration_accepts() -> set[str]:
    try:
        hint = typing.get_type_hints(LdapConfig)["group_type"]
    except NameError:
        hint = None
    literal = {name for arg in typing.get_args(hint) for name in typing.get_args(arg) if isinstance(name, str)}
    return literal or set(getattr(config_module, "GROUP_TYPES", ()))


def user(dn: str = ALICE, login: str = "alice", **attributes: Any) -> UserEntry:
    return UserEntry(dn, login, {k.lower(): v for k, v in attributes.items()})


# -- one type per name, built once from the configuration ------------------------------------------

def test_every_name_the_configuration_accepts_has_a_type_and_no_other() -> None:
    assert set(TYPES) == names_the_configuration_accepts()
    assert all(TYPES[name].name == name for name in TYPES)


@pytest.mark.parametrize("name", sorted(TYPES))
def test_each_name_builds_its_type(name: str) -> None:
    built = group_type_for(config(name))
    assert type(built) is TYPES[name]
    assert isinstance(built, GroupType)


def test_no_group_type_is_no_groups_and_no_search() -> None:
    built = group_type_for(config(None))
    search = FakeSearch()
    assert isinstance(built, NoGroups)
    assert built.user_groups(user(), search) == () and search.clauses == []
    assert built.user_attributes == () and built.requires is None


def test_the_settings_a_type_needs_come_from_the_configuration() -> None:
    nested = group_type_for(config("nested_group_of_names", max_nesting=3))
    assert isinstance(nested, NestedMemberDN) and nested.max_nesting == 3
    member_of = group_type_for(config("member_of", group_search=(Search("OU=Groups, DC=Example,DC=com"),)))
    assert isinstance(member_of, MemberOf) and member_of.bases == (GROUPS.lower(),)
    without_base = group_type_for(config("member_of"))
    assert isinstance(without_base, MemberOf) and without_base.bases == ()
    custom = group_type_for(config("nested_member_dn", member_attr="roleOccupant", max_nesting=4))
    assert isinstance(custom, NestedMemberDN) and (custom.member_attr, custom.max_nesting) == ("roleOccupant", 4)
    assert custom.clause("cn=x") == "(roleOccupant=cn=x)"


def test_the_attributes_each_type_reads_on_the_user_entry() -> None:
    attributes = {name: kind.user_attributes for name, kind in TYPES.items()}
    assert attributes == {
        "group_of_names": (),
        "nested_group_of_names": (),
        "group_of_unique_names": (),
        "nested_group_of_unique_names": (),
        "organizational_role": (),
        "nested_organizational_role": (),
        "member_dn": (),
        "nested_member_dn": (),
        "posix_group": ("uid", "gidNumber"),
        "member_of": ("memberOf",),
        "active_directory": (),
    }


def test_repr_names_the_type_and_its_member_attribute() -> None:
    assert repr(GroupOfUniqueNames()) == "<GroupOfUniqueNames: uniqueMember>"
    assert repr(PosixGroup()) == "<PosixGroup>"


# -- member DN types: the filter clause each sends ---------------------------------------------------

@pytest.mark.parametrize(("kind", "clause"), [
    (GroupOfNames(), f"(member={ALICE})"),
    (GroupOfUniqueNames(), f"(uniqueMember={ALICE})"),
    (ActiveDirectory(), f"(member:1.2.840.113556.1.4.1941:={ALICE})"),
    (MemberDN("roleOccupant"), f"(roleOccupant={ALICE})"),
])
def test_a_member_dn_type_asks_for_the_groups_listing_the_user(kind: MemberDN, clause: str) -> None:
    search = FakeSearch(answer=(Group(dn("staff"), "staff"),))
    assert kind.user_groups(user(), search) == (Group(dn("staff"), "staff"),)
    assert search.clauses == [clause]


def test_a_dn_is_escaped_in_the_filter() -> None:
    search = FakeSearch()
    GroupOfNames().user_groups(user(r"uid=a*b(c)\,d,ou=people"), search)
    assert search.clauses == [r"(member=uid=a\2ab\28c\29\5c,d,ou=people)"]


# -- nested groups: walked level by level, bounded -----------------------------------------------------

CHAIN = {ALICE: [dn("level1")], dn("level1"): [dn("level2")], dn("level2"): [dn("level3")]}


def test_nested_groups_are_walked_up_every_level() -> None:
    search = FakeSearch(CHAIN)
    groups = NestedGroupOfNames().user_groups(user(), search)
    assert [g.name for g in groups] == ["level1", "level2", "level3"]
    assert search.clauses == [f"(|(member={d}))" for d in (ALICE, dn("level1"), dn("level2"), dn("level3"))]


def test_a_cycle_ends_and_no_dn_is_asked_for_twice() -> None:
    cycle = {**CHAIN, dn("level3"): [dn("level1"), "CN=Level2, " + GROUPS.upper()], dn("level1"): [dn("level2")]}
    search = FakeSearch(cycle)
    groups = NestedGroupOfNames().user_groups(user(), search)
    assert [g.name for g in groups] == ["level1", "level2", "level3"]
    asked = [d for clause in search.clauses for d in re.findall(r"\(member=([^)]*)\)", clause)]
    assert len(asked) == len(set(asked)) == 4


def test_nesting_exactly_max_nesting_deep_is_answered_one_deeper_is_unavailable() -> None:
    assert len(NestedGroupOfNames(max_nesting=3).user_groups(user(), FakeSearch(CHAIN))) == 3
    with pytest.raises(DirectoryUnavailable, match="nest deeper than ldap.max_nesting=2"):
        NestedGroupOfNames(max_nesting=2).user_groups(user(), FakeSearch(CHAIN))


def test_a_wide_level_is_asked_in_batches() -> None:
    wide = {ALICE: [dn(f"g{i}") for i in range(OR_BATCH * 2 + 1)]}
    search = FakeSearch(wide)
    assert len(NestedGroupOfNames().user_groups(user(), search)) == OR_BATCH * 2 + 1
    assert [clause.count("(member=") for clause in search.clauses] == [1, OR_BATCH, OR_BATCH, 1]


def test_an_incomplete_answer_from_the_search_is_never_a_shorter_list() -> None:
    class Cut(FakeSearch):
        def groups(self, clause: str) -> tuple[Group, ...]:
            if "level1" in clause:
                raise DirectoryUnavailable("incomplete answer: sizeLimitExceeded")
            return super().groups(clause)

    with pytest.raises(DirectoryUnavailable, match="incomplete answer"):
        NestedGroupOfNames().user_groups(user(), Cut(CHAIN))


# -- posixGroup ----------------------------------------------------------------------------------------

def test_posix_group_by_member_uid_and_primary_gid() -> None:
    search = FakeSearch()
    PosixGroup().user_groups(user(uid="alice", gidNumber="5000"), search)
    assert search.clauses == ["(|(memberUid=alice)(gidNumber=5000))"]
    PosixGroup().user_groups(user(uid=["Alice", "alice-old"], login="ALICE"), search)
    assert search.clauses[-1] == "(|(memberUid=Alice))"


@pytest.mark.parametrize("attributes", [
    {"uid": ["alice", "ALICE"]},    # two values the login matches: which one?
    {"uid": ["bob", "carol"]},      # none of several
    {"uid": "alice\x01"},           # not clean text
])
def test_posix_group_without_one_clean_uid_of_the_login_is_refused(attributes: dict[str, Any]) -> None:
    search = FakeSearch()
    with pytest.raises(AccessDenied, match="uid"):
        PosixGroup().user_groups(user(**attributes), search)
    assert search.clauses == []


def test_posix_group_with_an_unclean_gid_is_refused() -> None:
    with pytest.raises(AccessDenied, match="gidNumber"):
        PosixGroup().user_groups(user(uid="alice", gidNumber="50\x0000"), FakeSearch())


# -- memberOf ------------------------------------------------------------------------------------------

def test_member_of_reads_the_entry_and_searches_nothing() -> None:
    search = FakeSearch()
    entry = user(memberOf=[dn("staff"), "CN=Ops,OU=Groups,DC=Example,DC=com", "cn=other,ou=elsewhere,dc=x"])
    assert MemberOf().user_groups(entry, search) == (
        Group(dn("staff"), "staff"),
        Group("CN=Ops,OU=Groups,DC=Example,DC=com", "Ops"),
        Group("cn=other,ou=elsewhere,dc=x", "other"),
    )
    assert [g.name for g in MemberOf(GROUPS).user_groups(entry, search)] == ["staff", "Ops"]
    assert search.clauses == []


def test_member_of_in_ranges_is_an_incomplete_answer() -> None:
    with pytest.raises(DirectoryUnavailable, match="ranges"):
        MemberOf().user_groups(UserEntry(ALICE, "alice", {"memberof;range=0-1499": [dn("staff")]}), FakeSearch())


def test_member_of_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(AccessDenied, match="not UTF-8"):
        MemberOf().user_groups(user(memberOf=[b"cn=\xff,ou=groups"]), FakeSearch())


# -- names and what a server must announce -------------------------------------------------------------

def test_a_name_that_cannot_be_published_is_empty_and_the_dn_kept(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sidecar.ldap"):
        assert Group.named(dn("st\x01aff"), "st\x01aff") == Group(dn("st\x01aff"), "")
        assert Group.named(dn("x"), b"\xff") == Group(dn("x"), "")
    assert Group.named(dn("staff"), b"staff") == Group(dn("staff"), "staff")
    assert sum("is not published" in r.getMessage() for r in caplog.records) == 2


def test_only_active_directory_requires_a_capability_of_the_server() -> None:
    assert {name for name, kind in TYPES.items() if kind.requires is not None} == {"active_directory"}
    kind = ActiveDirectory()
    assert kind.refusal("ldap://dc", {AD_CAPABILITY, "1.2.3"}) is None
    refusal = kind.refusal("ldap://slapd", {"1.2.3"})
    assert refusal == (f"ldap.group_type is active_directory, but ldap://slapd is not Active Directory "
                       f"(its rootDSE lacks the capability {AD_CAPABILITY}), so it would answer no groups at all")
    assert GroupOfNames().refusal("ldap://slapd", set()) is None


# -- a new type is a small class -------------------------------------------------------------------------

def test_a_new_type_is_a_small_class() -> None:
    class NestedOrganizationalRole(NestedMemberDN):
        name = "nested_organizational_role"
        member_attr = "roleOccupant"

    search = FakeSearch()
    NestedOrganizationalRole.from_config(config("nested_group_of_names", max_nesting=1)).user_groups(user(), search)
    assert search.clauses == [f"(|(roleOccupant={ALICE}))"]


def test_the_fake_is_a_group_search() -> None:
    search: GroupSearch = FakeSearch()  # mypy checks the protocol; this keeps the fake honest
    assert search.groups("(cn=x)") == ()
