"""gunicorn serving the test Django project (tests/django_project), with deploy/gunicorn's config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.testbed import ROOT, in_ci
from tests.testbed.process import ManagedProcess

GUNICORN_CONF = ROOT / "deploy" / "gunicorn" / "gunicorn.conf.py"
SETTINGS = "tests.django_project.settings"


def gunicorn_binary() -> str:
    """gunicorn from this virtual environment; skip without it, except under CI=true."""
    path = Path(sys.executable).parent / "gunicorn"
    if not path.exists():
        message = f"gunicorn is not installed next to {sys.executable} (tests/install.sh installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


class Gunicorn(ManagedProcess):
    """gunicorn serving tests/django_project on 127.0.0.1:port, with deploy/gunicorn's config if there is one.

    Every request reaching the application is written down by the application itself before it
    answers (see tests/django_project/wsgi.py), in ``record`` or else ``workdir/received``:
    `requests` counts them, `received` reads one back, `targets` lists what they asked for.
    """

    name = "gunicorn"
    start_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, workdir: Path, port: int, *, record: Path | None = None) -> None:
        self.port = port
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.error_log = self.log_file = workdir / "gunicorn-error.log"
        self.access_log = workdir / "gunicorn-access.log"
        self.record = record if record is not None else workdir / "received"
        self.record.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS,
                    "SIDECAR_TEST_DB": str(workdir / "db.sqlite3"), "SIDECAR_TEST_RECORD": str(self.record)}

    def prepare(self) -> None:
        subprocess.run([sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
                       cwd=ROOT, env=self.env, check=True)

    def command(self) -> Sequence[str]:
        config = ["--config", str(GUNICORN_CONF)] if GUNICORN_CONF.exists() else []
        # Command-line options win over the config file: only the address and logs are the test's.
        return [gunicorn_binary(), *config, "--bind", f"127.0.0.1:{self.port}", "--chdir", str(ROOT),
                "--pythonpath", str(ROOT), "--error-logfile", str(self.error_log),
                "--access-logfile", str(self.access_log), "tests.django_project.wsgi:application"]

    def environment(self) -> Mapping[str, str]:
        return self.env

    def ports(self) -> Sequence[int]:
        return (self.port,)

    def requests(self) -> int:
        """How many requests reached the application so far. Each is recorded before it is
        answered, so once a client has its answer, its request is counted."""
        return len(self._records())

    def targets(self) -> list[str]:
        """The raw request target (path and query) of every request received so far."""
        return [self._read(path).get("RAW_URI", "") for path in self._records()]

    def received(self, test_id: str) -> dict[str, str] | None:
        """The environ (method, raw target, HTTP_* keys) of the request sent with X-Test-Id: test_id,
        or None if it never reached the application. Written before Django answers it, so once the
        client has an answer the record is there or will never be."""
        path = self.record / f"{test_id}.json"
        return self._read(path) if path.exists() else None

    def _records(self) -> list[Path]:
        return [path for path in self.record.glob("*.json") if not path.name.startswith(".")]

    @staticmethod
    def _read(path: Path) -> dict[str, str]:
        seen: dict[str, str] = json.loads(path.read_text())
        return seen
