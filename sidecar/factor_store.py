"""Where second factors are kept: each user's TOTP secrets, passkeys and recovery codes, and the
TOTP time steps already used.

:class:`FactorStore` is the protocol the sign-in pages use; :class:`SqliteFactors` keeps it in one
SQLite file (the embedded default). A Redis store for several instances implements the same
protocol (the ``state.backend: redis`` of the fleet work): nothing else here would change.

For that Redis store, what this one does maps onto single commands, so no check-then-write races
between replicas: a used TOTP step is ``SET <prefix>totp-step:<source>:<user>:<step> 1 NX EX 300``
(refused when it exists), a recovery code is spent by ``SREM`` of its digest (spent when it removed
one), factors are a hash per user (field: factor id, value: the row with its sealed secret). The
sealing (:class:`Cipher`) is the same for both: only rows move.

A user is ``(source, username)`` as sessions name them. What is stored is never what would let
someone in who reads the file: TOTP secrets are encrypted (AES-256-GCM under the configured key,
bound to the user and the factor's id as associated data, so a row copied to another user does not
open), recovery codes are kept as HMACs under that key, and a passkey is only its public key.

SQLite is blocking: every call crosses into one thread of its own (:class:`SqliteFactors` owns it),
never the event loop. A store that fails raises :class:`FactorStoreUnavailable`: the pages answer
503, and no factor is ever taken as given because the store could not say.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sidecar.errors import Unavailable

T = TypeVar("T")
User = tuple[str, str]  # (source, username)
Kind = Literal["totp", "passkey"]
NONCE_BYTES = 12
STEPS_KEPT = 10  # time steps of used TOTP codes kept per user: far more than any code stays valid


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

    def close(self) -> None: ...


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

    def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._thread.submit(close).result()
        self._thread.shutdown()
