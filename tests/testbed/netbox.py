"""Real NetBox from PyPI for the chain tests: its own Python 3.12 environment, PostgreSQL, Redis, gunicorn.

    env = environment()                 # built once per machine and NetBox version, then reused
    with Postgres(env, workdir) as db, Redis(workdir, free_port()) as redis:
        db.create_database("netbox_stock")               # a copy of the migrated template
        with NetBox(env, workdir / "stock", port, db=..., redis=..., configuration=text) as netbox:
            netbox.api("/api/users/users/")              # straight to gunicorn, with the admin's token

What is cached (``cache_dir()``: $AUTH_SIDECAR_NETBOX_CACHE, else /var/cache/auth-sidecar-netbox as
root, else ~/.cache/auth-sidecar-netbox; one directory per NetBox version, Python and PostgreSQL
major version), each step marked done only when it finished, under a lock:

- ``venv/``: ``pip install netbox==VERSION`` (the wheel) into a venv of the pyenv Python 3.12, plus
  the sidecar's own dependencies and pytest, so ``tests/test_contrib_django.py`` runs on NetBox's
  Django. The sidecar itself is never installed there: ``PYTHONPATH`` gives NetBox the working tree.
- ``root/static/``: ``collectstatic``.
- ``pgdata/``: a stopped PostgreSQL cluster whose ``netbox_template`` database is migrated and holds
  the admin user ``nbadmin`` and its API tokens (v1 and v2). Each run copies the cluster, and each
  NetBox setup gets its own database from the template (``CREATE DATABASE ... TEMPLATE``).

The first build takes minutes (the migrations, on 2 cores); later runs copy ~100 MB and start.
PostgreSQL refuses to run as root: as root, its commands run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.testbed import ROOT, find_binary, free_port, stop_process
from tests.testbed.process import ManagedProcess

NETBOX_VERSION = "4.7.3"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn" / "gunicorn.conf.py"
HERE = Path(__file__).resolve().parent

ADMIN = "nbadmin"
ADMIN_PASSWORD = "nbadmin-local-pass"
# The admin's API tokens, made when the template database is built.
V1_TOKEN = "0123456789abcdef0123456789abcdef01234567"
V2_KEY = "sidecartest1"  # 12 characters, as NetBox stores them
V2_SECRET = "S3cretSidecarTestTokenValue0123456789abc"
PEPPER = "pepper-for-the-sidecar-tests-" + "p" * 40
SECRET_KEY = "secret-key-for-the-sidecar-tests-" + "s" * 40
TEMPLATE_DB = "netbox_template"


def v2_header() -> str:
    return f"Bearer nbt_{V2_KEY}.{V2_SECRET}"


class Unavailable(RuntimeError):
    """Something NetBox needs is missing on this machine (the test skips, or fails under CI)."""


def python312() -> str:
    """A Python 3.12 (NetBox 4.7 needs >= 3.12; Debian 12's python3 is 3.11): pyenv's, else on PATH."""
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3"))
    if found:
        return found[-1]
    path = find_binary("python3.12")
    if path is None:
        raise Unavailable("no Python 3.12: NetBox 4.7 needs it (pyenv's 3.12, or python3.12 on PATH)")
    return path


def pg_bindir() -> Path:
    """Debian's PostgreSQL server binaries (initdb, pg_ctl are not on PATH there)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = find_binary("pg_ctl")
    if pg_ctl is None:
        raise Unavailable("PostgreSQL is not installed (tests/install.sh installs postgresql)")
    return Path(pg_ctl).resolve().parent


def cache_root() -> Path:
    if configured := os.environ.get("AUTH_SIDECAR_NETBOX_CACHE"):
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/auth-sidecar-netbox")
    return Path(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))) / "auth-sidecar-netbox"


def _as_postgres(command: Sequence[str]) -> list[str]:
    """PostgreSQL will not run as root: run its commands as the postgres user then. setpriv execs
    the command itself (runuser would stay its parent), so the PID we stop is PostgreSQL's."""
    if os.geteuid() != 0:
        return list(command)
    return [require("setpriv"), "--reuid=postgres", "--regid=postgres", "--init-groups", "--reset-env", "--",
            *command]


def require(name: str) -> str:
    path = find_binary(name)
    if path is None:
        raise Unavailable(f"{name} is not installed")
    return path


