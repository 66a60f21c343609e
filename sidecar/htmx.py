"""In-page requests of htmx (NetBox's tables: sorting, filtering, paging) once the sign-in has ended.

htmx sends ``HX-Request: true`` and ``Accept: */*``. A Basic challenge would make the browser
prompt for a password, and a 302 to the login page would be followed inside the page (the login
form swapped into the table). So such a request gets a 401 without ``WWW-Authenticate`` and with
``HX-Redirect: <login URL>``, which htmx turns into a whole-page visit of the login page; the
sign-in then returns to the page the browser shows (``HX-Current-URL``, when it is on the same
site as the request), not to the fragment it asked for. Every proxy file passes the header on.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from sidecar.forwarded import Original

HX_REDIRECT = "HX-Redirect"


def is_htmx(request: web.Request) -> bool:
    return request.headers.get("HX-Request", "").strip().lower() == "true"


def page_url(request: web.Request, target: Original | None) -> str | None:
    """The page to return to after signing in: the browser's (same site only), else the request's."""
    if target is None:
        return None
    current = request.headers.get("HX-Current-URL", "")
    try:
        parts = urlsplit(current)
    except ValueError:
        return target.url
    if parts.scheme == target.scheme and parts.netloc.lower() == target.authority.lower() and \
            parts.path.startswith("/") and current.isprintable() and len(current) <= 4096:
        return current
    return target.url
