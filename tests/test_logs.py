"""log.format: json on a real process: every line is one JSON object, each audit event (sign-in,
sign-out, refusal, ban, reload) carries its fields and the proxy's request id, and nothing secret
is anywhere in the log."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.config import LogConfig
from sidecar.logs import JsonFormatter, audit, setup
from tests.conftest import ldap_settings
from tests.testbed import free_port
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd

SECRET = "s" * 40
CSRF = "__Host-sidecar_csrf"
SESSION = "__Host-sidecar_session"
ORIGINAL = {"Host": "app.test", "X-Original-URI": "/admin/x?q=1"}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def cookie(response: aiohttp.ClientResponse, name: str) -> str:
    found = [v.split(";", 1)[0].split("=", 1)[1] for v in response.headers.getall("Set-Cookie", [])
             if v.startswith(name + "=")]
    assert found, response.headers
    return found[0]


async def sign_in(http: aiohttp.ClientSession, username: str, password: str) -> str:
    async with http.get("/login") as page:
        token = cookie(page, CSRF)
    async with http.post("/login", data={"username": username, "password": password, "csrf": token},
                         headers={"Cookie": f"{CSRF}={token}", "Origin": "https://app.test",
                                  "X-Request-ID": "login-1"}, allow_redirects=False) as response:
        assert response.status == 303, await response.text()
        return cookie(response, SESSION)


async def sign_out(http: aiohttp.ClientSession, session: str) -> None:
    async with http.get("/logout") as page:
        token = cookie(page, CSRF)
    async with http.post("/logout", data={"csrf": token}, allow_redirects=False,
                         headers={"Cookie": f"{CSRF}={token}; {SESSION}={session}",
                                  "Origin": "https://app.test"}) as response:
        assert response.status == 303


async def traffic(port: int) -> str:
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
        async def auth(**headers: str) -> int:
            async with http.get("/auth", headers={**ORIGINAL, **headers}) as response:
                return response.status

        assert await auth(**{"X-Request-ID": "0123456789abcdef"}) == 401
        assert await auth(Authorization=basic("alice", "alice-pass"), **{"X-Request-ID": "spoof 1"},
                          **{"Remote-User": "admin"}) == 400
        assert await auth(Authorization=basic("carol", "carol-pass"), **{"X-Request-ID": "denied-1"}) == 403
        session = await sign_in(http, "alice", "alice-pass")
        assert await auth(Cookie=f"{SESSION}={session}") == 200
        await sign_out(http, session)
        for _ in range(3):  # the last: the address is banned
            assert await auth(Authorization=basic("bob", "wrong-pass-xyz"), **{"X-Request-ID": "wrong-1"}) == 401
        return session


@pytest.mark.server
def test_json_lines_carry_every_audit_event_and_no_secret(tmp_path: Path, slapd: Slapd) -> None:
    port = free_port()
    config: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}", "public_url": "https://app.test/_sidecar"},
        "ldap": ldap_settings(slapd),
        "sessions": {"keys": [{"id": "k1", "secret": SECRET}], "default_redirect": "https://app.test/"},
        "regulation": {"max_failures": 2},
        "access": {"rules": [{"path": "/admin", "users": ["alice"]}, {"path": "/admin", "policy": "deny"}]},
        "log": {"format": "json"},
        "admin": {"enabled": False},
    }
    with SidecarProcess(tmp_path, config) as process:
        session = asyncio.run(traffic(port))
        assert process.pid is not None
        os.kill(process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while '"event": "reload"' not in process.log() and time.monotonic() < deadline:
            time.sleep(0.05)
    text = process.log()
    records = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "event", "message"} <= set(r) for r in records)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_event.setdefault(record["event"], []).append(record)

    refusals = by_event["refusal"]
    wrong = [r for r in refusals if r.get("request_id") == "wrong-1"]
    assert wrong and wrong[0]["status"] == 401 and wrong[0]["client"] == "127.0.0.1"
    assert wrong[0]["method"] == "GET" and wrong[0]["host"] == "app.test" and wrong[0]["path"] == "/admin/x"
    assert [r["request_id"] for r in refusals if r["status"] == 400] == ["(malformed)"]  # "spoof 1" has a space
    denied = [r for r in refusals if r["status"] == 403]
    assert denied[0]["user"] == "carol" and denied[0]["request_id"] == "denied-1"
    assert by_event["ban"][0]["client"] == "127.0.0.1" and "banned" in by_event["ban"][0]["reason"]
    (signed_in,) = by_event["sign_in"]
    assert signed_in["user"] == "alice" and signed_in["source"] == "ldap" and signed_in["request_id"] == "login-1"
    assert by_event["sign_out"][0]["user"] == "alice"
    assert by_event["reload"][0]["status"] == "ok"
    assert {"start", "stop"} <= set(by_event)

    for secret in ("alice-pass", "carol-pass", "wrong-pass-xyz", slapd.service_password, SECRET, session,
                   base64.b64encode(b"alice:alice-pass").decode()):
        assert secret not in text


def test_the_formatter_escapes_control_characters_and_keeps_one_line() -> None:
    record = logging.LogRecord("sidecar", logging.WARNING, __file__, 1, "refused %s", ("a\nb\x1b[31m",), None)
    record.__dict__.update(audit("refusal", {"X-Request-ID": "x\r\ny"}, user="e\u202evil", status=401))
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line
    entry = json.loads(line)
    assert entry["message"] == "refused a\nb\x1b[31m" and entry["request_id"] == "(malformed)"
    assert entry["user"] == "e\u202evil" and entry["status"] == 401


def test_setup_replaces_the_handler_so_a_reload_can_change_the_format() -> None:
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    try:
        setup(LogConfig(format="json"))
        setup(LogConfig(format="text", level="warning"))
        assert len(root.handlers) == 1 and not isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.WARNING
    finally:
        root.handlers[:] = kept[0]
        root.setLevel(kept[1])
