"""Cookies the sidecar sets: their attributes, the ``__Host-`` rule, and reading one back.

Every cookie (the session, the sign-in form's CSRF token, a single sign-on's state) is described
by a :class:`Cookie` and set by its :meth:`~Cookie.set_cookie_header`, so all of them have one
format::

    <name>=<value>; Path=<path>[; Domain=<domain>]; Max-Age=<seconds>[; Secure]; HttpOnly; SameSite=<same_site>

Without a domain, with Secure and Path=/, the name takes the ``__Host-`` prefix: browsers then
accept the cookie only from this very host over HTTPS, so no other subdomain can plant one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SAME_SITE = ("Strict", "Lax", "None")
COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# What the sidecar puts in a cookie: base64url and dots (JWE compact form, random tokens).
COOKIE_VALUE = re.compile(r"[A-Za-z0-9._-]*")
# Printable ASCII without ";", which would start another cookie attribute.
COOKIE_PATH = re.compile(r"/[!-:<-~]*")
COOKIE_DOMAIN = re.compile(r"[A-Za-z0-9.-]+")
HOST_PREFIX = "__Host-"


def problems(name: str, *, domain: str | None = None, secure: bool = True, same_site: str = "Lax",
             path: str = "/") -> list[str]:
    """What is wrong with a cookie's settings, each problem behind the name of its setting."""
    found = []
    if not COOKIE_NAME.fullmatch(name):
        found.append(f"name: not a cookie name: {name!r}")
    if same_site not in SAME_SITE:
        found.append(f"same_site: must be one of {', '.join(SAME_SITE)}, got {same_site!r}")
    elif same_site == "None" and not secure:
        found.append("same_site: None requires secure (browsers drop the cookie otherwise)")
    if not COOKIE_PATH.fullmatch(path):
        found.append(f"path: must start with / and hold printable characters but ';', got {path!r}")
    if domain is not None and not COOKIE_DOMAIN.fullmatch(domain):
        found.append(f"domain: not a domain name: {domain!r}")
    return found


@dataclass(frozen=True)
class Cookie:
    """One cookie's name and attributes; ValueError naming every bad setting."""

    name: str
    domain: str | None = None
    secure: bool = True
    same_site: str = "Lax"
    path: str = "/"

    def __post_init__(self) -> None:
        found = problems(self.name, domain=self.domain, secure=self.secure, same_site=self.same_site,
                         path=self.path)
        if found:
            raise ValueError("; ".join(found))

    def cookie_name(self) -> str:
        """The name as sent: with ``__Host-`` when the browser can hold the cookie to this host."""
        host_only = self.domain is None and self.secure and self.path == "/"
        return HOST_PREFIX + self.name if host_only else self.name

    def set_cookie_header(self, value: str, max_age: int) -> str:
        """One ``Set-Cookie`` value: nginx 1.22 passes on only the first Set-Cookie of a subrequest."""
        if not COOKIE_VALUE.fullmatch(value):
            raise ValueError("a cookie value holds only base64url characters and dots")
        return self._header(value, max_age)

    def clear_cookie_header(self) -> str:
        """The ``Set-Cookie`` value that makes the browser drop the cookie."""
        return self._header("", 0)

    def read(self, header: str | None) -> str | None:
        """This cookie's value in a ``Cookie`` request header, or None."""
        return cookie_value(header, self.cookie_name() + "=")

    def _header(self, value: str, max_age: int) -> str:
        parts = [f"{self.cookie_name()}={value}", f"Path={self.path}"]
        if self.domain is not None:
            parts.append(f"Domain={self.domain}")
        parts.append(f"Max-Age={max_age}")
        if self.secure:
            parts.append("Secure")
        parts += ["HttpOnly", f"SameSite={self.same_site}"]
        return "; ".join(parts)


def cookie_value(header: str | None, prefix: str) -> str | None:
    """The value of one cookie (``prefix`` is ``name=``), without parsing every other cookie."""
    if not header:
        return None
    for part in header.split(";"):
        part = part.strip()
        if part.startswith(prefix):
            return part[len(prefix):]
    return None
