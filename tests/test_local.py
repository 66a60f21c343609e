"""Built-in users: both file formats, verify and lookup, the dummy hash, problems, reloading.

Hashes are made here at the lowest costs (bcrypt 4, argon2id with 8 KiB), so the suite stays fast.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path

import argon2
import bcrypt
import pytest
from argon2 import PasswordHasher, profiles

from sidecar import local
from sidecar.errors import ConfigError
from sidecar.identity import Identity
from sidecar.local import LocalUser, LocalUsers, hash_password

FAST_PROFILE = dataclasses.replace(profiles.RFC_9106_LOW_MEMORY, time_cost=1, memory_cost=8, parallelism=1)
FAST_ARGON2 = PasswordHasher.from_parameters(FAST_PROFILE)


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def bcrypt_hash(password: str, prefix: str = "2b") -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    return f"${prefix}${hashed[4:]}"


def argon2_hash(password: str) -> str:
    return FAST_ARGON2.hash(password)


def write(path: Path, text: str) -> Path:
    """Rewrite in place, then move mtime on: two writes within one clock tick look unchanged."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(old + 10**9, old + 10**9))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        LocalUsers(path)
    return [p.removeprefix(f"{path}: ") for p in caught.value.problems]


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    return write(tmp_path / "users.htpasswd", "\n".join([
        "# made by htpasswd -B",
        "",
        f"alice:{bcrypt_hash('alice-pw', '2y')}",
        f"  bob:{bcrypt_hash('bob-pw', '2a')}  ",
        f"Carol:{bcrypt_hash('carol-pw', '2b')}",
    ]) + "\n")


@pytest.fixture
def users_yaml(tmp_path: Path) -> Path:
    return write(tmp_path / "users.yaml", f"""
users:
  Alice:
    password: "{argon2_hash('alice-pw')}"
    first_name: Alice
    last_name: Liddell
    email: alice@example.com
    groups: [Staff, admins, Staff]
    is_staff: true
  bob:
    password: "{bcrypt_hash('bob-pw')}"
    is_active: false
""")


def test_htpasswd_users_verify_with_each_bcrypt_prefix(htpasswd: Path) -> None:
    users = LocalUsers(htpasswd)
    assert users.verify("alice", "alice-pw") == LocalUser("alice")
    assert users.verify("bob", "bob-pw") == LocalUser("bob")
    assert users.verify("Carol", "carol-pw") == LocalUser("Carol")
    assert users.verify("alice", "bob-pw") is None
    assert users.verify("alice", "") is None
    assert users.verify("nobody", "alice-pw") is None


def test_yaml_users_carry_their_attributes(users_yaml: Path) -> None:
    alice = LocalUsers(users_yaml).verify("Alice", "alice-pw")
    assert alice == LocalUser(username="Alice", first_name="Alice", last_name="Liddell",
                              email="alice@example.com", groups=("Staff", "admins"), is_staff=True)
    assert alice.identity() == Identity(
        username="Alice", first_name="Alice", last_name="Liddell", email="alice@example.com",
        groups=("admins", "Staff"), rule_groups=frozenset({"staff", "admins"}),
        is_staff=True, source="local",
    )


def test_yaml_accepts_bcrypt_too_and_refuses_wrong_passwords(users_yaml: Path) -> None:
    users = LocalUsers(users_yaml)
    assert users.verify("Alice", "bob-pw") is None
    assert users.verify("bob", "bob-pw") is not None
    assert users.verify("bob", "alice-pw") is None


def test_inactive_user_is_returned_only_with_the_right_password(users_yaml: Path) -> None:
    users = LocalUsers(users_yaml)
    bob = users.verify("bob", "bob-pw")
    assert bob is not None and bob.is_active is False and bob.identity().is_active is False
    assert users.verify("bob", "wrong") is None


@pytest.mark.parametrize("spelling", ["alice", "ALICE", "AlIcE", "\uff21\uff4c\uff49\uff43\uff45"])
def test_names_match_after_nfkc_and_casefold_and_keep_the_file_spelling(users_yaml: Path, spelling: str) -> None:
    users = LocalUsers(users_yaml)
    found = users.verify(spelling, "alice-pw")
    assert found is not None and found.username == "Alice"
    looked_up = users.lookup(spelling)
    assert looked_up is not None and looked_up.username == "Alice"


def test_lookup_needs_no_password_and_sees_inactive_users(users_yaml: Path) -> None:
    users = LocalUsers(users_yaml)
    bob = users.lookup("BOB")
    assert bob is not None and not bob.is_active
    assert users.lookup("nobody") is None


