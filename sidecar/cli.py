"""The ``auth-sidecar`` command. Each subcommand lives in the module of its concern, which gives it
its arguments (``configure(parser, name)``) and runs it (``main(args) -> exit status``); this module only
lists them."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple

from sidecar import __version__

DEFAULT_CONFIG = "/etc/auth-sidecar/config.yaml"


class Command(NamedTuple):
    name: str
    module: str  # sidecar.<module>: configure(parser, name) and main(args), args.command the name
    help: str
    description: str


COMMANDS = [
    Command("serve", "server", "answer the proxy's auth subrequests",
            "Serve /auth and the sign-in pages until SIGTERM (drains requests in flight, exits 0). "
            "SIGHUP reloads the configuration: a file that does not validate is logged and the running "
            "one kept. With server.workers above 1, a supervisor of that many processes on one port."),
    Command("check-config", "online", "validate a configuration and exit (0 ok, 2 not)",
            "Check a configuration as serve would, without starting anything: every problem with its line. "
            "--online also connects: the directory's service bind, its base DNs and group search, the "
            "single sign-on providers' discovery and keys, clock skew."),
    Command("test-login", "troubleshoot", "try one sign-in and show every step",
            "Sign one user in against the configured sources and print each step: the server tried, the bind "
            "DN, the search and its entries, the groups and how they were found, the flags, the access "
            "verdict, and the exact headers /auth would answer with (or the refusal and its reason). The "
            "password is read without echo, or from standard input."),
    Command("import-netbox", "importer", "print the ldap: section of a NetBox ldap_config.py",
            "Read NetBox's ldap_config.py (django-auth-ldap's AUTH_LDAP_* settings) without executing it and print "
            "the equivalent ldap: section, each key commented with the setting it came from, and a WARNING line "
            "for each setting that has no equivalent, and why."),
    Command("admin", "admin", "talk to a running sidecar over its local socket",
            "Bans, sessions, reload and status of a running sidecar, through its admin socket "
            "(admin.socket, only its owner can open it)."),
    Command("hash-password", "generate", "print a password hash for a local users file",
            "Read a password (twice at a terminal, without echo; once from a pipe) and print its hash."),
    Command("generate-secret", "generate", "print a random secret for sessions.keys",
            "Print 256 random bits as 43 URL-safe characters: a session key's secret."),
    Command("generate-signing-key", "generate", "print a new EC P-256 private key for assertion.keys",
            "Print a new EC P-256 private key (PEM) to sign the identity assertion with."),
]


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """--config FILE, the same on every command that reads the configuration."""
    parser.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG,
                        help=f"the YAML configuration (default {DEFAULT_CONFIG})")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auth-sidecar", description=(
        "Answers a reverse proxy's authentication subrequests: LDAP / Active Directory, "
        "built-in users, single sign-on and bearer tokens, as identity headers."))
    parser.add_argument("-V", "--version", action="version", version=f"auth-sidecar {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.description)
        importlib.import_module(f"sidecar.{command.module}").configure(sub, command.name)
        sub.set_defaults(module=command.module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    status: int = importlib.import_module(f"sidecar.{args.module}").main(args)
    return status


def fail(message: str) -> int:
    """One line on standard error, and exit status 2."""
    print(f"auth-sidecar: {message}", file=sys.stderr)
    return 2
