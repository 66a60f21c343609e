"""Authenticators: each turns a request's credentials into a :class:`Verdict`.

Every way in implements :class:`Authenticator`: ``None`` means "no credentials of mine here",
a :class:`~sidecar.errors.BadRequest` means "credentials of mine, malformed". This module holds
HTTP Basic, checked against the password sources through :class:`PasswordVerifier` (which the
login form shares); sessions and Bearer tokens have modules of their own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from sidecar.cache import VerdictCache
from sidecar.errors import AccessDenied, AuthError, BadRequest, BindUnanswered, InvalidCredentials, Throttled
from sidecar.forwarded import ClientAddress
from sidecar.headers import Headers, HeaderWriter
from sidecar.identity import Identity
from sidecar.regulation import Regulator, Ticket
from sidecar.sources import Sources

log = logging.getLogger("sidecar.auth")

MAX_USERNAME = 256
MAX_PASSWORD = 1024
MAX_AUTHORIZATION = 4096
# Unicode categories never found in a real login name or password: controls, formats, separators.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """An identity with its headers, rendered once when the verdict is made — or, where verdicts are
    kept (the verdict cache), the refusal of those credentials. Made by :meth:`allow` or
    :meth:`refuse`, never both; a refusal leaves an authenticator only as its exception."""

    identity: Identity | None
    refusal: AuthError | None
    headers: Headers
    set_cookie: str | None  # a refreshed session cookie for the browser

    @classmethod
    def allow(cls, identity: Identity, headers: Headers, set_cookie: str | None = None) -> Verdict:
        return cls(identity, None, headers, set_cookie)

    @classmethod
    def refuse(cls, error: AuthError) -> Verdict:
        return cls(None, _bare(error), (), None)

    def settle(self) -> Verdict:
        """This verdict if it allows; else its refusal raised (a fresh copy of it)."""
        if self.refusal is not None:
            raise self.refusal.again()
        return self


class Authenticator(Protocol):
    """``None``: no credentials of mine here; a Verdict: who it is; AuthError raised: refused."""

    async def authenticate(self, request: web.Request) -> Verdict | None: ...


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


def _bare(error: AuthError) -> AuthError:
    """The refusal without its traceback and chained causes: their frames hold the password."""
    error.__traceback__ = None
    error.__cause__ = error.__context__ = None
    return error


class PasswordVerifier:
    """Username + password -> verdict: the cache, then the regulation, then the sources.

    Concurrent misses for the same credentials share one round trip to the sources, and an
    attempt takes its place in the regulation's budgets before any source is asked.
    """

    def __init__(self, sources: Sources, cache: VerdictCache[Verdict], writer: HeaderWriter,
                 regulator: Regulator | None = None) -> None:
        self.sources = sources
        self.cache = cache
        self.writer = writer
        self.regulator = regulator
        self._pending: dict[bytes, asyncio.Future[Verdict]] = {}

    async def verify(self, username: str, password: str, client: str | None = None) -> Verdict:
        """The allowing verdict for these credentials; their refusal raised (AuthError)."""
        key = self.cache.key(username, password)
        known = self.cache.get(key)
        if known is None and (pending := self._pending.get(key)) is not None:
            known = await asyncio.shield(pending)  # asked already: no second look at the sources
        if known is not None:
            return self._answered(known, username, client).settle()
        regulator = self.regulator
        if regulator is None:
            return (await self._coalesced(key, username, password, None)).settle()
        ticket = await regulator.admit(username, client)  # Throttled when a budget is spent
        outcome, resolved = "unknown", None
        try:
            try:
                verdict = await self._coalesced(key, username, password, ticket)
            except BindUnanswered:
                outcome = "failed"  # the password may have reached the directory: it counts
                raise
            if isinstance(verdict.refusal, InvalidCredentials):
                outcome = "failed"
            elif verdict.identity is not None:
                outcome, resolved = "succeeded", verdict.identity.username
            return verdict.settle()
        finally:
            for ban in regulator.settle(ticket, outcome, resolved, client):
                log.warning("regulation: %s", ban)

    def _answered(self, verdict: Verdict, username: str, client: str | None) -> Verdict:
        """A verdict that asked no source now: a ban still refuses it, except a success from an
        address this user signed in from (see sidecar.regulation)."""
        regulator = self.regulator
        if regulator is None:
            return verdict
        if verdict.identity is not None:
            resolved = verdict.identity.username
            if not regulator.known(resolved, client):
                why = regulator.banned(username, client) or regulator.banned(resolved, None)
                if why is not None:
                    return Verdict.refuse(Throttled(why))
            regulator.remember_client(resolved, client)  # in use from here: known as long as it is
            return verdict
        if isinstance(verdict.refusal, InvalidCredentials):
            for ban in regulator.failed(username, client):
                log.warning("regulation: %s", ban)
        return verdict

    async def _coalesced(self, key: bytes, username: str, password: str, ticket: Ticket | None) -> Verdict:
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            verdict = await self._ask_sources(username, password, ticket)
            if not isinstance(verdict.refusal, Throttled):  # a budget spent now says nothing later
                self.cache.put(key, verdict, success=not isinstance(verdict.refusal, InvalidCredentials))
            future.set_result(verdict)
            return verdict
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._pending[key]

    async def _ask_sources(self, username: str, password: str, ticket: Ticket | None) -> Verdict:
        regulator = self.regulator
        admit = None
        if regulator is not None and ticket is not None:
            admit = functools.partial(regulator.admit_resolved, ticket)
        try:
            identity = await self.sources.check_password(username, password, admit)
            return Verdict.allow(identity, self.writer.render(identity))
        except (InvalidCredentials, AccessDenied, Throttled) as exc:
            return Verdict.refuse(exc)


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
