"""Real servers for tests, the demo and the benchmark: slapd, Samba AD, nginx, an echo upstream.

Every server here is started by the caller on 127.0.0.1, on a free port where the server allows it,
and stopped by its own PID. Nothing here imports the `sidecar` package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def substitute(text: str, replacements: dict[str, str], source: str = "the template") -> str:
    """Replace every token; a token missing from text means the deploy file changed under us: fail."""
    for token, value in replacements.items():
        if token not in text:
            raise ValueError(f"{source} no longer contains {token!r}")
        text = text.replace(token, value)
    return text


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def find_binary(name: str, *extra_dirs: str) -> str | None:
    """The path of an executable, also looking in sbin directories that root's PATH may lack."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", *extra_dirs])
    return shutil.which(name, path=path)


def require_binary(name: str, hint: str = "") -> str:
    """find_binary(name), or FileNotFoundError saying it is not installed (and how to install it)."""
    path = find_binary(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed" + (f" ({hint})" if hint else ""))
    return path


def stop_process(process: subprocess.Popen[Any] | None, *signals: int, timeout: float = 10.0) -> None:
    """Stop a child: each signal in turn (SIGTERM by default), waiting after each, SIGKILL last."""
    if process is None:
        return
    for sig in (*(signals or (signal.SIGTERM,)), signal.SIGKILL):
        if process.poll() is not None:
            break
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()
