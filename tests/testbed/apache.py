"""A private Apache httpd for tests, configured from the shipped deploy/apache files.

`render_site` turns deploy/apache/apache-site.conf and auth-sidecar.lua into a test site by replacing
exact tokens (ports, the script's path); `Apache` runs it in the foreground from its own directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.testbed import ROOT, require_binary, substitute
from tests.testbed.process import ManagedProcess

DEPLOY = ROOT / "deploy" / "apache"
MODULES = Path("/usr/lib/apache2/modules")  # Debian's module directory
NEEDED_MODULES = {
    "mpm_event_module": "mod_mpm_event.so",
    "authz_core_module": "mod_authz_core.so",
    "alias_module": "mod_alias.so",
    "headers_module": "mod_headers.so",
    "lua_module": "mod_lua.so",
    "proxy_module": "mod_proxy.so",
    "proxy_http_module": "mod_proxy_http.so",
    "unique_id_module": "mod_unique_id.so",
}

# Exact texts of the deploy files that render_site replaces.
VHOST = "<VirtualHost *:80>"
SIDECAR = "http://127.0.0.1:9180/"
APP = "http://127.0.0.1:8000/"
SCRIPT = "/etc/apache2/auth-sidecar/auth-sidecar.lua"
SCRIPT_SIDECAR = 'local SIDECAR_URL = "http://127.0.0.1:9180/auth"'
IDENTITY_END = '"Remote-User-Superuser", "Remote-User-Assertion",\n'


def render_site(*, listen_port: int, sidecar_port: int, app_port: int, script: Path) -> str:
    """apache-site.conf on 127.0.0.1 ports, running the access checker from script."""
    replacements = {
        VHOST: f"<VirtualHost 127.0.0.1:{listen_port}>",
        SIDECAR: f"http://127.0.0.1:{sidecar_port}/",
        APP: f"http://127.0.0.1:{app_port}/",
        SCRIPT: str(script),
    }
    return substitute((DEPLOY / "apache-site.conf").read_text(), replacements, "deploy/apache/apache-site.conf")


def render_script(*, sidecar_port: int, extra: Sequence[str] = ()) -> str:
    """auth-sidecar.lua asking the sidecar on sidecar_port; extra: headers.extra names, added to
    IDENTITY as deploy/apache/README.md says."""
    replacements = {SCRIPT_SIDECAR: f'local SIDECAR_URL = "http://127.0.0.1:{sidecar_port}/auth"'}
    if extra:
        replacements[IDENTITY_END] = IDENTITY_END + "".join(f'  "{name}",\n' for name in extra)
    return substitute((DEPLOY / "auth-sidecar.lua").read_text(), replacements, "deploy/apache/auth-sidecar.lua")


class Apache(ManagedProcess):
    """Apache serving the shipped site on listen_port, in front of a sidecar and an application.

    Its files live in a fresh directory under /tmp that other users can read: run as root, Apache's
    workers run as `nobody` (Apache refuses to serve as root) and read the Lua script per thread.
    """

    name = "apache2"

    def __init__(self, *, listen_port: int, sidecar_port: int, app_port: int, extra: Sequence[str] = ()) -> None:
        self.extra = extra
        self.listen_port = listen_port
        self.sidecar_port = sidecar_port
        self.app_port = app_port
        self.workdir: Path | None = None

    def prepare(self) -> None:
        """Write the site and the Lua access checker into a fresh directory; have Apache check them."""
        self.workdir = Path(tempfile.mkdtemp(prefix="auth-sidecar-apache-"))
        self.workdir.chmod(0o755)
        self.log_file = self.workdir / "error.log"
        script = self.workdir / "auth-sidecar.lua"
        script.write_text(render_script(sidecar_port=self.sidecar_port, extra=self.extra))
        script.chmod(0o644)
        site = render_site(listen_port=self.listen_port, sidecar_port=self.sidecar_port,
                           app_port=self.app_port, script=script)
        (self.workdir / "httpd.conf").write_text(self._main_conf(site, self.workdir))
        check = subprocess.run([*self._base_command(), "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            self._remove_workdir()
            raise RuntimeError(f"apache2 rejects its configuration:\n{check.stderr}")

    def command(self) -> Sequence[str]:
        return [*self._base_command(), "-DFOREGROUND"]

    def ports(self) -> Sequence[int]:
        return (self.listen_port,)

    def stop(self) -> None:
        """TERM (Apache stops its children), KILL if it lingers; then remove its directory."""
        super().stop()
        self._remove_workdir()

    def _base_command(self) -> list[str]:
        assert self.workdir is not None
        return [require_binary("apache2"), "-d", str(self.workdir), "-f", str(self.workdir / "httpd.conf")]

    def _remove_workdir(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _main_conf(self, site: str, workdir: Path) -> str:
        modules = "\n".join(f"LoadModule {name} {MODULES / file}" for name, file in NEEDED_MODULES.items())
        user = "User nobody\nGroup nogroup" if os.geteuid() == 0 else ""
        return f"""
ServerName localhost
DefaultRuntimeDir {workdir}
PidFile {workdir / "httpd.pid"}
ErrorLog {workdir / "error.log"}
LogLevel warn lua:info
Listen 127.0.0.1:{self.listen_port}
{user}
{modules}
{site}
"""
