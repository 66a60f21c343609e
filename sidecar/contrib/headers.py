"""Reading the identity headers inside an application: names, UTF-8 decoding, the assertion gate.

The sidecar sends header values as raw UTF-8 bytes. WSGI servers (gunicorn included) decode header
bytes as latin-1, so ``José`` arrives in the environ as ``JosÃ©``; :func:`decode` undoes that.

An :class:`IdentityReader` is built once (by the Django or WSGI integration) and turns a WSGI
environ into an :class:`~sidecar.identity.Identity`, or None when the request carries none. With a
verifier configured, the plain headers count only when ``Remote-User-Assertion`` verifies and says
the same; anything else is refused with one warning in the log (never the token itself).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

from sidecar.contrib.assertion import AssertionVerifier
from sidecar.errors import AssertionRejected
from sidecar.identity import Identity

log = logging.getLogger("sidecar.contrib")

# Set in an environ whose identity values were decoded in place, so they are never decoded twice.
DECODED = "sidecar.decoded"


def decode(value: str) -> str:
    """The text the sender meant: UTF-8 bytes read as latin-1 turned back; other values unchanged."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        # Plain ASCII never gets here; genuine latin-1 and already-decoded text stay as they are.
        return value


def environ_key(header: str) -> str:
    """The WSGI environ key a header arrives under: ``Remote-User-Email`` -> ``HTTP_REMOTE_USER_EMAIL``."""
    return "HTTP_" + header.upper().replace("-", "_")


@dataclass(frozen=True)
class HeaderNames:
    """The identity header names; the keys are those of the sidecar's ``headers:`` section."""

    user: str = "Remote-User"
    first_name: str = "Remote-User-First-Name"
    last_name: str = "Remote-User-Last-Name"
    email: str = "Remote-User-Email"
    groups: str = "Remote-User-Group"
    is_staff: str = "Remote-User-Staff"
    is_superuser: str = "Remote-User-Superuser"
    assertion: str = "Remote-User-Assertion"

    @classmethod
    def from_mapping(cls, given: Mapping[str, str] | None) -> HeaderNames:
        """The defaults with ``given`` applied; ValueError naming every unknown key or bad name."""
        if given is None:
            return cls()
        if not isinstance(given, Mapping):
            raise ValueError(f"expected a dict of header names, got {type(given).__name__}")
        known = {field.name for field in fields(cls)}
        problems = [f"unknown header key {key!r} (known: {', '.join(sorted(known))})"
                    for key in given if key not in known]
        problems += [f"{key}: not a header name without underscores: {value!r}"
                     for key, value in given.items() if key in known and not _header_name(value)]
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**given)

    def keys(self) -> dict[str, str]:
        """Each field -> the environ key of its header."""
        return {field.name: environ_key(getattr(self, field.name)) for field in fields(self)}


def _header_name(value: object) -> bool:
    # gunicorn drops header names with underscores: such a name would never arrive.
    return isinstance(value, str) and bool(value) and "_" not in value and value.isascii() \
        and all(c.isalnum() or c in "!#$%&'*+.^`|~-" for c in value)


class Verifier(Protocol):
    """What checks an assertion: :class:`sidecar.contrib.assertion.AssertionVerifier`, or a test's fake."""

    def verify(self, token: str, headers: Mapping[str, str]) -> object:
        """The claims; raises AssertionRejected unless the token is valid and matches ``headers``."""
        ...


def make_verifier(assertion: Mapping[str, Any] | Verifier | None, separator: str) -> Verifier | None:
    """None, a ready verifier, or an AssertionVerifier built from its keyword arguments."""
    if assertion is None or not isinstance(assertion, Mapping):
        return assertion
    return AssertionVerifier(**{"group_separator": separator, **assertion})


class IdentityReader:
    """Reads (and, with a verifier, checks) the identity a WSGI environ carries."""

    def __init__(self, names: HeaderNames, separator: str = "|", verifier: Verifier | None = None) -> None:
        if not isinstance(separator, str) or not separator:
            raise ValueError(f"the group separator must be a non-empty string, got {separator!r}")
        self.names = names
        self.separator = separator
        self.verifier = verifier
        self.keys = names.keys()
        # Renamed or not, anything spelled like NetBox's headers is an identity header too.
        self._prefixes = (self.keys["user"], "HTTP_REMOTE_USER")

    def read(self, environ: Mapping[str, Any]) -> Identity | None:
        """The identity, or None: no user header, or (with a verifier) an assertion that fails."""
        values = self._values(environ)
        token = str(environ.get(self.keys["assertion"], ""))
        if not values["user"]:
            if token and self.verifier is not None:
                log.warning("refused identity headers: %s without %s", self.names.assertion, self.names.user)
            return None
        if self.verifier is not None and not _verified(self.verifier, token, values, self.names.assertion):
            return None
        return Identity(
            username=values["user"],
            first_name=values["first_name"],
            last_name=values["last_name"],
            email=values["email"],
            groups=tuple(dict.fromkeys(g for g in values["groups"].split(self.separator) if g)),
            is_staff=values["is_staff"] == "true",
            is_superuser=values["is_superuser"] == "true",
            source="headers",
        )

    def present(self, environ: Mapping[str, Any]) -> list[str]:
        """The environ keys of identity headers: the configured ones, and any starting like the user's."""
        configured = set(self.keys.values())
        return [key for key in environ if key in configured or key.startswith(self._prefixes)]

    def scrub(self, environ: MutableMapping[str, Any]) -> None:
        """Remove every identity header, so nothing later can read a refused identity by accident."""
        for key in self.present(environ):
            del environ[key]

    def decode_in_place(self, environ: MutableMapping[str, Any]) -> None:
        """Replace the identity values by their decoded text, once (for code that reads them directly)."""
        if environ.get(DECODED):
            return
        for key in self.present(environ):
            if isinstance(environ[key], str):
                environ[key] = decode(environ[key])
        environ[DECODED] = True

    def _values(self, environ: Mapping[str, Any]) -> dict[str, str]:
        decoded = bool(environ.get(DECODED))
        values = {}
        for name in ("user", "first_name", "last_name", "email", "groups", "is_staff", "is_superuser"):
            raw = environ.get(self.keys[name])
            # Missing is empty: "no" for a flag, no groups; never "unchanged" (see contrib.django).
            text = raw if isinstance(raw, str) else ""
            values[name] = text if decoded else decode(text)
        return values


def _verified(verifier: Verifier, token: str, values: Mapping[str, str], header: str) -> bool:
    if not token:
        log.warning("refused identity headers for %r: no %s", values["user"], header)
        return False
    try:
        verifier.verify(token, values)
    except AssertionRejected as exc:
        log.warning("refused identity headers for %r: %s", values["user"], exc.reason)
        return False
    return True


def identity_dict(identity: Identity) -> dict[str, Any]:
    """The identity as plain data (what the WSGI middleware puts in ``environ["sidecar.identity"]``)."""
    return {
        "username": identity.username,
        "first_name": identity.first_name,
        "last_name": identity.last_name,
        "email": identity.email,
        "groups": list(identity.groups),
        "is_staff": identity.is_staff,
        "is_superuser": identity.is_superuser,
    }
