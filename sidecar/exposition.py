"""The metrics as Prometheus reads them: prometheus_client's registry, the process's own collectors
and the ``/metrics`` handler. Imported only where metrics are on (:class:`sidecar.metrics.Metrics`
with ``enabled``): the library and its exposition code are some 3 MB a sidecar without a
``metrics:`` section never needs. The instruments themselves are :mod:`sidecar.metrics`' own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sidecar.metrics import _Family

KINDS: dict[str, type[Metric]] = {"counter": CounterMetricFamily, "histogram": HistogramMetricFamily,
                                  "gauge": GaugeMetricFamily}


class _Collector(Collector):
    """Hands the registry every family of one Metrics, as prometheus_client's metric families."""

    def __init__(self, families: list[_Family[Any]], info: dict[str, str]) -> None:
        self._families = families
        self._info = info

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily("auth_sidecar", "The running auth-sidecar", value=self._info)
        for family in self._families:
            exported = KINDS[family.kind.exported_as](family.name, family.documentation,  # type: ignore[call-arg]
                                                      labels=list(family.labelnames))
            for values, child in list(family.children.items()):
                child.export(exported, list(values))
            yield exported


def registry(families: list[_Family[Any]], info: dict[str, str]) -> CollectorRegistry:
    """A registry of its own for one Metrics: its families (read at each scrape, as the list
    grows) and the process's figures (CPU, memory, file descriptors, GC)."""
    made = CollectorRegistry()
    made.register(_Collector(families, info))
    ProcessCollector(registry=made)
    PlatformCollector(registry=made)
    GCCollector(registry=made)
    return made


def handler(of: CollectorRegistry) -> web.RouteDef:
    """GET /metrics: Prometheus text, or OpenMetrics when asked."""
    return web.get("/metrics", make_aiohttp_handler(of))
