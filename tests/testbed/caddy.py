"""A private Caddy for tests, configured from the shipped deploy/caddy/Caddyfile.

`render_caddyfile` replaces exact tokens (the site address, the sidecar's and the application's
addresses) and adds global options that keep the test instance to itself: no admin endpoint, no
automatic HTTPS. `Caddy` runs it in the foreground with its state in its own directory.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.testbed import ROOT, require_binary, substitute
from tests.testbed.process import ManagedProcess

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


class Caddy(ManagedProcess):
    """Caddy serving a rendered Caddyfile from workdir; start() returns once it listens."""

    name = "caddy"

    def __init__(self, workdir: Path, *, listen_port: int, sidecar_port: int, app_port: int,
                 extra: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.listen_port = listen_port
        self.caddyfile = render_caddyfile(listen_port=listen_port, sidecar_port=sidecar_port, app_port=app_port,
                                          extra=extra)
        self.log_file = workdir / "caddy.log"
        self.config = workdir / "Caddyfile"

    def prepare(self) -> None:
        """Write the Caddyfile and have Caddy validate it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.caddyfile)
        check = subprocess.run([require_binary("caddy"), "validate", *self._args()], capture_output=True, text=True,
                               env=self.environment())
        if check.returncode != 0:
            raise RuntimeError(f"caddy rejects its configuration:\n{check.stderr}")

    def command(self) -> Sequence[str]:
        return [require_binary("caddy"), "run", *self._args()]

    def environment(self) -> Mapping[str, str]:
        # Caddy keeps certificates and autosaved configuration under these directories.
        return {**os.environ, "HOME": str(self.workdir), "XDG_DATA_HOME": str(self.workdir / "data"),
                "XDG_CONFIG_HOME": str(self.workdir / "config")}

    def ports(self) -> Sequence[int]:
        return (self.listen_port,)

    def _args(self) -> list[str]:
        return ["--config", str(self.config), "--adapter", "caddyfile"]
