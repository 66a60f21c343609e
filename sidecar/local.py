"""Built-in users: logins checked against a users file, with no directory involved.

The file's suffix chooses its format:

* ``.yaml`` / ``.yml``: ``users: {NAME: {password: HASH, first_name: ..., last_name: ...,
  email: ..., groups: [...], is_active: true, is_staff: false, is_superuser: false}}``,
  with argon2id (or bcrypt) hashes;
* anything else: an Apache htpasswd file of ``NAME:HASH`` lines with bcrypt hashes
  (``htpasswd -B``); faster kinds (MD5, SHA-1, crypt) are refused.

:meth:`LocalUsers.verify` is synchronous and slow on purpose (one password hash), so the caller
runs it in a worker thread. An unknown name costs the same as a known one: a dummy hash of the
file's own kind and cost is checked, so timing does not tell which names exist. The file is
read again when it changes (looked at no more often than every ``reload_every`` seconds); a
version that does not load leaves the previous users in place and is logged once.
No password or hash ever reaches a log line, an error message or a ``repr``.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

import bcrypt
import yaml
from argon2 import PasswordHasher, extract_parameters, low_level, profiles
from argon2.exceptions import InvalidHashError, VerificationError

from sidecar.errors import ConfigError
from sidecar.identity import Identity, fold
from sidecar.yamlfile import load_yaml

log = logging.getLogger("sidecar.local")

YAML_SUFFIXES = (".yaml", ".yml")
# RFC 9106's low-memory profile (64 MiB, argon2-cffi's default), pinned: verify runs in many threads.
ARGON2_PROFILE = profiles.RFC_9106_LOW_MEMORY
BCRYPT_COST = 12
# bcrypt reads no further; htpasswd (and bcrypt < 5) silently cut longer passwords here.
BCRYPT_MAX_BYTES = 72
BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
ARGON2ID_HASH = re.compile(r"\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")
DES_CRYPT = re.compile(r"[./A-Za-z0-9]{13}")
# How refused hashes start, to tell the operator what they wrote instead of echoing it.
HASH_KINDS = (
    ("$apr1$", "an MD5 ($apr1$) hash"),
    ("{SHA}", "a SHA-1 ({SHA}) hash"),
    ("$1$", "an MD5-crypt ($1$) hash"),
    ("$5$", "a SHA-256-crypt ($5$) hash"),
    ("$6$", "a SHA-512-crypt ($6$) hash"),
    ("$argon2id$v=19$", "a malformed argon2id hash"),
    ("$argon2", "an argon2 hash other than argon2id version 19"),
    ("$2", "a malformed bcrypt hash"),
)
EXPECTED = {str: "a string", bool: "true or false"}
USER_KEYS = ("password", "first_name", "last_name", "email", "groups", "is_active", "is_staff", "is_superuser")

T = TypeVar("T")
Stamp = tuple[int, int, int]  # inode, size, mtime_ns: what tells that the file changed


@dataclass(frozen=True, slots=True)
class LocalUser:
    """A user of the users file, as callers see them (without the hash).

    ``verify`` returns inactive users too, when the password is right: refuse them (403).
    """

    username: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    groups: tuple[str, ...] = ()
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False

    def identity(self) -> Identity:
        return Identity(
            username=self.username,
            first_name=self.first_name,
            last_name=self.last_name,
            email=self.email,
            groups=tuple(sorted(set(self.groups), key=str.casefold)),
            rule_groups=frozenset(fold(g) for g in self.groups),
            is_active=self.is_active,
            is_staff=self.is_staff,
            is_superuser=self.is_superuser,
            source="local",
        )


@dataclass(frozen=True, slots=True)
class _Hash:
    """A stored password hash; ``cost`` is what its check time depends on ("12", "m=..,t=..,p=..")."""

    scheme: str
    cost: str
    value: str = field(repr=False)

    def matches(self, password: bytes) -> bool:
        if self.scheme == "bcrypt":
            return bcrypt.checkpw(password[:BCRYPT_MAX_BYTES], self.value.encode())
        try:
            return low_level.verify_secret(self.value.encode(), password, low_level.Type.ID)
        except VerificationError:
            return False


@dataclass(frozen=True, slots=True)
class _Entry:
    user: LocalUser
    hashed: _Hash
    where: str  # "line 3" or "users.alice", to report a name defined twice


@dataclass(frozen=True, slots=True)
class _Users:
    """One load of the file; immutable, so threads keep using it while a reload builds the next."""

    by_key: Mapping[str, _Entry]
    dummy: _Hash


def user_key(username: str) -> str:
    """The form names are compared in: ``ALICE``, fullwidth ``ａｌｉｃｅ`` and ``alice`` are one user."""
    # Casefolding can undo NFKC for a few characters; normalizing again makes the key stable.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


def hash_password(password: str, scheme: str = "argon2id") -> str:
    """A hash for the users file: argon2id (RFC 9106 low-memory profile) or bcrypt (cost 12)."""
    if not password:
        raise ValueError("the password is empty")
    secret = password.encode()
    if scheme == "argon2id":
        return PasswordHasher.from_parameters(ARGON2_PROFILE).hash(secret)
    if scheme == "bcrypt":
        if len(secret) > BCRYPT_MAX_BYTES:
            raise ValueError(f"bcrypt uses at most {BCRYPT_MAX_BYTES} bytes of a password; use argon2id")
        return bcrypt.hashpw(secret, bcrypt.gensalt(BCRYPT_COST)).decode()
    raise ValueError(f"unknown scheme {scheme!r}: expected argon2id or bcrypt")


class LocalUsers:
    """The users of one file, reloaded when it changes; safe to call from several threads."""

    def __init__(self, path: Path, *, reload_every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._reload_every = reload_every
        self._clock = clock
        self._seen = _stamp(path)
        self._users = _load(path, None)
        self._next_check = clock() + reload_every
        self._reloading = threading.Lock()

    @staticmethod
    def problems(path: Path) -> list[tuple[str, str]]:
        """(field, problem) for each reason the file at ``path`` would not load; the loader reports them."""
        try:
            _read(path)
        except ConfigError as exc:
            return [("path", problem) for problem in exc.problems]
        return []

    def verify(self, username: str, password: str) -> LocalUser | None:
        """The user if the password is theirs, else None. CPU-bound: call it in a worker thread."""
        users = self._current()
        try:
            secret = password.encode()
        except UnicodeEncodeError:
            return None  # lone surrogates: no stored password contains them, whoever the user
        entry = users.by_key.get(user_key(username))
        if entry is None:
            users.dummy.matches(secret)  # as slow as a real check: timing must not reveal unknown names
            return None
        return entry.user if entry.hashed.matches(secret) else None

    def lookup(self, username: str) -> LocalUser | None:
        """The user as the file describes them now (to re-check a session), without a password."""
        entry = self._current().by_key.get(user_key(username))
        return entry.user if entry else None

    def _current(self) -> _Users:
        now = self._clock()
        # One thread looks at the file; the others go on with the users they have.
        if now >= self._next_check and self._reloading.acquire(blocking=False):
            try:
                if now >= self._next_check:
                    self._next_check = now + self._reload_every
                    self._reload_if_changed()
            finally:
                self._reloading.release()
        return self._users

    def _reload_if_changed(self) -> None:
        stamp = _stamp(self.path)
        if stamp == self._seen:
            return
        self._seen = stamp  # a broken version is reported once, not at every look
        try:
            users = _load(self.path, self._users.dummy)
        except ConfigError as exc:
            log.error("users file not reloaded, keeping the %d users loaded before: %s",
                      len(self._users.by_key), "; ".join(exc.problems))
            return
        self._users = users
        log.info("users file %s reloaded: %d users", self.path, len(users.by_key))


def _stamp(path: Path) -> Stamp | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _load(path: Path, previous_dummy: _Hash | None) -> _Users:
    """Read and check the whole file, then make its dummy hash (kept if ``previous_dummy`` still fits:
    making one is as slow as a login)."""
    entries, by_key = _read(path)
    dummy = _dummy([e.hashed for e in entries], "argon2id" if _is_yaml(path) else "bcrypt", previous_dummy)
    return _Users(by_key=MappingProxyType(by_key), dummy=dummy)


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in YAML_SUFFIXES


def _read(path: Path) -> tuple[list[_Entry], dict[str, _Entry]]:
    """The file's entries and the same by key; ConfigError lists every problem, prefixed by the file's path."""
    yaml_format = _is_yaml(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: {exc.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    if not text.strip():
        # Also what a reload sees while an editor rewrites the file: keep the users loaded before.
        raise ConfigError([f"{path}: the file is empty (with no users, write "
                           f"{'users: {}' if yaml_format else 'a comment line'})"])
    entries, problems = _parse_yaml(text) if yaml_format else _parse_htpasswd(text)
    by_key: dict[str, _Entry] = {}
    for entry in entries:
        key = user_key(entry.user.username)
        if (other := by_key.get(key)) is not None:
            problems.append(f"{entry.where}: {entry.user.username!r} is the same user as "
                            f"{other.user.username!r} ({other.where})")
        by_key[key] = entry
    if problems:
        raise ConfigError([f"{path}: {problem}" for problem in problems])
    return entries, by_key


def _parse_htpasswd(text: str) -> tuple[list[_Entry], list[str]]:
    entries: list[_Entry] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"line {number}"
        name, colon, hashed = line.partition(":")
        if not colon or not name:
            problems.append(f"{where}: expected NAME:HASH")
            continue
        try:
            entries.append(_Entry(LocalUser(name), _parse_hash(hashed, ("bcrypt",)), where))
        except ValueError as exc:
            problems.append(f"{where}: user {name!r}: {exc} (htpasswd -B writes one)")
    return entries, problems


def _parse_yaml(text: str) -> tuple[list[_Entry], list[str]]:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        return [], [f"not valid YAML ({where}): {getattr(exc, 'problem', None) or 'syntax error'}"]
    if not isinstance(data, dict) or "users" not in data:
        return [], ["(top): expected a mapping with a users key"]
    problems = [f"{key}: unknown key" for key in data if key != "users"]
    users = {} if data["users"] is None else data["users"]
    if not isinstance(users, dict):
        return [], [*problems, "users: expected a mapping of user names to users"]
    entries: list[_Entry] = []
    for name, spec in users.items():
        where = f"users.{name}"
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: a user name must be a non-empty string")
        elif not isinstance(spec, dict):
            problems.append(f"{where}: expected a mapping")
        elif (entry := _read_user(name, spec, problems)) is not None:
            entries.append(entry)
    return entries, problems


def _read_user(name: str, spec: dict[object, object], problems: list[str]) -> _Entry | None:
    """One ``users.NAME`` mapping; when it has problems, they are appended and None is returned."""
    where = f"users.{name}"
    before = len(problems)
    problems.extend(f"{where}.{key}: unknown key" for key in spec if key not in USER_KEYS)
    hashed = _read_password(spec.get("password"), f"{where}.password", problems)
    groups = spec.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        problems.append(f"{where}.groups: expected a list of strings")
        groups = []
    user = LocalUser(
        username=name,
        first_name=_typed(spec, "first_name", "", where, problems),
        last_name=_typed(spec, "last_name", "", where, problems),
        email=_typed(spec, "email", "", where, problems),
        groups=tuple(dict.fromkeys(groups)),
        is_active=_typed(spec, "is_active", True, where, problems),
        is_staff=_typed(spec, "is_staff", False, where, problems),
        is_superuser=_typed(spec, "is_superuser", False, where, problems),
    )
    if hashed is None or len(problems) > before:
        return None
    return _Entry(user, hashed, where)


def _read_password(value: object, where: str, problems: list[str]) -> _Hash | None:
    if value is None:
        problems.append(f"{where}: is required (an argon2id or bcrypt hash)")
    elif not isinstance(value, str):
        problems.append(f"{where}: expected a string")
    else:
        try:
            return _parse_hash(value, ("argon2id", "bcrypt"))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    return None


def _typed(spec: Mapping[object, object], key: str, default: T, where: str, problems: list[str]) -> T:
    """``spec[key]`` if it has the default's type; else the default, and a problem unless absent."""
    value = spec.get(key)
    if value is None:
        return default
    if not isinstance(value, type(default)):
        problems.append(f"{where}.{key}: expected {EXPECTED[type(default)]}")
        return default
    return value


