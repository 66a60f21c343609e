"""What a directory user may do: require/deny groups, flags, which groups are published.

Compiled once from ``ldap:`` at start-up; :meth:`GroupPolicy.identity` turns a
:class:`~sidecar.ldap.DirectoryUser` into an :class:`~sidecar.identity.Identity` or refuses it.
"""

from __future__ import annotations

from sidecar.config import STANDARD_ATTRS, LdapConfig
from sidecar.entries import normalize_dn
from sidecar.errors import AccessDenied
from sidecar.identity import Identity, fold
from sidecar.ldap import DirectoryUser


def _dns(dns: tuple[str, ...]) -> frozenset[str]:
    return frozenset(normalize_dn(dn) for dn in dns)


class GroupPolicy:
    def __init__(self, config: LdapConfig) -> None:
        self._require = _dns(config.require_group)
        self._deny = _dns(config.deny_group)
        self._flags = {flag: _dns(dns) for flag, dns in config.user_flags_by_group.items()}
        mirror = config.mirror_groups
        self._mirror_all = mirror is True
        self._mirror = frozenset(fold(g) for g in mirror) if isinstance(mirror, tuple) else frozenset()
        self._rule_groups = config.find_group_perms

    def identity(self, user: DirectoryUser) -> Identity:
        member_of = {normalize_dn(g.dn) for g in user.groups}
        if self._require and not member_of & self._require:
            raise AccessDenied(f"{user.username} is in none of ldap.require_group")
        if denied := member_of & self._deny:
            raise AccessDenied(f"{user.username} is in ldap.deny_group {sorted(denied)[0]}")
        flags = {flag: bool(member_of & dns) for flag, dns in self._flags.items()}
        if not flags.get("is_active", True):
            raise AccessDenied(f"{user.username} is not in the is_active group")
        names = [g.name for g in user.groups if g.name]  # "": a name that cannot be published as is
        published = names if self._mirror_all else [n for n in names if fold(n) in self._mirror]
        attrs = user.attributes
        return Identity(
            username=user.username,
            first_name=attrs.get("first_name", ""),
            last_name=attrs.get("last_name", ""),
            email=attrs.get("email", ""),
            groups=tuple(sorted(set(published), key=str.casefold)),
            rule_groups=frozenset(fold(n) for n in names) if self._rule_groups else frozenset(),
            is_active=True,
            is_staff=flags.get("is_staff", False),
            is_superuser=flags.get("is_superuser", False),
            extra={k: v for k, v in attrs.items() if k not in STANDARD_ATTRS},
            source="ldap",
        )
