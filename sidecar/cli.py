"""The ``auth-sidecar`` command: serve | check-config | hash-password | generate-secret | generate-signing-key."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from sidecar import __version__
from sidecar.config import Config, load_config
from sidecar.errors import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auth-sidecar", description=__doc__)
    parser.add_argument("--version", action="version", version=f"auth-sidecar {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="answer auth subrequests")
    serve.add_argument("--config", required=True, metavar="FILE", help="YAML configuration")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                       help="overrides log.level from the configuration")
    check = commands.add_parser("check-config", help="validate a configuration and exit (0 ok, 2 not)")
    check.add_argument("config", metavar="FILE")
    hashing = commands.add_parser("hash-password", help="print a hash for a local users file")
    hashing.add_argument("--scheme", choices=["argon2id", "bcrypt"], default="argon2id",
                         help="argon2id for YAML users files (default), bcrypt for htpasswd files")
    commands.add_parser("generate-secret", help="print a random secret for sessions.keys")
    commands.add_parser("generate-signing-key", help="print a new EC P-256 private key for assertion.keys")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-password":
        return hash_password(args.scheme)
    if args.command == "generate-signing-key":
        from sidecar.assertion import generate_key

        print(generate_key(), end="")
        return 0
    if args.command == "generate-secret":
        import secrets

        print(secrets.token_urlsafe(32))  # 256 random bits, 43 characters
        return 0
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"auth-sidecar: {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: ok")
        return 0
    return serve(config, args.log_level or config.log.level)


def hash_password(scheme: str) -> int:
    """Read a password (twice at a terminal, without echo; once from a pipe) and print its hash."""
    import getpass

    from sidecar.local import hash_password as make_hash

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("auth-sidecar: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        print(make_hash(password, scheme))
    except ValueError as exc:
        print(f"auth-sidecar: {exc}", file=sys.stderr)
        return 2
    return 0


def serve(config: Config, level: str) -> int:
    from aiohttp import web

    from sidecar.app import make_app

    logging.basicConfig(format=LOG_FORMAT, level=level.upper(), stream=sys.stderr)
    logging.getLogger("aiohttp.server").addFilter(ProtocolErrors())
    if level != "debug":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    log = logging.getLogger("sidecar")
    loop = _event_loop()
    app = make_app(config)
    log.info("auth-sidecar %s listening on %s:%d", __version__, config.server.host, config.server.port)
    try:
        web.run_app(
            app,
            host=config.server.host,
            port=config.server.port,
            access_log=logging.getLogger("aiohttp.access") if config.server.access_log else None,
            print=None,
            loop=loop,
        )
    except ConfigError as exc:  # found at start-up, e.g. a group type the directory cannot answer
        print(f"auth-sidecar: {exc}", file=sys.stderr)
        return 2
    return 0


class ProtocolErrors(logging.Filter):
    """aiohttp logs every malformed request (a bad request line, an over-long header) at ERROR with
    a traceback: anyone reaching the port could flood the log. One warning line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "%d malformed HTTP request from %s: %s"
            record.args = (error.code, peer, repr(error.message)[:200])
            record.exc_info = record.exc_text = None
        return True


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
