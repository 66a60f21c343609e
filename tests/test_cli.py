"""The auth-sidecar command: its helpers (hash-password, generate-secret) and what serve refuses."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.config import parse_config
from sidecar.local import LocalUsers
from tests.conftest import group, ldap_settings
from tests.testbed import ROOT, free_port
from tests.testbed.slapd import Slapd


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize(("scheme", "suffix", "line"), [
    ("argon2id", "users.yaml", "users:\n  ann:\n    password: '{hash}'\n"),
    ("bcrypt", "users.htpasswd", "ann:{hash}\n"),
])
def test_hash_password_makes_a_hash_the_users_file_accepts(tmp_path: Path, scheme: str, suffix: str,
                                                          line: str) -> None:
    result = cli("hash-password", "--scheme", scheme, stdin="Piped-pass 1\n")
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert "Piped-pass" not in hashed
    path = tmp_path / suffix
    path.write_text(line.format(hash=hashed))
    users = LocalUsers(path)
    assert users.verify("ann", "Piped-pass 1") is not None
    assert users.verify("ann", "Piped-pass") is None


def test_hash_password_refuses_an_empty_password() -> None:
    result = cli("hash-password", stdin="\n")
    assert result.returncode == 2 and "empty" in result.stderr and result.stdout == ""


def test_generate_secret_is_random_and_accepted_as_a_session_key() -> None:
    first, second = cli("generate-secret").stdout.strip(), cli("generate-secret").stdout.strip()
    assert first != second and len(first) >= 32
    parse_config({"server": {"public_url": "https://app.test/_sidecar"},
                  "ldap": {"server_uri": "ldap://x", "user_dn_template": "uid=%(user)s,dc=x"},
                  "sessions": {"keys": [{"id": "k", "secret": first}], "recheck_every": 0}})


def test_serve_refuses_a_group_type_the_directory_cannot_answer(tmp_path: Path, slapd: Slapd) -> None:
    # active_directory against OpenLDAP would silently find no groups, so deny_group would never match.
    config = tmp_path / "config.yaml"
    settings = ldap_settings(slapd, group_type="active_directory", deny_group=group("banned"))
    config.write_text(yaml.safe_dump({"server": {"listen": f"127.0.0.1:{free_port()}"}, "ldap": settings}))
    result = subprocess.run([sys.executable, "-m", "sidecar", "serve", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert "active_directory" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET /auth HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /auth HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /auth HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
    b"GET /auth HTTP/1.1\r\nHost: x\r\n X-Folded: y\r\n\r\n",
])
async def test_malformed_http_is_one_warning_line_not_a_traceback(sidecar: Any, request_bytes: bytes,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from sidecar.logs import ProtocolErrors

    client = await sidecar()
    server_log = logging.getLogger("aiohttp.server")
    quiet = ProtocolErrors()
    server_log.addFilter(quiet)
    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
            writer.write(request_bytes)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
    finally:
        server_log.removeFilter(quiet)
    assert answer.startswith(b"HTTP/1.0 400")
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [(r.levelname, r.exc_info) for r in records] == [("WARNING", None)]
    assert records[0].getMessage().startswith("400 malformed HTTP request from 127.0.0.1")


async def test_two_applications_from_two_configurations_live_side_by_side(slapd: Slapd) -> None:
    # What a reload needs: a second application built while the first still answers.
    from aiohttp.test_utils import TestClient, TestServer

    from sidecar.app import make_app
    from tests.conftest import basic, config_for

    first = make_app(config_for(slapd, top={"headers": {"user": "X-First-User"}}))
    rules = [{"path": "/health", "users": ["nobody"]}]
    second = make_app(config_for(slapd, top={"access": {"default": "deny", "rules": rules}}))
    async with TestClient(TestServer(first)) as one, TestClient(TestServer(second)) as two:
        answer = await one.get("/auth", headers=basic("alice", "alice-pass"))
        assert answer.status == 200 and answer.headers["X-First-User"] == "alice"
        assert (await two.get("/auth", headers=basic("alice", "alice-pass"))).status == 403
        assert (await one.get("/auth", headers=basic("alice", "alice-pass"))).status == 200
