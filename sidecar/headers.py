"""Identity -> response headers: names from the config, values made safe for any proxy.

A value is never changed into another one: an identity whose name, names or email hold a control
character (CR/LF would split a header; stripping one would turn ``alice\x01`` into ``alice``) is
refused, and a group whose name holds one, surrounding white space or the separator is left out
rather than published as some other group. Values are never quoted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from sidecar.config import HeaderConfig
from sidecar.errors import AccessDenied
from sidecar.identity import Identity

log = logging.getLogger("sidecar.headers")

# Unicode's control characters (category Cc: C0, DEL, C1) and lone surrogates, which no header can carry.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

Headers = tuple[tuple[str, str], ...]


def has_control(value: str) -> bool:
    return _CONTROL.search(value) is not None


def clean(value: str) -> str:
    """A name or email as published: without surrounding white space (controls are refused before)."""
    return value.strip()


def published_groups(groups: Sequence[str], separator: str) -> list[str]:
    """The groups as the groups header carries them: each exactly as named, or left out."""
    return [name for name in groups
            if name and name == name.strip() and separator not in name and not has_control(name)]


def identity_headers(config: HeaderConfig) -> tuple[str, ...]:
    """Every header the sidecar answers an identity with, as configured, in the answer's order."""
    return (config.user, config.first_name, config.last_name, config.email, config.groups, config.is_staff,
            config.is_superuser, config.assertion, config.auth_methods, *config.extra.values())


def identity_names(config: HeaderConfig) -> frozenset[str]:
    """Every header name the sidecar answers with, lower-cased: a client must never send one."""
    return frozenset(name.lower() for name in identity_headers(config))


def check(identity: Identity) -> None:
    """Refuse an identity that cannot be published exactly as it is."""
    name = identity.username
    if not name or name != name.strip() or has_control(name):
        raise AccessDenied(f"user name {name[:100]!r} is empty, padded or holds a control character")
    values = [identity.first_name, identity.last_name, identity.email, *identity.extra.values()]
    if any(has_control(value) for value in values):
        raise AccessDenied(f"an attribute of {name!r} holds a control character")


class HeaderWriter:
    """Built once from the config; renders an identity as the 200 answer's headers."""

    def __init__(self, config: HeaderConfig) -> None:
        self.config = config

    def render(self, identity: Identity, methods: Sequence[str] = ("pwd",)) -> Headers:
        """The headers of an identity that signed in by ``methods``; AccessDenied if any value would
        have to be altered."""
        check(identity)
        c = self.config
        separator = c.group_separator
        groups = published_groups(identity.groups, separator)
        if len(groups) != len(identity.groups) and log.isEnabledFor(logging.DEBUG):
            log.debug("%d groups left out of %s: empty, padded, with a control character or %r",
                      len(identity.groups) - len(groups), c.groups, separator)
        pairs = [
            (c.user, identity.username),
            (c.first_name, clean(identity.first_name)),
            (c.last_name, clean(identity.last_name)),
            (c.email, clean(identity.email)),
            (c.groups, separator.join(groups)),
            (c.is_staff, "true" if identity.is_staff else "false"),
            (c.is_superuser, "true" if identity.is_superuser else "false"),
            # Present even without signing keys (filled in per answer when there are): some proxies
            # (Caddy < 2.10) put placeholder text in a copied header the answer lacks.
            (c.assertion, ""),
            # How the user signed in (pwd, pwd|otp, pwd|hwk; empty for a Bearer token): always, so
            # every proxy's files copy it and a client can never supply it.
            (c.auth_methods, "|".join(methods)),
        ]
        pairs += [(header, clean(identity.extra.get(key, ""))) for key, header in c.extra.items()]
        return tuple(pairs)
