"""What a user may do by their groups: require/deny groups, flags, which groups are published.

Every source has the same rules (``require_group``, ``deny_group``, ``user_flags_by_group``, each a
list of group queries: :mod:`sidecar.queries`), compiled once at start-up:

- :class:`GroupPolicy` for a directory (``ldap:``): groups are DNs; it turns a
  :class:`~sidecar.ldap.DirectoryUser` into an :class:`~sidecar.identity.Identity` or refuses it;
- :class:`NamePolicy` for the users file and single sign-on: groups are the names the file or the
  provider's groups claim give; it admits an identity or refuses it, and with ``groups_from_directory``
  (django-auth-ldap's AUTHORIZE_ALL_USERS) the identity takes its groups and flags from the directory
  by its name, under the directory's own GroupPolicy. A directory that cannot answer is a 503, never
  "no groups"; a name the directory does not know has no directory groups or flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from sidecar.config import FLAGS, STANDARD_ATTRS, GroupRules, LdapConfig
from sidecar.entries import normalize_dn
from sidecar.errors import AccountRefused
from sidecar.identity import Identity, fold
from sidecar.ldap import DirectoryUser
from sidecar.queries import Rule, shown
from sidecar.trace import Trace, current

# The identity the directories give a name (sidecar.sources.directory_lookup): of a name none of them
# knows, one with no groups, refused if the directory's rules require a group.
DirectoryLookup = Callable[[str], Awaitable[Identity]]


class GroupPolicy:
    def __init__(self, config: LdapConfig) -> None:
        self._config = config
        self._require = Rule(config.require_group, normalize_dn)
        self._deny = Rule(config.deny_group, normalize_dn)
        self._flags = {flag: Rule(queries, normalize_dn) for flag, queries in config.user_flags_by_group.items()}
        mirror = config.mirror_groups
        self._mirror_all = mirror is True
        self._mirror = frozenset(fold(g) for g in mirror) if isinstance(mirror, tuple) else frozenset()
        self._mirror_except = frozenset(fold(g) for g in config.mirror_groups_except)
        self._rule_groups = config.find_group_perms
        self._lower = config.username_case == "lower"
        self._source = config.source_id

    def identity(self, user: DirectoryUser) -> Identity:
        member_of = {normalize_dn(g.dn) for g in user.groups}
        if (trace := current()) is not None:
            self._explain(trace, user, member_of)
        if self._require and not self._require.holds(member_of):
            raise AccountRefused(f"{user.username} is in none of ldap.require_group")
        if self._deny.holds(member_of):
            raise AccountRefused(f"{user.username} is in ldap.deny_group "
                                 f"{', '.join(sorted(self._deny.groups & member_of)) or '(by its query)'}")
        flags = {flag: rule.holds(member_of) for flag, rule in self._flags.items()}
        if not flags.get("is_active", True):
            raise AccountRefused(f"{user.username} is not in the is_active group")
        names = [g.name for g in user.groups if g.name]  # "": a name that cannot be published as is
        if self._mirror_except:
            published = [n for n in names if fold(n) not in self._mirror_except]
        else:
            published = names if self._mirror_all else [n for n in names if fold(n) in self._mirror]
        attrs = user.attributes
        return Identity(
            # As django-auth-ldap creates users: lower case (Python's str.lower), unless preserve.
            username=user.username.lower() if self._lower else user.username,
            first_name=attrs.get("first_name", ""),
            last_name=attrs.get("last_name", ""),
            email=attrs.get("email", ""),
            groups=tuple(sorted(set(published), key=str.casefold)),
            rule_groups=frozenset(fold(n) for n in names) if self._rule_groups else frozenset(),
            is_active=True,
            is_staff=flags.get("is_staff", False),
            is_superuser=flags.get("is_superuser", False),
            extra={k: v for k, v in attrs.items() if k not in STANDARD_ATTRS},
            source=self._source,
        )

    def _explain(self, trace: Trace, user: DirectoryUser, member_of: set[str]) -> None:
        """What each rule makes of the user's groups, as identity() is about to decide (test-login)."""
        spelled = {normalize_dn(g.dn): g.dn for g in user.groups}

        def verdict(rule: Rule) -> str:
            found = sorted(spelled[dn] for dn in member_of & rule.groups)
            said = f"member of {', '.join(found)}" if found else "a member of none"
            plain = all(isinstance(q, str) for q in rule.queries)
            return said if plain else f"{said}: the query {'holds' if rule.holds(member_of) else 'does not hold'}"

        config = self._config
        trace.step("require", f"ldap.require_group {', '.join(map(shown, config.require_group))}: "
                   f"{verdict(self._require)}" if self._require else "ldap.require_group: not set")
        trace.step("deny", f"ldap.deny_group {', '.join(map(shown, config.deny_group))}: {verdict(self._deny)}"
                   if self._deny else "ldap.deny_group: not set")
        lines = []
        for flag in FLAGS:
            if flag in self._flags:
                dns = ", ".join(map(shown, config.user_flags_by_group[flag]))
                yes = "yes" if self._flags[flag].holds(member_of) else "no"
                lines.append(f"{flag}: {yes} (ldap.user_flags_by_group.{flag} {dns}: {verdict(self._flags[flag])})")
            else:
                lines.append(f"{flag}: yes (not in ldap.user_flags_by_group: every user found is active)"
                             if flag == "is_active" else f"{flag}: no (not in ldap.user_flags_by_group)")
        trace.step("flags", "\n".join(lines))
        mirror = config.mirror_groups
        if config.mirror_groups_except:
            trace.step("published", "ldap.mirror_groups_except: every group but "
                       + ", ".join(config.mirror_groups_except))
            return
        trace.step("published", "ldap.mirror_groups: true, every group" if mirror is True
                   else "ldap.mirror_groups: false, none" if mirror is False
                   else f"ldap.mirror_groups: only {', '.join(mirror)}")


