"""What outlives a reload of the configuration: failure counts and bans, signed-out sessions, metrics.

One :class:`State` per process. :func:`sidecar.app.make_app` takes these parts from it rather than
making its own, so the application a reload builds starts with the bans and sign-outs of the one it
replaces (a reload that forgot a revocation would let a signed-out cookie in again).
"""

from __future__ import annotations

from sidecar.metrics import Metrics
from sidecar.regulation import Regulator
from sidecar.sessions import Revocations


class State:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics(enabled=False)
        self._regulator: Regulator | None = None
        self._revocations: Revocations | None = None

    def regulator(self, *, max_failures: int, window: float, ban: float, remember: float) -> Regulator:
        """The process's regulator, with these budgets."""
        if self._regulator is None:
            self._regulator = Regulator(max_failures=max_failures, window=window, ban=ban, remember=remember)
        else:
            self._regulator.retune(max_failures=max_failures, window=window, ban=ban, remember=remember)
        return self._regulator

    def revocations(self, *, lifetime: float) -> Revocations:
        """The process's signed-out sessions, each kept for at least ``lifetime`` seconds."""
        if self._revocations is None:
            self._revocations = Revocations(lifetime=lifetime)
        else:
            self._revocations.lifetime = max(self._revocations.lifetime, lifetime)
        return self._revocations

    @property
    def current_regulator(self) -> Regulator | None:
        return self._regulator

    @property
    def current_revocations(self) -> Revocations | None:
        return self._revocations
