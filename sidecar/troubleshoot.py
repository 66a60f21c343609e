"""``auth-sidecar test-login``: one sign-in, every step of it, the way the daemon takes it.

The configuration becomes the application ``serve`` runs, and one request goes to its ``/auth``
handler as the proxy would send it, the name and password as HTTP Basic (``--url`` and ``--method``
describe the original request). Each step reports to a trace (:mod:`sidecar.trace`) as it happens:
the sources asked; for the directory the server, each bind and search and what it found, the
attributes mapped, the groups and the way the user is in each (through nested groups), require and
deny groups, the flags and why; the access rule that decides; then the exact headers ``/auth``
answers with, or the refusal and its reason. What the daemon would log is shown too.

It is a local tool: no proxy is involved, and the regulation is left out, so nothing is counted or
banned (the running daemon's count for the name is read over the admin socket, when there is one).
The password is read without echo at a terminal, or as one line from standard input, and is never
printed; neither is a secret of the configuration, a signed assertion or a cookie.

Exit status: 0 the sign-in is allowed, 1 refused, 2 a configuration or usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import getpass
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from sidecar.cli import add_config_argument, fail
from sidecar.config import AccessConfig, Config, load_config
from sidecar.errors import ConfigError, InvalidCredentials
from sidecar.trace import Trace, tracing

METHOD = re.compile(r"[A-Za-z][A-Za-z-]{0,19}")
TOPIC_WIDTH = 11


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    add_config_argument(parser)
    parser.add_argument("--url", metavar="URL",
                        help="the page the request is for (https://host/path): checks the access rules for it")
    parser.add_argument("--method", default="GET", help="the request's method (default GET)")
    parser.add_argument("user", metavar="USER", help="the name to sign in with, as the user types it")


def main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(f"{args.config}: {exc}")
    if config.ldap is None and config.local_users is None:
        return fail("no password source is configured (ldap, local_users): single sign-on and Bearer "
                    "tokens take no password, so there is nothing test-login can try")
    if args.url is not None and not _absolute(args.url):
        return fail(f"--url must be an absolute http(s) URL such as https://app.example.com/path, got {args.url!r}")
    if not METHOD.fullmatch(args.method):
        return fail(f"--method is not an HTTP method: {args.method!r}")
    if ":" in args.user:
        return fail("a name with ':' cannot be tried: HTTP Basic, which test-login sends, cuts it there")
    password = _read_password()
    out = Output()
    _introduce(out, config, args)
    return asyncio.run(_sign_in(out, config, args, password))


def _absolute(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _read_password() -> str:
    """Without echo at a terminal; else the first line of standard input."""
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    return sys.stdin.readline().rstrip("\r\n")


class Output:
    """Each step as a line: its topic, then the text (continuation lines indented under it). Output
    that stops being read (``| head``) ends the printing, not the sign-in."""

    def __init__(self) -> None:
        self.closed = False

    def say(self, topic: str, text: str) -> None:
        first, *rest = text.split("\n")
        lines = [f"{topic:<{TOPIC_WIDTH}} {first}", *(f"{'':<{TOPIC_WIDTH}} {line}" for line in rest)]
        if self.closed:
            return
        try:
            print("\n".join(line.rstrip() for line in lines), flush=True)
        except BrokenPipeError:
            self.closed = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def _introduce(out: Output, config: Config, args: argparse.Namespace) -> None:
    out.say("test-login", f"{args.user!r} with {args.config}")
    order = [name for name, there in (("ldap", config.ldap), ("local", config.local_users)) if there is not None]
    if config.local_users is not None and config.local_users.order == "local_first":
        order.reverse()
    text = ", then ".join(order)
    if len(order) > 1:
        text += " (in this order: the next one only when one does not know the user or cannot be reached)"
    if config.local_users is not None:
        text += f"\nlocal users: {config.local_users.file}"
    others = [f"oidc provider {p.name}" for p in config.oidc.providers] + [
        f"bearer issuer {b.issuer}" for b in config.oidc.bearer]
    if others:
        text += f"\nnot tried: {', '.join(others)} (they take no password: a browser or a token signs in there)"
    out.say("sources", text)
    if not config.server.basic_auth:
        out.say("basic", "server.basic_auth is off: tried as HTTP Basic all the same; the login form checks "
                         "the password the same way, and a session carries the same headers")
    if args.url is None:
        out.say("access", "no --url: access rules are not checked (give --url https://host/path)")
    elif not config.access.rules:
        out.say("access", f"no access rules: access.default ({config.access.default}) decides")


def _as_tried(config: Config, url: str | None) -> Config:
    """The configuration as test-login runs it: no regulation (it is a local tool), HTTP Basic on,
    and without --url no access rules (there is no request to judge)."""
    tried = dataclasses.replace(config, regulation=dataclasses.replace(config.regulation, enabled=False),
                                server=dataclasses.replace(config.server, basic_auth=True))
    return tried if url is not None else dataclasses.replace(tried, access=AccessConfig())


async def _sign_in(out: Output, config: Config, args: argparse.Namespace, password: str) -> int:
    # Loaded when a sign-in is tried, not each time the command line is read (cli imports every command).
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from sidecar import routes
    from sidecar.app import make_app
    from sidecar.state import State

    trace = Trace(out.say)
    with tracing(trace), _log_lines(out):
        app = make_app(_as_tried(config, args.url), State())
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        try:
            await runner.setup()  # what serve does before it listens: the group type check...
        except ConfigError as exc:
            out.say("refused", "serve would not start: " + "; ".join(exc.problems))
            return 2
        try:
            request = make_mocked_request("GET", "/auth", headers=_request_headers(args, password), app=app,
                                          transport=_Loopback())
            response = await routes.auth(request)
        finally:
            await runner.cleanup()
    await _regulation(out, config, args.user, trace)
    if response.status == 200:
        out.say("allowed", "/auth answers 200 with\n" + "\n".join(
            f"{name}: {_masked(name, value, config)}" for name, value in response.headers.items()))
        return 0
    why = trace.refusal.reason if trace.refusal is not None else "no reason was given"
    out.say("refused", f"/auth answers {response.status}: {why}")
    return 1


def _request_headers(args: argparse.Namespace, password: str) -> dict[str, str]:
    """The subrequest as a proxy sends it: the original request (X-Forwarded-*, which both modes
    read) and the credentials."""
    parts = urlsplit(args.url or "https://test-login.invalid/")
    token = base64.b64encode(f"{args.user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}", "X-Forwarded-Proto": parts.scheme, "X-Forwarded-Host": parts.netloc,
            "X-Forwarded-Uri": (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            "X-Forwarded-Method": args.method.upper()}


def _masked(name: str, value: str, config: Config) -> str:
    """A header's value as printed: a signed assertion or a cookie is a credential, never shown."""
    if name.lower() == config.headers.assertion.lower() and value:
        return f"(a signed assertion, {len(value)} characters)"
    if name.lower() == "set-cookie":
        return f"({value.split('=', 1)[0]}: a cookie, not shown)"
    return value