def _parse_hash(value: str, schemes: tuple[str, ...]) -> _Hash:
    """The hash, or ValueError naming its kind (never its text)."""
    if "bcrypt" in schemes and (match := BCRYPT_HASH.fullmatch(value)):
        cost = int(match.group(1))
        if not 4 <= cost <= 31:
            raise ValueError(f"a bcrypt hash of cost {cost}, outside 4 to 31")
        return _Hash("bcrypt", str(cost), value)
    if "argon2id" in schemes and ARGON2ID_HASH.fullmatch(value):
        try:
            params = extract_parameters(value)
        except InvalidHashError:
            pass
        else:
            return _Hash("argon2id", f"m={params.memory_cost},t={params.time_cost},p={params.parallelism}", value)
    raise ValueError(f"{_kind_of(value)}; only {' or '.join(schemes)} hashes are accepted")


def _kind_of(value: str) -> str:
    if ARGON2ID_HASH.fullmatch(value):
        return "an argon2id hash"
    kind = next((kind for prefix, kind in HASH_KINDS if value.startswith(prefix)), None)
    if kind is None and DES_CRYPT.fullmatch(value):
        kind = "a DES crypt hash"
    return kind or "not a password hash"


def _dummy(hashes: list[_Hash], default_scheme: str, previous: _Hash | None) -> _Hash:
    """A hash of a random password, of the kind and cost most of the file's hashes have."""
    secret = secrets.token_urlsafe(16)
    if not hashes:
        # No name to hide, so any dummy will do; one is still checked to keep the cost steady.
        return previous or _parse_hash(hash_password(secret, default_scheme), (default_scheme,))
    (scheme, cost), _ = Counter((h.scheme, h.cost) for h in hashes).most_common(1)[0]
    if previous is not None and (previous.scheme, previous.cost) == (scheme, cost):
        return previous
    if scheme == "bcrypt":
        return _Hash(scheme, cost, bcrypt.hashpw(secret.encode(), bcrypt.gensalt(int(cost))).decode())
    like = next(h for h in hashes if (h.scheme, h.cost) == (scheme, cost))
    return _Hash(scheme, cost, PasswordHasher.from_parameters(extract_parameters(like.value)).hash(secret))