def test_unknown_user_costs_one_bcrypt_check_at_the_files_cost(
        htpasswd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = LocalUsers(htpasswd)
    real_hashes = htpasswd.read_text()
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    assert users.verify("nobody", "alice-pw") is None
    assert len(checked) == 1
    assert checked[0].startswith(b"$2b$04$") and checked[0].decode() not in real_hashes
    assert users.verify("alice", "alice-pw") is not None
    assert len(checked) == 2


def test_unknown_user_costs_one_argon2_check_at_the_most_common_cost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    path = write(tmp_path / "users.yml", f"""
users:
  a: {{password: "{argon2_hash('a')}"}}
  b: {{password: "{argon2_hash('b')}"}}
  c: {{password: "{other.hash('c')}"}}
  d: {{password: "{bcrypt_hash('d')}"}}
""")
    users = LocalUsers(path)
    checked: list[bytes] = []
    real_verify = argon2.low_level.verify_secret

    def counting(hashed: bytes, secret: bytes, kind: argon2.low_level.Type) -> bool:
        checked.append(hashed)
        return real_verify(hashed, secret, kind)

    monkeypatch.setattr(argon2.low_level, "verify_secret", counting)
    assert users.verify("nobody", "a") is None
    assert len(checked) == 1
    assert checked[0].startswith(b"$argon2id$v=19$m=8,t=1,p=1$")
    assert checked[0].decode() not in path.read_text()


def test_a_file_with_no_users_still_checks_a_dummy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "BCRYPT_COST", 4)
    users = LocalUsers(write(tmp_path / "htpasswd", "# nobody yet\n"))
    checked: list[bytes] = []

    def counting(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return False

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    assert users.verify("anyone", "pw") is None
    assert len(checked) == 1 and checked[0].startswith(b"$2b$04$")


def test_passwords_longer_than_bcrypt_reads_match_as_htpasswd_made_them(tmp_path: Path) -> None:
    long = "x" * 72
    users = LocalUsers(write(tmp_path / "htpasswd", f"long:{bcrypt_hash(long)}\n"))
    assert users.verify("long", long + "and more") is not None


def test_odd_passwords_are_refused_not_truncated_or_crashing(htpasswd: Path) -> None:
    users = LocalUsers(htpasswd)
    assert users.verify("alice", "\udcff") is None
    assert users.verify("alice", "alice-pw\x00and more") is None


def test_htpasswd_problems_name_every_line_and_never_the_hash(tmp_path: Path) -> None:
    refused = {
        "apr1": "$apr1$abcdefgh$0123456789abcdefghijkl",
        "sha": "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
        "crypt": "abJnggxhB/yWI",
        "plain": "hunter2hunter2",
        "argon": argon2_hash("pw"),
        "short": "$2b$04$tooshort",
    }
    good = bcrypt_hash("pw")
    path = write(tmp_path / "htpasswd", "\n".join([
        *(f"{name}:{hashed}" for name, hashed in refused.items()),
        "no colon here",
        f":{good}",
        f"dave:{good}",
        f"DAVE:{good}",
        f"slow:$2b$99${good[7:]}",
    ]))
    found = problems_of(path)
    assert found == [
        "line 1: user 'apr1': an MD5 ($apr1$) hash; only bcrypt hashes are accepted (htpasswd -B writes one)",
        "line 2: user 'sha': a SHA-1 ({SHA}) hash; only bcrypt hashes are accepted (htpasswd -B writes one)",
        "line 3: user 'crypt': a DES crypt hash; only bcrypt hashes are accepted (htpasswd -B writes one)",
        "line 4: user 'plain': not a password hash; only bcrypt hashes are accepted (htpasswd -B writes one)",
        "line 5: user 'argon': an argon2id hash; only bcrypt hashes are accepted (htpasswd -B writes one)",
        "line 6: user 'short': a malformed bcrypt hash; only bcrypt hashes are accepted (htpasswd -B writes one)",
        "line 7: expected NAME:HASH",
        "line 8: expected NAME:HASH",
        "line 11: user 'slow': a bcrypt hash of cost 99, outside 4 to 31 (htpasswd -B writes one)",
        "line 10: 'DAVE' is the same user as 'dave' (line 9)",
    ]
    text = "\n".join(found)
    assert not any(hashed in text for hashed in [*refused.values(), good, good[7:]])


def test_yaml_problems_name_every_path_and_never_the_hash(tmp_path: Path) -> None:
    md5 = "$apr1$abcdefgh$0123456789abcdefghijkl"
    argon2i = "$argon2i$v=19$m=8,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2g"
    path = write(tmp_path / "users.yaml", f"""
colour: blue
users:
  alice:
    password: "{md5}"
    groups: [ok, 3]
    is_staff: "yes"
    shoe_size: 42
  bob:
    first_name: [Bob]
    email: 7
  carol: {{password: "{argon2i}", is_active: 1}}
  dave: just a string
  7: {{password: "{bcrypt_hash('x')}"}}
  erin: {{password: 12345}}
  frank: {{password: "hunter2", groups: admins}}
  gina: {{password: "{bcrypt_hash('x')}", groups: false}}
""")
    assert problems_of(path) == [
        "colour: unknown key",
        "users.alice.shoe_size: unknown key",
        "users.alice.password: an MD5 ($apr1$) hash; only argon2id or bcrypt hashes are accepted",
        "users.alice.groups: expected a list of strings",
        "users.alice.is_staff: expected true or false",
        "users.bob.password: is required (an argon2id or bcrypt hash)",
        "users.bob.first_name: expected a string",
        "users.bob.email: expected a string",
        "users.carol.password: an argon2 hash other than argon2id version 19; "
        "only argon2id or bcrypt hashes are accepted",
        "users.carol.is_active: expected true or false",
        "users.dave: expected a mapping",
        "users.7: a user name must be a non-empty string",
        "users.erin.password: expected a string",
        "users.frank.password: not a password hash; only argon2id or bcrypt hashes are accepted",
        "users.frank.groups: expected a list of strings",
        "users.gina.groups: expected a list of strings",
    ]


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("users.yaml", "users: [alice]\n", "users: expected a mapping of user names to users"),
    ("users.yaml", "users: ''\n", "users: expected a mapping of user names to users"),
    ("users.yaml", "- alice\n", "(top): expected a mapping with a users key"),
    ("users.yaml", "users: {alice: [}\n", "not valid YAML (line 1): expected the node content, but found '}'"),
    ("users.yaml", "", "the file is empty (with no users, write users: {})"),
    ("htpasswd", " \n", "the file is empty (with no users, write a comment line)"),
])
def test_whole_file_problems(tmp_path: Path, name: str, content: str, problem: str) -> None:
    assert problems_of(write(tmp_path / name, content)) == [problem]


