"""``auth-sidecar test-login``: placeholder."""

from __future__ import annotations

import argparse

from sidecar.cli import add_config_argument, fail


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    add_config_argument(parser)
    parser.add_argument("user", metavar="USER")


def main(args: argparse.Namespace) -> int:
    return fail("test-login is not built yet")