def _run(command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
         what: str = "") -> str:
    done = subprocess.run(list(command), env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what or command[0]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-5000:]}")
    return done.stdout


def _own_by_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        _run(["chown", "-R", "postgres:postgres", str(path)])


def _private_dir(prefix: str) -> Path:
    """A directory the postgres user can use (pytest's tmp directories are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _own_by_postgres(path)
    return path


def sidecar_requirements() -> list[str]:
    """What the sidecar and its test suite import, from pyproject.toml, for NetBox's venv."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {"pytest", "pytest-asyncio", "pytest-aiohttp"}
    tests = [r for r in project["optional-dependencies"]["test"] if r.split(">")[0].split("=")[0] in wanted]
    return sorted([*project["dependencies"], *tests])


@dataclass(frozen=True)
class Environment:
    """NetBox's cached environment: where things are, and how to run NetBox's Python."""

    dir: Path
    version: str

    @property
    def python(self) -> Path:
        return self.dir / "venv" / "bin" / "python"

    @property
    def gunicorn(self) -> Path:
        return self.dir / "venv" / "bin" / "gunicorn"

    @property
    def static(self) -> Path:
        return self.dir / "root" / "static"

    @property
    def pgdata(self) -> Path:
        return self.dir / "pgdata"

    @property
    def site_packages(self) -> Path:
        found = sorted((self.dir / "venv" / "lib").glob("python3.*/site-packages"))
        return found[0]

    def django_version(self) -> str:
        return _run([str(self.python), "-c", "import django; print(django.get_version())"]).strip()


