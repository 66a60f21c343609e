"""Secrets: values that must never reach a log line, an error message or a ``repr``.

A secret in the configuration is given inline, as ``{env: NAME}`` or as ``{file: PATH}``.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from sidecar.errors import SecretSourceError


class Secret:
    """A string that hides itself; call :meth:`reveal` at the one place that needs the value."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "inline") -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Secret('**********', source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def load_secret(spec: object) -> Secret:
    """Build a Secret from a config value: a string, ``{"env": NAME}`` or ``{"file": PATH}``."""
    if isinstance(spec, str):
        return Secret(spec)
    if isinstance(spec, dict) and len(spec) == 1:
        ((kind, where),) = spec.items()
        if kind == "env" and isinstance(where, str):
            value = os.environ.get(where)
            if value is None:
                raise SecretSourceError(f"environment variable {where} is not set")
            return Secret(value, source=f"env:{where}")
        if kind == "file" and isinstance(where, str):
            try:
                text = Path(where).read_text(encoding="utf-8")
            except OSError as exc:
                raise SecretSourceError(f"cannot read {where}: {exc.strerror}") from None
            # Editors and `echo` add a final newline that is never part of the secret.
            return Secret(text.rstrip("\r\n"), source=f"file:{where}")
    raise SecretSourceError("expected a string, {env: NAME} or {file: PATH}")
