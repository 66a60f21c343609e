"""The exceptions of auth-sidecar.

    SidecarError
    ├── ConfigError               the configuration is invalid (carries every problem found)
    ├── SessionTooLarge           a session does not fit a cookie (sidecar.sessions)
    ├── AssertionRejected         an application refuses a signed identity (sidecar.contrib.assertion)
    └── AuthError                 a request cannot be given an identity
        ├── BadRequest            malformed credentials: 401 without contacting anyone
        ├── MalformedRequest      an ambiguous or malformed request (host, path, spoofed headers): 400
        ├── InvalidCredentials    the directory refused the credentials: 401
        │   ├── UnknownUser       no such user here (another source may know them)
        │   └── TokenRejected     a token is not valid for us (sidecar.tokens)
        │       └── UnknownKey    ... signed with a key id we lack: refetch the keys once
        ├── Throttled             too many failures for this user or address: 401 / 429
        ├── AccessDenied          the identity is valid but not allowed: 403
        └── DirectoryUnavailable  no directory server answered in time: 503
            ├── BindUnanswered    ... after a user's bind was sent: it counts as a failed login
            └── ProviderUnavailable  an identity provider cannot be reached (sidecar.jwks)
                └── KeysUnavailable  ... nor its signing keys

Every AuthError carries a ``reason`` for the operator's log line. Clients never see it. A refusal
travels one way: raised by an authenticator, answered by ``routes.auth`` alone.
"""

from __future__ import annotations

import copy


class SidecarError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(SidecarError):
    """The configuration is invalid; ``problems`` lists each one with its YAML path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


class AuthError(SidecarError):
    """Raised by an authenticator and answered once, by the /auth handler (``routes.auth``)."""

    status = 401
    set_cookie: str | None = None  # a cookie to set with the refusal (an ended session cleared)

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

    def again(self) -> AuthError:
        """A fresh copy to raise: a refusal kept in a cache must not gather the tracebacks (and
        with them the frames, and the passwords in them) of every time it is raised."""
        fresh = copy.copy(self)
        fresh.__traceback__ = fresh.__cause__ = fresh.__context__ = None
        return fresh


class BadRequest(AuthError):
    pass


class MalformedRequest(AuthError):
    """The request could be read in more than one way, or carries what no proxy of ours would pass."""

    status = 400


class InvalidCredentials(AuthError):
    pass


class UnknownUser(InvalidCredentials):
    pass


class Throttled(AuthError):
    pass


class AccessDenied(AuthError):
    status = 403


class DirectoryUnavailable(AuthError):
    status = 503


class BindUnanswered(DirectoryUnavailable):
    """A user's bind went out and no answer came: the directory may have counted a wrong password,
    so the regulation counts it too, and it is never sent again elsewhere."""
