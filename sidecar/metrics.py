"""Prometheus metrics: what the sidecar decided, how fast, and what it asked of others.

One :class:`Metrics` per process (it lives in :class:`sidecar.state.State`, so counters run on
across reloads), with a registry of its own: two in one process never share a series. Components
take it as ``metrics=`` and bind the children they need when they are built (``decisions("basic")``,
``lookups("verdict")``, ...), so a request pays for an increment, never for a label lookup. Labels
hold configured names only (methods, outcomes, servers, providers): never a username, a password,
a token or anything else a client chooses.

The instruments are this module's own: an increment is one attribute update, with no lock, since
every instrument but the directory's is only ever touched on the event loop (the directory's
worker threads record under one lock). Measured in a sidecar process under wrk, a cached /auth
(some 50 µs of CPU) paid about 1 µs for its metrics this way, and 4 to 5 µs with
prometheus_client's own instruments (a lock and a few checks per call). The library does the rest
(:mod:`sidecar.exposition`, imported only with metrics on): one collector of ours hands the values
to its registry at each scrape, as its metric families, and the library writes the exposition,
runs the process collectors and serves the page.

Metrics off (no ``metrics:`` section) is the same class with every instrument :data:`NULL`, an
object whose methods do nothing: the components cannot tell, and the cost is a call that returns.

``GET /metrics`` (Prometheus text, or OpenMetrics when asked) is served by :meth:`listener_app`
on a listener of its own (``metrics.listen``), never on the port the proxy talks to.

The outcomes, one vocabulary for every counter that has them (:func:`outcome_of`):
``allow`` / ``ok``, ``deny`` (401: wrong or malformed credentials), ``throttled`` (the regulation
refused), ``forbidden`` (403), ``bad_request`` (400), ``unavailable`` (503: a source cannot say),
``error`` (no answer: a directory server that failed, an unexpected exception), and for /auth
``unauthenticated`` (no credentials at all: a challenge or the login page).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from aiohttp import web

from sidecar import __version__
from sidecar.errors import AccessDenied, AuthError, MalformedRequest, Throttled, Unavailable

if TYPE_CHECKING:  # prometheus_client is imported where metrics are on (sidecar.exposition)
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

T_co = TypeVar("T_co", covariant=True)

# How a request came: its credentials, an application's own token passed on unjudged, or none.
METHODS = ("basic", "session", "bearer", "app_token", "none")
REFUSALS = ("deny", "throttled", "forbidden", "bad_request", "unavailable")
# /auth answers in well under a millisecond from a cache; a directory round trip takes milliseconds
# and its timeouts seconds. The scan stops at the first bucket that fits: the fast ones come first.
AUTH_BUCKETS = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0)
DIRECTORY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0)


class CounterLike(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class HistogramLike(Protocol):
    def observe(self, amount: float) -> None: ...


class Family(Protocol[T_co]):
    """A labelled metric: a child per combination of label values."""

    def labels(self, *values: str) -> T_co: ...


class _Null:
    """Every instrument when metrics are off: each method does nothing, ``labels`` is itself."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def set_function(self, f: Callable[[], float]) -> None:
        pass

    def info(self, value: dict[str, str]) -> None:
        pass

    def labels(self, *values: str) -> _Null:
        return self


NULL = _Null()


class _Count:
    """A counter (one combination of label values)."""

    __slots__ = ("value",)
    exported_as: ClassVar[str] = "counter"  # as sidecar.exposition.KINDS names it

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def export(self, family: Metric, values: list[str]) -> None:
        family.add_metric(values, self.value)  # type: ignore[attr-defined]


class _Timing:
    """A histogram: how many observations fell in each bucket (not cumulative: a scrape adds them up)."""

    __slots__ = ("bounds", "counts", "sum")
    exported_as: ClassVar[str] = "histogram"

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1  # the first bound >= amount: its le
        self.sum += amount

    def export(self, family: Metric, values: list[str]) -> None:
        total, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), list(self.counts), strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        family.add_metric(values, buckets, self.sum)  # type: ignore[attr-defined]


