"""The factor stores, one contract: what is kept is useless to whoever reads the file or the Redis,
replay protection and enrolments survive a reopen, a changed key or a store that cannot answer fail
closed. Each test runs against SQLite and against a real redis-server (two stores of one Redis,
under a key prefix of the test's own, as two replicas would have)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sidecar.config import SentinelConfig, StateConfig
from sidecar.factor_store import (
    STEP_KEPT_FOR,
    Cipher,
    Factor,
    FactorStore,
    FactorStoreUnavailable,
    RedisFactors,
    SqliteFactors,
    User,
)
from sidecar.factors import PERIOD, SKEW, Codes
from sidecar.secrets import Secret
from tests.conftest import need
from tests.testbed import free_port
from tests.testbed.redis import DelayingProxy, RedisFleet, RedisServer

ALICE = ("local", "alice")
BOB = ("local", "bob")
SECRET = b"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
KEY = b"k" * 32
prefixes = itertools.count()


class SqliteBackend:
    """Stores on one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, key: bytes = KEY) -> FactorStore:
        return SqliteFactors(self.path, Cipher(key))

    def broken(self) -> FactorStore:
        self.path.with_suffix(".dir").mkdir()
        return SqliteFactors(self.path.with_suffix(".dir"), Cipher(KEY))

    def at_rest(self) -> bytes:
        return b"".join(self.path.parent.joinpath(self.path.name + suffix).read_bytes()
                        for suffix in ("", "-wal") if self.path.parent.joinpath(self.path.name + suffix).exists())

    def move(self, source: User, target: User) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("UPDATE factors SET source = ?, username = ? WHERE source = ? AND username = ?",
                       (*target, *source))


