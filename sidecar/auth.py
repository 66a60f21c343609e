"""Authenticators: each turns a request's credentials into a :class:`Verdict`.

Every way in implements :class:`Authenticator`: ``None`` means "no credentials of mine here",
a :class:`~sidecar.errors.BadRequest` means "credentials of mine, malformed". Today there is
one: HTTP Basic checked against the directory through :class:`PasswordVerifier`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import unicodedata
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from sidecar.cache import VerdictCache
from sidecar.errors import AccessDenied, AuthError, BadRequest, InvalidCredentials, Throttled
from sidecar.forwarded import ClientAddress
from sidecar.headers import Headers, HeaderWriter
from sidecar.identity import Identity
from sidecar.regulation import Regulator
from sidecar.sources import Sources

log = logging.getLogger("sidecar.auth")

MAX_USERNAME = 256
MAX_PASSWORD = 1024
MAX_AUTHORIZATION = 4096
# Unicode categories never found in a real login name or password: controls, formats, separators.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one set of credentials; ``headers`` are rendered once, when it is made."""

    identity: Identity | None
    refusal: AuthError | None = None
    headers: Headers = ()
    set_cookie: str | None = None  # a refreshed session cookie for the browser


class Authenticator(Protocol):
    async def authenticate(self, request: web.Request) -> Verdict | None: ...


def normalize_username(username: str) -> str:
    """NFKC and trimmed, so look-alike spellings of one name become one name (or are refused)."""
    name = unicodedata.normalize("NFKC", username).strip()
    if not name:
        raise BadRequest("empty username")
    if len(name) > MAX_USERNAME:
        raise BadRequest(f"username longer than {MAX_USERNAME} characters")
    if any(unicodedata.category(c) in FORBIDDEN_CATEGORIES for c in name):
        raise BadRequest("control or invisible character in username")
    return name


def check_password_shape(password: str) -> str:
    if not password:
        raise BadRequest("empty password")
    if len(password) > MAX_PASSWORD:
        raise BadRequest(f"password longer than {MAX_PASSWORD} characters")
    if any(unicodedata.category(c) == "Cc" for c in password):
        raise BadRequest("control character in password")
    return password


def parse_basic(header: str) -> tuple[str, str] | None:
    """(username, password) from an ``Authorization: Basic`` value; None for other schemes."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    if len(header) > MAX_AUTHORIZATION:
        raise BadRequest("Authorization header too long")
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise BadRequest("malformed Basic credentials (not base64 of UTF-8)") from None
    username, colon, password = text.partition(":")
    if not colon:
        raise BadRequest("malformed Basic credentials (no colon)")
    return normalize_username(username), check_password_shape(password)


class PasswordVerifier:
    """Username + password -> verdict: regulation first, then the cache, then the sources.

    Concurrent misses for the same credentials share one round trip to the sources.
    """

    def __init__(self, sources: Sources, cache: VerdictCache[Verdict], writer: HeaderWriter,
                 regulator: Regulator | None = None) -> None:
        self.sources = sources
        self.cache = cache
        self.writer = writer
        self.regulator = regulator
        self._pending: dict[bytes, asyncio.Future[Verdict]] = {}

    async def verify(self, username: str, password: str, client: str | None = None) -> Verdict:
        regulator = self.regulator
        if regulator is not None and (why := regulator.banned(username, client)) is not None:
            return Verdict(None, Throttled(why))
        key = self.cache.key(username, password)
        verdict = self.cache.get(key)
        fresh = verdict is None
        if verdict is None:
            verdict = await self._coalesced(key, username, password)
        if regulator is not None:
            if isinstance(verdict.refusal, InvalidCredentials):
                for ban in regulator.failed(username, client):
                    log.warning("regulation: %s", ban)
            elif fresh and verdict.identity is not None:
                regulator.succeeded(username)
        return verdict

    async def _coalesced(self, key: bytes, username: str, password: str) -> Verdict:
        if (pending := self._pending.get(key)) is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            verdict = await self._ask_sources(username, password)
            self.cache.put(key, verdict, success=not isinstance(verdict.refusal, InvalidCredentials))
            future.set_result(verdict)
            return verdict
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._pending[key]

    async def _ask_sources(self, username: str, password: str) -> Verdict:
        try:
            identity = await self.sources.check_password(username, password)
        except (InvalidCredentials, AccessDenied) as exc:
            return Verdict(None, exc)
        return Verdict(identity, None, self.writer.render(identity))


class BasicAuthenticator:
    def __init__(self, verifier: PasswordVerifier, client_address: ClientAddress) -> None:
        self.verifier = verifier
        self.client_address = client_address

    async def authenticate(self, request: web.Request) -> Verdict | None:
        header = request.headers.get("Authorization")
        if not header:
            return None
        credentials = parse_basic(header)
        if credentials is None:
            return None
        username, password = credentials
        return await self.verifier.verify(username, password, self.client_address(request))