class _Gauge:
    """A value set now and then, or asked of a function at each scrape."""

    __slots__ = ("value", "function")
    exported_as: ClassVar[str] = "gauge"

    def __init__(self) -> None:
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self.value = value

    def set_function(self, f: Callable[[], float]) -> None:
        self.function = f

    def export(self, family: Metric, values: list[str]) -> None:
        family.add_metric(values, self.function() if self.function is not None else self.value)  # type: ignore[attr-defined]


class _Child(Protocol):
    exported_as: ClassVar[str]

    def export(self, family: Metric, values: list[str]) -> None: ...


C = TypeVar("C", bound=_Child)


class _Family(Generic[C]):
    """A metric: its name, help and label names, and a child per combination of label values."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], kind: type[C],
                 make: Callable[[], C]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.children: dict[tuple[str, ...], C] = {}
        self.kind = kind
        self._make = make

    def labels(self, *values: str) -> C:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self._make()
        return child



def outcome_of(error: AuthError) -> str:
    """The outcome label of a refusal (the module's docstring lists them)."""
    if isinstance(error, Throttled):
        return "throttled"
    if isinstance(error, AccessDenied):
        return "forbidden"
    if isinstance(error, MalformedRequest):
        return "bad_request"
    if isinstance(error, Unavailable):
        return "unavailable"
    return "deny"


class Outcomes:
    """One counter's children for each outcome of one kind of thing, bound at start-up, and the
    latency histogram child it is timed with (or :data:`NULL`). Recorded on the event loop, or,
    given a ``lock``, from any thread."""

    __slots__ = ("_by", "_ok", "_seconds", "_lock")

    def __init__(self, counter: Family[CounterLike], labels: tuple[str, ...], *, success: str = "ok",
                 others: Iterable[str] = (), seconds: HistogramLike = NULL,
                 lock: threading.Lock | None = None) -> None:
        self._by = {outcome: counter.labels(*labels, outcome)
                    for outcome in (success, *REFUSALS, "error", *others)}
        self._ok = self._by[success]
        self._seconds = seconds
        self._lock = lock

    def ok(self, started: float | None = None) -> None:
        """A success; ``started`` (time.perf_counter) times it."""
        if self._lock is None:
            self._ok.inc()
            if started is not None:
                self._seconds.observe(time.perf_counter() - started)
        else:
            self.count("ok", started)

    def refused(self, error: AuthError, started: float | None = None) -> None:
        self.count(outcome_of(error), started)

    def count(self, outcome: str, started: float | None = None) -> None:
        """An outcome by name: ``error``, ``unauthenticated``, or one of :func:`outcome_of`'s."""
        with self._lock or contextlib.nullcontext():
            self._by[outcome].inc()
            if started is not None:
                self._seconds.observe(time.perf_counter() - started)


class Lookups:
    """A cache's hits and misses."""

    __slots__ = ("hit", "miss")

    def __init__(self, family: Family[CounterLike], cache: str) -> None:
        self.hit = family.labels(cache, "hit")
        self.miss = family.labels(cache, "miss")


class _PerServer(dict[str, Outcomes]):
    """Outcomes by server URI, bound on first use for a server that was not known at start-up."""

    def __init__(self, bind: Callable[[str], Outcomes]) -> None:
        super().__init__()
        self._bind = bind

    def __missing__(self, server: str) -> Outcomes:
        outcomes = self[server] = self._bind(server)
        return outcomes


class Metrics:
    """Every metric of the sidecar (see the module's docstring); instruments that record nothing
    when ``enabled`` is false."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._families: list[_Family[Any]] = []
        self.registry: CollectorRegistry | None = None
        if enabled:
            from sidecar import exposition

            self.registry = exposition.registry(self._families, {"version": __version__})
        counter, timing, gauge = self._counter, self._timing, self._gauge
        self._decisions = counter("auth_sidecar_decisions_total",
                                  "/auth answers, by the kind of credentials and the outcome", ("method", "outcome"))
        self._auth_seconds = timing("auth_sidecar_auth_duration_seconds",
                                    "Time to answer /auth, by the kind of credentials", ("method",), AUTH_BUCKETS)
        self._directory = counter("auth_sidecar_directory_operations_total",
                                  "Operations on a directory server, by outcome", ("server", "operation", "outcome"))
        self._directory_seconds = timing("auth_sidecar_directory_operation_duration_seconds",
                                         "Time an operation took on a directory server", ("server", "operation"),
                                         DIRECTORY_BUCKETS)
        self._directory_requests = counter("auth_sidecar_directory_requests_total",
                                           "Requests sent to a directory server, each a round trip: connect "
                                           "(with StartTLS), bind, search (each page)", ("server", "request"))
        self._directory_lock = threading.Lock()  # the directory's worker threads record under it
        self._lookups = counter("auth_sidecar_cache_lookups_total",
                                "Lookups in the verdict cache (Basic and the login form), the decoded-session memo "
                                "and the verified-token memo", ("cache", "result"))
        self._bans = counter("auth_sidecar_bans_total",
                             "Bans started by the regulation, of a username or of an address", ("kind",))
        self._active_bans = gauge("auth_sidecar_bans_active", "Usernames and addresses banned now").labels()
        self.sessions_issued: CounterLike = counter("auth_sidecar_sessions_issued_total",
                                                    "Sessions started (the login form, single sign-on)").labels()
        self.sessions_renewed: CounterLike = counter(
            "auth_sidecar_sessions_renewed_total", "Session cookies sent again (the idle window slid, or re-checked)"
        ).labels()
        self._revoked = counter("auth_sidecar_sessions_revoked_total",
                                "Sign-outs: of one session, or of every session of a user", ("scope",))
        self._refreshes = counter("auth_sidecar_oidc_refreshes_total",
                                  "Identities renewed with a provider's refresh token, by outcome",
                                  ("provider", "outcome"))
        self._fetches = counter("auth_sidecar_key_fetches_total",
                                "Fetches of a provider's signing keys (JWKS) or discovery document, by outcome",
                                ("document", "outcome"))
        reloads = counter("auth_sidecar_reloads_total", "Configuration reloads, by result", ("result",))
        self._reloaded = {ok: reloads.labels("ok" if ok else "refused") for ok in (True, False)}
        self._reload_ok = gauge("auth_sidecar_config_last_reload_successful",
                                "1 when the last reload was taken (or none was tried), 0 when it was refused").labels()
        self._reload_ok.set(1)
        self._store = counter("auth_sidecar_state_store_operations_total",
                              "Operations on the shared state store (state.backend: redis), by outcome",
                              ("operation", "outcome"))
        # Exported only with a shared store (state.backend: redis): memory has nothing to be down.
        self._store_up = gauge("auth_sidecar_state_store_up",
                               "1 while the shared state store answers, 0 while this instance counts failures "
                               "and enforces sign-outs from what it knows locally")

    def _counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Family[CounterLike]:
        return self._family(name, documentation, labels, _Count, _Count)

    def _timing(self, name: str, documentation: str, labels: tuple[str, ...],
                buckets: tuple[float, ...]) -> Family[HistogramLike]:
        return self._family(name, documentation, labels, _Timing, functools.partial(_Timing, buckets))

    def _gauge(self, name: str, documentation: str) -> Family[_Gauge]:
        return self._family(name, documentation, (), _Gauge, _Gauge)

    def _family(self, name: str, documentation: str, labels: tuple[str, ...], kind: type[C],
                make: Callable[[], C]) -> Family[C]:
        """A metric of this object's registry; NULL (whose children are NULL) when metrics are off."""
        if self.registry is None:
            return NULL  # type: ignore[return-value]
        family = _Family(name, documentation, labels, kind, make)
        self._families.append(family)
        return family

    # -- what components bind when they are built --------------------------------------------------

    def decisions(self, method: str) -> Outcomes:
        """/auth answers for one of METHODS, timed; ``none`` (no credentials) has ``unauthenticated`` too."""
        return Outcomes(self._decisions, (method,), success="allow",
                        others=("unauthenticated",) if method == "none" else (),
                        seconds=self._auth_seconds.labels(method))

    def directory(self, servers: Iterable[str], operations: Iterable[str]) -> dict[str, dict[str, Outcomes]]:
        """For each operation, for each server URI: its outcomes, timed (bound now for these servers,
        and on first use for any other)."""
        servers = tuple(servers)
        found: dict[str, dict[str, Outcomes]] = {}
        for operation in operations:
            per_server = found[operation] = _PerServer(functools.partial(self._server_outcomes, operation))
            for server in servers:
                per_server[server] = self._server_outcomes(operation, server)
        return found

    def _server_outcomes(self, operation: str, server: str) -> Outcomes:
        return Outcomes(self._directory, (server, operation), seconds=self._directory_seconds.labels(server, operation),
                        lock=self._directory_lock)

    def directory_requests(self) -> Callable[[str, str, int], None]:
        """count(server, request, n): n round trips to a directory server (``connect``, ``bind``,
        ``search``), from any of the directory's threads. What a login costs the directory, which
        auth_sidecar_directory_operations_total (one per try of a whole check) does not say."""
        family, lock = self._directory_requests, self._directory_lock

        def count(server: str, request: str, n: int) -> None:
            with lock:
                family.labels(server, request).inc(n)
        return count

    def lookups(self, cache: str) -> Lookups:
        """``verdict``, ``session`` or ``bearer``."""
        return Lookups(self._lookups, cache)

    def bans(self) -> Mapping[str, CounterLike]:
        """Bans started, by what is banned: ``user`` or ``client``."""
        return {kind: self._bans.labels(kind) for kind in ("user", "client")}

    def count_bans(self, active: Callable[[], float]) -> None:
        """The gauge of bans in force, asked of ``active`` at each scrape."""
        self._active_bans.set_function(active)

    def revocations(self) -> Mapping[str, CounterLike]:
        """Sign-outs by scope: ``session`` (one) or ``user`` (everywhere)."""
        return {scope: self._revoked.labels(scope) for scope in ("session", "user")}

    def refreshes(self, provider: str) -> Outcomes:
        return Outcomes(self._refreshes, (provider,))

    def fetches(self, document: str) -> Mapping[str, CounterLike]:
        """``keys`` or ``discovery``: fetched (``ok``) or not (``failed``)."""
        return {outcome: self._fetches.labels(document, outcome) for outcome in ("ok", "failed")}

    def store(self) -> tuple[Callable[[str, str], None], Callable[[bool], None]]:
        """(count an operation on the shared store with its outcome ``ok`` or ``unavailable``, set
        whether the store is up)."""
        gauge = self._store_up.labels()
        return (lambda operation, outcome: self._store.labels(operation, outcome).inc(),
                lambda up: gauge.set(1 if up else 0))

    def reloaded(self, *, ok: bool) -> None:
        self._reloaded[ok].inc()
        self._reload_ok.set(1 if ok else 0)

    # -- serving ---------------------------------------------------------------------------------

    def listener_app(self) -> web.Application:
        """The application of the metrics listener: GET /metrics and nothing else."""
        app = web.Application()
        if self.registry is not None:
            from sidecar import exposition

            app.add_routes([exposition.handler(self.registry)])
        return app


NO_METRICS = Metrics(enabled=False)  # what a component built without metrics= records into: nothing
