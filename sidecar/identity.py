"""Identity: who a request belongs to, as the application will see it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Identity:
    """A user with the attributes the headers carry.

    ``groups`` are the group names published to the application (``mirror_groups``);
    ``rule_groups`` are the names access rules may test (``find_group_perms``).
    """

    username: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    groups: tuple[str, ...] = ()
    rule_groups: frozenset[str] = frozenset()
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    extra: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    source: str = "ldap"
