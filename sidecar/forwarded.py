"""The original request behind an auth subrequest, as the proxy describes it, parsed strictly.

URL: ``X-Forwarded-Host`` + ``X-Forwarded-Uri`` (with ``X-Forwarded-Proto``); else ``X-Original-URL``;
else ``Host`` + ``X-Original-URI``. In forward-auth mode (Traefik, Caddy) ``X-Forwarded-*`` only.
Client address: ``X-Forwarded-For`` (or, without it, ``X-Real-IP``), believed only when the peer
is one of ``server.trusted_proxies``.

Access rules judge what the application will receive, so nothing here guesses: each part is read
by :mod:`sidecar.canonical`, and anything ambiguous is a :class:`~sidecar.errors.MalformedRequest`
(400).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from aiohttp import web

from sidecar.canonical import parse_host, parse_path
from sidecar.config import Network
from sidecar.errors import MalformedRequest

_SCHEMES = frozenset({"http", "https"})
_METHOD = re.compile(r"[A-Za-z][A-Za-z-]{0,19}", re.ASCII)
MEMO_TARGET = 512  # requests whose target and host are at most this long are parsed once each


@dataclass(frozen=True, slots=True)
class Original:
    method: str
    scheme: str
    host: str  # lower case, no port, no trailing dot: what host rules compare
    authority: str  # host[:port] as the login redirect returns to it
    target: str  # the raw path and query the application receives
    path: str  # percent-decoded, repeated slashes collapsed: what path rules compare

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"


def original(request: web.Request, *, forward_auth: bool = False) -> Original:
    """The request the proxy asks about; MalformedRequest when any part of it is ambiguous."""
    h = request.headers
    if forward_auth:
        # Traefik and Caddy describe the request with X-Forwarded-*: X-Original-* could only be
        # the client's own words, passed through.
        method = h.get("X-Forwarded-Method") or "GET"
        return parse(method, h.get("X-Forwarded-Proto"), h.get("X-Forwarded-Host", ""),
                     h.get("X-Forwarded-Uri", "/"))
    # The method comes from the same family of headers as the URL: a proxy that sets one family
    # may pass the other through from the client.
    if (uri := h.get("X-Forwarded-Uri")) is not None:
        return parse(h.get("X-Forwarded-Method") or "GET", h.get("X-Forwarded-Proto"),
                     h.get("X-Forwarded-Host", ""), uri)
    method = h.get("X-Original-Method") or "GET"
    if url := h.get("X-Original-URL"):
        scheme, separator, rest = url.partition("://")
        if not separator:
            raise MalformedRequest(f"X-Original-URL is not absolute: {url[:200]!r}")
        # The authority ends at the first "/": a "?" or "#" before it is a malformed host, never a query.
        slash = rest.find("/")
        authority, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        return parse(method, scheme, authority, target)
    return parse(method, h.get("X-Forwarded-Proto"), h.get("Host", ""), h.get("X-Original-URI", "/"))


def parse(method: str, scheme: str | None, authority: str, target: str) -> Original:
    """One strict reading of a request's parts. Short ones repeat a lot and are read once."""
    if len(target) <= MEMO_TARGET and len(authority) <= MEMO_TARGET:
        return _parse_memo(method, scheme, authority, target)
    return _parse(method, scheme, authority, target)


def _parse(method: str, scheme: str | None, authority: str, target: str) -> Original:
    scheme = "https" if scheme is None else scheme.lower()
    if scheme not in _SCHEMES:
        raise MalformedRequest(f"scheme {scheme[:20]!r} is neither http nor https")
    if not _METHOD.fullmatch(method):
        raise MalformedRequest(f"method {method[:20]!r} is not a method")
    host, port = parse_host(authority)
    return Original(method=method.upper(), scheme=scheme, host=host,
                    authority=host if port is None else f"{host}:{port}", target=target,
                    path=parse_path(target))


_parse_memo = functools.lru_cache(maxsize=2048)(_parse)


class ClientAddress:
    """Finds the real client address of a subrequest; built once from the trusted networks."""

    def __init__(self, trusted: tuple[Network, ...]) -> None:
        self._trusted = trusted
        self.is_trusted = functools.lru_cache(maxsize=1024)(self._is_trusted)
        self._behind_memo = functools.lru_cache(maxsize=1024)(self._behind)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def __call__(self, request: web.Request) -> str:
        peer = request.remote or ""
        if not self.is_trusted(peer):
            return peer
        headers = request.headers
        forwarded = tuple(headers.getall("X-Forwarded-For", ()))
        real_ip = headers.get("X-Real-IP", "")
        if sum(map(len, forwarded)) + len(real_ip) <= MEMO_TARGET:
            return self._behind_memo(peer, forwarded, real_ip)  # a proxy's few chains, each walked once
        return self._behind(peer, forwarded, real_ip)

    def _behind(self, peer: str, values: tuple[str, ...], real_ip: str) -> str:
        """The client behind a trusted peer, from its X-Forwarded-For values (or X-Real-IP)."""
        forwarded = [a.strip() for a in values for a in a.split(",") if a.strip()]
        # Walk back from the nearest hop; the first untrusted address is the client.
        for address in reversed(forwarded):
            if not self.is_trusted(address):
                return address
        if forwarded:
            return forwarded[0]
        # X-Real-IP only without X-Forwarded-For: a proxy that passes a client's X-Real-IP
        # through would otherwise let the client choose its address (and dodge its bans).
        return real_ip.strip() or peer
