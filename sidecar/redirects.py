"""Return targets (``rd``) after login and logout, checked so that they are never an open redirect.

A target is followed only when it is an absolute URL whose scheme and host the operator allowed:
``hosts`` are exact names (``app.test`` on any port, ``app.test:8443`` on that port only, ``[::1]``
for an IPv6 literal), ``domains`` a name and all its subdomains. Anything else, including relative
targets, gives the configured default. Browsers and ``urlsplit`` both forgive a lot (tabs are
dropped, backslashes read as slashes, fullwidth letters folded), so the raw string is checked before
it is parsed and hosts are compared only in their ASCII (IDNA) form.

Decisions: a host with a trailing dot is refused, not normalised; domain entries allow any port; a
port is compared with the scheme's default when the target gives none; non-ASCII is allowed only in
the host, and only when the IDNA codec turns it into ``xn--`` labels and back unchanged.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

MAX_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}
# ASCII controls, space, DEL and backslash: browsers strip or reinterpret them inside URLs.
RAW_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")
# A percent-encoded control character, also when the % itself is encoded again (%250d).
ENCODED_CONTROL = re.compile(r"%(?:25)*(?:[01][0-9a-f]|7f)", re.IGNORECASE)
# Userinfo ("@") never matches: it is how "https://good.test@evil.test" hides its real host.
AUTHORITY = re.compile(
    r"(?P<host>\[[0-9a-f:.]+\]|[^:@\[\]]+)(?::(?P<port>[0-9]{1,5}))?", re.ASCII | re.IGNORECASE
)
HOST_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")
LABELS = {"default": "default", "schemes": "schemes", "hosts": "host", "domains": "domain"}


class RedirectPolicy:
    """Decides where to send the browser after login or logout; built once from the configuration."""

    def __init__(self, *, hosts: Iterable[str] = (), domains: Iterable[str] = (),
                 schemes: Iterable[str] = ("https",), default: str) -> None:
        hosts, domains, schemes = list(hosts), list(domains), list(schemes)
        if found := self.problems(hosts=hosts, domains=domains, schemes=schemes, default=default):
            raise ValueError("; ".join(f"redirect {LABELS[name]} {problem}" for name, problem in found))
        self.default = default
        self._schemes = frozenset(scheme.lower() for scheme in schemes)
        # Every entry is known good here: problems() found nothing.
        entries = [authority for entry in hosts if (authority := _authority(entry)) is not None]
        self._any_port = frozenset(host for host, port in entries if port is None)
        self._one_port = frozenset((host, port) for host, port in entries if port is not None)
        self._domains = frozenset(host for entry in domains if (host := _ascii_host(entry)) is not None)

    @staticmethod
    def problems(*, hosts: Iterable[str] = (), domains: Iterable[str] = (), schemes: Iterable[str] = (),
                 default: str | None = None) -> list[tuple[str, str]]:
        """(field, problem) for each value a RedirectPolicy would refuse; the loader reports them."""
        found = []
        if default is not None and not _valid_default(default):
            found.append(("default", f"must be an absolute http(s) URL or a /path, got {default!r}"))
        if unknown := sorted({scheme.lower() for scheme in schemes} - DEFAULT_PORTS.keys()):
            found.append(("schemes", f"may be http and https only, got {unknown}"))
        found += [("hosts", f"must be NAME, NAME:PORT or [IPv6][:PORT], got {entry!r}")
                  for entry in hosts if _authority(entry) is None]
        found += [("domains", f"must be a DNS name like example.com, got {entry!r}")
                  for entry in domains if (host := _ascii_host(entry)) is None or host.startswith("[")]
        return found

    def safe(self, target: str | None) -> str:
        """target when it is an allowed absolute URL (returned normalised), else self.default."""
        if not target or len(target) > MAX_LENGTH or not _clean(target):
            return self.default
        parts = _split(target)
        authority = _authority(parts.netloc) if parts and parts.scheme in self._schemes else None
        if parts is None or authority is None:
            return self.default
        host, port = authority
        default_port = DEFAULT_PORTS[parts.scheme]
        # Slicing the raw string keeps path, query and fragment byte for byte (urlunsplit drops "?#").
        rest = target[len(parts.scheme) + len("://") + len(parts.netloc):]
        if not rest.isascii() or not self._allowed(host, port or default_port):
            return self.default
        shown = "" if port in (None, default_port) else f":{port}"
        return f"{parts.scheme}://{host}{shown}{rest}"

    def _allowed(self, host: str, port: int) -> bool:
        if host in self._any_port or (host, port) in self._one_port:
            return True
        labels = host.split(".")
        return any(".".join(labels[i:]) in self._domains for i in range(len(labels)))


def _clean(text: str) -> bool:
    return not RAW_FORBIDDEN.search(text) and not ENCODED_CONTROL.search(text)


def _valid_default(default: str) -> bool:
    if not default or not default.isascii() or not _clean(default):
        return False
    if default.startswith("/"):
        return not default.startswith("//")
    parts = _split(default)
    return parts is not None and parts.scheme in DEFAULT_PORTS and _authority(parts.netloc) is not None


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:  # an unbalanced "[" in the host
        return None


def _authority(netloc: str) -> tuple[str, int | None] | None:
    """(ASCII host, port) of a netloc without userinfo, or None when it is not one we can trust."""
    match = AUTHORITY.fullmatch(netloc)
    if match is None:
        return None
    host = _ascii_host(match["host"])
    port = int(match["port"]) if match["port"] else None
    if host is None or (port is not None and not 0 < port < 65536):
        return None
    return host, port


def _ascii_host(host: str) -> str | None:
    """The host lower-cased in ASCII form (IPv6 compressed, IDNA as xn--), or None if suspect."""
    if host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    if not host.isascii():
        try:
            encoded = host.encode("idna")
            # A round trip refuses what IDNA would fold: fullwidth letters, soft hyphens, look-alike dots.
            if encoded.decode("idna") != host:
                return None
        except UnicodeError:  # either way: "xn--pp-8ka.test\u3002" encodes, then does not decode
            return None
        host = encoded.decode("ascii")
    host = host.lower()
    return host if len(host) <= 253 and HOST_NAME.fullmatch(host) else None
