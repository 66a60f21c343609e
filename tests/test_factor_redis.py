"""The second factor with ``state.backend: redis``, through the sidecar's own pages against a real
redis-server: another instance sharing the Redis sees the enrolment and refuses a code used on the
first, a restart of the sidecar keeps both, and a Redis that stops answering is a 503 on every page
that needs the factors, never a pass (and the pages work again once it is back, with no restart)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import StateConfig, parse_config
from sidecar.factor_store import RedisFactors
from sidecar.local import hash_password
from sidecar.routes import SIDECAR
from tests.conftest import StartApp, need
from tests.test_second_factor import (
    ADMIN,
    HOME,
    SESSION,
    USED,
    Client,
    auth,
    code,
    cookies,
    enrol_page,
    enrolled,
    post_code,
    post_enrol,
    set_cookies,
    settings,
    sign_in,
)
from tests.testbed.redis import RedisServer

pytestmark = pytest.mark.server
prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    need("redis-server")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.yaml"
    path.write_text("users:\n"
                    f"  alice:\n    password: '{hash_password('alice-pass')}'\n"
                    f"  bob:\n    password: '{hash_password('bob-pass')}'\n")
    return path


def starter(app_client: StartApp, tmp_path: Path, users_file: Path, server: RedisServer) -> Any:
    """``await start()``: a sidecar on that Redis, under a key prefix of the test's own; each call
    another instance (its own application, state and Redis clients), as replicas are."""
    prefix = f"sf{next(prefixes)}:"

    async def start() -> Client:
        data = settings(tmp_path, users_file, second_factor={"key": "f" * 40},
                        state={"backend": "redis", "url": server.url, "key_prefix": prefix, "timeout": 2})
        return await app_client(parse_config(data))

    return start


@pytest.fixture
def start(app_client: StartApp, tmp_path: Path, users_file: Path, redis_server: RedisServer) -> Any:
    return starter(app_client, tmp_path, users_file, redis_server)


async def test_the_store_is_redis_and_no_file_is_written(start: Any, tmp_path: Path) -> None:
    client = await start()
    await enrolled(client)
    assert isinstance(client.server.app[SIDECAR].signin.codes.store, RedisFactors)
    assert not list(tmp_path.glob("*.sqlite3*"))


async def test_a_code_used_on_one_instance_is_refused_by_another(start: Any) -> None:
    first, second = await start(), await start()  # two replicas: nothing shared but the Redis
    _, secret, _ = await enrolled(first)
    half = set_cookies(await sign_in(second, "alice", "alice-pass"))[SESSION]
    assert "/factor?rd=" in (await sign_in(second, "alice", "alice-pass")).headers["Location"]  # enrolled there too
    assert (await post_code(second, half, USED[secret])).status == 401  # used on the other instance
    value = code(secret, 1)
    assert (await post_code(second, half, value)).status == 303
    other = set_cookies(await sign_in(first, "alice", "alice-pass"))[SESSION]
    assert (await post_code(first, other, value)).status == 401  # and back
    bob = set_cookies(await sign_in(second, "bob", "bob-pass"))[SESSION]
    assert (await auth(second, bob, HOME)).status == 200  # bob enrolled nothing: optional asks him none


async def test_enrolments_and_used_codes_outlive_a_restart_of_the_sidecar(start: Any) -> None:
    client = await start()
    _, secret, recovery = await enrolled(client)  # the code of this step is used
    await client.close()
    client = await start()
    half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    assert (await client.get("/factor", headers=cookies(half), allow_redirects=False)).status == 200
    assert (await post_code(client, half, USED[secret])).status == 401  # that step was used before the restart
    assert (await post_code(client, half, code(secret, 1))).status == 303
    again = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    assert (await post_code(client, again, recovery[0])).status == 303  # recovery codes kept too
    await client.close()
    client = await start()
    last = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    assert (await post_code(client, last, recovery[0])).status == 401  # and spent


async def test_redis_down_is_a_503_on_every_factor_page_never_a_pass(app_client: StartApp, tmp_path: Path,
                                                                     users_file: Path) -> None:
    need("redis-server")
    with RedisServer(tmp_path / "redis") as server:  # its own: this test stops it
        client = await starter(app_client, tmp_path, users_file, server)()
        full, secret, recovery = await enrolled(client)
        half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
        token, offer, second = await enrol_page(client, full)  # a second factor, being added
        server.stop()
        form = {"csrf": token, "rd": "/"}
        answers = [
            await client.get("/factor", headers=cookies(half, token)),
            await post_code(client, half, code(secret, 1), token),
            await post_code(client, half, recovery[0], token),
            await post_enrol(client, full, token, offer, code(second)),
            await client.get("/factors", headers=cookies(full, token)),
            await client.post("/factors/remove", data={**form, "factor": "x"}, headers=cookies(full, token)),
            await client.post("/factors/recovery", data=form, headers=cookies(full, token)),
            await client.post("/factor/passkey/options", data={**form, "purpose": "signin"},
                              headers=cookies(half, token)),
            await sign_in(client, "alice", "alice-pass"),  # the password form: is she enrolled? unknown
            await sign_in(client, "bob", "bob-pass"),  # nor is it known that bob is not
        ]
        assert [a.status for a in answers] == [503] * len(answers)
        assert all(SESSION not in set_cookies(a) for a in answers)
        assert (await auth(client, half, HOME)).status == 401  # still half-signed-in
        assert (await auth(client, full, ADMIN)).status == 200  # a whole session needs no Redis
        server.start()  # back, same data: the same client works again, no restart
        assert (await post_code(client, half, code(secret, 1), token)).status == 303


async def test_the_shipped_kubernetes_acl_allows_every_factor_store_command(tmp_path: Path) -> None:
    """deploy/kubernetes/redis.yaml's ACL user, limited to the prefix: each operation of the store passes."""
    from sidecar.factor_store import Cipher, Factor
    from sidecar.secrets import Secret
    from tests.test_deploy_fleet import ShippedAclRedis

    need("redis-server")
    with ShippedAclRedis(tmp_path / "redis") as server:
        config = StateConfig(backend="redis", url=server.url, username=server.username,
                             password=Secret(server.acl_password), timeout=2.0)
        factors = RedisFactors.from_config(config, Cipher(b"k" * 32))
        user = ("local", "alice")
        try:
            await factors.add(user, Factor("p1", "passkey", "Passkey", 1.0, b"key", b"id", 1))
            await factors.counted(user, "p1", 2)
            assert [f.sign_count for f in await factors.factors(user)] == [2]
            assert await factors.use_step(user, 1) and not await factors.use_step(user, 1)
            await factors.set_recovery_codes(user, ["abcde-fghjk"])
            assert await factors.recovery_codes_left(user) == 1 and await factors.use_recovery_code(user, "abcdefghjk")
            assert await factors.remove(user, "p1") and await factors.reset(user) == 0
        finally:
            await factors.close()


