"""The original request behind an auth subrequest, as the proxy describes it.

URL: ``X-Original-URL``; else ``X-Forwarded-Proto`` + ``X-Forwarded-Host`` + ``X-Forwarded-Uri``;
else ``X-Original-URI`` + ``Host``; in forward-auth mode (Traefik, Caddy) ``X-Forwarded-*`` only.
Client address: ``X-Forwarded-For`` (or, without it, ``X-Real-IP``), believed only when the peer
is one of ``server.trusted_proxies``.
"""

from __future__ import annotations

import functools
import ipaddress
import posixpath
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from aiohttp import web

from sidecar.config import Network


@dataclass(frozen=True, slots=True)
class Original:
    method: str
    host: str
    path: str  # percent-decoded, dot segments resolved: what access rules compare


def original(request: web.Request, *, forward_auth: bool = False) -> Original:
    h = request.headers
    if forward_auth:
        # Traefik and Caddy describe the request with X-Forwarded-*: X-Original-* could only be
        # the client's own words, passed through.
        method = (h.get("X-Forwarded-Method") or "GET").upper()
        host, target = h.get("X-Forwarded-Host", ""), h.get("X-Forwarded-Uri", "/")
        return Original(method=method, host=_hostname(host), path=normalize_path(target))
    method = (h.get("X-Original-Method") or h.get("X-Forwarded-Method") or "GET").upper()
    if url := h.get("X-Original-URL"):
        parts = urlsplit(url)
        host, target = parts.netloc, parts.path or "/"
    elif uri := h.get("X-Forwarded-Uri"):
        host, target = h.get("X-Forwarded-Host", ""), uri
    else:
        host, target = h.get("Host", ""), h.get("X-Original-URI", "/")
    return Original(method=method, host=_hostname(host), path=normalize_path(target))


def original_url(request: web.Request, *, forward_auth: bool = False) -> str | None:
    """The absolute URL the client asked for, as the proxy reports it (validated by whoever uses it)."""
    h = request.headers
    if not forward_auth and (url := h.get("X-Original-URL")):
        return url
    proto = h.get("X-Forwarded-Proto", "https")
    if (uri := h.get("X-Forwarded-Uri")) is not None and (host := h.get("X-Forwarded-Host")):
        return f"{proto}://{host}{uri}"
    if not forward_auth and (uri := h.get("X-Original-URI")) is not None and (host := h.get("Host")):
        return f"{proto}://{host}{uri}"
    return None


def normalize_path(target: str) -> str:
    """The path part, decoded and resolved, so /public/../admin and /%61dmin both read /admin."""
    path = unquote(target.split("?", 1)[0].split("#", 1)[0], errors="replace")
    path = posixpath.normpath("/" + path.replace("\\", "/"))
    return "/" + path.lstrip("/")


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class ClientAddress:
    """Finds the real client address of a subrequest; built once from the trusted networks."""

    def __init__(self, trusted: tuple[Network, ...]) -> None:
        self._trusted = trusted
        self.is_trusted = functools.lru_cache(maxsize=1024)(self._is_trusted)

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
        forwarded = [a.strip() for a in request.headers.getall("X-Forwarded-For", [])
                     for a in a.split(",") if a.strip()]
        # Walk back from the nearest hop; the first untrusted address is the client.
        for address in reversed(forwarded):
            if not self.is_trusted(address):
                return address
        if forwarded:
            return forwarded[0]
        # X-Real-IP only without X-Forwarded-For: a proxy that passes a client's X-Real-IP
        # through would otherwise let the client choose its address (and dodge its bans).
        return request.headers.get("X-Real-IP", "").strip() or peer
