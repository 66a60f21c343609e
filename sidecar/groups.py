"""Group types: how a user's groups are found, one class per kind of group (the model is
django-auth-ldap's ``LDAPGroupType``).

A group type knows the attributes it needs on the user's entry (``user_attributes``), what a
server must announce to answer it at all (``requires``), and how to resolve a user's groups
(:meth:`GroupType.user_groups`) through a :class:`GroupSearch`. It holds no connection: the
directory hands it a search over the connection at hand, in its worker thread. :func:`group_type_for`
builds the configured one once, when the Directory is made.

A group list is complete or it is not given: the search refuses a partial answer, and a nested walk
deeper than ``max_nesting`` is DirectoryUnavailable here. A new type is a small class (a name and
the attribute that lists members, or its own ``user_groups``) and a line in :data:`TYPES`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, Self

from ldap3.utils.conv import escape_filter_chars

from sidecar.config import LdapConfig
from sidecar.entries import first, matching_value, normalize_dn, rdn_value, text, values, within
from sidecar.errors import AccessDenied, DirectoryUnavailable
from sidecar.trace import current

log = logging.getLogger("sidecar.ldap.groups")

AD_MATCHING_RULE_IN_CHAIN = "1.2.840.113556.1.4.1941"
AD_CAPABILITY = "1.2.840.113556.1.4.800"  # LDAP_CAP_ACTIVE_DIRECTORY_OID, in the rootDSE
OR_BATCH = 50  # member DNs per (|(...)(...)) filter when walking nested groups


@dataclass(frozen=True, slots=True)
class Group:
    """A group the user is in. ``name`` is empty when the directory's name for it cannot be
    published as written (a control character, not UTF-8): the DN still decides policy."""

    dn: str
    name: str

    @classmethod
    def named(cls, dn: str, name: Any) -> Group:
        """The group with the directory's name for it, as published (see the class)."""
        clean = text(name)
        if clean is None:
            log.info("group %s is not published: its name %r holds a control character or bytes "
                     "that are not UTF-8", dn, name)
            return cls(dn, "")
        return cls(dn, clean)


@dataclass(frozen=True, slots=True)
class UserEntry:
    """The user's entry as the directory returned it: what a group type starts from."""

    dn: str
    login: str  # the name as typed
    attributes: Mapping[str, Any]  # names lower-cased, values as ldap3 returned them


class GroupSearch(Protocol):
    """What a group type may ask of the directory."""

    def groups(self, clause: str) -> tuple[Group, ...]:
        """Every group ``ldap.group_search`` finds with this filter clause added (of several searches,
        their union), named by ``ldap.group_name_attr``; DirectoryUnavailable unless every answer is complete."""
        ...


@dataclass(frozen=True, slots=True)
class Capability:
    """An OID a server announces in its rootDSE's ``supportedCapabilities``."""

    oid: str
    server: str  # what a server announcing it is, as the operator calls it


class GroupType(ABC):
    """How one kind of group lists its members, and so how a user's groups are found."""

    name: ClassVar[str]  # its ``ldap.group_type`` in the configuration
    user_attributes: ClassVar[tuple[str, ...]] = ()  # read from the user's entry for it
    # A server that does not announce this would answer no groups at all (a configuration error).
    requires: ClassVar[Capability | None] = None

    @classmethod
    def from_config(cls, config: LdapConfig) -> Self:
        """The type with the settings of ``ldap:`` it needs (a subclass takes its own)."""
        return cls()

    @abstractmethod
    def user_groups(self, user: UserEntry, search: GroupSearch) -> tuple[Group, ...]:
        """Every group the user is in, or an error: never a shorter list."""

    def refusal(self, uri: str, capabilities: Collection[str]) -> str | None:
        """Why the server at ``uri``, announcing these capabilities, cannot answer this type
        (None when it can)."""
        need = self.requires
        if need is None or need.oid in capabilities:
            return None
        return (f"ldap.group_type is {self.name}, but {uri} is not {need.server} (its rootDSE "
                f"lacks the capability {need.oid}), so it would answer no groups at all")

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class NoGroups(GroupType):
    """No ``ldap.group_type``: users are in no groups, and nothing is searched."""

    def user_groups(self, user: UserEntry, search: GroupSearch) -> tuple[Group, ...]:
        return ()


class MemberDN(GroupType):
    """Groups listing their members by DN in ``member_attr``: the user's direct groups."""

    member_attr: str = "member"

    def __init__(self, member_attr: str | None = None) -> None:
        if member_attr is not None:
            self.member_attr = member_attr

    def clause(self, dn: str) -> str:
        """The filter clause for groups that list ``dn`` as a member."""
        return f"({self.member_attr}={escape_filter_chars(dn)})"

    def user_groups(self, user: UserEntry, search: GroupSearch) -> tuple[Group, ...]:
        return search.groups(self.clause(user.dn))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.member_attr}>"


