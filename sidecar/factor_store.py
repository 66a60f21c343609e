"""Where second factors are kept: each user's TOTP secrets, passkeys and recovery codes, and the
TOTP time steps already used.

:class:`FactorStore` is the protocol the sign-in pages use; :class:`SqliteFactors` keeps it in one
SQLite file (the embedded default), :class:`RedisFactors` in the fleet's Redis, on its connection
settings (``state.backend: redis``, for several instances): nothing else changes with the backend.

In Redis, each operation maps onto single commands, so no check-then-write races between
replicas: a used TOTP step is ``SET <prefix>totp-step:<source>:<user>:<step> 1 NX EX 300`` (refused
when it exists), a recovery code is spent by ``SREM`` of its digest (spent when it removed one),
factors are a hash per user (field: factor id, value: the row with its sealed secret); a reset and
new recovery codes are one MULTI, a passkey's counter a script that writes only over the row it read
(a passkey removed meanwhile stays removed). The sealing (:class:`Cipher`) is the same for both:
only rows move.

A user is ``(source, username)`` as sessions name them. What is stored is never what would let
someone in who reads the file: TOTP secrets are encrypted (AES-256-GCM under the configured key,
bound to the user and the factor's id as associated data, so a row copied to another user does not
open), recovery codes are kept as HMACs under that key, and a passkey is only its public key.

SQLite is blocking: every call crosses into one thread of its own (:class:`SqliteFactors` owns it),
never the event loop. Redis is asked with its asyncio client, each command within ``state.timeout``.
A store that fails raises :class:`FactorStoreUnavailable` (a Redis that is down, slow, or holds a
row this version cannot read): the pages answer 503, and no factor is ever taken as given because
the store could not say.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sidecar.errors import Unavailable

if TYPE_CHECKING:  # redis and sqlite3 are imported when their store is used (sidecar.state does the same)
    import sqlite3

    import redis.asyncio as aioredis

    from sidecar.config import StateConfig

T = TypeVar("T")
User = tuple[str, str]  # (source, username)
Kind = Literal["totp", "passkey"]
NONCE_BYTES = 12
STEPS_KEPT = 10  # time steps of used TOTP codes kept per user: far more than any code stays valid
# Seconds Redis keeps a used step: STEPS_KEPT steps of 30 s, well past the skew window in which a
# code of that step is accepted (sidecar.factors: one step either side), even between replicas
# whose clocks differ by a few minutes.
STEP_KEPT_FOR = STEPS_KEPT * 30


class FactorStoreUnavailable(Unavailable):
    """The factor store cannot answer: nobody gives a second factor until it can (503)."""


@dataclass(frozen=True)
class Factor:
    """One enrolled factor. ``secret`` is a TOTP secret (base32, decrypted) or a passkey's public
    key (COSE); ``credential_id`` and ``sign_count`` are a passkey's."""

    id: str
    kind: Kind
    label: str
    created: float
    secret: bytes = field(repr=False)
    credential_id: bytes = b""
    sign_count: int = 0


def new_factor_id() -> str:
    return secrets.token_urlsafe(12)


