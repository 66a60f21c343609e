"""``auth-sidecar admin``: a running sidecar's local control channel, and the commands that use it.

The channel is HTTP on a Unix socket (``admin.socket``, by default /run/auth-sidecar/admin.sock),
never on the network. Who may use it is who may open the file: it is made mode 0600, owned by the
sidecar's user (bound under a umask, so it is never wider, not even for an instant), and every
connection's peer credentials (SO_PEERCRED) must be that user or root as well. A socket file
another sidecar answers on is not taken over; one nobody answers on (left by a crash) is replaced;
anything else at the path is left alone. A directory that is missing or not writable is one
warning and no channel: the sidecar serves on without it. The socket is removed at stop.

The commands: ``bans``, ``unban NAME|ADDRESS``, ``sessions USER``, ``revoke USER``,
``reset-factors USER``, ``reload``, ``status``; human-readable, or ``--json``. Exit status 0 done,
1 refused (no such ban, a reload whose file has problems...), 2 the socket cannot be reached (or
the command line is wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import yaml
from aiohttp import web

from sidecar import __version__
from sidecar.basic import normalize_username
from sidecar.cli import add_config_argument, fail
from sidecar.config import AdminConfig, load_config
from sidecar.errors import BadRequest, ConfigError
from sidecar.regulation import Ban
from sidecar.routes import SIDECAR
from sidecar.server import digest_of
from sidecar.session_auth import SessionJar
from sidecar.session_index import Known
from sidecar.yamlfile import load_yaml

if TYPE_CHECKING:
    from sidecar.server import Server

log = logging.getLogger("sidecar.admin")

SERVER: web.AppKey[Server] = web.AppKey("server")
SOCKET_MODE = 0o600
PROBE_TIMEOUT = 1.0  # seconds a socket found at the path gets to show it is alive
ANSWER_TIMEOUT = 120.0  # seconds the command waits for an answer (a reload checks the directory)
MAX_REQUEST = 16 * 1024
ID_SHOWN = 8  # characters of a session id shown: enough to tell sessions apart, not to name one
HINT = "is the sidecar running? is admin.socket set?"

# -- the channel, in the sidecar ------------------------------------------------------------------


class _Off(Exception):
    """Why the sidecar runs without its admin channel (one line)."""


async def start(server: Server, path: str) -> web.BaseRunner | None:
    """Serve the admin channel on ``path``; None (and one warning) when it cannot be."""
    try:
        sock = _bind(path)
    except _Off as why:
        log.warning("admin channel off: %s", why)
        return None
    made = os.stat(path)
    ours = (made.st_dev, made.st_ino)

    async def remove_socket(app: web.Application) -> None:
        with contextlib.suppress(OSError):
            found = os.lstat(path)
            if (found.st_dev, found.st_ino) == ours:  # a successor's socket is not ours to remove
                os.unlink(path)

    app = web.Application(middlewares=[_guard], client_max_size=MAX_REQUEST)
    app[SERVER] = server
    app.add_routes([
        web.get("/v1/status", status), web.get("/v1/bans", bans), web.post("/v1/unban", unban),
        web.get("/v1/sessions", sessions), web.post("/v1/revoke", revoke), web.post("/v1/reload", reload),
        web.post("/v1/reset-factors", reset_factors),
    ])
    app.on_cleanup.append(remove_socket)
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except OSError as exc:
        await runner.cleanup()
        sock.close()
        log.warning("admin channel off: cannot serve on %s: %s", path, exc.strerror or exc)
        return None
    log.info("admin channel on %s", path)
    return runner


def _bind(path: str) -> socket.socket:
    """A Unix socket bound at ``path``, mode 0600 from the start; _Off if it must not or cannot be."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise _Off(f"{directory} does not exist (the systemd unit's RuntimeDirectory= makes it)")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _Off(f"{directory} is not writable by this user")
    _clear(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The file takes its mode from the umask at bind: set for that one call, so it is never wider.
    previous = os.umask(0o777 & ~SOCKET_MODE)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise _Off(f"cannot bind {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(previous)
    return sock


def _clear(path: str) -> None:
    """Make room at ``path``: nothing there, or a socket nobody answers on (removed); else _Off."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _Off(f"cannot look at {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(found.st_mode):
        raise _Off(f"{path} exists and is not a socket: left alone")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        log.info("removed a stale admin socket %s (nothing answered on it)", path)
        return
    except OSError as exc:
        raise _Off(f"{path} exists and cannot be probed ({exc.strerror or 'no answer'}): left alone") from None
    finally:
        probe.close()
    raise _Off(f"another process answers on {path} (a second sidecar with the same admin.socket?): "
               "not taken over")


def _peer_uid(request: web.Request) -> int | None:
    """The user id of the process at the other end of the connection, or None if unknown."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return None
    try:
        credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return cast(int, uid)


class _Refused(Exception):
    """An answer other than 200: its status and a one-line reason (with details, for reload)."""

    def __init__(self, status: int, error: str, **details: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **details}


@web.middleware
async def _guard(request: web.Request,
                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Only the sidecar's own user and root; every answer JSON, even a failure."""
    uid = _peer_uid(request)
    if hasattr(socket, "SO_PEERCRED") and uid not in (os.geteuid(), 0):
        log.warning("admin channel: refused a connection from uid %s", uid)
        return web.json_response({"error": "only the sidecar's user and root may use the admin channel"},
                                 status=403)
    try:
        return await handler(request)
    except _Refused as refused:
        return web.json_response(refused.body, status=refused.status)
    except web.HTTPException as exc:
        return web.json_response({"error": f"{exc.status} {exc.reason}"}, status=exc.status)
    except Exception:
        log.exception("admin channel: %s %s failed", request.method, request.path)
        return web.json_response({"error": "internal error (see the sidecar's log)"}, status=500)


async def _field(request: web.Request, name: str) -> str:
    """A name from the request (query for GET, a JSON object for POST), checked as sign-in checks one."""
    if request.method == "GET":
        value: Any = request.query.get(name)
    else:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise _Refused(400, "the request body is not JSON") from None
        value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str):
        raise _Refused(400, f"{name} is missing (a string)")
    return _checked_name(value)


def _checked_name(value: str) -> str:
    try:
        return normalize_username(value)
    except BadRequest as exc:
        raise _Refused(400, exc.reason) from None


def _ban(ban: Ban, now: float) -> dict[str, Any]:
    return {"kind": "user" if ban.kind == "user" else "address", "name": ban.value, "banned": ban.remaining > 0,
            "until": round(now + ban.remaining) if ban.remaining else None, "remaining": round(ban.remaining),
            "failures": ban.failures}


async def status(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    generation = server.current
    state = server.state
    sidecar = generation.app[SIDECAR]
    directory = [{"uri": uri, "state": "down" if wait else "up", "retry_in": round(wait)}
                 for uri, wait in sidecar.directory.servers.down_for()] if sidecar.directory is not None else []
    regulator = state.current_regulator
    found = regulator.bans() if regulator is not None else []
    index = state.current_sessions
    known, users = index.counts() if index is not None and sidecar.signin is not None else (0, 0)
    on_disk = await asyncio.to_thread(digest_of, server.path)
    now = time.time()
    return web.json_response({
        "version": __version__, "pid": os.getpid(), "config": server.path, "sha256": generation.digest,
        "changed_on_disk": on_disk != generation.digest, "started": round(server.started),
        "uptime": round(now - server.started), "directory": directory,
        "bans": sum(ban.remaining > 0 for ban in found), "counting": sum(not ban.remaining for ban in found),
        "sessions": known, "users": users, "sign_in": sidecar.signin is not None,
        "regulation": generation.config.regulation.enabled, "in_flight": generation.in_flight,
    })


async def bans(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    regulator = server.state.current_regulator
    found, whole = await regulator.fleet_bans() if regulator is not None else ([], True)
    now = time.time()
    settings = ({"max_failures": regulator.max_failures, "window": regulator.window, "ban": regulator.ban}
                if regulator is not None else None)
    return web.json_response({"regulation": server.config.regulation.enabled, "settings": settings,
                              "bans": [_ban(ban, now) for ban in found], "scope": _scope(server, whole)})


def _scope(server: Server, whole: bool) -> str:
    """Whom an answer covers: this process, the fleet, or only this process as the store is down."""
    if server.state.current_fleet is None:
        return "this instance"
    return "fleet" if whole else "this instance (the state store did not answer)"


async def unban(request: web.Request) -> web.Response:
    target = await _field(request, "name")
    server = request.app[SERVER]
    regulator = server.state.current_regulator
    lifted, whole = await regulator.lift_everywhere(target) if regulator is not None else ([], True)
    if not whole:
        log.warning("admin: the state store did not answer: %r is lifted on this instance only", target)
    if not lifted:
        raise _Refused(404, f"no ban and no failures for {target!r}")
    now = time.time()
    for ban in lifted:
        kind = "user" if ban.kind == "user" else "address"
        log.info("admin: lifted the ban and failures of %s %r", kind, ban.value,
                    extra={"event": "unban", "reason": "admin", **({"user": ban.value} if kind == "user"
                                                                   else {"client": ban.value})})
    return web.json_response({"lifted": [_ban(ban, now) for ban in lifted], "scope": _scope(server, whole)})


def _jar(request: web.Request) -> SessionJar:
    signin = request.app[SERVER].current.app[SIDECAR].signin
    if signin is None:
        raise _Refused(409, "browser sign-in is not configured (no sessions: section): there are no sessions")
    return signin.jar


def _session(known: Known) -> dict[str, Any]:
    return {"id": known.id[:ID_SHOWN], "user": known.username, "source": known.source,
            "issued": round(known.issued), "last_seen": round(known.last_seen), "client": known.client}


async def sessions(request: web.Request) -> web.Response:
    user = await _field(request, "user")
    index = _jar(request).index
    found, whole = await index.everywhere(user) if index is not None else ([], True)
    return web.json_response({"user": user, "sessions": [_session(known) for known in found],
                              "scope": _scope(request.app[SERVER], whole)})


async def revoke(request: web.Request) -> web.Response:
    user = await _field(request, "user")
    jar = _jar(request)
    index = jar.index
    known, _ = await index.everywhere(user) if index is not None else ([], True)
    names = sorted({user, *(k.username for k in known)})
    sources = list(dict.fromkeys([*jar.sources.ids(), *(k.source for k in known)]))
    for source in sources:
        for name in names:
            jar.revocations.revoke_user(source, name)
    ended = index.forget(user) if index is not None else []
    log.info("admin: signed out %r everywhere (sources %s)", user, ", ".join(sources),
                extra={"event": "sign_out_everywhere", "user": user, "reason": "admin"})
    fleet = request.app[SERVER].state.current_fleet
    # The marks go to the fleet's store in the background, and wait there for it if it is down.
    return web.json_response({"user": user, "names": names, "sources": sources, "known_sessions": len(ended),
                              "scope": _scope(request.app[SERVER], fleet is None or fleet.up)})


async def reset_factors(request: web.Request) -> web.Response:
    """Forget every second factor and recovery code of a user, from every source (a lost phone):
    their next sign-in enrols again. Sessions are left alone: revoke ends them."""
    user = await _field(request, "user")
    jar = _jar(request)
    signin = request.app[SERVER].current.app[SIDECAR].signin
    codes = signin.codes if signin is not None else None
    if codes is None:
        raise _Refused(409, "second factors are not configured (no second_factor: section)")
    sources = list(jar.sources.ids())
    removed = 0
    for source in sources:
        removed += await codes.store.reset((source, user))
    log.info("admin: reset the second factors of %r (%d removed)", user, removed,
             extra={"event": "factors_reset", "user": user, "reason": "admin"})
    return web.json_response({"user": user, "sources": sources, "factors_removed": removed})


async def reload(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    log.info("admin: reload requested", extra={"event": "reload", "reason": "admin"})
    problems = await server.reload()
    if problems:
        raise _Refused(409, "reload refused, still serving the previous configuration", problems=problems)
    return web.json_response({"reloaded": server.path, "sha256": server.current.digest})


# -- the command --------------------------------------------------------------------------------

VERBS = [  # name, argument, help
    ("bans", None, "list the bans, and the names and addresses counting failures"),
    ("unban", "NAME|ADDRESS", "lift a username's or an address's ban (IPv6 by its /64) and forget its failures"),
    ("sessions", "USER", "list the user's sessions this process knows"),
    ("revoke", "USER", "sign the user out everywhere: every session issued until now, from every source"),
    ("reset-factors", "USER", "forget the user's second factors and recovery codes: the next sign-in enrols again"),
    ("reload", None, "reload the configuration file (as SIGHUP does) and print its problems, if any"),
    ("status", None, "version, configuration file and its sha256, uptime, directory servers, bans, sessions"),
]


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    where = parser.add_mutually_exclusive_group()
    add_config_argument(cast(argparse.ArgumentParser, where))
    where.add_argument("--socket", metavar="PATH",
                       help="the admin socket (default: admin.socket of the configuration)")
    parser.add_argument("--json", action="store_true", help="print the answer as one JSON object")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, argument, text in VERBS:
        sub = verbs.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="print the answer as one JSON object")
        if argument is not None:
            sub.add_argument("target", metavar=argument, type=_argument)


def _argument(value: str) -> str:
    try:
        return normalize_username(value)
    except BadRequest as exc:
        raise argparse.ArgumentTypeError(f"{exc.reason}: {_shown(value)}") from None


class _Unreachable(Exception):
    """The socket cannot be reached, or is not a sidecar's: one line."""


def main(args: argparse.Namespace) -> int:
    try:
        path = args.socket or _socket_of(args.config)
        answer, body = asyncio.run(_ask(path, args.verb, getattr(args, "target", None)))
    except _Unreachable as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
    if answer != 200:
        print(f"auth-sidecar admin {args.verb}: {_shown(str(body.get('error', answer)))}", file=sys.stderr)
        for problem in body.get("problems", []) if not args.json else []:
            print(f"  - {_shown(str(problem))}", file=sys.stderr)
        return 1
    if not args.json:
        for line in SHOW[args.verb](body):
            print(line)
    return 0


def _socket_of(config: str) -> str:
    """admin.socket of the configuration file: as serve reads it, else (a file with problems
    elsewhere, secrets only the daemon sees) from its admin section alone."""
    try:
        socket_path = load_config(config).admin.socket
    except ConfigError:
        socket_path = _socket_in_yaml(config)
    if socket_path is None:
        raise _Unreachable(f"{config} has admin.enabled: false: the sidecar has no admin channel")
    return socket_path


def _socket_in_yaml(config: str) -> str | None:
    default = AdminConfig().socket
    try:
        data = load_yaml(Path(config).read_text(encoding="utf-8"))
    except OSError as exc:
        raise _Unreachable(f"cannot read {config}: {exc.strerror}; give --socket PATH") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise _Unreachable(f"{config} is not valid YAML; give --socket PATH") from None
    section = data.get("admin") if isinstance(data, dict) else None
    if section is None:
        return default
    if not isinstance(section, dict):
        raise _Unreachable(f"{config}: admin is not a mapping; give --socket PATH")
    if section.get("enabled", True) is False:
        return None
    value: str | None = section.get("socket", default)
    if value is not None and not (isinstance(value, str) and value.startswith("/")):
        raise _Unreachable(f"{config}: admin.socket is not an absolute path; give --socket PATH")
    return value


async def _ask(path: str, verb: str, target: str | None) -> tuple[int, dict[str, Any]]:
    """The channel's answer to one verb: its HTTP status and JSON body."""
    method, where, params, payload = {
        "bans": ("GET", "/v1/bans", None, None),
        "unban": ("POST", "/v1/unban", None, {"name": target}),
        "sessions": ("GET", "/v1/sessions", {"user": target or ""}, None),
        "revoke": ("POST", "/v1/revoke", None, {"user": target}),
        "reset-factors": ("POST", "/v1/reset-factors", None, {"user": target}),
        "reload": ("POST", "/v1/reload", None, {}),
        "status": ("GET", "/v1/status", None, None),
    }[verb]
    unreachable = f"cannot reach the admin socket {path}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path),
                                         timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT)) as client:
            async with client.request(method, "http://sidecar" + where, params=params, json=payload) as response:
                body = await response.json(content_type=None)
                status = response.status
    except aiohttp.ClientConnectorError as exc:
        raise _Unreachable(f"{unreachable}: {_why(exc.os_error)}: {HINT}") from None
    except TimeoutError:
        raise _Unreachable(f"{unreachable}: no answer within {ANSWER_TIMEOUT:g} s") from None
    except (aiohttp.ClientError, ValueError) as exc:
        raise _Unreachable(f"{unreachable}: what answers there is not a sidecar's admin channel "
                           f"({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise _Unreachable(f"{unreachable}: what answers there is not a sidecar's admin channel")
    return status, body


def _why(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, ConnectionRefusedError):
        return "nothing answers on it (left by a sidecar that stopped?)"
    if isinstance(error, PermissionError):
        return "permission denied (only the sidecar's user and root may open it)"
    return error.strerror or str(error)


# -- what the human-readable output looks like ---------------------------------------------------


def _shown(text: object) -> str:
    """Text for a terminal: what is not printable (a name typed by anyone) is escaped, not sent."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(epoch))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    for unit, size, smaller, small in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if seconds >= size:
            rest = (seconds % size) // small
            return f"{seconds // size} {unit}" + (f" {rest} {smaller}" if rest else "")
    return f"{seconds} s"


def _show_bans(body: dict[str, Any]) -> list[str]:
    settings = body.get("settings")
    listed = body["bans"]
    lines = []
    if not body.get("regulation"):
        lines.append("Regulation is off in the running configuration (regulation.enabled: false).")
    if settings:
        lines.append(f"{settings['max_failures']} wrong passwords within {settings['window']:g} s start a ban "
                     f"of {settings['ban']:g} s.")
    banned = [ban for ban in listed if ban["banned"]]
    counting = [ban for ban in listed if not ban["banned"]]
    if not listed:
        return [*lines, "No bans, and no failures counting."]
    width = max(len(_shown(ban["name"])) for ban in listed)
    if banned:
        lines.append(f"Banned ({len(banned)}):")
        lines += [f"  {ban['kind']:<7}  {_shown(ban['name']):<{width}}  until {_when(ban['until'])} "
                  f"({_duration(ban['remaining'])} left)" + (f", {ban['failures']} failures since" if ban["failures"]
                                                               else "") for ban in banned]
    if counting:
        lines.append(f"Counting failures, not banned ({len(counting)}):")
        lines += [f"  {ban['kind']:<7}  {_shown(ban['name']):<{width}}  {ban['failures']} failures"
                  for ban in counting]
    lines.append("Lift one with: auth-sidecar admin unban NAME|ADDRESS")
    return lines


def _show_unban(body: dict[str, Any]) -> list[str]:
    return [f"lifted: {ban['kind']} {_shown(ban['name'])} ("
            + (f"banned {_duration(ban['remaining'])} more, " if ban["banned"] else "")
            + f"{ban['failures']} failures forgotten)" for ban in body["lifted"]]


def _show_sessions(body: dict[str, Any]) -> list[str]:
    user, found = _shown(body["user"]), body["sessions"]
    if not found:
        return [f"{user}: no session known to this process (one issued before a restart, or by another "
                "instance, is listed once it is used here)"]
    rows = [("ID", "USER", "SOURCE", "ISSUED", "LAST SEEN", "CLIENT")]
    rows += [(_shown(s["id"]), _shown(s["user"]), _shown(s["source"]), _when(s["issued"]), _when(s["last_seen"]),
              _shown(s["client"] or "-")) for s in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"{user}: {len(found)} session{'s' if len(found) != 1 else ''} known to this process "
             "(last seen to the minute)"]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return lines


def _show_revoke(body: dict[str, Any]) -> list[str]:
    names = ", ".join(_shown(name) for name in body["names"])
    return [f"signed out {_shown(body['user'])} everywhere: every session issued until now to {names}, "
            f"from {', '.join(_shown(s) for s in body['sources'])} ({body['known_sessions']} known here). "
            "Other instances keep their own list: run this on each."]


def _show_reset_factors(body: dict[str, Any]) -> list[str]:
    return [f"second factors of {_shown(body['user'])}: {body['factors_removed']} removed, with the recovery "
            "codes; the next sign-in enrols again (revoke ends the sessions already open)"]


def _show_reload(body: dict[str, Any]) -> list[str]:
    return [f"reloaded {_shown(body['reloaded'])} (sha256 {body['sha256']})"]


def _show_status(body: dict[str, Any]) -> list[str]:
    lines = [f"auth-sidecar {body['version']}, pid {body['pid']}, up {_duration(body['uptime'])} "
             f"(since {_when(body['started'])})",
             f"config     {_shown(body['config'])}",
             f"sha256     {body['sha256']}" + ("  (the file has changed since: reload to apply it)"
                                              if body["changed_on_disk"] else "")]
    servers = body["directory"]
    if not servers:
        lines.append("directory  none configured")
    for i, server in enumerate(servers):
        state = "up" if server["state"] == "up" else f"down (passed over for {_duration(server['retry_in'])} more)"
        lines.append(f"{'directory' if i == 0 else '':<9}  {_shown(server['uri'])}  {state}")
    lines.append(f"bans       {body['bans']}" + (f" ({body['counting']} more counting failures)"
                                                 if body["counting"] else "")
                 + ("" if body["regulation"] else " (regulation is off)"))
    lines.append(f"sessions   {body['sessions']} known, of {body['users']} users" if body["sign_in"]
                 else "sessions   browser sign-in is not configured")
    return lines


SHOW: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "bans": _show_bans, "unban": _show_unban, "sessions": _show_sessions, "revoke": _show_revoke,
    "reset-factors": _show_reset_factors,
    "reload": _show_reload, "status": _show_status,
}
