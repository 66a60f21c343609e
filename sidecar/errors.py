"""The exceptions of auth-sidecar, every one of them.

    SidecarError
    ├── ConfigError               the configuration is invalid (carries every problem found)
    ├── SecretSourceError         a secret's source cannot be read (also a ValueError)
    ├── SessionTooLarge           a session does not fit a cookie
    ├── Unsealable                a sealed value cannot be opened (for a debug line only)
    ├── FetchFailed               an HTTP fetch got no answer at all
    ├── AssertionRejected         an application refuses a signed identity (sidecar.contrib)
    └── AuthError                 a request cannot be given an identity
        ├── BadRequest            malformed credentials: 401 without contacting anyone
        ├── MalformedRequest      an ambiguous or malformed request (host, path, spoofed headers): 400
        ├── InvalidCredentials    the source refused the credentials: 401
        │   ├── UnknownUser       no such user here (another source may know them)
        │   └── TokenRejected     a token is not valid for us
        │       └── UnknownKey    ... signed with a key id we lack: refetch the keys once
        ├── Throttled             too many failures for this user or address: 401 / 429
        ├── FactorRequired        the session lacks the (recent) second factor the path asks: 401
        ├── AccessDenied          the identity is valid but not allowed: 403
        │   ├── FactorUnavailable ... Basic or Bearer where a second factor is asked
        │   └── AccountRefused    ... the account may not sign in at all (inactive, require/deny group)
        └── Unavailable           a source cannot answer now: 503, never an allow
            ├── DirectoryUnavailable  no directory server answered, or its answer was incomplete
            │   └── BindUnanswered    ... after a user's bind was sent: it counts as a failed login
            └── ProviderUnavailable   an identity provider cannot be reached
                └── KeysUnavailable   ... nor its signing keys

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
    user: str | None = None  # who was refused, when the refusal knows (for the audit log)

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


class FactorRequired(AuthError):
    """A browser's session lacks the second factor this request needs (or a recent enough one):
    browsers are sent to the code page, as those without a session to the login page."""


class FactorUnavailable(AccessDenied):
    """Basic credentials or a Bearer token on a path that asks for a second factor: they cannot carry one."""


class AccountRefused(AccessDenied):
    """The account may not sign in anywhere here: not active, or refused by ``require_group`` /
    ``deny_group``. Raised only once its source has accepted the password (or, for a session, read
    the user again), so the login page may say so without telling a stranger anything."""


class Unavailable(AuthError):
    """Someone who could say cannot, now: a 503, and never an allow."""

    status = 503


class DirectoryUnavailable(Unavailable):
    """No directory server answered in time, or its answer was incomplete."""


class BindUnanswered(DirectoryUnavailable):
    """A user's bind went out and no answer came: the directory may have counted a wrong password,
    so the regulation counts it too, and it is never sent again elsewhere."""


class ProviderUnavailable(Unavailable):
    """The OpenID provider's discovery document cannot be fetched, or is not valid."""


class KeysUnavailable(ProviderUnavailable):
    """No key set has been fetched yet, and fetching one failed."""


class TokenRejected(InvalidCredentials):
    """The token is not a valid, current token for us. The reason names no part of the token but short fields."""


class UnknownKey(TokenRejected):
    """The token names a key id the key set lacks: refresh the keys (rate-limited) and verify once more."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        shown = repr(kid)
        super().__init__(f"no key with kid {shown if len(shown) <= 40 else shown[:40] + '...'} in the key set")


class SecretSourceError(SidecarError, ValueError):
    """A secret's source cannot be read; the message names the source, never the value."""


class SessionTooLarge(SidecarError):
    """The encoded session exceeds ``max_bytes``: store fewer groups in it, or keep it server-side."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"the session cookie would be {size} bytes, more than {limit}")


class Unsealable(SidecarError):
    """Why a value cannot be opened: for a debug log line, never for the client."""


class FetchFailed(SidecarError):
    """No answer: the reason (a timeout, the client's error) for the operator's log line."""


class AssertionRejected(SidecarError):
    """An assertion is missing, invalid or does not match the headers; ``reason`` is for the log only."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