class RedisBackend:
    """Stores on one redis-server, under a prefix of the test's own."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.prefix = f"f{next(prefixes)}:"

    def open(self, key: bytes = KEY, url: str | None = None) -> FactorStore:
        config = StateConfig(backend="redis", url=url or self.server.url, key_prefix=self.prefix, timeout=2.0)
        return RedisFactors.from_config(config, Cipher(key))

    def broken(self) -> FactorStore:
        return self.open(url=f"redis://127.0.0.1:{free_port()}")  # nothing listens there

    def at_rest(self) -> bytes:
        """Every value under the prefix, as anyone with access to the Redis reads it."""
        found = []
        with self.server.client() as client:
            for key in client.scan_iter(match=self.prefix + "*"):
                kind = client.type(key)
                values = (client.hgetall(key).values() if kind == "hash" else client.smembers(key)
                          if kind == "set" else [client.get(key)])
                found += [key, *values]
        return "\n".join(str(v) for v in found).encode()

    def move(self, source: User, target: User) -> None:
        with self.server.client() as client:
            client.rename(f"{self.prefix}factors:{source[0]}:{source[1]}",
                          f"{self.prefix}factors:{target[0]}:{target[1]}")


Backend = SqliteBackend | RedisBackend


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    need("redis-server")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.server)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return SqliteBackend(tmp_path / "factors.sqlite3")
    return RedisBackend(request.getfixturevalue("redis_server"))


@pytest.fixture
async def opened(backend: Backend) -> AsyncIterator[list[FactorStore]]:
    """The stores a test opens, closed after it (the test may close some itself: closing twice is harmless)."""
    stores: list[FactorStore] = []
    yield stores
    for store in stores:
        try:
            await store.close()
        except RuntimeError:  # an SQLite store closed already: its thread is gone
            pass


def totp(factor_id: str = "f1") -> Factor:
    return Factor(factor_id, "totp", "Authenticator app", 1.0, SECRET)


def passkey(factor_id: str = "p1", created: float = 2.0) -> Factor:
    return Factor(factor_id, "passkey", "Passkey", created, b"\xa5\x01\x02 public key", b"\x00credential", 3)


async def test_totp_secrets_are_encrypted_and_recovery_codes_hashed_at_rest(backend: Backend) -> None:
    factors = backend.open()
    await factors.add(ALICE, totp())
    await factors.set_recovery_codes(ALICE, ["abcde-fghjk"])
    assert [f.secret for f in await factors.factors(ALICE)] == [SECRET]
    await factors.close()
    raw = backend.at_rest()
    assert raw  # something was written where we look
    assert SECRET not in raw and b"abcdefghjk" not in raw and b"abcde-fghjk" not in raw


async def test_a_row_moved_to_another_user_or_a_new_key_does_not_open(backend: Backend,
                                                                      opened: list[FactorStore]) -> None:
    factors = backend.open()
    await factors.add(ALICE, totp())
    await factors.close()
    backend.move(ALICE, BOB)
    moved = backend.open()
    opened.append(moved)
    with pytest.raises(FactorStoreUnavailable, match="does not decrypt"):
        await moved.factors(BOB)
    rekeyed = backend.open(b"x" * 32)
    opened.append(rekeyed)
    with pytest.raises(FactorStoreUnavailable):
        await rekeyed.factors(BOB)


async def test_used_steps_and_enrolments_outlive_a_reopen(backend: Backend, opened: list[FactorStore]) -> None:
    factors = backend.open()
    await factors.add(ALICE, totp())
    assert await factors.use_step(ALICE, 100)
    assert not await factors.use_step(ALICE, 100)
    assert await factors.use_step(BOB, 100)  # per user
    await factors.close()
    again = backend.open()
    opened.append(again)
    assert not await again.use_step(ALICE, 100)
    assert await again.use_step(ALICE, 101)
    assert [f.id for f in await again.factors(ALICE)] == ["f1"]


async def test_two_stores_of_one_backend_see_each_other(backend: Backend, opened: list[FactorStore]) -> None:
    """As two instances would: one enrols, the other asks for it; a step used by one is used for both."""
    a, b = backend.open(), backend.open()
    opened += [a, b]
    await a.add(ALICE, totp())
    assert [f.secret for f in await b.factors(ALICE)] == [SECRET]
    assert await a.use_step(ALICE, 7) and not await b.use_step(ALICE, 7)
    await b.set_recovery_codes(ALICE, ["abcde-fghjk"])
    assert await a.use_recovery_code(ALICE, "ABCDE FGHJK") and not await b.use_recovery_code(ALICE, "abcde-fghjk")


async def test_recovery_codes_work_once_and_reset_forgets_everything(backend: Backend,
                                                                     opened: list[FactorStore]) -> None:
    factors = backend.open()
    opened.append(factors)
    codes = Codes(factors, issuer="Test", recovery_count=3)
    issued = await codes.new_recovery_codes(ALICE)
    assert len(issued) == 3 and await factors.recovery_codes_left(ALICE) == 3
    assert not await factors.use_recovery_code(BOB, issued[0])  # another user's code
    assert await factors.use_recovery_code(ALICE, issued[0].upper())
    assert not await factors.use_recovery_code(ALICE, issued[0])
    renewed = await codes.new_recovery_codes(ALICE)
    assert not await factors.use_recovery_code(ALICE, issued[1])  # the old ones ended with the new
    assert await factors.recovery_codes_left(ALICE) == 3 and await factors.use_recovery_code(ALICE, renewed[1])
    await factors.add(ALICE, totp())
    await factors.add(ALICE, passkey())
    assert await factors.reset(ALICE) == 2
    assert await factors.factors(ALICE) == [] and await factors.recovery_codes_left(ALICE) == 0
    assert await factors.reset(ALICE) == 0


async def test_passkeys_are_listed_in_order_counted_and_removed(backend: Backend, opened: list[FactorStore]) -> None:
    factors = backend.open()
    opened.append(factors)
    await factors.add(ALICE, passkey("p2", created=5.0))
    await factors.add(ALICE, totp())
    await factors.add(ALICE, passkey("p1", created=2.0))
    listed = await factors.factors(ALICE)
    assert [f.id for f in listed] == ["f1", "p1", "p2"]  # by when they were enrolled
    assert listed[1] == passkey("p1")  # every field as written
    await factors.counted(ALICE, "p1", 9)
    assert [f.sign_count for f in await factors.factors(ALICE)] == [0, 9, 3]
    assert await factors.remove(ALICE, "p1") and not await factors.remove(ALICE, "p1")
    assert not await factors.remove(BOB, "p2")  # another user's
    await factors.counted(ALICE, "p1", 10)  # a sign-in that ends after its passkey was removed
    assert [f.id for f in await factors.factors(ALICE)] == ["f1", "p2"]


async def test_users_whose_source_and_name_split_differently_are_two_users(backend: Backend,
                                                                           opened: list[FactorStore]) -> None:
    """A source ``ldap:corp`` and a name ``alice``, a source ``ldap`` and a name ``corp:alice``."""
    factors = backend.open()
    opened.append(factors)
    await factors.add(("ldap:corp", "alice"), passkey())
    assert await factors.factors(("ldap", "corp:alice")) == []
    assert await factors.use_step(("ldap:corp", "alice"), 5) and await factors.use_step(("ldap", "corp:alice"), 5)
    assert await factors.factors(("ldap%3Acorp", "alice")) == []  # nor one whose name is the escape


async def test_a_store_that_cannot_open_raises_unavailable(backend: Backend, opened: list[FactorStore]) -> None:
    factors = backend.broken()
    opened.append(factors)
    for call in (factors.factors(ALICE), factors.use_step(ALICE, 1), factors.use_recovery_code(ALICE, "x"),
                 factors.add(ALICE, totp()), factors.recovery_codes_left(ALICE)):
        with pytest.raises(FactorStoreUnavailable):
            await call


@pytest.mark.server
async def test_a_redis_step_expires_after_the_skew_window_and_an_unreadable_row_fails_closed(
        redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server)
    factors = backend.open()
    try:
        assert await factors.use_step(ALICE, 100)
        with redis_server.client() as client:
            ttl = client.ttl(f"{backend.prefix}totp-step:local:alice:100")
            assert (2 * SKEW + 1) * PERIOD < ttl <= STEP_KEPT_FOR
            client.hset(f"{backend.prefix}factors:local:alice", "f9", "not a row")
        with pytest.raises(FactorStoreUnavailable, match="unreadable"):  # not a user without a factor
            await factors.factors(ALICE)
        assert "k" * 32 not in repr(factors)
    finally:
        await factors.close()


def test_codes_match_only_within_the_skew(tmp_path: Path) -> None:
    import pyotp

    now = [1_700_000_000.0]
    codes = Codes(SqliteFactors(tmp_path / "f.sqlite3", Cipher(KEY)), issuer="Test", clock=lambda: now[0])
    secret = SECRET.decode()
    totp_ = pyotp.TOTP(secret)
    step = int(now[0]) // 30
    assert codes.matching_step(secret, totp_.at(now[0])) == step
    assert codes.matching_step(secret, totp_.at(now[0] - 30)) == step - 1
    assert codes.matching_step(secret, totp_.at(now[0] + 30)) == step + 1
    assert codes.matching_step(secret, totp_.at(now[0] - 90)) is None
    assert codes.matching_step(secret, "12345") is None and codes.matching_step(secret, "１２３４５６") is None
    offer = codes.offer("alice")
    assert offer.uri.startswith("otpauth://totp/Test:alice?secret=") and offer.qr.startswith("data:image/svg+xml")


@pytest.mark.server
async def test_a_slow_redis_is_unavailable_within_the_timeout(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server)
    with DelayingProxy(redis_server.port) as slow:
        config = StateConfig(backend="redis", url=slow.url, key_prefix=backend.prefix, timeout=0.2)
        factors = RedisFactors.from_config(config, Cipher(KEY))
        try:
            await factors.add(ALICE, totp())
            slow.delay = 2.0  # ten times the timeout
            for call in (factors.factors(ALICE), factors.use_step(ALICE, 1)):
                with pytest.raises(FactorStoreUnavailable, match="no answer within 0.2 s"):
                    await call
        finally:
            slow.delay = 0.0
            await factors.close()


@pytest.mark.server
async def test_redis_with_a_password_then_through_sentinel_across_a_failover(tmp_path: Path) -> None:
    """The fleet's connection settings, as the fleet's store uses them: an authenticated Redis,
    and Sentinel, whose failover keeps the enrolments and the used steps (the replica had them)."""
    need("redis-server")
    need("redis-sentinel")
    with RedisServer(tmp_path / "locked", password="redis-pass") as locked:
        for password, works in (("redis-pass", True), ("wrong", False)):
            config = StateConfig(backend="redis", url=locked.url, password=Secret(password), timeout=2.0)
            factors = RedisFactors.from_config(config, Cipher(KEY))
            try:
                if works:
                    await factors.add(ALICE, totp())
                    assert [f.id for f in await factors.factors(ALICE)] == ["f1"]
                else:
                    with pytest.raises(FactorStoreUnavailable):
                        await factors.factors(ALICE)
            finally:
                await factors.close()
    with RedisFleet(tmp_path / "fleet") as fleet:
        config = StateConfig(backend="redis", url="redis://sentinel", timeout=2.0,
                             sentinel=SentinelConfig(master=fleet.master_name, addresses=tuple(
                                 (host, int(port)) for host, port in (a.split(":") for a in fleet.sentinel_addresses))))
        factors = RedisFactors.from_config(config, Cipher(KEY))
        try:
            await factors.add(ALICE, totp())
            assert await factors.use_step(ALICE, 100)
            new = await asyncio.to_thread(fleet.failover)
            assert new is fleet.replica
            deadline = time.monotonic() + 30  # a bound for a hung test: the client finds the new master
            while True:
                try:
                    assert [f.secret for f in await factors.factors(ALICE)] == [SECRET]
                    break
                except FactorStoreUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            assert not await factors.use_step(ALICE, 100)  # the step used before the failover
            assert await factors.use_step(ALICE, 101)  # and the new master takes writes
        finally:
            await factors.close()
