"""A minimal Django project for the tests: SidecarMiddleware and SidecarBackend on SQLite.

The database file comes from the environment variable SIDECAR_TEST_DB (in-memory without it), so
an in-process test and a gunicorn started by a test can each use their own temporary directory.
Also `need_module`, the import counterpart of conftest's `need`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from tests.testbed import in_ci


def need_module(name: str) -> ModuleType:
    """The imported module; skip the test when it is missing, except under CI=true where that fails."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"{name} is not installed (tests/install.sh installs the test extras)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message, allow_module_level=True)
