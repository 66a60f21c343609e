"""Logging: plain lines for a terminal or the journal, or one JSON object per line for a collector.

``log.format: json`` writes each record as ``{"time", "level", "logger", "event", "message", ...}``
with the fields a record carries in ``extra`` (user, source, client, method, host, path, status,
reason, request_id): an audit event is a record with ``extra={"event": ...}``. Nothing secret is ever
put in a record; values are already clean text (json.dumps escapes control characters, and everything beyond ASCII).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping

from sidecar.config import LogConfig

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("event", "user", "source", "client", "method", "host", "path", "status", "reason", "request_id")
# What a proxy's request id looks like (nginx's $request_id is 32 hex digits; UUIDs; Apache's UNIQUE_ID).
REQUEST_ID = re.compile(r"[A-Za-z0-9@._:+/=-]{1,128}")


def audit(event: str, headers: Mapping[str, str] | None = None, **fields: object) -> dict[str, object]:
    """``extra`` for an audit record: the event, the proxy's ``X-Request-ID`` if ``headers`` has a
    well-formed one, and the fields given (None values left out)."""
    extra: dict[str, object] = {"event": event}
    extra.update((name, value) for name, value in fields.items() if value is not None)
    if headers is not None and (request_id := headers.get("X-Request-ID")):
        extra["request_id"] = request_id if REQUEST_ID.fullmatch(request_id) else "(malformed)"
    return extra


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": "log",
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)  # ASCII: no raw line separators or direction marks


class ProtocolErrors(logging.Filter):
    """aiohttp logs every malformed request (a bad request line, an over-long header) at ERROR with
    a traceback: anyone reaching the port could flood the log. One warning line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "%d malformed HTTP request from %s: %s"
            record.args = (error.code, peer, repr(error.message)[:200])
            record.exc_info = record.exc_text = None
            record.__dict__["event"] = "malformed_request"
        return True


def setup(config: LogConfig, *, level: str | None = None) -> None:
    """Send the process's log to standard error as ``config`` says (again at a reload)."""
    chosen = (level or config.level).upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(chosen)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ProtocolErrors) for f in server.filters):
        server.addFilter(ProtocolErrors())
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)  # written only with server.access_log