class NestedMemberDN(MemberDN):
    """Groups listing members by DN, groups among them: walked up to ``max_nesting`` levels."""

    def __init__(self, member_attr: str | None = None, max_nesting: int = 16) -> None:
        super().__init__(member_attr)
        self.max_nesting = max_nesting

    @classmethod
    def from_config(cls, config: LdapConfig) -> Self:
        return cls(max_nesting=config.max_nesting)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.member_attr}, max_nesting={self.max_nesting}>"

    def user_groups(self, user: UserEntry, search: GroupSearch) -> tuple[Group, ...]:
        """Up the member links level by level; a DN already seen is never asked for again.
        Groups nested deeper than max_nesting are an incomplete answer: DirectoryUnavailable."""
        found: dict[str, Group] = {}
        seen = {normalize_dn(user.dn)}
        frontier = [user.dn]
        trace = current()
        # Traced (test-login), each DN is asked about alone: then each group found is known to hold it.
        batch_size = OR_BATCH if trace is None else 1
        for depth in range(self.max_nesting + 1):
            parents: list[Group] = []
            for start in range(0, len(frontier), batch_size):
                batch = frontier[start:start + batch_size]
                holding = search.groups("(|" + "".join(self.clause(dn) for dn in batch) + ")")
                if trace is not None:
                    for group in holding:
                        trace.member(batch[0], group.dn)
                parents += holding
            new = {}
            for group in parents:
                key = normalize_dn(group.dn)
                if key not in seen:
                    seen.add(key)
                    new[key] = group
            if not new:
                break
            if depth == self.max_nesting:
                raise DirectoryUnavailable(
                    f"incomplete answer: the groups of {user.dn} nest deeper than "
                    f"ldap.max_nesting={self.max_nesting}; no verdict on a partial group list"
                )
            found.update(new)
            frontier = [group.dn for group in new.values()]
        return tuple(found.values())


class GroupOfNames(MemberDN):
    name = "group_of_names"
    member_attr = "member"


class NestedGroupOfNames(NestedMemberDN):
    name = "nested_group_of_names"
    member_attr = "member"


class GroupOfUniqueNames(MemberDN):
    name = "group_of_unique_names"
    member_attr = "uniqueMember"


class NestedGroupOfUniqueNames(NestedMemberDN):
    name = "nested_group_of_unique_names"
    member_attr = "uniqueMember"


class OrganizationalRole(MemberDN):
    name = "organizational_role"
    member_attr = "roleOccupant"


class NestedOrganizationalRole(NestedMemberDN):
    name = "nested_organizational_role"
    member_attr = "roleOccupant"


class AnyMemberDN(MemberDN):
    """Groups listing member DNs in the configured ``ldap.member_attr`` (django-auth-ldap's MemberDNGroupType)."""

    name = "member_dn"

    @classmethod
    def from_config(cls, config: LdapConfig) -> Self:
        return cls(config.member_attr)


class NestedAnyMemberDN(NestedMemberDN):
    """Nested groups listing member DNs in ``ldap.member_attr`` (NestedMemberDNGroupType)."""

    name = "nested_member_dn"

    @classmethod
    def from_config(cls, config: LdapConfig) -> Self:
        return cls(config.member_attr, max_nesting=config.max_nesting)


class ActiveDirectory(MemberDN):
    """Active Directory's groups, nested to any depth: the server walks them (its in-chain
    matching rule), which only Active Directory does."""

    name = "active_directory"
    member_attr = "member"
    requires = Capability(AD_CAPABILITY, "Active Directory")

    def clause(self, dn: str) -> str:
        return f"({self.member_attr}:{AD_MATCHING_RULE_IN_CHAIN}:={escape_filter_chars(dn)})"


class PosixGroup(GroupType):
    """posixGroup: the user's primary group by ``gidNumber``, the others by ``memberUid``."""

    name = "posix_group"
    user_attributes = ("uid", "gidNumber")

    def user_groups(self, user: UserEntry, search: GroupSearch) -> tuple[Group, ...]:
        uid = matching_value(user.attributes, "uid", user.login)
        if uid is None:
            raise AccessDenied(f"{user.dn}: no single clean uid value matches the login {user.login!r}")
        clauses = [f"(memberUid={escape_filter_chars(uid)})"]
        if gid := first(user.attributes, "gidNumber"):
            clauses.append(f"(gidNumber={escape_filter_chars(gid)})")
        return search.groups("(|" + "".join(clauses) + ")")


class MemberOf(GroupType):
    """The user entry's own ``memberOf`` (direct groups), named by their RDN; those outside
    ``group_search``'s bases, when there are some, left out. Nothing is searched."""

    name = "member_of"
    user_attributes = ("memberOf",)

    def __init__(self, *base_dns: str) -> None:
        self.bases = tuple(normalize_dn(dn) for dn in base_dns if dn)

    @classmethod
    def from_config(cls, config: LdapConfig) -> Self:
        return cls(*(search.base_dn for search in config.group_search))

    def user_groups(self, user: UserEntry, search: GroupSearch) -> tuple[Group, ...]:
        if any(";range=" in key for key in user.attributes):
            # Active Directory hands out long multi-valued attributes in ranges; ldap3 fetches
            # the rest itself, so one left here is a list we did not get whole.
            raise DirectoryUnavailable("incomplete answer: memberOf came back in ranges")
        groups = []
        for value in values(user.attributes, "memberOf"):
            if isinstance(value, bytes):  # not UTF-8: a group we cannot compare with any DN
                raise AccessDenied(f"a memberOf value is not UTF-8: {value!r}")
            dn = str(value)
            if not self.bases or any(within(normalize_dn(dn), base) for base in self.bases):
                groups.append(Group.named(dn, rdn_value(dn)))
        return tuple(groups)


# Every name ``ldap.group_type`` accepts, and its type.
TYPES: Mapping[str, type[GroupType]] = MappingProxyType({
    kind.name: kind
    for kind in (GroupOfNames, NestedGroupOfNames, GroupOfUniqueNames, NestedGroupOfUniqueNames, OrganizationalRole,
                 NestedOrganizationalRole, AnyMemberDN, NestedAnyMemberDN, PosixGroup, MemberOf, ActiveDirectory)
})


def group_type_for(config: LdapConfig) -> GroupType:
    """The configured group type, built once (NoGroups without ``ldap.group_type``)."""
    if config.group_type is None:
        return NoGroups()
    return TYPES[config.group_type].from_config(config)
