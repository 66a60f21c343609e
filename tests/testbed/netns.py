"""A child in a network namespace of its own, reached through relays on free ports of 127.0.0.1.

For servers whose ports are fixed (Samba's LDAP is always 389, 636, 3268 and 3269): each runs
with its own loopback, so any number can run side by side, and `Relay` hands each connection made
to its free port on 127.0.0.1 over to the fixed port inside. Needs root (as Samba does) and
util-linux's `unshare`.
"""

from __future__ import annotations

import ctypes
import os
import queue
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from tests.testbed import require_binary

CLONE_NEWNET = 0x40000000
POLL_INTERVAL = 0.05
CHUNK = 65536


def in_own_network(command: Sequence[str]) -> list[str]:
    """command run in a new network namespace whose loopback is up."""
    unshare = require_binary("unshare", "package util-linux")
    ip = require_binary("ip", "package iproute2")
    return [unshare, "--net", "--", "sh", "-c", f'"{ip}" link set lo up && exec "$0" "$@"', *command]


def has_own_network(pid: int) -> bool:
    """Whether process pid has left this process's network namespace (unshare has run)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    except FileNotFoundError:
        return False


class Namespace:
    """Opens TCP connections inside the network namespace of a process, from a thread living there."""

    def __init__(self, pid: int) -> None:
        if not has_own_network(pid):
            raise RuntimeError(f"process {pid} shares this process's network: it is not a namespace of its own")
        self._pid = pid
        self._requests: queue.Queue[tuple[int, float, Future[socket.socket]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"netns-{pid}", daemon=True)
        self._thread.start()

    def connect(self, port: int, timeout: float = 5.0) -> socket.socket:
        """A connection to 127.0.0.1:port inside; OSError when nothing listens there (yet)."""
        answer: Future[socket.socket] = Future()
        self._requests.put((port, timeout, answer))
        return answer.result()

    def accepts(self, port: int) -> bool:
        try:
            self.connect(port, timeout=0.5).close()
            return True
        except OSError:
            return False

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        try:
            # setns moves only the calling thread: sockets made here belong to the namespace.
            with open(f"/proc/{self._pid}/ns/net", "rb") as ns:
                if ctypes.CDLL(None, use_errno=True).setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into the network of process {self._pid}")
        except OSError as error:
            failure: OSError | None = error
        else:
            failure = None
        while (request := self._requests.get()) is not None:
            port, timeout, answer = request
            if failure is not None:
                answer.set_exception(failure)
                continue
            try:
                answer.set_result(socket.create_connection(("127.0.0.1", port), timeout=timeout))
            except OSError as error:
                answer.set_exception(error)


class Relay:
    """Listens on a free 127.0.0.1 port now; while a namespace is attached, each connection is
    relayed to 127.0.0.1:inner_port inside it (otherwise it is closed)."""

    def __init__(self, inner_port: int) -> None:
        self.inner_port = inner_port
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(POLL_INTERVAL)  # so the accept loop notices close()
        self.port: int = self._listener.getsockname()[1]
        self.namespace: Namespace | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept_forever, name=f"relay-{self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self._listener.close()

    def _accept_forever(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        client.settimeout(None)
        namespace = self.namespace
        try:
            if namespace is None:
                raise OSError("not running")
            inner = namespace.connect(self.inner_port)
        except OSError:
            client.close()
            return
        inner.settimeout(None)
        back = threading.Thread(target=_pump, args=(inner, client), daemon=True)
        back.start()
        _pump(client, inner)
        back.join()
        client.close()
        inner.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy until source ends, then end target's sending side too."""
    try:
        while data := source.recv(CHUNK):
            target.sendall(data)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relays(inner_ports: Sequence[int]) -> dict[int, Relay]:
    """One relay per inner port, each on a free port of its own."""
    return {port: Relay(port) for port in inner_ports}
