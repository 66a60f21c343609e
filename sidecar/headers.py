"""Identity -> response headers: names from the config, values made safe for any proxy.

Values never carry control characters (CR/LF would split a header) and are never quoted; a group
whose name contains the separator is left out rather than split in two by the application.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sidecar.config import HeaderConfig
from sidecar.identity import Identity

log = logging.getLogger("sidecar.headers")

# C0 controls and DEL: a header value must not contain any of them.
_CONTROLS = {code: None for code in [*range(32), 127]}

Headers = tuple[tuple[str, str], ...]


def clean(value: str) -> str:
    return value.translate(_CONTROLS).strip()


def published_groups(groups: Sequence[str], separator: str) -> list[str]:
    """The groups as the groups header carries them: cleaned, without any containing the separator."""
    cleaned = (clean(name) for name in groups)
    return [name for name in cleaned if name and separator not in name]


class HeaderWriter:
    """Built once from the config; renders an identity as the 200 answer's headers."""

    def __init__(self, config: HeaderConfig) -> None:
        self.config = config

    def render(self, identity: Identity) -> Headers:
        c = self.config
        separator = c.group_separator
        groups = published_groups(identity.groups, separator)
        if len(groups) != len(identity.groups) and log.isEnabledFor(logging.DEBUG):
            log.debug("%d groups left out of %s: empty or containing %r", len(identity.groups) - len(groups),
                      c.groups, separator)
        pairs = [
            (c.user, clean(identity.username)),
            (c.first_name, clean(identity.first_name)),
            (c.last_name, clean(identity.last_name)),
            (c.email, clean(identity.email)),
            (c.groups, separator.join(groups)),
            (c.is_staff, "true" if identity.is_staff else "false"),
            (c.is_superuser, "true" if identity.is_superuser else "false"),
            # Present even without signing keys (filled in per answer when there are): some proxies
            # (Caddy < 2.10) put placeholder text in a copied header the answer lacks.
            (c.assertion, ""),
        ]
        pairs += [(header, clean(identity.extra.get(key, ""))) for key, header in c.extra.items()]
        return tuple(pairs)
