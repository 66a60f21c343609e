"""EchoApp: an upstream application that answers every request with what it received.

The JSON answer (also kept in `EchoApp.requests`) is
`{"method", "path" (with query), "headers": [[name, value], ...], "raw_headers", "body"}`.
`headers` is in the order received, duplicates kept, values decoded as latin-1 like gunicorn does;
`raw_headers` is the header block exactly as received (latin-1 text: `.encode("latin-1")` gives
the original bytes back), for spellings and whitespace that parsing would hide. A path under
`/answer-status/NNN` is answered with status NNN (the same JSON), as an application refusing by
itself would.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from types import TracebackType
from typing import Any

Echo = dict[str, Any]


def header_values(echo: Echo, name: str) -> list[str]:
    """Every value of the header name (any letter case) in an echo, in order."""
    return [value for key, value in echo["headers"] if key.lower() == name.lower()]


class _RecordingReader:
    """Wraps the request stream and keeps every line read: the request line and the header block."""

    def __init__(self, stream: BufferedIOBase) -> None:
        self._stream = stream
        self.lines: list[bytes] = []

    def readline(self, limit: int = -1) -> bytes:
        line = self._stream.readline(limit)
        self.lines.append(line)
        return line

    def take(self) -> list[bytes]:
        lines, self.lines = self.lines, []
        return lines

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real application server offers
    server: _EchoServer

    def setup(self) -> None:
        super().setup()
        self.recorder = _RecordingReader(self.rfile)
        self.rfile = self.recorder  # type: ignore[assignment]

    def _echo(self) -> None:
        header_lines = self.recorder.take()[1:]  # the first line is the request line
        length = int(self.headers.get("Content-Length") or 0)
        echo: Echo = {
            "method": self.command,
            "path": self.path,
            "headers": [[name, value] for name, value in self.headers.items()],
            "raw_headers": b"".join(header_lines).decode("latin-1"),
            "body": self.rfile.read(length).decode("latin-1"),
        }
        self.server.record(echo)
        body = json.dumps(echo).encode()
        status = self.path.split("/")[2] if self.path.startswith("/answer-status/") else "200"
        self.send_response(int(status) if status.isdigit() else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _echo

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `requests`, not a log."""


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.requests: list[Echo] = []
        self._lock = threading.Lock()

    def record(self, echo: Echo) -> None:
        with self._lock:
            self.requests.append(echo)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Proxies close idle keep-alive connections (HAProxy with a reset): not an error of ours.
        if not isinstance(sys.exc_info()[1], ConnectionResetError):
            super().handle_error(request, client_address)


class EchoApp:
    """The echo upstream on a free 127.0.0.1 port, served from a background thread."""

    def __init__(self) -> None:
        self._server = _EchoServer()
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[Echo]:
        """Every request received so far, oldest first."""
        return self._server.requests

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> EchoApp:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
