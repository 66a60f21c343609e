"""A TCP server that accepts connections and never answers: a directory server that hangs."""

from __future__ import annotations

import socket
import threading

POLL_INTERVAL = 0.05


class HangingServer:
    """Listens on 127.0.0.1:<free port>, accepts everything, reads nothing, sends nothing."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        # A timeout lets the accept loop notice stop(): closing the socket does not wake accept().
        self._listener.settimeout(POLL_INTERVAL)
        self.port: int = self._listener.getsockname()[1]
        self.uri = f"ldap://127.0.0.1:{self.port}"
        self._connections: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_forever, name="hang", daemon=True)

    def __enter__(self) -> HangingServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def accepted(self) -> int:
        """How many connections were accepted so far."""
        return len(self._connections)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the listener and every accepted connection."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._listener.close()
        for connection in self._connections:
            connection.close()

    def _accept_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._connections.append(connection)  # kept open, never read: the client waits forever