async def test_two_sidecar_processes_share_enrolments_and_used_codes_across_restarts(tmp_path: Path,
                                                                                     users_file: Path) -> None:
    """Two `auth-sidecar serve` processes on one redis-server (the shipped ACL's user), as two
    replicas: a code used on one is refused by the other, and both restarted still know it."""
    import aiohttp

    from tests.test_deploy_fleet import ShippedAclRedis
    from tests.testbed import free_port
    from tests.testbed.sidecar import SidecarProcess

    need("redis-server")
    with ShippedAclRedis(tmp_path / "redis") as redis:
        sidecars = []
        for index in range(2):
            data = settings(tmp_path, users_file, second_factor={"key": "f" * 40}, state=redis.state())
            data["server"]["listen"] = f"127.0.0.1:{free_port()}"
            (tmp_path / f"sidecar-{index}").mkdir()
            sidecars.append(SidecarProcess(tmp_path / f"sidecar-{index}", data))
        sessions: list[aiohttp.ClientSession] = []

        def client(process: SidecarProcess) -> Any:  # what the page helpers ask of a test client
            session = aiohttp.ClientSession(f"http://127.0.0.1:{process.port}", cookie_jar=aiohttp.DummyCookieJar())
            sessions.append(session)
            return session

        try:
            for process in sidecars:
                process.start()
            first, second = client(sidecars[0]), client(sidecars[1])
            _, secret, _ = await enrolled(first)
            half = set_cookies(await sign_in(second, "alice", "alice-pass"))[SESSION]
            assert (await post_code(second, half, USED[secret])).status == 401  # used through the other process
            value = code(secret, 1)
            assert (await post_code(second, half, value)).status == 303
            for process in sidecars:
                process.stop()
                process.start()
            for process in sidecars:
                again = client(process)
                half = set_cookies(await sign_in(again, "alice", "alice-pass"))[SESSION]
                assert (await again.get("/factor", headers=cookies(half), allow_redirects=False)).status == 200
                assert (await post_code(again, half, value)).status == 401  # used before both restarts
        finally:
            for session in sessions:
                await session.close()
            for process in sidecars:
                process.stop()
        assert not list(tmp_path.glob("**/*.sqlite3*"))