def test_yaml_with_users_but_none_defined_is_an_empty_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "ARGON2_PROFILE", FAST_PROFILE)
    users = LocalUsers(write(tmp_path / "users.yaml", "users:\n"))
    assert users.lookup("alice") is None


def test_same_user_spelled_two_ways_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "users.yaml", f"""
users:
  alice: {{password: "{bcrypt_hash('a')}"}}
  \uff21lice: {{password: "{bcrypt_hash('b')}"}}
""")
    assert problems_of(path) == ["users.\uff21lice: '\uff21lice' is the same user as 'alice' (users.alice)"]


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "missing") == ["No such file or directory"]
    path = tmp_path / "htpasswd"
    path.write_bytes(b"# caf\xe9\n")
    assert problems_of(path) == ["not UTF-8 text (byte 5)"]


def test_problems_carry_the_files_path(tmp_path: Path) -> None:
    path = write(tmp_path / "htpasswd", "nonsense\n")
    with pytest.raises(ConfigError) as caught:
        LocalUsers(path)
    assert caught.value.problems == [f"{path}: line 1: expected NAME:HASH"]


def test_repr_shows_no_hash(htpasswd: Path) -> None:
    users = LocalUsers(htpasswd)
    entry = users._users.by_key["alice"]
    assert entry.hashed.value not in repr(users._users)
    assert "$2" not in repr(users._users) + repr(users.lookup("alice"))


def test_a_changed_file_is_reloaded_after_reload_every(htpasswd: Path) -> None:
    clock = Clock()
    users = LocalUsers(htpasswd, reload_every=2.0, clock=clock)
    write(htpasswd, f"alice:{bcrypt_hash('new-pw')}\n")
    clock.now += 1.9
    assert users.verify("alice", "alice-pw") is not None
    clock.now += 0.1
    assert users.verify("alice", "new-pw") is not None
    assert users.verify("alice", "alice-pw") is None
    assert users.lookup("bob") is None


