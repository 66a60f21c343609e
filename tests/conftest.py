"""Shared fixtures. A test that needs a real server it cannot find skips locally and fails in CI."""

from __future__ import annotations

import pytest

from tests.testbed import find_binary, in_ci


def need(binary: str) -> str:
    """The binary's path; skip the test when it is missing, except under CI=true where that fails."""
    path = find_binary(binary)
    if path is None:
        message = f"{binary} is not installed (tests/install.sh installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path
