"""The Containerfile's build steps, performed here (no container engine runs on these machines): the
files its build stage copies, a wheel built from them without one warning, installed into a fresh
virtual environment, whose command answers -V, check-config and serve."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from sidecar import __version__
from sidecar.local import hash_password
from tests.testbed import ROOT, free_port, wait_for_port

CONTAINERFILE = ROOT / "Containerfile"
# What pip itself says about this machine's package index settings, not about the package.
MACHINE_NOTICE = re.compile(r"^\s*WARNING: Location '[^']*' is ignored: it is neither a file nor a directory\.$")


class Built(NamedTuple):
    wheel: Path
    output: str  # everything pip and the build backend printed


def build_context() -> list[str]:
    """What the Containerfile's build stage copies from the checkout (its COPY lines)."""
    build_stage = CONTAINERFILE.read_text().split("\nFROM ")[1]
    sources = []
    for line in build_stage.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    return sources


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    context = tmp_path_factory.mktemp("context")
    for source in build_context():
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / source, context / source)
    out = tmp_path_factory.mktemp("wheel")
    # With PYTHONDONTWRITEBYTECODE set (as on these machines), setuptools says that it skips
    # byte-compiling: a fact about the environment, not a warning about the package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--verbose",
                             "--wheel-dir", str(out), str(context)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("auth_sidecar-*.whl")
    return Built(wheel, result.stdout + result.stderr)


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    env = tmp_path_factory.mktemp("venv") / "env"
    venv.create(env, with_pip=True)
    subprocess.run([str(env / "bin" / "pip"), "install", "-q", str(built.wheel)], check=True, capture_output=True,
                   timeout=600)
    yield env


def test_the_build_context_is_what_the_package_needs() -> None:
    assert sorted(build_context()) == ["LICENSE", "README.md", "pyproject.toml", "sidecar"]


def test_the_build_prints_no_warning(built: Built) -> None:
    # The backend's output is in pip's (--verbose); setuptools' warnings contain "warning" or "!!".
    assert "running bdist_wheel" in built.output  # the backend's output is there to be read
    warnings = [line for line in built.output.splitlines()
                if re.search(r"warn|!!|absent from|deprecat", line, re.I) and not MACHINE_NOTICE.match(line)]
    assert warnings == []


def test_the_wheel_carries_every_file_of_the_package_and_the_licence(built: Built) -> None:
    tracked = subprocess.run(["git", "ls-files", "sidecar"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    with zipfile.ZipFile(built.wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"auth_sidecar-{__version__}.dist-info/METADATA").decode()
    assert {"sidecar/templates/login.html", "sidecar/static/login.css", "sidecar/py.typed",
            "sidecar/contrib/django.py"} <= set(tracked)
    assert sorted(set(tracked) - names) == []
    assert not [name for name in names if "__pycache__" in name or name.startswith("tests/")]
    assert f"auth_sidecar-{__version__}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: Apache-2.0" in metadata.splitlines()


def test_the_installed_command_says_its_version(installed: Path) -> None:
    for flag in ("-V", "--version"):
        result = subprocess.run([str(installed / "bin" / "auth-sidecar"), flag], capture_output=True, text=True,
                                timeout=60)
        assert (result.returncode, result.stdout) == (0, f"auth-sidecar {__version__}\n")


def test_the_installed_command_checks_and_serves(installed: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(yaml.safe_dump({"users": {"ops": {"password": hash_password("ops-pass")}}}))
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
        "local_users": {"file": str(users)},
        "sessions": {"keys": [{"id": "k", "secret": "c" * 40}], "secure": False},
        "admin": {"socket": str(tmp_path / "admin.sock")},
    }))
    command = installed / "bin" / "auth-sidecar"
    for how in ([str(config)], ["--config", str(config)]):
        checked = subprocess.run([str(command), "check-config", *how], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {listen: nowhere}\n")
    refused = subprocess.run([str(command), "check-config", "--config", str(bad)], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "server.listen" in refused.stderr
    # From another directory than the source tree, so only the installed package can answer.
    server = subprocess.Popen([str(command), "serve", "--config", str(config)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as answer:
            assert 'name="password"' in answer.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/login.css", timeout=5) as answer:
            assert answer.status == 200
    finally:
        server.terminate()
        assert server.wait(timeout=40) == 0
