"""Identity: who a request belongs to, as the application will see it."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

EMPTY: Mapping[str, str] = MappingProxyType({})
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(name: str) -> str:
    """A user or group name as rules compare it: ASCII letters in lower case, every other character
    as it is. Unicode's case folding would make ``ſtaff`` (long s) the group ``staff`` and ``straße``
    the user ``strasse``: names a directory keeps apart must never meet in a rule."""
    return name.translate(_ASCII_LOWER)


@dataclass(frozen=True, slots=True)
class Identity:
    """A user with the attributes the headers carry.

    ``groups`` are the group names published to the application (``mirror_groups``);
    ``rule_groups`` are the names access rules may test (``find_group_perms``), each :func:`fold`-ed.
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
    # The id of the source that vouches for it (sidecar.sources): ldap, local, oidc:<provider>...
    source: str = field(kw_only=True)
