"""``auth-sidecar admin``: placeholder."""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web

from sidecar.cli import add_config_argument, fail


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    add_config_argument(parser)


def main(args: argparse.Namespace) -> int:
    return fail("admin is not built yet")


async def start(server: Any, path: str) -> web.BaseRunner | None:
    return None
