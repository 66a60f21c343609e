"""The auth-sidecar demo: slapd, a demo application, auth-sidecar and nginx, all on 127.0.0.1.

    python examples/demo/run.py            # runs until Ctrl-C; open the URL it prints
    python examples/demo/run.py --check    # starts everything, checks a few requests, stops: exit 0/1

The servers come from tests/testbed, the same recipes the tests and the benchmark use; nginx runs
the shipped deploy/nginx/site.conf. Everything lives in a temporary directory removed at exit.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # for tests.testbed, whatever the current directory

from tests.testbed import find_binary, free_port, wait_for_port  # noqa: E402
from tests.testbed.nginx import Nginx, render_site  # noqa: E402

if TYPE_CHECKING:
    from tests.testbed.oidc import OidcProvider
    from tests.testbed.slapd import Slapd

PREFERRED_PORT = 8080
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

# (program, Debian package): what the testbed servers need on PATH.
PROGRAMS = (("nginx", "nginx-light"), ("slapd", "slapd"), ("ldapadd", "ldap-utils"))
# Python modules the sidecar and the slapd testbed import.
MODULES = ("aiohttp", "ldap3", "yaml")

# The logins the banner offers; passwords come from the slapd testbed.
LOGINS = (
    ("alice", "staff + superuser"),
    ("bob", "plain user"),
    ("carol", "nested and cyclic groups (level1 in level2 in level3)"),
    ("jose", "non-ASCII name: José 山田"),
    ("dave", "valid password but not active: 403"),
)


@dataclass(frozen=True)
class Demo:
    url: str
    passwords: dict[str, str]
    sidecar: subprocess.Popen[str]


# Dependencies


def missing_dependencies() -> list[str]:
    missing = [
        f"{program} (apt-get install {package})" for program, package in PROGRAMS if find_binary(program) is None
    ]
    missing += [
        f"Python module {module} (pip install -e {ROOT})"
        for module in MODULES
        if importlib.util.find_spec(module) is None
    ]
    return missing


# Starting and stopping


def start(workdir: Path, stack: ExitStack, listen_port: int) -> Demo:
    """Start slapd, the app, the sidecar and nginx; stack stops them in reverse order."""
    # Imported here, after missing_dependencies(), so a missing module gets its install hint.
    import yaml

    from tests.testbed.slapd import Slapd

    slapd = stack.enter_context(Slapd(workdir / "slapd"))
    public = f"http://127.0.0.1:{listen_port}"
    provider = start_provider(workdir, stack, public)
    app_port, sidecar_port = free_port(), free_port()
    app = spawn(stack, [sys.executable, str(HERE / "app.py"), "--port", str(app_port)])
    wait_until_listening(app, app_port, "the demo app")
    config = workdir / "config.yaml"
    settings = sidecar_config(slapd, sidecar_port, public)
    if provider is not None:
        settings["oidc"] = {"providers": [{
            "name": "demo-idp", "label": "Sign in with the demo identity provider", "issuer": provider.issuer,
            "client_id": "sidecar-demo", "client_secret": "demo-client-secret",
            "scopes": ["openid", "email", "profile", "groups"], "logout": True,
            # Its accounts are the directory's people (the same names): say so, or the sidecar
            # refuses a second source of Remote-User names (username_prefix would set them apart).
            "shares_usernames": True,
        }]}
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    sidecar = spawn(
        stack,
        [sys.executable, "-m", "sidecar", "serve", "--config", str(config)],
        log_prefix="sidecar | ",
    )
    wait_until_listening(sidecar, sidecar_port, "auth-sidecar")
    site = render_site(listen_port=listen_port, sidecar_port=sidecar_port, app_port=app_port)
    stack.enter_context(Nginx(workdir / "nginx", site))
    return Demo(f"http://127.0.0.1:{listen_port}/", slapd.users, sidecar)


def start_provider(workdir: Path, stack: ExitStack, public: str) -> OidcProvider | None:
    """A real OpenID Connect provider for single sign-on, when Node and its packages are installed."""
    from tests.testbed.oidc import OidcProvider, node_modules_installed, oidc_client

    if find_binary("node") is None or not node_modules_installed():
        print("demo: no Node.js or tests/testbed/oidc/node_modules: single sign-on left out", file=sys.stderr)
        return None
    client = oidc_client("sidecar-demo", "demo-client-secret", [f"{public}/_sidecar/oidc/callback"],
                         post_logout_redirect_uris=[f"{public}/_sidecar/login"])
    return stack.enter_context(OidcProvider(workdir / "idp", clients=[client]))


def sidecar_config(slapd: Slapd, port: int, public: str) -> dict[str, object]:
    """The demo directory's settings (service account, nested groups, flags) and browser sign-in."""
    groups = f"ou=groups,{slapd.base_dn}"
    return {
        "server": {"listen": f"127.0.0.1:{port}", "realm": "auth-sidecar demo",
                   "public_url": f"{public}/_sidecar"},
        # Plain http on loopback: the cookie cannot be Secure here (it must be in production).
        "sessions": {"keys": [{"id": "demo", "secret": secrets.token_urlsafe(32)}], "secure": False,
                     "default_redirect": f"{public}/", "recheck_every": 60},
        "login_page": {"title": "Sign in to the demo app",
                       "help_text": "The demo logins are printed in the terminal that started the demo."},
        "ldap": {
            "server_uri": slapd.uri,
            "bind_dn": slapd.service_dn,
            "bind_password": slapd.service_password,
            "user_search": {"base_dn": f"ou=people,{slapd.base_dn}", "filter": "(uid=%(user)s)"},
            "group_search": {"base_dn": groups, "filter": "(objectClass=groupOfNames)"},
            "group_type": "nested_group_of_names",
            "user_flags_by_group": {
                "is_active": f"cn=active,{groups}",
                "is_staff": f"cn=staff,{groups}",
                "is_superuser": f"cn=superuser,{groups}",
            },
        },
        "log": {"level": "info"},  # refusals are logged as warnings: the operator sees them
    }


