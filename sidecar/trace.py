"""Following one sign-in step by step, for ``auth-sidecar test-login``.

The code on a sign-in's path tells the current trace what it does, where it does it::

    if (trace := current()) is not None:
        trace.step("bind", f"as {dn}: password accepted")

so the tool shows the path the daemon really takes, not a retelling of it. The trace is a context
variable: it follows the sign-in into the tasks it starts, and the directory hands it on to its
worker thread (:meth:`sidecar.ldap.Directory._run`). Outside test-login there is none, and each of
those points costs one lookup. Nothing secret is ever given to a trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sidecar.errors import AuthError


class Trace:
    """Where the steps of one sign-in go (``say(topic, text)``, in the order they happen), and
    what the end of it needs: the memberships seen on the way to nested groups, the refusal."""

    def __init__(self, say: Callable[[str, str], None]) -> None:
        self._say = say
        self.memberships: list[tuple[str, str]] = []  # (member DN, group DN), as found
        self.refusal: AuthError | None = None

    def step(self, topic: str, text: str) -> None:
        self._say(topic, text)

    def member(self, member: str, group: str) -> None:
        """``member`` (a user's or a group's DN) is a direct member of the group ``group``."""
        self.memberships.append((member, group))

    def refused(self, error: AuthError) -> None:
        """The refusal /auth answers with (the last one, if several are raised on the way)."""
        self.refusal = error


_CURRENT: ContextVar[Trace | None] = ContextVar("sidecar_trace", default=None)


def current() -> Trace | None:
    """The trace of the sign-in under way here, or None (always, outside test-login)."""
    return _CURRENT.get()


@contextmanager
def tracing(trace: Trace) -> Iterator[Trace]:
    """Within the block, sign-ins started in this context report to ``trace``."""
    token = _CURRENT.set(trace)
    try:
        yield trace
    finally:
        _CURRENT.reset(token)
