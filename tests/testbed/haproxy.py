"""A private HAProxy for tests, configured from the shipped deploy/haproxy files.

`render_config` turns deploy/haproxy/haproxy.cfg and auth-sidecar.lua into a test configuration by
replacing exact tokens (addresses, the script's path); `HAProxy` runs it in the foreground.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.testbed import ROOT, find_binary, stop_process, substitute, wait_for_port

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


class HAProxy:
    """HAProxy running the shipped configuration from workdir; start() returns once it listens."""

    def __init__(self, workdir: Path, *, listen_port: int, sidecar_port: int, app_port: int,
                 extra: Sequence[str] = ()) -> None:
        self.extra = extra
        self.workdir = workdir
        self.listen_port = listen_port
        self.sidecar_port = sidecar_port
        self.app_port = app_port
        self.log_file = workdir / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Check the configuration, start HAProxy and wait until it listens."""
        binary = find_binary("haproxy")
        if binary is None:
            raise FileNotFoundError("haproxy is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        script = self.workdir / "auth-sidecar.lua"
        script.write_text(render_script(sidecar_port=self.sidecar_port, extra=self.extra))
        config = self.workdir / "haproxy.cfg"
        config.write_text(render_config(listen_port=self.listen_port, sidecar_port=self.sidecar_port,
                                        app_port=self.app_port, script=script, extra=self.extra))
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects its configuration:\n{check.stdout}{check.stderr}")
        with self.log_file.open("ab") as log:
            # -db: stay in the foreground, as a child of this process.
            self.process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log,
                                            stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.listen_port, timeout=10)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"haproxy did not listen on {self.listen_port}:\n{self.log()}") from None

    def stop(self) -> None:
        """USR1 (a soft stop: idle connections are closed cleanly), then TERM and KILL if it lingers."""
        stop_process(self.process, signal.SIGUSR1, signal.SIGTERM)
        self.process = None

    def log(self) -> str:
        """HAProxy's output so far (warnings, Lua alerts), for assertion messages."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
