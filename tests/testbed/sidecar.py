"""The sidecar as a real process (`python -m sidecar serve`), for chain tests, the demo and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.testbed import ROOT, stop_process, wait_for_port


class SidecarProcess:
    """Writes ``config`` to ``workdir/sidecar.yaml`` and serves it; the log goes to ``workdir/sidecar.log``."""

    def __init__(self, workdir: Path, config: dict[str, Any], *, log_level: str | None = None) -> None:
        self.workdir = workdir
        self.config_file = workdir / "sidecar.yaml"
        self.log_file = workdir / "sidecar.log"
        self.port = int(str(config["server"]["listen"]).rsplit(":", 1)[1])
        self.config_file.write_text(yaml.safe_dump(config, allow_unicode=True))
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "sidecar", "serve", "--config", str(self.config_file)]
        if self.log_level:
            command += ["--log-level", self.log_level]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"the sidecar did not start:\n{self.log()}") from None

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> SidecarProcess:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
