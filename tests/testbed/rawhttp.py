"""A raw HTTP/1.1 client for proxy tests: requests written byte for byte, answers kept whole.

Ordinary clients merge duplicated headers and refuse underscores in names, which are exactly
the spellings a spoofing test must send.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from tests.testbed.upstream import Echo

Headers = Sequence[tuple[str, str]]

# Client-sent identity headers every proxy must keep from the application, in every spelling
# (proxies.md, "Spoofing: what a test must try"), and the values they carry.
SPOOFS: list[Headers] = [
    [("Remote-User", "admin")],
    [("remote-user", "admin")],
    [("REMOTE-USER", "admin")],
    [("Remote_User", "admin")],
    [("Remote-User_Email", "admin@evil.test")],
    [("Remote_User_Group", "superusers")],
    [("REMOTE_USER", "admin")],
    [("rEmOtE_uSeR-eMaIl", "admin@evil.test")],
    [("Remote-User-Superuser", "true"), ("Remote-User-Staff", "true")],
    [("Remote-User-Assertion", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.")],
    [("Remote-User-Auth-Methods", "pwd|hwk"), ("remote_user_auth_methods", "pwd|hwk")],  # "a passkey was used"
    [("Remote-User", "admin"), ("Remote-User", "root")],
    [("Remote-User-Group", "superusers"), ("remote-user-group", "admins")],
]
SPOOFED_VALUES = ("admin", "root", "superusers", "admins", "admin@evil.test", "pwd|hwk")


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def echo(self) -> Echo:
        echo: Echo = json.loads(self.body)
        return echo


def send(port: int, path: str = "/", headers: Headers = (), method: str = "GET", body: bytes = b"") -> Response:
    """One request written byte for byte (clients would merge duplicates and reject underscores)."""
    return exchange(port, raw_request(method, path, [("Host", f"localhost:{port}"), *headers], body=body),
                    method=method)


def raw_request(method: str, target: str, headers: Headers, *, body: bytes = b"") -> bytes:
    """The request exactly as given (Host included, or not: it is one of headers), then
    `Connection: close` on a line of its own and the body's Content-Length. Header lines are
    `name: value` unless the name ends with ":" (then the value follows it as is, e.g. a tab);
    text is latin-1, so a value can carry any byte (`utf8()` turns text into its UTF-8 bytes)."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}{value}" if name.endswith(":") else f"{name}: {value}" for name, value in headers]
    lines.append("Connection: close")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def utf8(text: str) -> str:
    """text as the latin-1 string of its UTF-8 bytes: what raw_request must write to send them."""
    return text.encode("utf-8").decode("latin-1")


def exchange(port: int, request: bytes, *, method: str = "GET") -> Response:
    """Send request bytes to 127.0.0.1:port on a new connection and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return Response(response.status, response.getheaders(), response.read())


def is_identity(name: str) -> bool:
    """Every spelling an application might read as an identity header."""
    return name.lower().replace("_", "-").startswith("remote-user")


def identity_seen(echo: Echo) -> list[tuple[str, str]]:
    return [(name, value) for name, value in echo["headers"] if is_identity(name)]
