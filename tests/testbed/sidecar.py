"""The sidecar as a real process (`python -m sidecar serve`), for chain tests, the demo and benchmarks."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.testbed.process import ManagedProcess


class SidecarProcess(ManagedProcess):
    """Writes ``config`` to ``workdir/sidecar.yaml`` and serves it; the log goes to ``workdir/sidecar.log``."""

    name = "the sidecar"

    def __init__(self, workdir: Path, config: dict[str, Any], *, log_level: str | None = None) -> None:
        self.workdir = workdir
        self.config_file = workdir / "sidecar.yaml"
        self.log_file = workdir / "sidecar.log"
        self.port = int(str(config["server"]["listen"]).rsplit(":", 1)[1])
        self.config_file.write_text(yaml.safe_dump(config, allow_unicode=True))
        self.log_level = log_level

    def command(self) -> Sequence[str]:
        command = [sys.executable, "-m", "sidecar", "serve", "--config", str(self.config_file)]
        if self.log_level:
            command += ["--log-level", self.log_level]
        return command

    def environment(self) -> Mapping[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def ports(self) -> Sequence[int]:
        return (self.port,)