def spawn(stack: ExitStack, command: list[str], *, log_prefix: str | None = None) -> subprocess.Popen[str]:
    """Start a child and register its stop; with log_prefix, relay its output line by line."""
    relayed = log_prefix is not None
    # Own session: a terminal's Ctrl-C reaches this script only, which then stops the child in order.
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE if relayed else None,
        stderr=subprocess.STDOUT if relayed else None,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    relay: threading.Thread | None = None
    if relayed and process.stdout is not None:
        relay = threading.Thread(target=relay_lines, args=(process.stdout, log_prefix), daemon=True)
        relay.start()
    stack.callback(stop, process, relay)
    return process


def relay_lines(stream: IO[str], prefix: str) -> None:
    for line in stream:
        print(prefix + line, end="", flush=True)


def stop(process: subprocess.Popen[str], relay: threading.Thread | None) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if relay is not None:
        relay.join(timeout=STOP_TIMEOUT)  # prints the child's last lines before we go on


def wait_until_listening(process: subprocess.Popen[str], port: int, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while process.poll() is None:
        try:
            wait_for_port(port, timeout=0.2)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not listen on port {port} within {START_TIMEOUT}s") from None
    raise RuntimeError(f"{name} exited with code {process.returncode}")


def listen_port(preferred: int) -> int:
    """preferred if nothing uses it, else any free port."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


# --check


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: str


# No ProxyHandler settings: an http_proxy from the environment must not intercept 127.0.0.1.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, headers: dict[str, str]) -> Answer:
    request = urllib.request.Request(url, headers=headers)
    try:
        with OPENER.open(request, timeout=10) as response:
            return Answer(response.status, response.headers, response.read().decode())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read().decode(errors="replace"))


def shows_user(answer: Answer, user: str) -> bool:
    """The app's identity section names user (app.py marks the value with id="user")."""
    return answer.status == 200 and f'<span id="user">{user}</span>' in answer.body


def check(demo: Demo) -> bool:
    """Requests through nginx that show the whole chain works; print one PASS/FAIL line each."""

    def basic(user: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{demo.passwords[user]}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    spoof = {"Remote-User": "admin"}
    browser = fetch(demo.url + "devices/?q=1&b=2", {"Accept": "text/html"})  # follows the redirect
    alice = fetch(demo.url, basic("alice"))
    anonymous = fetch(demo.url, {})
    dave = fetch(demo.url, basic("dave"))
    jose = fetch(demo.url, basic("jose"))
    spoofed_anonymous = fetch(demo.url, spoof)
    spoofed_alice = fetch(demo.url, {**basic("alice"), **spoof})
    results = [
        (
            "a browser without a session lands on the sign-in page (LDAP form and SSO), its return path kept",
            browser,
            browser.status == 200 and 'name="password"' in browser.body
            and 'name="rd" value="http://127.0.0.1' in browser.body and "devices/?q=1&amp;b=2" in browser.body
            and "Sign in with the demo identity provider" in browser.body,
        ),
        (
            "alice: 200, the page shows alice and Alice Liddell",
            alice,
            shows_user(alice, "alice") and "Alice Liddell" in alice.body,
        ),
        (
            "no credentials: 401 with WWW-Authenticate: Basic",
            anonymous,
            anonymous.status == 401 and anonymous.headers.get("WWW-Authenticate", "").startswith("Basic "),
        ),
        ("dave (valid password, not in cn=active): 403", dave, dave.status == 403),
        ("jose: the page shows José 山田", jose, shows_user(jose, "jose") and "José 山田" in jose.body),
        ("anonymous with a spoofed Remote-User: admin: 401", spoofed_anonymous, spoofed_anonymous.status == 401),
        (
            "alice with a spoofed Remote-User: admin: the page shows alice, never admin",
            spoofed_alice,
            shows_user(spoofed_alice, "alice") and ">admin<" not in spoofed_alice.body,
        ),
    ]
    for description, answer, passed in results:
        print(f"{'PASS' if passed else 'FAIL'}  {description}  (status {answer.status})")
    return all(passed for _, _, passed in results)


# Running


def banner(demo: Demo) -> str:
    logins = "\n".join(f"    {user:<6} {demo.passwords[user]:<11} {note}" for user, note in LOGINS)
    return f"""
auth-sidecar demo: nginx -> auth-sidecar -> slapd, and the demo app behind nginx.

  Open {demo.url} in a browser (you get the sign-in page) and sign in as one of:
{logins}
  or:  curl -u alice:{demo.passwords["alice"]} {demo.url}

  Or press "Sign in with the demo identity provider": log in there as alice, bob or jose (any
  password) — single sign-on through a real OpenID Connect provider, next to the directory.
  Sign out at {demo.url}_sidecar/logout
  Lines starting with "sidecar |" are auth-sidecar's log. Ctrl-C to stop.
"""


def interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt  # SIGINT and SIGTERM both stop the demo the Ctrl-C way


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check a few requests, stop, exit 0/1")
    args = parser.parse_args()
    missing = missing_dependencies()
    if missing:
        print("demo: missing " + ", ".join(missing), file=sys.stderr)
        print(f"demo: `bash {ROOT / 'tests' / 'install.sh'} --demo` installs what the demo needs.", file=sys.stderr)
        return 1
    # Set SIGINT too: a shell starts background jobs with it ignored, and `kill -INT` must still work.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    # --check takes any free port, leaving 8080 to a demo someone runs by hand.
    port = free_port() if args.check else listen_port(PREFERRED_PORT)
    with tempfile.TemporaryDirectory(prefix="auth-sidecar-demo-") as tmp, ExitStack() as stack:
        try:
            demo = start(Path(tmp), stack, port)
            if args.check:
                return 0 if check(demo) else 1
            print(banner(demo), flush=True)
            code = demo.sidecar.wait()
            print(f"demo: auth-sidecar exited with code {code}; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ndemo: stopping", flush=True)
            return 0
        except (OSError, RuntimeError) as error:  # TimeoutError is an OSError
            print(f"demo: {error}", file=sys.stderr)
            return 1
        finally:
            # A second Ctrl-C must not abandon the children halfway through stopping them.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