class FactorStore(Protocol):
    """What the sign-in pages ask of a store; every method may raise FactorStoreUnavailable."""

    async def factors(self, user: User) -> list[Factor]: ...

    async def add(self, user: User, factor: Factor) -> None: ...

    async def remove(self, user: User, factor_id: str) -> bool: ...

    async def reset(self, user: User) -> int:
        """Forget every factor and recovery code of the user; how many factors there were."""
        ...

    async def use_step(self, user: User, step: int) -> bool:
        """Record a TOTP time step as used; False if it already was (a replayed code)."""
        ...

    async def set_recovery_codes(self, user: User, codes: list[str]) -> None:
        """Replace the user's recovery codes with these (kept hashed)."""
        ...

    async def use_recovery_code(self, user: User, code: str) -> bool:
        """Spend one recovery code; False if it is not one of the user's (or was spent)."""
        ...

    async def recovery_codes_left(self, user: User) -> int: ...

    async def counted(self, user: User, factor_id: str, sign_count: int) -> None:
        """A passkey's new signature counter, after a sign-in with it."""
        ...

    async def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS factors (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, username TEXT NOT NULL, kind TEXT NOT NULL,
    label TEXT NOT NULL, created REAL NOT NULL, secret BLOB NOT NULL,
    credential_id BLOB NOT NULL, sign_count INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS factors_user ON factors (source, username);
CREATE TABLE IF NOT EXISTS used_steps (
    source TEXT NOT NULL, username TEXT NOT NULL, step INTEGER NOT NULL,
    PRIMARY KEY (source, username, step));
CREATE TABLE IF NOT EXISTS recovery_codes (
    source TEXT NOT NULL, username TEXT NOT NULL, digest BLOB NOT NULL,
    PRIMARY KEY (source, username, digest));
"""


class Cipher:
    """TOTP secrets sealed for one user and factor; recovery codes' digests. Built from the
    configured key (32 bytes derived by the caller)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the factor key must be 32 bytes")
        self._aead = AESGCM(key)
        self._mac_key = hashlib.sha256(b"recovery codes\0" + key).digest()

    def __repr__(self) -> str:
        return "Cipher(...)"

    @staticmethod
    def _bound(user: User, factor_id: str) -> bytes:
        return "\0".join((*user, factor_id)).encode()

    def seal(self, user: User, factor_id: str, secret: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret, self._bound(user, factor_id))

    def open(self, user: User, factor_id: str, sealed: bytes) -> bytes:
        """The secret; InvalidTag (cryptography's) when the key, the user or the row is not its own."""
        return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self._bound(user, factor_id))

    def digest(self, user: User, code: str) -> bytes:
        return hmac.digest(self._mac_key, "\0".join((*user, normalize_code(code))).encode(), "sha256")


def normalize_code(code: str) -> str:
    """A recovery code as typed: without spaces and dashes, in lower case."""
    return code.replace("-", "").replace(" ", "").lower()


class SqliteFactors:
    """A :class:`FactorStore` in an SQLite file, reached from one thread of its own."""

    def __init__(self, path: str | Path, cipher: Cipher, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._cipher = cipher
        self._clock = clock
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="factor-store")
        self._db: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteFactors({self.path!r})"

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        import sqlite3  # here, not at start: 1.7 MB a sidecar without second factors never needs

        def call() -> T:
            db = self._connect()
            with db:  # one transaction: committed, or rolled back on an error
                return work(db)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call)
        except sqlite3.Error as exc:
            raise FactorStoreUnavailable(f"factor store {self.path}: {type(exc).__name__}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            import sqlite3

            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            db.isolation_level = "DEFERRED"
            self._db = db
        return self._db

    async def factors(self, user: User) -> list[Factor]:
        rows = await self._run(lambda db: db.execute(
            "SELECT id, kind, label, created, secret, credential_id, sign_count FROM factors "
            "WHERE source = ? AND username = ? ORDER BY created", user).fetchall())
        found = []
        for factor_id, kind, label, created, secret, credential_id, sign_count in rows:
            if kind == "totp":
                try:
                    secret = self._cipher.open(user, factor_id, secret)
                except InvalidTag:
                    raise FactorStoreUnavailable(f"factor {factor_id} of {user[1]!r} does not decrypt: "
                                                 "second_factor.key changed, or the row was altered") from None
            found.append(Factor(factor_id, kind, label, created, secret, credential_id, sign_count))
        return found

    async def add(self, user: User, factor: Factor) -> None:
        secret = self._cipher.seal(user, factor.id, factor.secret) if factor.kind == "totp" else factor.secret
        await self._run(lambda db: db.execute(
            "INSERT INTO factors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (factor.id, *user, factor.kind, factor.label, factor.created, secret, factor.credential_id,
             factor.sign_count)))

    async def remove(self, user: User, factor_id: str) -> bool:
        cursor = await self._run(lambda db: db.execute(
            "DELETE FROM factors WHERE source = ? AND username = ? AND id = ?", (*user, factor_id)))
        return cursor.rowcount > 0

    async def reset(self, user: User) -> int:
        def reset(db: sqlite3.Connection) -> int:
            count = db.execute("DELETE FROM factors WHERE source = ? AND username = ?", user).rowcount
            db.execute("DELETE FROM recovery_codes WHERE source = ? AND username = ?", user)
            return count

        return await self._run(reset)

    async def use_step(self, user: User, step: int) -> bool:
        def use(db: sqlite3.Connection) -> bool:
            inserted = db.execute("INSERT OR IGNORE INTO used_steps VALUES (?, ?, ?)", (*user, step)).rowcount
            db.execute("DELETE FROM used_steps WHERE source = ? AND username = ? AND step < ?",
                       (*user, step - STEPS_KEPT))
            return inserted > 0

        return await self._run(use)

    async def set_recovery_codes(self, user: User, codes: list[str]) -> None:
        digests = [(*user, self._cipher.digest(user, code)) for code in codes]

        def store(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM recovery_codes WHERE source = ? AND username = ?", user)
            db.executemany("INSERT OR IGNORE INTO recovery_codes VALUES (?, ?, ?)", digests)

        await self._run(store)

    async def use_recovery_code(self, user: User, code: str) -> bool:
        digest = self._cipher.digest(user, code)
        cursor = await self._run(lambda db: db.execute(
            "DELETE FROM recovery_codes WHERE source = ? AND username = ? AND digest = ?", (*user, digest)))
        return cursor.rowcount > 0

    async def recovery_codes_left(self, user: User) -> int:
        row = await self._run(lambda db: db.execute(
            "SELECT count(*) FROM recovery_codes WHERE source = ? AND username = ?", user).fetchone())
        return int(row[0])

    async def counted(self, user: User, factor_id: str, sign_count: int) -> None:
        await self._run(lambda db: db.execute(
            "UPDATE factors SET sign_count = ? WHERE source = ? AND username = ? AND id = ?",
            (sign_count, *user, factor_id)))

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._thread, close)
        self._thread.shutdown()


