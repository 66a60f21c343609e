"""The one strict reading of a host and of a request path, shared by /auth and the access rules.

A host is DNS labels (or an IPv6 literal) with an optional port and one optional trailing dot,
read lower-cased without either. A path is the raw target a proxy forwards; one that a server
could read in two ways (dot segments, raw or percent-encoded; encoded slashes; backslashes; NUL,
controls and line or direction marks) is refused with :class:`~sidecar.errors.MalformedRequest`.
Imports nothing but the standard library, so the configuration can use it too.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

from sidecar.errors import MalformedRequest

# Labels of letters, digits, "_" and "-" joined by single dots; one trailing dot; a port.
_HOST = re.compile(r"((?:[a-z0-9_-]+\.)*[a-z0-9_-]+)\.?(?::([0-9]{1,5}))?", re.ASCII | re.IGNORECASE)
_IPV6 = re.compile(r"\[([0-9a-f:.]+)\](?::([0-9]{1,5}))?", re.ASCII | re.IGNORECASE)
# What a path must not hold, in any letter case: encoded dots, slashes, backslashes and NUL, or a
# raw backslash. Raw dot segments are found after decoding (which also catches ".%2e" and the like).
_AMBIGUOUS = re.compile(r"%2e|%2f|%5c|%00|\\", re.ASCII | re.IGNORECASE)
_TARGET_CHARS = re.compile(r"[!-~]+", re.ASCII)  # printable ASCII, no space: a raw request target


# Controls (Cc), line and paragraph separators, and the marks that reorder text: none belongs in a
# path, and each could make a log line read as something else.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def parse_host(authority: str) -> tuple[str, int | None]:
    """(host, port) of a Host value: lower case, without the trailing dot; MalformedRequest otherwise."""
    match = _HOST.fullmatch(authority) or _IPV6.fullmatch(authority)
    if match is None:
        raise MalformedRequest(f"ambiguous or malformed host {authority[:200]!r}")
    host, port = match.group(1).lower(), match.group(2)
    if authority.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise MalformedRequest(f"malformed IPv6 host {authority[:200]!r}") from None
        host = f"[{host}]"
    if port is not None and not 0 < int(port) <= 65535:
        raise MalformedRequest(f"port out of range in host {authority[:200]!r}")
    return host, None if port is None else int(port)


def segments(path: str) -> str:
    """A decoded path with its repeated and trailing slashes collapsed."""
    return "/" + "/".join(segment for segment in path.split("/") if segment)


def parse_path(target: str) -> str:
    """The path access rules compare, from a raw request target; MalformedRequest if it reads two ways."""
    if not target.startswith("/") or not _TARGET_CHARS.fullmatch(target) or "#" in target:
        raise MalformedRequest(f"malformed request target {target.split('?', 1)[0][:200]!r}")
    raw = target.split("?", 1)[0]
    if _AMBIGUOUS.search(raw):
        raise MalformedRequest(f"ambiguous path (encoded dot, slash, backslash or NUL) {raw[:200]!r}")
    try:
        path = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise MalformedRequest(f"path is not percent-encoded UTF-8 {raw[:200]!r}") from None
    parts = path.split("/")
    if "." in parts or ".." in parts:
        raise MalformedRequest(f"dot segment in path {raw[:200]!r}")
    if _UNPRINTABLE.search(path):
        raise MalformedRequest(f"control, line or direction character in path {raw[:200]!r}")
    return segments(path)
