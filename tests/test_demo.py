"""The README's demo command works: everything starts, logins and spoofing behave, all stops."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import need
from tests.testbed import ROOT


def test_demo_check_passes_and_leaves_nothing_running() -> None:
    need("nginx")
    need("slapd")
    result = subprocess.run([sys.executable, "examples/demo/run.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") >= 7 and "FAIL" not in result.stdout
    leftovers = subprocess.run(["pgrep", "-f", "examples/demo/app.py"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
