"""The README's demo command works: everything starts, logins and spoofing behave, all stops."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from tests.conftest import need
from tests.testbed import ROOT

MARK = "AUTH_SIDECAR_TEST_DEMO_RUN"  # every child of our demo run inherits it; nobody else's does


def processes_of_run(mark: str) -> list[str]:
    """The command lines of the processes that carry this run's mark in their environment."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"{MARK}={mark}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def install_list(*flags: str) -> set[str]:
    """The Debian packages tests/install.sh makes sure of, with these flags (--list installs nothing)."""
    listed = subprocess.run(["bash", "tests/install.sh", "--list", *flags], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    return set(listed.stdout.split())


def test_the_demo_installs_only_what_the_demo_needs() -> None:
    demo, everything = install_list("--demo"), install_list()
    assert {"slapd", "ldap-utils", "nginx-light", "python3-venv"} <= demo < everything
    assert demo.isdisjoint({"samba", "samba-ad-dc", "apache2", "caddy", "haproxy", "chromium", "wrk", "systemd"})
    assert "\nbash tests/install.sh --demo\n" in (ROOT / "examples" / "demo" / "run.sh").read_text()
    # What the demo checks for before it starts is what --demo installs.
    run_py = (ROOT / "examples" / "demo" / "run.py").read_text()
    assert {package for _, package in re.findall(r'\("([\w-]+)", "([\w-]+)"\)', run_py)} <= demo


def test_demo_check_passes_and_leaves_nothing_running() -> None:
    need("nginx")
    need("slapd")
    mark = secrets.token_hex(8)
    result = subprocess.run([sys.executable, "examples/demo/run.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env={**os.environ, MARK: mark})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") >= 7 and "FAIL" not in result.stdout
    leftovers = [command for command in processes_of_run(mark) if "examples/demo/app.py" in command]
    assert leftovers == []