def test_a_reload_makes_a_new_dummy_only_when_the_cost_changes(
        htpasswd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    users = LocalUsers(htpasswd, clock=clock)
    same_cost, other_cost = bcrypt_hash("pw"), bcrypt.hashpw(b"pw", bcrypt.gensalt(5)).decode()
    made: list[bytes] = []
    real_hashpw = bcrypt.hashpw

    def counting(password: bytes, salt: bytes) -> bytes:
        made.append(salt)
        return real_hashpw(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", counting)
    write(htpasswd, f"erin:{same_cost}\n")
    clock.now += 2
    assert users.lookup("erin") is not None and made == []
    write(htpasswd, f"erin:{other_cost}\n")
    clock.now += 2
    assert users.lookup("erin") is not None
    assert [salt[:7] for salt in made] == [b"$2b$05$"]


def test_a_file_replaced_by_rename_is_reloaded(users_yaml: Path) -> None:
    clock = Clock()
    users = LocalUsers(users_yaml, clock=clock)
    fresh = users_yaml.with_name("users.yaml.new")
    fresh.write_text(f'users: {{alice: {{password: "{argon2_hash("new-pw")}", groups: [ops]}}}}\n')
    os.replace(fresh, users_yaml)
    clock.now += 2
    alice = users.lookup("alice")
    assert alice is not None and alice.groups == ("ops",)
    assert users.verify("alice", "new-pw") is not None


def test_a_broken_reload_keeps_the_users_and_logs_one_error(
        htpasswd: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    users = LocalUsers(htpasswd, clock=clock)
    apr1 = "$apr1$abcdefgh$0123456789abcdefghijkl"
    write(htpasswd, f"alice:{apr1}\nbroken\n")
    for _ in range(3):
        clock.now += 2
        assert users.verify("alice", "alice-pw") is not None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.name, r.getMessage()) for r in errors] == [(
        "sidecar.local",
        "users file not reloaded, keeping the 3 users loaded before: "
        f"{htpasswd}: line 1: user 'alice': an MD5 ($apr1$) hash; only bcrypt hashes are accepted "
        f"(htpasswd -B writes one); {htpasswd}: line 2: expected NAME:HASH",
    )]
    write(htpasswd, f"alice:{bcrypt_hash('fixed')}\n")
    clock.now += 2
    assert users.verify("alice", "fixed") is not None


def test_a_deleted_file_keeps_the_users_and_logs_one_error(
        htpasswd: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    users = LocalUsers(htpasswd, clock=clock)
    htpasswd.unlink()
    for _ in range(3):
        clock.now += 2
        assert users.lookup("alice") is not None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"users file not reloaded, keeping the 3 users loaded before: {htpasswd}: No such file or directory",
    ]


def test_threads_verify_while_the_file_is_reloaded(tmp_path: Path) -> None:
    path = write(tmp_path / "htpasswd", f"alice:{bcrypt_hash('pw')}\n")
    users = LocalUsers(path, reload_every=0)
    failures: list[BaseException] = []

    def verify_many() -> None:
        try:
            for _ in range(40):
                assert users.verify("alice", "pw") is not None
        except AssertionError as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=verify_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for n in range(10):
        write(path, f"alice:{bcrypt_hash('pw')}\n" + "#\n" * n)
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.parametrize("scheme", ["argon2id", "bcrypt"])
def test_hash_password_output_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str) -> None:
    monkeypatch.setattr(local, "ARGON2_PROFILE", FAST_PROFILE)
    monkeypatch.setattr(local, "BCRYPT_COST", 4)
    hashed = hash_password("s3cret \u00e9", scheme)
    users = LocalUsers(write(tmp_path / "users.yaml", f'users: {{alice: {{password: "{hashed}"}}}}\n'))
    assert users.verify("alice", "s3cret \u00e9") is not None
    assert users.verify("alice", "s3cret e") is None


def test_hash_password_default_costs() -> None:
    assert hash_password("pw").startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert hash_password("pw", "bcrypt").startswith("$2b$12$")


@pytest.mark.parametrize(("password", "scheme", "message"), [
    ("", "argon2id", "the password is empty"),
    ("", "bcrypt", "the password is empty"),
    ("x" * 73, "bcrypt", "bcrypt uses at most 72 bytes of a password; use argon2id"),
    ("pw", "md5", "unknown scheme 'md5': expected argon2id or bcrypt"),
])
def test_hash_password_refuses(password: str, scheme: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        hash_password(password, scheme)
    assert str(caught.value) == message
