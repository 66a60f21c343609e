"""gunicorn serving the test Django project (tests/django_project), with deploy/gunicorn's config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

import pytest

from tests.testbed import ROOT, in_ci, wait_for_port

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


class Gunicorn:
    """gunicorn serving tests/django_project on 127.0.0.1:port, with deploy/gunicorn's config if there is one.

    With record, every request reaching the application is also written down in that directory
    (see tests/django_project/wsgi.py); `received` reads one back.
    """

    def __init__(self, workdir: Path, port: int, *, record: Path | None = None) -> None:
        self.port = port
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.error_log = workdir / "gunicorn-error.log"
        self.access_log = workdir / "gunicorn-access.log"
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS,
                    "SIDECAR_TEST_DB": str(workdir / "db.sqlite3")}
        self.record = record
        if record is not None:
            record.mkdir(parents=True, exist_ok=True)
            self.env["SIDECAR_TEST_RECORD"] = str(record)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        subprocess.run([sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
                       cwd=ROOT, env=self.env, check=True)
        config = ["--config", str(GUNICORN_CONF)] if GUNICORN_CONF.exists() else []
        # Command-line options win over the config file: only the address and logs are the test's.
        command = [gunicorn_binary(), *config, "--bind", f"127.0.0.1:{self.port}", "--chdir", str(ROOT),
                   "--pythonpath", str(ROOT), "--error-logfile", str(self.error_log),
                   "--access-logfile", str(self.access_log), "tests.django_project.wsgi:application"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env)
        try:
            wait_for_port(self.port, timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"gunicorn did not start:\n{self.log()}") from None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def requests(self) -> int:
        """How many requests gunicorn has answered so far."""
        return len(self.access_log.read_text().splitlines()) if self.access_log.exists() else 0

    def received(self, test_id: str) -> dict[str, str] | None:
        """The environ (method, raw target, HTTP_* keys) of the request sent with X-Test-Id: test_id,
        or None if it never reached the application. Written before Django answers it, so once the
        client has an answer the record is there or will never be."""
        if self.record is None:
            raise RuntimeError("this gunicorn does not record requests")
        path = self.record / f"{test_id}.json"
        if not path.exists():
            return None
        seen: dict[str, str] = json.loads(path.read_text())
        return seen

    def log(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def __enter__(self) -> Gunicorn:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
