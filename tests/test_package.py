"""The Containerfile's install steps, performed here (no container engine runs on these machines):
build the wheel, install it into a fresh virtual environment, start the installed command."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sidecar.local import hash_password
from tests.testbed import ROOT, free_port, wait_for_port


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "--wheel-dir", str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("auth_sidecar-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    env = tmp_path_factory.mktemp("venv") / "env"
    venv.create(env, with_pip=True)
    subprocess.run([str(env / "bin" / "pip"), "install", "-q", str(wheel)], check=True, capture_output=True,
                   timeout=600)
    yield env


def test_the_wheel_carries_the_pages_and_the_typing_marker(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for needed in ("sidecar/templates/login.html", "sidecar/static/login.css", "sidecar/py.typed",
                   "sidecar/contrib/django.py", "sidecar/contrib/assertion.py"):
        assert needed in names


def test_the_installed_command_serves(installed: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(yaml.safe_dump({"users": {"ops": {"password": hash_password("ops-pass")}}}))
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
        "local_users": {"file": str(users)},
        "sessions": {"keys": [{"id": "k", "secret": "c" * 40}], "secure": False},
    }))
    command = installed / "bin" / "auth-sidecar"
    checked = subprocess.run([str(command), "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    # From another directory than the source tree, so only the installed package can answer.
    server = subprocess.Popen([str(command), "serve", "--config", str(config)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as answer:
            assert 'name="password"' in answer.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=10)
