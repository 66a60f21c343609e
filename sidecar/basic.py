"""HTTP Basic: the ``Authorization`` value read as RFC 7235 writes it, and its authenticator.

Only ``Basic`` SP token68 is Basic (no other white space before or after the scheme), so a value
the proxies let through to the application is never accepted here. Names are NFKC and never
trimmed of anything but SP/HTAB padding; names and passwords with controls, invisible characters,
lone surrogates or over-long parts are refused before any source is asked.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable

from aiohttp import web

from sidecar.cache import Fingerprint
from sidecar.errors import BadRequest
from sidecar.forwarded import ClientAddress
from sidecar.passwords import PasswordVerifier
from sidecar.verdict import Verdict

# Unicode categories never found in a real login name: controls, formats, separators, unassigned.
MAX_USERNAME = 256
MAX_PASSWORD = 1024
MAX_AUTHORIZATION = 4096
MAX_PARSED = 10_000  # distinct Authorization values whose parsing is remembered (the verdict cache's default)
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def normalize_username(username: str) -> str:
    """NFKC, so look-alike spellings of one name become one name (or are refused); never trimmed
    of anything but SP/HTAB padding, so no other character can vanish from between what was typed
    and what the directory is asked."""
    name = unicodedata.normalize("NFKC", username).strip(" \t")
    if not name:
        raise BadRequest("empty username")
    if len(name) > MAX_USERNAME:
        raise BadRequest(f"username longer than {MAX_USERNAME} characters")
    if any(unicodedata.category(c) in FORBIDDEN_CATEGORIES for c in name) or name != name.strip():
        raise BadRequest("control, invisible or padding character in username")
    return name


def check_password_shape(password: str) -> str:
    if not password:
        raise BadRequest("empty password")
    if len(password) > MAX_PASSWORD:
        raise BadRequest(f"password longer than {MAX_PASSWORD} characters")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in password):
        raise BadRequest("control character or lone surrogate in password")
    return password


# RFC 7235: auth-scheme 1*SP token68. The HTTP parser has already taken the field's own padding
# off; anything else before "Basic" (NBSP, U+3000...) makes it no Basic value at all.
_BASIC = re.compile(r"basic +([A-Za-z0-9+/]+=*)[ \t]*", re.ASCII | re.IGNORECASE)
_SCHEME = re.compile(r"basic(?:[ \t]|$)", re.ASCII | re.IGNORECASE)


def parse_basic(header: str) -> tuple[str, str] | None:
    """(username, password) from an ``Authorization: Basic`` value; None for other schemes."""
    if not _SCHEME.match(header):
        return None
    if len(header) > MAX_AUTHORIZATION:
        raise BadRequest("Authorization header too long")
    match = _BASIC.fullmatch(header)
    if match is None:
        raise BadRequest("malformed Basic credentials (not 'Basic' SP token68)")
    try:
        text = base64.b64decode(match.group(1), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise BadRequest("malformed Basic credentials (not base64 of UTF-8)") from None
    username, colon, password = text.partition(":")
    if not colon:
        raise BadRequest("malformed Basic credentials (no colon)")
    return normalize_username(username), check_password_shape(password)


class ParsedBasic:
    """parse_basic once per distinct Authorization value: a bounded memo from a keyed BLAKE2b of the
    value (under a key of this process) to the username it normalises to and, given ``derive``,
    what is derived from the pair once (the verdict cache's key). It holds no password: ``known``
    answers the name and the key without one (all a kept verdict needs), and ``password`` decodes
    it again from the value itself (base64, no checks: the same bytes passed them) only when a
    source must be asked. Full, it starts again empty, so a flood of unique credentials costs at
    most MAX_PARSED entries."""

    def __init__(self, max_entries: int = MAX_PARSED,
                 derive: Callable[[str, str], bytes] = lambda username, password: b"") -> None:
        self._fingerprint = Fingerprint()
        self._max = max_entries
        self._derive = derive
        self._names: dict[bytes, tuple[str, bytes]] = {}

    def __call__(self, header: str) -> tuple[str, str] | None:
        found = self.parsed(header)
        return None if found is None else found[:2]

    def parsed(self, header: str) -> tuple[str, str, bytes] | None:
        """(username, password, what ``derive`` made of them) from the value; None for other schemes."""
        known = self.known(header)
        if known is not None:
            return known[0], self.password(header), known[1]
        credentials = parse_basic(header)
        if credentials is None:
            return None
        derived = self._derive(*credentials)
        if len(header) <= MAX_AUTHORIZATION and header.isascii():
            if len(self._names) >= self._max:
                self._names.clear()
            self._names[self._digest(header)] = (credentials[0], derived)
        return (*credentials, derived)

    def known(self, header: str) -> tuple[str, bytes] | None:
        """(username, what ``derive`` made of the pair) for a value that parsed before; None for
        any other (to be parsed). No password is decoded."""
        if len(header) > MAX_AUTHORIZATION or not header.isascii():
            return None
        return self._names.get(self._digest(header))

    @staticmethod
    def password(header: str) -> str:
        """The password of a value that parsed before: "basic", spaces, the token, maybe trailing
        SP/HTAB (see _BASIC); base64 without the checks the same bytes passed."""
        return base64.b64decode(header[5:].strip(" \t")).decode("utf-8").partition(":")[2]

    def _digest(self, header: str) -> bytes:
        return self._fingerprint(header.encode("ascii"))


class BasicAuthenticator:
    method = "basic"

    def __init__(self, verifier: PasswordVerifier, client_address: ClientAddress) -> None:
        self.verifier = verifier
        self.client_address = client_address
        self._parse = ParsedBasic(derive=verifier.cache.key)

    async def authenticate(self, request: web.Request) -> Verdict | None:
        header = request.headers.get("Authorization")
        if not header:
            return None
        known = self._parse.known(header)
        if known is None:  # a value not seen yet (or refused): parsed and checked in full
            credentials = self._parse.parsed(header)
            if credentials is None:
                return None
            username, password, key = credentials
            return await self.verifier.verify(username, password, self.client_address(request), key=key)
        # Seen before: its verdict, if kept, without decoding the password again.
        username, key = known
        client = self.client_address(request)
        verdict = self.verifier.cached(username, key, client)
        if verdict is None:
            verdict = await self.verifier.uncached(username, self._parse.password(header), client, key)
        return verdict
