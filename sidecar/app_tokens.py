"""The application's own tokens (``app_tokens:``): requests the application authenticates itself.

NetBox's API clients send ``Authorization: Token <40 hex>`` (v1) or ``Authorization: Bearer
nbt_<key>.<token>`` (v2). The sidecar cannot check those, and must not pretend to: a request whose
Authorization matches a configured rule (scheme, token prefix, host, path) is answered 200 with
every identity header present and EMPTY, before any other way in is tried. It is never read as a
JWT, never matched to a session, and never gets a ``Remote-User`` (NetBox would then log the
session's user in beside the token's). The proxy files copy the empty values, which removes
whatever identity header the client sent, and pass the Authorization on (only Basic is stripped):
the application's own authentication decides, and refuses a bad token itself.

A scheme no rule names is not passed: it gets the same 401 as before.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from aiohttp import web

from sidecar.config import AppTokenRule, HeaderConfig
from sidecar.forwarded import Original
from sidecar.headers import Headers, identity_headers

log = logging.getLogger("sidecar.app_tokens")

# "scheme" 1*SP token68, as for Bearer (RFC 6750): anything looser is not passed on.
_AUTHORIZATION = re.compile(r"([A-Za-z0-9!#$%&'*+.^_`|~-]+) +([A-Za-z0-9._~+/-]+=*)[ \t]*", re.ASCII)
MAX_VALUE = 4096


def _covers(rule: AppTokenRule, target: Original) -> bool:
    if rule.hosts and target.host not in rule.hosts:
        return False
    for path in rule.paths:
        prefix = path.rstrip("/")
        if not prefix or target.path == prefix or target.path.startswith(prefix + "/"):
            return True
    return False


class AppTokens:
    """Decides whether /auth lets a request through for the application to authenticate."""

    def __init__(self, rules: Sequence[AppTokenRule], headers: HeaderConfig) -> None:
        self.rules = tuple(rules)
        self._schemes = frozenset(rule.scheme.lower() for rule in rules)
        # Every identity header, present and empty: the proxies copy each, so each is removed.
        self.headers: Headers = tuple((name, "") for name in identity_headers(headers))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def passes(self, request: web.Request, target: Original) -> bool:
        header = request.headers.get("Authorization")
        if not header or len(header) > MAX_VALUE:
            return False
        scheme, _, _ = header.partition(" ")
        if scheme.lower() not in self._schemes:
            return False
        match = _AUTHORIZATION.fullmatch(header)
        if match is None:
            return False
        scheme, value = match.group(1).lower(), match.group(2)
        for rule in self.rules:
            if rule.scheme.lower() == scheme and value.startswith(rule.prefix) and _covers(rule, target):
                log.debug("passed to the application: its own %s token, %s %s%s", match.group(1),
                          target.method, target.host, target.path)
                return True
        return False

    def answer(self) -> web.Response:
        return web.Response(headers=self.headers)