class NamePolicy:
    """The group rules of a source whose groups are names (``local_users``, ``oidc.providers[]``,
    ``oidc.bearer[]``), and groups and flags from the directory by name when it asks for them."""

    def __init__(self, rules: GroupRules, where: str, directory: DirectoryLookup | None = None,
                 prefix: str = "") -> None:
        self._where = where  # the YAML path of the source, for the operator's log line
        self._require = Rule(rules.require_group, fold)
        self._deny = Rule(rules.deny_group, fold)
        self._flags = {flag: Rule(queries, fold) for flag, queries in rules.user_flags_by_group.items()}
        self._directory = directory if rules.groups_from_directory is not None else None
        self._prefix = prefix

    def __bool__(self) -> bool:
        return bool(self._require or self._deny or self._flags or self._directory)

    async def admit(self, identity: Identity) -> Identity:
        """The identity as the rules make it: refused (AccountRefused), or with its flags, and with
        groups_from_directory the directory's groups, flags and rules by its name."""
        groups = identity.rule_groups
        name = identity.username
        if self._require and not self._require.holds(groups):
            raise AccountRefused(f"{name} is in none of {self._where}.require_group")
        if self._deny.holds(groups):
            raise AccountRefused(f"{name} is in {self._where}.deny_group")
        flags = {flag: rule.holds(groups) for flag, rule in self._flags.items()}
        if not flags.get("is_active", True):
            raise AccountRefused(f"{name} is not in {self._where}.user_flags_by_group.is_active")
        admitted = dataclasses.replace(identity, is_staff=identity.is_staff or flags.get("is_staff", False),
                                       is_superuser=identity.is_superuser or flags.get("is_superuser", False))
        if self._directory is None:
            return admitted
        return await self._from_directory(admitted)

    async def _from_directory(self, identity: Identity) -> Identity:
        """django-auth-ldap's AUTHORIZE_ALL_USERS: the directory's groups and flags for this name, under
        the directory's rules (require_group, deny_group, is_active refuse). A name it does not know has
        none of its groups or flags; a directory that cannot answer raises (503), never "no groups"."""
        assert self._directory is not None
        found = await self._directory(identity.username.removeprefix(self._prefix))
        return dataclasses.replace(identity, groups=found.groups, rule_groups=found.rule_groups,
                                   is_staff=identity.is_staff or found.is_staff,
                                   is_superuser=identity.is_superuser or found.is_superuser, extra=found.extra)
