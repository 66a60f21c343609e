"""A private Caddy for tests, configured from the shipped deploy/caddy/Caddyfile.

`render_caddyfile` replaces exact tokens (the site address, the sidecar's and the application's
addresses) and adds global options that keep the test instance to itself: no admin endpoint, no
automatic HTTPS. `Caddy` runs it in the foreground with its state in its own directory.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.testbed import ROOT, find_binary, stop_process, substitute, wait_for_port

CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"

# Exact texts of deploy/caddy/Caddyfile that render_caddyfile replaces.
SITE = "netbox.example.com {"
SIDECAR = "127.0.0.1:9180"
APP = "127.0.0.1:8000"
COPY_END = "Remote-User-Superuser Remote-User-Assertion\n"

# No admin API (every test Caddy would want localhost:2019), plain HTTP on loopback.
GLOBAL_OPTIONS = """{
	admin off
	auto_https off
}
"""


def render_caddyfile(*, listen_port: int, sidecar_port: int, app_port: int, extra: Sequence[str] = ()) -> str:
    """The shipped Caddyfile serving plain HTTP on 127.0.0.1:listen_port for any Host; extra:
    headers.extra names, added to copy_headers as deploy/caddy/README.md says."""
    replacements = {
        SITE: f"http://:{listen_port} {{\n\tbind 127.0.0.1",
        SIDECAR: f"127.0.0.1:{sidecar_port}",
        APP: f"127.0.0.1:{app_port}",
    }
    if extra:
        replacements[COPY_END] = COPY_END.rstrip("\n") + "".join(f" {name}" for name in extra) + "\n"
    return GLOBAL_OPTIONS + substitute(CADDYFILE.read_text(), replacements, "deploy/caddy/Caddyfile")


class Caddy:
    """Caddy serving a rendered Caddyfile from workdir; start() returns once it listens."""

    def __init__(self, workdir: Path, *, listen_port: int, sidecar_port: int, app_port: int,
                 extra: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.listen_port = listen_port
        self.caddyfile = render_caddyfile(listen_port=listen_port, sidecar_port=sidecar_port, app_port=app_port,
                                          extra=extra)
        self.log_file = workdir / "caddy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Validate the Caddyfile, start Caddy and wait until it listens."""
        binary = find_binary("caddy")
        if binary is None:
            raise FileNotFoundError("caddy is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "Caddyfile"
        config.write_text(self.caddyfile)
        # Caddy keeps certificates and autosaved configuration under these directories.
        env = {**os.environ, "HOME": str(self.workdir), "XDG_DATA_HOME": str(self.workdir / "data"),
               "XDG_CONFIG_HOME": str(self.workdir / "config")}
        args = ["--config", str(config), "--adapter", "caddyfile"]
        check = subprocess.run([binary, "validate", *args], capture_output=True, text=True, env=env)
        if check.returncode != 0:
            raise RuntimeError(f"caddy rejects its configuration:\n{check.stderr}")
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen([binary, "run", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_port(self.listen_port, timeout=10)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"caddy did not listen on {self.listen_port}:\n{self.log()}") from None

    def stop(self) -> None:
        """TERM (a graceful stop), then KILL if Caddy lingers."""
        stop_process(self.process)
        self.process = None

    def log(self) -> str:
        """Caddy's log so far, for assertion messages."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> Caddy:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