def environment(version: str = NETBOX_VERSION, *, log: Path | None = None) -> Environment:
    """The cached environment for this NetBox version, built (or completed) first if need be."""
    python = python312()
    bindir = pg_bindir()
    pg_major = bindir.parent.name
    py_version = _run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).strip()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    env = Environment(root / f"netbox-{version}-py{py_version}-pg{pg_major}", version)
    env.dir.mkdir(exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait and reuse
        _build(env, python, bindir, log or env.dir / "build.log")
    return env


def _build(env: Environment, python: str, bindir: Path, log: Path) -> None:
    steps = env.dir / "steps.json"
    done: dict[str, str] = json.loads(steps.read_text()) if steps.exists() else {}

    def step(name: str, key: str) -> bool:
        return done.get(name) != key

    def finished(name: str, key: str) -> None:
        done[name] = key
        steps.write_text(json.dumps(done, indent=1))

    venv = env.dir / "venv"
    if step("venv", env.version):
        shutil.rmtree(venv, ignore_errors=True)
        _timed(log, "venv", [python, "-m", "venv", str(venv)])
        _timed(log, "pip netbox", [str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check",
                                   "--only-binary", "netbox", f"netbox=={env.version}"])
        finished("venv", env.version)
    requirements = sidecar_requirements()
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16]
    if step("sidecar-deps", key):
        _timed(log, "pip sidecar deps", [str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check",
                                         *requirements])
        finished("sidecar-deps", key)
    if step("static", env.version):
        with _build_instance(env) as instance:
            _timed(log, "collectstatic", [str(env.python), "-m", "netbox", "collectstatic", "--no-input",
                                          "-v", "0"], env=instance)
        finished("static", env.version)
    if step("database", env.version):
        shutil.rmtree(env.pgdata, ignore_errors=True)
        workdir = _private_dir("netbox-build-")
        try:
            with Postgres(env, workdir, bindir=bindir, fresh=True) as db, \
                    Redis(workdir, free_port()) as redis, _build_instance(env, db, redis) as instance:
                db.create_database(TEMPLATE_DB, template=None)
                _timed(log, "migrate", [str(env.python), "-m", "netbox", "migrate", "--no-input", "-v", "0"],
                       env=instance)
                _timed(log, "seed", [str(env.python), "-m", "netbox", "shell", "-c", SEED], env=instance)
                db.stop()
                if (db.data / "postmaster.pid").exists():
                    raise RuntimeError("PostgreSQL did not shut down cleanly: not caching its cluster")
                shutil.copytree(db.data, env.pgdata, symlinks=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        finished("database", env.version)


def _timed(log: Path, what: str, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    started = time.monotonic()
    _run(command, env=env, what=what)
    with log.open("a") as out:
        out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {what}: {time.monotonic() - started:.1f}s\n")


SEED = f"""
from users.models import Token, User
admin = User.objects.create_superuser({ADMIN!r}, "nbadmin@example.com", {ADMIN_PASSWORD!r})
Token.objects.create(user=admin, version=1, token={V1_TOKEN!r}, description="tests: v1")
Token.objects.create(user=admin, version=2, key={V2_KEY!r}, token={V2_SECRET!r}, description="tests: v2")
"""


@contextlib.contextmanager
def _build_instance(env: Environment, db: Postgres | None = None,
                    redis: Redis | None = None) -> Iterator[dict[str, str]]:
    """An environment for NetBox's management commands while the cache is built."""
    with tempfile.TemporaryDirectory(prefix="netbox-root-") as tmp:
        instance = Path(tmp)
        (instance / "conf").mkdir()
        (instance / "conf" / "configuration.py").write_text(base_configuration(
            database=TEMPLATE_DB, db_port=db.port if db else 1, redis_port=redis.port if redis else 1,
            allowed_hosts=["*"]))
        env.static.mkdir(parents=True, exist_ok=True)
        (instance / "static").symlink_to(env.static, target_is_directory=True)
        yield netbox_environ(instance)


def netbox_environ(instance: Path, extra_path: Sequence[Path] = ()) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith(("PYTHON", "VIRTUAL_ENV", "DJANGO_", "COV_CORE", "COVERAGE"))}
    environ["NETBOX_ROOT"] = str(instance)
    if extra_path:
        environ["PYTHONPATH"] = os.pathsep.join(map(str, extra_path))
    return environ


def base_configuration(*, database: str, db_port: int, redis_port: int, redis_db: int = 0,
                       allowed_hosts: Sequence[str]) -> str:
    """NetBox's required settings for a test instance; the examples' lines are appended to it."""
    return f"""# The test instance's own settings (tests/testbed/netbox.py); the example follows.
ALLOWED_HOSTS = {list(allowed_hosts)!r}
DATABASES = {{"default": {{"ENGINE": "django.db.backends.postgresql", "NAME": {database!r},
    "USER": "netbox", "PASSWORD": "", "HOST": "127.0.0.1", "PORT": {db_port}, "CONN_MAX_AGE": 300}}}}
REDIS = {{
    "tasks": {{"HOST": "127.0.0.1", "PORT": {redis_port}, "DATABASE": {redis_db}, "SSL": False}},
    "caching": {{"HOST": "127.0.0.1", "PORT": {redis_port}, "DATABASE": {redis_db + 1}, "SSL": False}},
}}
SECRET_KEY = {SECRET_KEY!r}
API_TOKEN_PEPPERS = {{1: {PEPPER!r}}}
CENSUS_REPORTING_ENABLED = False
RELEASE_CHECK_URL = None
"""


class Postgres(ManagedProcess):
    """A private PostgreSQL on 127.0.0.1: a copy of the cached cluster (or a new one, ``fresh``)."""

    name = "postgres"
    start_timeout = 60.0

    def __init__(self, env: Environment, workdir: Path, *, bindir: Path | None = None, fresh: bool = False) -> None:
        self.env = env
        self.bindir = bindir or pg_bindir()
        self.port = free_port()
        self.fresh = fresh
        # The postgres user must reach it: a directory of its own, not under pytest's (root's) tmp.
        self.base = _private_dir("netbox-pg-")
        self.data = self.base / "data"
        self.log_file = self.base / "postgres.log"
        self.workdir = workdir

    def prepare(self) -> None:
        if self.data.exists():
            return
        if self.fresh:
            _run(_as_postgres([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "netbox",
                               "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]), what="initdb")
        else:
            shutil.copytree(self.env.pgdata, self.data, symlinks=True)
            _own_by_postgres(self.data)
        os.chmod(self.data, 0o700)  # PostgreSQL insists (the log is written through our own descriptor)

    def command(self) -> Sequence[str]:
        return _as_postgres([str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.base}",
                             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])

    def ports(self) -> Sequence[int]:
        return (self.port,)

    def ready(self) -> bool:
        if not super().ready():
            return False
        done = subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"])
        return done.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        return _run([str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "netbox",
                     "-d", database, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], what="psql")

    def create_database(self, name: str, *, template: str | None = TEMPLATE_DB) -> None:
        self.psql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))

    def terminate(self, process: subprocess.Popen[bytes]) -> None:
        # SIGINT: PostgreSQL's fast shutdown (a clean checkpoint: the copy is a consistent cluster).
        stop_process(process, signal.SIGINT, timeout=30)

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        shutil.rmtree(self.base, ignore_errors=True)


class Redis(ManagedProcess):
    name = "redis"

    def __init__(self, workdir: Path, port: int) -> None:
        self.port = port
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_file = workdir / f"redis-{port}.log"

    def command(self) -> Sequence[str]:
        return [require("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir)]

    def ports(self) -> Sequence[int]:
        return (self.port,)


class NetBox(ManagedProcess):
    """NetBox under gunicorn with deploy/gunicorn/gunicorn.conf.py, on 127.0.0.1:port.

    ``configuration`` is configuration.py's text (base_configuration() plus an example);
    ``local_settings`` the text of local_settings.py, or None for none. Both are loaded by NetBox
    as it loads them in a real installation (conf/configuration.py under NETBOX_ROOT, and
    ``netbox.local_settings``, which tests/testbed/netbox_site/sitecustomize.py points at the file).
    """

    name = "NetBox (gunicorn)"
    start_timeout = 90.0
    stop_timeout = 20.0

    def __init__(self, env: Environment, workdir: Path, port: int, *, configuration: str,
                 local_settings: str | None = None) -> None:
        self.env = env
        self.port = port
        self.workdir = workdir
        self.instance = workdir / "root"
        (self.instance / "conf").mkdir(parents=True, exist_ok=True)
        (self.instance / "conf" / "configuration.py").write_text(configuration)
        if not (self.instance / "static").exists():
            (self.instance / "static").symlink_to(env.static, target_is_directory=True)
        self.site = workdir / "site"
        self.site.mkdir(exist_ok=True)
        (self.site / "sitecustomize.py").write_text((HERE / "netbox_sitecustomize.py").read_text())
        # The sidecar as NetBox imports it: the working tree's package, nothing else of the repo.
        if not (self.site / "sidecar").exists():
            (self.site / "sidecar").symlink_to(ROOT / "sidecar", target_is_directory=True)
        self.local_settings = workdir / "local_settings.py"
        if local_settings is not None:
            self.local_settings.write_text(local_settings)
        self.log_file = workdir / "gunicorn.log"
        self.env_vars = netbox_environ(self.instance, [self.site])
        if local_settings is not None:
            self.env_vars["SIDECAR_TEST_LOCAL_SETTINGS"] = str(self.local_settings)

    def command(self) -> Sequence[str]:
        # Command-line options win over the config file: only the address, workers and logs are the test's.
        return [str(self.env.gunicorn), "--config", str(GUNICORN_CONF), "--bind", f"127.0.0.1:{self.port}",
                "--workers", "2", "--threads", "2", "--error-logfile", "-", "--access-logfile", "-",
                "--capture-output", "netbox.wsgi"]

    def environment(self) -> Mapping[str, str]:
        return self.env_vars

    def ports(self) -> Sequence[int]:
        return (self.port,)

    def started(self) -> None:
        # The first request loads NetBox's URLconf and plugins in a worker: wait for a real answer.
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self.api("/api/status/")
                return
            except (OSError, urllib.error.URLError) as exc:
                if self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                    raise TimeoutError(f"NetBox did not answer /api/status/: {exc}\n{self.log()[-4000:]}") from exc
                time.sleep(0.2)

    def manage(self, *args: str) -> str:
        """A NetBox management command (``netbox shell -c ...`` and the like), with this instance's settings."""
        environ = dict(self.env_vars)
        return _run([str(self.env.python), "-m", "netbox", *args], env=environ, what=f"netbox {args[0]}")

    def api(self, path: str, *, method: str = "GET", body: Any = None, token: str = V1_TOKEN) -> Any:
        """NetBox's REST API straight at gunicorn with the admin's v1 token (the tests' own view of NetBox)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Authorization": f"Token {token}", "Accept": "application/json",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def user(self, username: str) -> dict[str, Any] | None:
        """NetBox's user as its API shows it (names, email, groups, is_superuser), or None."""
        from urllib.parse import quote
        found = self.api(f"/api/users/users/?username={quote(username)}")["results"]
        return found[0] if found else None