class _Loopback:
    """The transport of the request: none, from this machine."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 0) if name in ("peername", "sockname") else default


@contextmanager
def _log_lines(out: Output) -> Iterator[None]:
    """What the daemon would log meanwhile (info and above), among the steps."""
    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = f"{record.levelname} {record.name}: {record.getMessage()}"
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            out.say("log", text)

    logger = logging.getLogger("sidecar")
    handler, level = Lines(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _regulation(out: Output, config: Config, user: str, trace: Trace) -> None:
    """The regulation was left out here; what the running daemon would make of this name."""
    regulation = config.regulation
    text = "not applied by test-login: nothing was counted or banned"
    if not regulation.enabled:
        out.say("regulation", text + "; the daemon has regulation.enabled: false as well")
        return
    text += (f"\nthe daemon bans a name or an address after {regulation.max_failures} wrong passwords within "
             f"{regulation.window:g} s, for {regulation.ban:g} s")
    if isinstance(trace.refusal, InvalidCredentials):
        text += "; this attempt would count there"
    socket = config.admin.socket
    if socket is not None:
        text += "\n" + await _daemon_count(socket, user)
    out.say("regulation", text)


async def _daemon_count(socket: str, user: str) -> str:
    from sidecar.admin import _ask, _Unreachable

    try:
        status, body = await _ask(socket, "bans", None)
    except _Unreachable as exc:
        return f"the running daemon cannot be asked: {exc}"
    if status != 200:
        return f"the running daemon did not say ({body.get('error', status)})"
    name = user.casefold()
    for ban in body.get("bans", []):
        if ban.get("kind") == "user" and ban.get("name") == name:
            if ban.get("banned"):
                return (f"the running daemon bans {user!r} for {ban.get('remaining')} more s: a sign-in there is "
                        f"refused now (auth-sidecar admin unban {user})")
            return f"the running daemon has counted {ban.get('failures')} wrong passwords for {user!r}"
    return f"the running daemon counts no wrong password for {user!r}"
