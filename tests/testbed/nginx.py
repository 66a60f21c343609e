"""A private nginx for tests and benchmarks, configured from the shipped deploy/nginx files.

`render_site` turns deploy/nginx/site.conf into a test site by replacing a few exact tokens (ports
and snippet paths); `Nginx` runs it as a child process from its own prefix directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.testbed import ROOT, require_binary, substitute
from tests.testbed.process import ManagedProcess

DEPLOY = ROOT / "deploy" / "nginx"

# Exact texts of deploy/nginx/site.conf that render_site replaces.
LISTEN = "listen 80;"
SIDECAR = "server 127.0.0.1:9180;"
APP = "server 127.0.0.1:8000;"
MAPS_SNIPPET = "include /etc/nginx/snippets/auth-sidecar-maps.conf;"
SERVER_SNIPPET = "include /etc/nginx/snippets/auth-sidecar.conf;"
LOCATION_SNIPPET = "include /etc/nginx/snippets/auth-sidecar-location.conf;"

# Stands in for auth-sidecar.conf in a benchmark ceiling: the auth subrequest costs nothing.
CEILING = """
    location = /_auth { internal; return 204; }
    location @auth_sidecar_login { return 401; }
    location @auth_sidecar_error { return 500; }
    location @auth_sidecar_forbidden { return 403; }
"""

# Anchors in the snippets after which render_site adds the lines for a headers.extra name, as
# deploy/nginx/README.md tells operators to.
BLANK_ANCHOR = 'proxy_set_header Remote-User-Assertion  "";\n'
SET_ANCHOR = "auth_request_set $auth_sidecar_assertion  $upstream_http_remote_user_assertion;\n"
COPY_ANCHOR = "proxy_set_header Remote-User-Assertion  $auth_sidecar_assertion;\n"


def render_site(*, listen_port: int, sidecar_port: int, app_port: int, ceiling: bool = False,
                extra: Sequence[str] = (), snippets: Path | None = None) -> str:
    """deploy/nginx/site.conf on 127.0.0.1 ports, with absolute snippet paths; ceiling: no sidecar.

    extra: headers.extra names, added to copies of the snippets written into the directory
    snippets, the way deploy/nginx/README.md says (blanked in /_auth, copied from the answer).
    """
    server_snippet, location_snippet = DEPLOY / "auth-sidecar.conf", DEPLOY / "auth-sidecar-location.conf"
    if extra:
        if snippets is None:
            raise ValueError("extra header names need a directory for the snippets")
        snippets.mkdir(parents=True, exist_ok=True)
        blank = "".join(f'    proxy_set_header {name} "";\n' for name in extra)
        variables = {name: "$auth_sidecar_extra_" + name.lower().replace("-", "_") for name in extra}
        sets = "".join(f"auth_request_set {var} $upstream_http_{name.lower().replace('-', '_')};\n"
                       for name, var in variables.items())
        copies = "".join(f"proxy_set_header {name} {var};\n" for name, var in variables.items())
        text = substitute(server_snippet.read_text(), {BLANK_ANCHOR: BLANK_ANCHOR + blank}, str(server_snippet))
        server_snippet = snippets / "auth-sidecar.conf"
        server_snippet.write_text(text)
        text = substitute(location_snippet.read_text(), {SET_ANCHOR: SET_ANCHOR + sets,
                                                         COPY_ANCHOR: COPY_ANCHOR + copies}, str(location_snippet))
        location_snippet = snippets / "auth-sidecar-location.conf"
        location_snippet.write_text(text)
    replacements = {
        LISTEN: f"listen 127.0.0.1:{listen_port};",
        SIDECAR: f"server 127.0.0.1:{sidecar_port};",
        APP: f"server 127.0.0.1:{app_port};",
        MAPS_SNIPPET: f"include {DEPLOY / 'auth-sidecar-maps.conf'};",
        SERVER_SNIPPET: CEILING if ceiling else f"include {server_snippet};",
        LOCATION_SNIPPET: f"include {location_snippet};",
    }
    return substitute((DEPLOY / "site.conf").read_text(), replacements, "deploy/nginx/site.conf")


def static_app(*, port: int, root: Path) -> str:
    """A server block serving files from root, to stand in for the application in benchmarks."""
    return f"""
server {{
    listen 127.0.0.1:{port};
    root {root};
    types {{ text/html html; }}
}}
"""


class Nginx(ManagedProcess):
    """nginx running site_conf (upstream and server blocks) from its own prefix directory.

    start() returns once every `listen 127.0.0.1:PORT` of site_conf accepts connections.
    """

    name = "nginx"
    stop_timeout = 10.0
    stop_signals = (signal.SIGQUIT, signal.SIGTERM)  # graceful stop (QUIT) first

    def __init__(self, workdir: Path, site_conf: str) -> None:
        self.workdir = workdir
        self.site_conf = site_conf
        self.conf = workdir / "nginx.conf"
        self.error_log = self.log_file = workdir / "error.log"
        self.listen_ports = [int(p) for p in re.findall(r"^\s*listen\s+127\.0\.0\.1:(\d+)", site_conf, re.M)]

    def prepare(self) -> None:
        """Write the configuration and have nginx check it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self._main_conf())
        check = subprocess.run([*self.command(), "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejects its configuration:\n{check.stderr}")

    def command(self) -> Sequence[str]:
        return [require_binary("nginx"), "-p", str(self.workdir), "-c", str(self.conf), "-e", str(self.error_log)]

    def ports(self) -> Sequence[int]:
        return self.listen_ports

    def _main_conf(self) -> str:
        # As root, nginx would run its worker as `nobody`, who cannot read a private temp directory.
        user = "user root;" if os.geteuid() == 0 else ""
        return f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {self.workdir / "nginx.pid"};
error_log {self.error_log} info;
events {{}}
http {{
    access_log off;
    client_body_temp_path {self.workdir / "client_body_temp"};
    proxy_temp_path {self.workdir / "proxy_temp"};
    fastcgi_temp_path {self.workdir / "fastcgi_temp"};
    uwsgi_temp_path {self.workdir / "uwsgi_temp"};
    scgi_temp_path {self.workdir / "scgi_temp"};
{self.site_conf}
}}
"""
