"""Private Redis for tests and the benchmark: a server, a replica, sentinels, a slow link to one.

    with RedisServer(tmp_path / "main") as redis:
        redis.url                          # redis://127.0.0.1:<free port>
        redis.stop(); redis.start()        # an outage: same port, same data (append-only file)

    with RedisFleet(tmp_path) as fleet:    # a master, one replica, three sentinels (quorum 2)
        fleet.sentinel_addresses           # ["127.0.0.1:<port>", ...] for state.sentinel.addresses
        fleet.failover()                   # stop the master; returns once a sentinel names the replica
        fleet.rejoin(fleet.master)         # start the old master again, back as a replica

    with DelayingProxy(redis.port, delay=0.5) as slow:
        slow.url                           # every chunk each way held `delay` seconds (settable live)

Each server has its own work directory (its config, its log, its data) and keeps its port across
stop()/start(), so a client configured once sees the outage end. Every process is stopped by its
own PID. Nothing here imports the `sidecar` package; the `redis` client is used only to wait on
replication and failover.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import redis

from tests.testbed import free_port, require_binary
from tests.testbed.delay import Relay
from tests.testbed.process import ManagedProcess

MASTER_NAME = "sidecar-main"
HINT = "apt-get install redis-server redis-sentinel; tests/install.sh installs both"


class RedisServer(ManagedProcess):
    """One redis-server on 127.0.0.1, persisted to an append-only file so a restart keeps its data."""

    name = "redis-server"

    def __init__(self, workdir: Path, *, replica_of: int | None = None, password: str | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.replica_of = replica_of
        self.password = password
        self.log_file = workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        lines = [
            f"port {self.port}", "bind 127.0.0.1", "protected-mode no", "daemonize no",
            f'dir "{self.workdir}"', "appendonly yes", "appendfsync always", 'save ""',
            "loglevel notice", 'logfile ""',
        ]
        if self.password is not None:
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        if self.replica_of is not None:
            lines.append(f"replicaof 127.0.0.1 {self.replica_of}")
        (self.workdir / "redis.conf").write_text("\n".join(lines) + "\n")

    def command(self) -> Sequence[str]:
        return [require_binary("redis-server", HINT), str(self.workdir / "redis.conf")]

    def ports(self) -> Sequence[int]:
        return (self.port,)

    def client(self) -> redis.Redis:
        """A plain synchronous client, for a test to look at or seed what the sidecar wrote."""
        return redis.Redis(port=self.port, password=self.password, socket_timeout=5, decode_responses=True)

    def role(self) -> str:
        with self.client() as client:
            return str(client.role()[0])


class Sentinel(ManagedProcess):
    """One redis-sentinel watching ``MASTER_NAME``; it rewrites its own config file, as sentinels do."""

    name = "redis-sentinel"

    def __init__(self, workdir: Path, master_port: int, *, quorum: int = 2, password: str | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.master_port = master_port
        self.quorum = quorum
        self.password = password
        self.log_file = workdir / "sentinel.log"

    def prepare(self) -> None:
        config = self.workdir / "sentinel.conf"
        if config.exists():  # a restarted sentinel keeps what it learnt (the current master)
            return
        lines = [
            f"port {self.port}", "bind 127.0.0.1", "protected-mode no", "daemonize no",
            f'dir "{self.workdir}"', 'logfile ""',
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} {self.quorum}",
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
            f"sentinel failover-timeout {MASTER_NAME} 5000",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.password is not None:
            lines += [f"sentinel auth-pass {MASTER_NAME} {self.password}"]
        config.write_text("\n".join(lines) + "\n")

    def command(self) -> Sequence[str]:
        return [require_binary("redis-sentinel", HINT), str(self.workdir / "sentinel.conf")]

    def ports(self) -> Sequence[int]:
        return (self.port,)

    def master(self) -> tuple[str, int] | None:
        """Where this sentinel says the master is now."""
        with redis.Redis(port=self.port, socket_timeout=5, decode_responses=True) as client:
            found = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return (str(found[0]), int(found[1])) if found else None


class RedisFleet:
    """A master, a replica of it and three sentinels; :meth:`failover` makes the replica the master."""

    timeout: ClassVar[float] = 45.0

    def __init__(self, workdir: Path, *, sentinels: int = 3) -> None:
        self.master = RedisServer(workdir / "master")
        self.replica = RedisServer(workdir / "replica", replica_of=self.master.port)
        self.sentinels = [Sentinel(workdir / f"sentinel-{i}", self.master.port, quorum=sentinels // 2 + 1)
                          for i in range(sentinels)]
        self.master_name = MASTER_NAME

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, self.replica]

    def current_master(self) -> RedisServer:
        """The server the sentinels name as master now."""
        where = self.sentinels[0].master()
        return next(server for server in self.servers if where and server.port == where[1])

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        self.wait_synced()
        for sentinel in self.sentinels:
            sentinel.start()
        self._wait(lambda: all(self._sees_replica(s) for s in self.sentinels), "the sentinels to see the replica")

    def stop(self) -> None:
        for process in [*self.sentinels, self.replica, self.master]:
            process.stop()

    def wait_synced(self) -> None:
        """Until the replica has everything the master wrote (so a failover loses nothing)."""
        def synced() -> bool:
            with self.master.client() as client:
                info = client.info("replication")
            offset = info.get("master_repl_offset")
            replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            return bool(replicas) and all(r.get("state") == "online" and r.get("offset") == offset
                                          for r in replicas)
        self._wait(synced, "the replica to catch up")

    def failover(self) -> RedisServer:
        """Stop the master (an outage, not a polite handover) and wait until a sentinel names another."""
        old = self.current_master()
        if old is self.master:
            self.wait_synced()
        old.stop()
        self._wait(lambda: all(s.master() not in (None, ("127.0.0.1", old.port)) for s in self.sentinels),
                   "the sentinels to promote the replica")
        new = self.current_master()
        self._wait(lambda: new.role() == "master", "the new master to take writes")
        return new

    def rejoin(self, server: RedisServer) -> None:
        """Start a stopped server again and wait until the sentinels have made it a replica."""
        server.start()
        self._wait(lambda: server.role() == "slave", f"{server.workdir.name} to rejoin as a replica")

    def _sees_replica(self, sentinel: Sentinel) -> bool:
        with redis.Redis(port=sentinel.port, socket_timeout=5, decode_responses=True) as client:
            replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            others = client.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)
        return bool(replicas) and len(others) == len(self.sentinels) - 1

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if condition():
                    return
            except (redis.RedisError, OSError, StopIteration):
                pass
            if time.monotonic() > deadline:
                logs = "\n".join(p.log()[-1500:] for p in [*self.servers, *self.sentinels])
                raise TimeoutError(f"waited {self.timeout}s for {what}:\n{logs}")
            time.sleep(0.1)

    def __enter__(self) -> RedisFleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


class DelayingProxy(Relay):
    """A TCP relay on a free port that holds every chunk, each way, for ``delay`` seconds.

    ``delay`` may be changed while it runs (0: a plain relay), so one test can make Redis slow and
    fast again without the client reconnecting.
    """

    thread_name = "delaying-proxy"

    def __init__(self, upstream_port: int, delay: float = 0.0) -> None:
        super().__init__(upstream_port)
        self.delay = delay

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, server_writer))

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
                self._writers.discard(writer)
