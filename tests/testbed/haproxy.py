"""A private HAProxy for tests, configured from the shipped deploy/haproxy files.

`render_config` turns deploy/haproxy/haproxy.cfg and auth-sidecar.lua into a test configuration by
replacing exact tokens (addresses, the script's path); `HAProxy` runs it in the foreground.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.testbed import ROOT, require_binary, substitute
from tests.testbed.process import ManagedProcess

DEPLOY = ROOT / "deploy" / "haproxy"

# Exact texts of the deploy files that the render functions replace.
BIND = "bind :80"
APP = "server app 127.0.0.1:8000"
SIDECAR = "server sidecar 127.0.0.1:9180"
SCRIPT = "lua-load /etc/haproxy/auth-sidecar.lua"
SCRIPT_SIDECAR = 'local SIDECAR_URL = "http://127.0.0.1:9180/auth"'
IDENTITY_END = '"remote-user-superuser", "remote-user-assertion",\n'
SET_END = "http-request set-header Remote-User-Assertion  %[var(txn.auth_remote_user_assertion)]\n"


def render_config(*, listen_port: int, sidecar_port: int, app_port: int, script: Path,
                  extra: Sequence[str] = ()) -> str:
    """haproxy.cfg on 127.0.0.1 ports, loading the action from script; extra: headers.extra
    names, each set in `backend app` as deploy/haproxy/README.md says."""
    replacements = {
        BIND: f"bind 127.0.0.1:{listen_port}",
        APP: f"server app 127.0.0.1:{app_port}",
        SIDECAR: f"server sidecar 127.0.0.1:{sidecar_port}",
        SCRIPT: f"lua-load {script}",
    }
    if extra:
        replacements[SET_END] = SET_END + "".join(
            f"    http-request set-header {name} %[var(txn.auth_{name.lower().replace('-', '_')})]\n"
            for name in extra)
    return substitute((DEPLOY / "haproxy.cfg").read_text(), replacements, "deploy/haproxy/haproxy.cfg")


def render_script(*, sidecar_port: int, extra: Sequence[str] = ()) -> str:
    """auth-sidecar.lua asking the sidecar on sidecar_port; extra: headers.extra names, in IDENTITY."""
    replacements = {SCRIPT_SIDECAR: f'local SIDECAR_URL = "http://127.0.0.1:{sidecar_port}/auth"'}
    if extra:
        replacements[IDENTITY_END] = IDENTITY_END + "".join(f'  "{name.lower()}",\n' for name in extra)
    return substitute((DEPLOY / "auth-sidecar.lua").read_text(), replacements, "deploy/haproxy/auth-sidecar.lua")


class HAProxy(ManagedProcess):
    """HAProxy running the shipped configuration from workdir; start() returns once it listens."""

    name = "haproxy"
    stop_signals = (signal.SIGUSR1, signal.SIGTERM)  # a soft stop first: idle connections closed cleanly

    def __init__(self, workdir: Path, *, listen_port: int, sidecar_port: int, app_port: int,
                 extra: Sequence[str] = ()) -> None:
        self.extra = extra
        self.workdir = workdir
        self.listen_port = listen_port
        self.sidecar_port = sidecar_port
        self.app_port = app_port
        self.log_file = workdir / "haproxy.log"  # its output: warnings, Lua alerts
        self.config = workdir / "haproxy.cfg"

    def prepare(self) -> None:
        """Write the configuration and the Lua action, and have HAProxy check them."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        script = self.workdir / "auth-sidecar.lua"
        script.write_text(render_script(sidecar_port=self.sidecar_port, extra=self.extra))
        self.config.write_text(render_config(listen_port=self.listen_port, sidecar_port=self.sidecar_port,
                                             app_port=self.app_port, script=script, extra=self.extra))
        check = subprocess.run([require_binary("haproxy"), "-c", "-f", str(self.config)], capture_output=True,
                               text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects its configuration:\n{check.stdout}{check.stderr}")

    def command(self) -> Sequence[str]:
        # -db: stay in the foreground, as a child of this process.
        return [require_binary("haproxy"), "-db", "-f", str(self.config)]

    def ports(self) -> Sequence[int]:
        return (self.listen_port,)
