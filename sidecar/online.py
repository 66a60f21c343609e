"""``auth-sidecar check-config``: the configuration as serve would read it, and with ``--online``,
what it points at, connected to for real."""

from __future__ import annotations

import argparse

from sidecar.cli import DEFAULT_CONFIG, add_config_argument, fail
from sidecar.config import load_config
from sidecar.errors import ConfigError


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("file", nargs="?", metavar="FILE", help="the configuration (the same as --config)")
    add_config_argument(parser)
    parser.add_argument("--online", action="store_true",
                        help="also connect to the directory and the providers, and print a checklist")


def main(args: argparse.Namespace) -> int:
    path = args.file or args.config or DEFAULT_CONFIG
    try:
        config = load_config(path)  # noqa: F841 (used by --online)
    except ConfigError as exc:
        return fail(f"{path}: {exc}")
    if not args.online:
        print(f"{path}: ok")
        return 0
    return fail("--online is not built yet")  # placeholder
