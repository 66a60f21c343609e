"""Access rules: which identities may reach which URLs (``access:`` in the config).

The first rule that matches both the request (host, path, method) and the identity (users,
groups) decides; when none does, ``access.default`` does. Group rules need
``ldap.find_group_perms``. A path rule covers the path and everything below it.
"""

from __future__ import annotations

from sidecar.config import AccessConfig, AccessRule, FactorMode
from sidecar.forwarded import Original
from sidecar.identity import Identity, fold
from sidecar.queries import holds, shown
from sidecar.trace import current


def _covers(rule: AccessRule, request: Original) -> bool:
    if rule.host is not None and rule.host != request.host:
        return False
    if rule.methods and request.method not in rule.methods:
        return False
    prefix = rule.path.rstrip("/")
    return request.path == prefix or request.path.startswith(prefix + "/") or not prefix


def _applies_to(rule: AccessRule, identity: Identity) -> bool:
    if not rule.users and not rule.groups and not rule.queries:
        return True
    if fold(identity.username) in rule.users or rule.groups & identity.rule_groups:
        return True
    # Group queries (and / or / not) only where a rule has them: a plain rule costs what it did.
    return any(holds(query, identity.rule_groups.__contains__) for query in rule.queries)


class AccessRules:
    def __init__(self, config: AccessConfig) -> None:
        self.rules = config.rules
        self.default = config.default == "allow"
        self.asks_factors = config.asks_factors()
        self._factor_default = (config.second_factor, config.second_factor_max_age)

    def __bool__(self) -> bool:
        return bool(self.rules) or not self.default

    def allows(self, identity: Identity, request: Original) -> bool:
        rule = self.deciding(identity, request)
        allowed = self.default if rule is None else rule.allow
        if (trace := current()) is not None:
            by = "access.default" if rule is None else f"access.rules[{self.rules.index(rule)}] {_shown(rule)}"
            trace.step("access", f"{request.method} {request.url}: {'allowed' if allowed else 'refused'} by {by}")
        return allowed

    def factor_demand(self, identity: Identity, request: Original) -> tuple[FactorMode, float | None]:
        """What the deciding rule asks of a second factor: (required | optional | never, max age or None)."""
        rule = self.deciding(identity, request)
        mode, max_age = self._factor_default
        if rule is not None and rule.second_factor is not None:
            mode = rule.second_factor
        if rule is not None and rule.second_factor_max_age is not None:
            max_age = rule.second_factor_max_age
        return mode, max_age

    def deciding(self, identity: Identity, request: Original) -> AccessRule | None:
        """The first rule that matches both; None when none does (access.default decides)."""
        for rule in self.rules:
            if _covers(rule, request) and _applies_to(rule, identity):
                return rule
        return None


def _shown(rule: AccessRule) -> str:
    parts = [f"host {rule.host}"] if rule.host else []
    parts.append(f"path {rule.path}")
    parts += [f"{what} {', '.join(sorted(names))}" for what, names in
              (("methods", rule.methods), ("users", rule.users), ("groups", rule.groups)) if names]
    parts += [f"groups {shown(query)}" for query in rule.queries]
    return "(" + "; ".join(parts) + f"; policy {'allow' if rule.allow else 'deny'})"
