"""Commands that make what a configuration needs: a password hash, a session secret, a signing key."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "hash-password":
        parser.add_argument("--scheme", choices=["argon2id", "bcrypt"], default="argon2id",
                            help="argon2id for YAML users files (default), bcrypt for htpasswd files")


def main(args: argparse.Namespace) -> int:
    if args.command == "hash-password":
        return hash_password(args.scheme)
    if args.command == "generate-signing-key":
        from sidecar.assertion import generate_key

        print(generate_key(), end="")
        return 0
    import secrets

    print(secrets.token_urlsafe(32))  # generate-secret: 256 random bits, 43 characters
    return 0


def hash_password(scheme: str) -> int:
    """Read a password (twice at a terminal, without echo; once from a pipe) and print its hash."""
    import getpass

    from sidecar.cli import fail
    from sidecar.local import hash_password as make_hash

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            return fail("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        print(make_hash(password, scheme))
    except ValueError as exc:
        return fail(str(exc))
    return 0
