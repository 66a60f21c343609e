"""Verdicts, and the protocol every way of authenticating implements.

An :class:`Authenticator` answers ``None`` (no credentials of its kind here), a :class:`Verdict`
(who the request belongs to, with the headers to answer with), or raises the refusal
(:class:`~sidecar.errors.AuthError`), which ``routes.auth`` alone turns into the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from sidecar.errors import AuthError
from sidecar.headers import Headers
from sidecar.identity import Identity


@dataclass(frozen=True, slots=True)
class Verdict:
    """An identity with its headers, rendered once when the verdict is made — or, where verdicts are
    kept (the verdict cache), the refusal of those credentials. Made by :meth:`allow` or
    :meth:`refuse`, never both; a refusal leaves an authenticator only as its exception."""

    identity: Identity | None
    refusal: AuthError | None
    headers: Headers
    set_cookie: str | None  # a refreshed session cookie for the browser
    # How the identity signed in (sidecar.factors: pwd, otp, hwk), when its second factor was given
    # (0: none) and when it last authenticated (None: now, for credentials sent with each request).
    methods: tuple[str, ...] = ("pwd",)
    factor_at: float = 0.0
    auth_time: float | None = None

    @classmethod
    def allow(cls, identity: Identity, headers: Headers, set_cookie: str | None = None, *,
              methods: tuple[str, ...] = ("pwd",), factor_at: float = 0.0, auth_time: float | None = None) -> Verdict:
        return cls(identity, None, headers, set_cookie, methods, factor_at, auth_time)

    @classmethod
    def refuse(cls, error: AuthError) -> Verdict:
        return cls(None, bare(error), (), None)

    def settle(self) -> Verdict:
        """This verdict if it allows; else its refusal raised (a fresh copy of it)."""
        if self.refusal is not None:
            raise self.refusal.again()
        return self


class Authenticator(Protocol):
    """``None``: no credentials of mine here; a Verdict: who it is; AuthError raised: refused."""

    method: str  # the kind of credentials it reads, as metrics count them: basic, session, bearer

    async def authenticate(self, request: web.Request) -> Verdict | None: ...



def bare(error: AuthError) -> AuthError:
    """The refusal without its traceback and chained causes: their frames hold the password."""
    error.__traceback__ = None
    error.__cause__ = error.__context__ = None
    return error
