"""What a directory user may do: require/deny groups, flags, which groups are published.

Compiled once from ``ldap:`` at start-up; :meth:`GroupPolicy.identity` turns a
:class:`~sidecar.ldap.DirectoryUser` into an :class:`~sidecar.identity.Identity` or refuses it.
"""

from __future__ import annotations

from sidecar.config import FLAGS, STANDARD_ATTRS, LdapConfig
from sidecar.entries import normalize_dn
from sidecar.errors import AccountRefused
from sidecar.identity import Identity, fold
from sidecar.ldap import DirectoryUser
from sidecar.trace import Trace, current


def _dns(dns: tuple[str, ...]) -> frozenset[str]:
    return frozenset(normalize_dn(dn) for dn in dns)


class GroupPolicy:
    def __init__(self, config: LdapConfig) -> None:
        self._config = config
        self._require = _dns(config.require_group)
        self._deny = _dns(config.deny_group)
        self._flags = {flag: _dns(dns) for flag, dns in config.user_flags_by_group.items()}
        mirror = config.mirror_groups
        self._mirror_all = mirror is True
        self._mirror = frozenset(fold(g) for g in mirror) if isinstance(mirror, tuple) else frozenset()
        self._rule_groups = config.find_group_perms

    def identity(self, user: DirectoryUser) -> Identity:
        member_of = {normalize_dn(g.dn) for g in user.groups}
        if (trace := current()) is not None:
            self._explain(trace, user, member_of)
        if self._require and not member_of & self._require:
            raise AccountRefused(f"{user.username} is in none of ldap.require_group")
        if denied := member_of & self._deny:
            raise AccountRefused(f"{user.username} is in ldap.deny_group {sorted(denied)[0]}")
        flags = {flag: bool(member_of & dns) for flag, dns in self._flags.items()}
        if not flags.get("is_active", True):
            raise AccountRefused(f"{user.username} is not in the is_active group")
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

    def _explain(self, trace: Trace, user: DirectoryUser, member_of: set[str]) -> None:
        """What each rule makes of the user's groups, as identity() is about to decide (test-login)."""
        spelled = {normalize_dn(g.dn): g.dn for g in user.groups}

        def verdict(dns: frozenset[str]) -> str:
            found = sorted(spelled[dn] for dn in member_of & dns)
            return f"member of {', '.join(found)}" if found else "a member of none"

        config = self._config
        trace.step("require", f"ldap.require_group {', '.join(config.require_group)}: {verdict(self._require)}"
                   if self._require else "ldap.require_group: not set")
        trace.step("deny", f"ldap.deny_group {', '.join(config.deny_group)}: {verdict(self._deny)}"
                   if self._deny else "ldap.deny_group: not set")
        lines = []
        for flag in FLAGS:
            if flag in self._flags:
                dns = ", ".join(config.user_flags_by_group[flag])
                yes = "yes" if member_of & self._flags[flag] else "no"
                lines.append(f"{flag}: {yes} (ldap.user_flags_by_group.{flag} {dns}: {verdict(self._flags[flag])})")
            else:
                lines.append(f"{flag}: yes (not in ldap.user_flags_by_group: every user found is active)"
                             if flag == "is_active" else f"{flag}: no (not in ldap.user_flags_by_group)")
        trace.step("flags", "\n".join(lines))
        mirror = config.mirror_groups
        trace.step("published", "ldap.mirror_groups: true, every group" if mirror is True
                   else "ldap.mirror_groups: false, none" if mirror is False
                   else f"ldap.mirror_groups: only {', '.join(mirror)}")
