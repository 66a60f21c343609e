"""Prometheus metrics (placeholder: the metrics work fills this in)."""

from __future__ import annotations

from aiohttp import web


class Metrics:
    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled

    def reloaded(self, *, ok: bool) -> None:
        pass

    def listener_app(self) -> web.Application:
        return web.Application()