# KEYS: the user's factors. ARGV: the factor id, the row as read, the row to write. Only over the row
# read: a passkey removed meanwhile stays removed.
COUNTED = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""


class RedisFactors:
    """A :class:`FactorStore` in Redis (or Valkey), shared by every replica and worker of a fleet.

    Under the key prefix, per user: ``factors:<source>:<user>`` (a hash: factor id -> the row as
    JSON, secrets in base64, a TOTP secret sealed as :class:`SqliteFactors` seals it),
    ``recovery:<source>:<user>`` (a set of the codes' HMACs, in hex) and
    ``totp-step:<source>:<user>:<step>`` (expiring after :data:`STEP_KEPT_FOR`). A colon or a
    percent sign in a source or a name is percent-encoded, so no two users share a key.

    A command whose connection was found closed (Redis restarted, a failover) is tried once more
    on a new one. Most operations are idempotent; the two that are not err on the closed side: a
    step or a recovery code spent by the first try is refused by the second, never accepted twice.
    """

    def __init__(self, client: aioredis.Redis, cipher: Cipher, *, prefix: str, timeout: float,
                 others: list[aioredis.Redis] | None = None) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError

        self._client = client
        self._others = others or []
        self._cipher = cipher
        self._prefix = prefix
        self.timeout = timeout
        self._closed_connection = RedisConnectionError
        self._failures: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._counted = client.register_script(COUNTED)

    @classmethod
    def from_config(cls, config: StateConfig, cipher: Cipher) -> RedisFactors:
        """On the connection ``state:`` describes (one Redis, or the master its sentinels name),
        made as the fleet's store makes its own."""
        from sidecar.store.redis_store import client_for

        client, others = client_for(config)
        return cls(client, cipher, prefix=config.key_prefix, timeout=config.timeout, others=others)

    def __repr__(self) -> str:
        return f"RedisFactors(prefix={self._prefix!r})"

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    return await call()
                except self._closed_connection:
                    return await call()
        except TimeoutError:
            raise FactorStoreUnavailable(f"factor store (Redis) {what}: no answer within {self.timeout:g} s") from None
        except self._failures as exc:
            raise FactorStoreUnavailable(f"factor store (Redis) {what}: {type(exc).__name__}: {exc}") from None

    def _key(self, kind: str, user: User) -> str:
        return f"{self._prefix}{kind}:{_key_part(user[0])}:{_key_part(user[1])}"

    async def factors(self, user: User) -> list[Factor]:
        rows = await self._call("factors", lambda: self._client.hgetall(self._key("factors", user)))
        found = [self._factor(user, str(factor_id), str(row)) for factor_id, row in rows.items()]
        return sorted(found, key=lambda factor: (factor.created, factor.id))

    def _factor(self, user: User, factor_id: str, row: str) -> Factor:
        """A stored row; one that cannot be read fails the store (a factor skipped would be a user
        without one, asked no code)."""
        try:
            kind, label, created, secret, credential_id, sign_count = json.loads(row)
            if kind not in ("totp", "passkey"):
                raise ValueError(f"kind {kind!r}")
            factor = Factor(factor_id, kind, str(label), float(created), base64.b64decode(secret, validate=True),
                            base64.b64decode(credential_id, validate=True), int(sign_count))
        except (ValueError, TypeError) as exc:
            raise FactorStoreUnavailable(f"factor {factor_id} of {user[1]!r} is unreadable: {exc}") from None
        if kind == "totp":
            try:
                factor = dataclasses.replace(factor, secret=self._cipher.open(user, factor_id, factor.secret))
            except (InvalidTag, ValueError):
                raise FactorStoreUnavailable(f"factor {factor_id} of {user[1]!r} does not decrypt: "
                                             "second_factor.key changed, or the row was altered") from None
        return factor

    def _row(self, user: User, factor: Factor, sign_count: int | None = None) -> str:
        secret = self._cipher.seal(user, factor.id, factor.secret) if factor.kind == "totp" else factor.secret
        return json.dumps([factor.kind, factor.label, factor.created, _b64(secret), _b64(factor.credential_id),
                           factor.sign_count if sign_count is None else sign_count])

    async def add(self, user: User, factor: Factor) -> None:
        row = self._row(user, factor)
        await self._call("add", lambda: self._client.hset(self._key("factors", user), factor.id, row))

    async def remove(self, user: User, factor_id: str) -> bool:
        removed = await self._call("remove", lambda: self._client.hdel(self._key("factors", user), factor_id))
        return int(removed) > 0

    async def reset(self, user: User) -> int:
        factors, recovery = self._key("factors", user), self._key("recovery", user)

        async def reset() -> list[Any]:
            pipe = self._client.pipeline(transaction=True)  # MULTI/EXEC: counted and gone in one step
            pipe.hlen(factors)
            pipe.delete(factors, recovery)
            return await pipe.execute()

        count, _ = await self._call("reset", reset)
        return int(count)

    async def use_step(self, user: User, step: int) -> bool:
        key = f"{self._key('totp-step', user)}:{step}"
        taken = await self._call("use step", lambda: self._client.set(key, "1", nx=True, ex=STEP_KEPT_FOR))
        return bool(taken)

    async def set_recovery_codes(self, user: User, codes: list[str]) -> None:
        key = self._key("recovery", user)
        digests = [self._cipher.digest(user, code).hex() for code in codes]

        async def store() -> list[Any]:
            pipe = self._client.pipeline(transaction=True)  # the old codes end as the new ones start
            pipe.delete(key)
            if digests:
                pipe.sadd(key, *digests)
            return await pipe.execute()

        await self._call("set recovery codes", store)

    async def use_recovery_code(self, user: User, code: str) -> bool:
        digest = self._cipher.digest(user, code).hex()
        removed = await self._call("use recovery code", lambda: self._client.srem(self._key("recovery", user), digest))
        return int(removed) > 0

    async def recovery_codes_left(self, user: User) -> int:
        return int(await self._call("recovery codes left", lambda: self._client.scard(self._key("recovery", user))))

    async def counted(self, user: User, factor_id: str, sign_count: int) -> None:
        key = self._key("factors", user)

        async def count() -> None:
            for _ in range(3):  # another sign-in with the passkey changed the row: read it again
                row = await self._client.hget(key, factor_id)
                if row is None:  # removed meanwhile
                    return
                row = str(row)  # the client decodes answers
                factor = self._factor(user, factor_id, row)
                if await self._counted(keys=[key], args=[factor_id, row, self._row(user, factor, sign_count)]):
                    return

        await self._call("counted", count)

    async def close(self) -> None:
        from redis.exceptions import RedisError

        for client in [self._client, *self._others]:
            try:
                await client.aclose()  # type: ignore[attr-defined, unused-ignore]
            except (RedisError, OSError, RuntimeError):
                pass


def _key_part(text: str) -> str:
    return text.replace("%", "%25").replace(":", "%3A")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

