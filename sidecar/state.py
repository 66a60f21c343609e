"""What outlives a reload of the configuration: failure counts and bans, signed-out sessions, the
sessions known (for the admin channel), metrics, and the connection to the fleet's shared store.

One :class:`State` per process. :func:`sidecar.app.make_app` takes these parts from it rather than
making its own, so the application a reload builds starts with the bans and sign-outs of the one it
replaces (a reload that forgot a revocation would let a signed-out cookie in again).

With ``state.backend: redis`` the regulator and the revocations are also shared through one
:class:`~sidecar.store.fleet.Fleet` (made on first use: ``state:`` is fixed at start, a reload
that changes it keeps the first).
"""

from __future__ import annotations

import logging

from sidecar.config import StateConfig
from sidecar.metrics import Metrics
from sidecar.regulation import Regulator
from sidecar.session_index import SessionIndex
from sidecar.sessions import Revocations
from sidecar.store.fleet import Fleet

log = logging.getLogger("sidecar.store")


class State:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics(enabled=False)
        self._regulator: Regulator | None = None
        self._revocations: Revocations | None = None
        self._sessions: SessionIndex | None = None
        self._shared: tuple[StateConfig, Fleet | None] | None = None

    def fleet(self, config: StateConfig) -> Fleet | None:
        """The process's fleet for ``state:`` (None for backend memory), made on first use."""
        if self._shared is None:
            fleet = None
            if config.backend == "redis":
                from sidecar.store.redis_store import RedisStore  # the redis package only when used

                fleet = Fleet(RedisStore.from_config(config), poll_every=config.poll_every, metrics=self.metrics)
            self._shared = (config, fleet)
        elif self._shared[0] != config:
            log.warning("state: is read at start only; restart to change it (kept: backend %s)",
                        self._shared[0].backend)
        return self._shared[1]

    def regulator(self, *, max_failures: int, window: float, ban: float, remember: float) -> Regulator:
        """The process's regulator, with these budgets."""
        if self._regulator is None:
            regulator = Regulator(max_failures=max_failures, window=window, ban=ban, remember=remember,
                                  metrics=self.metrics)
            self.metrics.count_bans(lambda: sum(1 for ban in regulator.bans() if ban.remaining))
            self._regulator = regulator
        else:
            self._regulator.retune(max_failures=max_failures, window=window, ban=ban, remember=remember)
        return self._regulator

    def revocations(self, *, lifetime: float) -> Revocations:
        """The process's signed-out sessions, each kept for at least ``lifetime`` seconds."""
        if self._revocations is None:
            self._revocations = Revocations(lifetime=lifetime, metrics=self.metrics)
        else:
            self._revocations.lifetime = max(self._revocations.lifetime, lifetime)
        return self._revocations

    def session_index(self, *, lifetime: float, idle_timeout: float) -> SessionIndex:
        """The sessions this process knows, per user (for the admin channel), with these lifetimes."""
        if self._sessions is None:
            self._sessions = SessionIndex(lifetime=lifetime, idle_timeout=idle_timeout)
        else:
            self._sessions.retune(lifetime=lifetime, idle_timeout=idle_timeout)
        return self._sessions

    @property
    def current_fleet(self) -> Fleet | None:
        return self._shared[1] if self._shared is not None else None

    @property
    def current_sessions(self) -> SessionIndex | None:
        return self._sessions

    @property
    def current_regulator(self) -> Regulator | None:
        return self._regulator

    @property
    def current_revocations(self) -> Revocations | None:
        return self._revocations
