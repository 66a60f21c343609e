"""The four reverse proxies we ship files for, each started from its own files on loopback ports,
behind one call: the chain tests run the same cases through every one of them."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from tests.testbed.apache import Apache
from tests.testbed.caddy import Caddy
from tests.testbed.haproxy import HAProxy
from tests.testbed.nginx import Nginx, render_site

PROXIES = ("nginx", "apache", "caddy", "haproxy")
BINARIES = {"nginx": "nginx", "apache": "apache2", "caddy": "caddy", "haproxy": "haproxy"}

Proxy = Nginx | Apache | Caddy | HAProxy


def mode(proxy: str) -> str:
    """server.mode for this proxy: Caddy's forward_auth sends the original request's own method and
    path; the others ask /auth with X-Original-* headers."""
    return "forward_auth" if proxy == "caddy" else "auth_request"


def proxy_server(proxy: str, workdir: Path, *, listen_port: int, sidecar_port: int, app_port: int,
                 extra: Sequence[str] = ()) -> AbstractContextManager[Proxy]:
    """The proxy in front of the app on app_port, asking the sidecar on sidecar_port; extra: the
    headers.extra names, with the lines each proxy's README asks for."""
    if proxy == "nginx":
        snippets = workdir / "snippets" if extra else None
        return Nginx(workdir, render_site(listen_port=listen_port, sidecar_port=sidecar_port, app_port=app_port,
                                          extra=extra, snippets=snippets))
    if proxy == "apache":
        return Apache(listen_port=listen_port, sidecar_port=sidecar_port, app_port=app_port, extra=extra)
    if proxy == "caddy":
        return Caddy(workdir, listen_port=listen_port, sidecar_port=sidecar_port, app_port=app_port, extra=extra)
    if proxy == "haproxy":
        return HAProxy(workdir, listen_port=listen_port, sidecar_port=sidecar_port, app_port=app_port, extra=extra)
    raise ValueError(f"no such proxy: {proxy!r} (one of {', '.join(PROXIES)})")
