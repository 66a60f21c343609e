"""The SQLite factor store: what is on disk is useless to a reader of the file, replay protection
and enrolments survive a reopen, a changed key or a broken file fail closed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sidecar.factor_store import Cipher, Factor, FactorStoreUnavailable, SqliteFactors
from sidecar.factors import Codes

ALICE = ("local", "alice")
BOB = ("local", "bob")
SECRET = b"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def store(path: Path, key: bytes = b"k" * 32) -> SqliteFactors:
    return SqliteFactors(path, Cipher(key))


def totp(factor_id: str = "f1") -> Factor:
    return Factor(factor_id, "totp", "Authenticator app", 1.0, SECRET)


async def test_totp_secrets_are_encrypted_and_recovery_codes_hashed_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "factors.sqlite3"
    factors = store(path)
    await factors.add(ALICE, totp())
    await factors.set_recovery_codes(ALICE, ["abcde-fghjk"])
    assert [f.secret for f in await factors.factors(ALICE)] == [SECRET]
    factors.close()
    raw = b"".join(path.parent.joinpath(name).read_bytes() for name in ("factors.sqlite3", "factors.sqlite3-wal")
                   if path.parent.joinpath(name).exists())
    assert SECRET not in raw and b"abcdefghjk" not in raw and b"abcde-fghjk" not in raw


async def test_a_row_moved_to_another_user_or_a_new_key_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / "factors.sqlite3"
    factors = store(path)
    await factors.add(ALICE, totp())
    factors.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE factors SET username = 'bob'")
    moved = store(path)
    with pytest.raises(FactorStoreUnavailable, match="does not decrypt"):
        await moved.factors(BOB)
    moved.close()
    rekeyed = store(path, b"x" * 32)
    with pytest.raises(FactorStoreUnavailable):
        await rekeyed.factors(BOB)
    rekeyed.close()


async def test_used_steps_and_enrolments_outlive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "factors.sqlite3"
    factors = store(path)
    await factors.add(ALICE, totp())
    assert await factors.use_step(ALICE, 100)
    assert not await factors.use_step(ALICE, 100)
    assert await factors.use_step(BOB, 100)  # per user
    factors.close()
    again = store(path)
    assert not await again.use_step(ALICE, 100)
    assert await again.use_step(ALICE, 101)
    assert [f.id for f in await again.factors(ALICE)] == ["f1"]
    again.close()


async def test_recovery_codes_work_once_and_reset_forgets_everything(tmp_path: Path) -> None:
    factors = store(tmp_path / "factors.sqlite3")
    codes = Codes(factors, issuer="Test", recovery_count=3)
    issued = await codes.new_recovery_codes(ALICE)
    assert len(issued) == 3 and await factors.recovery_codes_left(ALICE) == 3
    assert not await factors.use_recovery_code(BOB, issued[0])  # another user's code
    assert await factors.use_recovery_code(ALICE, issued[0].upper())
    assert not await factors.use_recovery_code(ALICE, issued[0])
    await factors.add(ALICE, totp())
    assert await factors.reset(ALICE) == 1
    assert await factors.factors(ALICE) == [] and await factors.recovery_codes_left(ALICE) == 0
    factors.close()


async def test_a_store_that_cannot_open_raises_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    factors = store(tmp_path / "dir")
    with pytest.raises(FactorStoreUnavailable):
        await factors.factors(ALICE)
    factors.close()


def test_codes_match_only_within_the_skew(tmp_path: Path) -> None:
    import pyotp

    now = [1_700_000_000.0]
    codes = Codes(store(tmp_path / "f.sqlite3"), issuer="Test", clock=lambda: now[0])
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
    codes.store.close()
