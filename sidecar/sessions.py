"""Sessions: the encrypted cookie a browser sign-in ends in, read again by every /auth subrequest.

A cookie value is sealed (:mod:`sidecar.sealing`: a JWE, ``alg: dir``, ``enc: A256GCM``, ``kid``
naming the key) and set as :mod:`sidecar.cookies` sets every cookie. Its plaintext is one format
byte (1) and then the raw DEFLATE of a compact JSON object::

    {"u": username, "n": [first_name, last_name, email], "g": [groups],
     "r": [rule groups], "R": true when the folded groups are rule groups too,
     "f": flags (1 is_active, 2 is_staff, 4 is_superuser), "x": {extra}, "s": source,
     "t": [issued_at, last_seen, checked_at], "i": session id,
     "m": [methods] when not just ["pwd"], "a": when the second factor was given, "p": 1 while pending}

The session id is random, made at sign-in and kept by every refresh and re-check, so signing out
can name the session: :class:`Revocations` refuses it until it would have expired anyway.

Times are whole epoch seconds. The first key encrypts and every key decrypts, so a key rotates by
putting a new one first, then removing the old one once its cookies have expired.

:meth:`SessionCodec.decode` answers None for anything but a valid, current session, and checks the
header before decrypting. A cookie is decrypted once: later reads find it in a bounded memo and
only check the clock again. The memo is not thread-safe: decode on the event loop.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from sidecar import keylist
from sidecar.cache import ExpiringMap, Fingerprint
from sidecar.cookies import Cookie
from sidecar.errors import SessionTooLarge, Unsealable
from sidecar.identity import Identity, fold
from sidecar.metrics import NO_METRICS, Metrics
from sidecar.sealing import KEY_BYTES, Sealer
from sidecar.store import Event, Revoked
from sidecar.store.fleet import Fleet

log = logging.getLogger("sidecar.sessions")
T = TypeVar("T")

FORMAT = b"\x01"
# Inflating stops here, so a small cookie cannot become a large payload (cf. CVE-2024-33664).
MAX_PLAINTEXT = 256 * 1024
# A value longer than max_bytes plus this was never written by us (allows lowering max_bytes).
DECODE_MARGIN = 512
# Sidecar instances behind one proxy may disagree a little about the time.
FUTURE_LEEWAY = 60.0
REFRESH_AFTER = 300.0
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: who, and when (epoch seconds) it signed in, was last seen, was last re-checked."""

    identity: Identity
    issued_at: float
    last_seen: float
    checked_at: float
    # The identity's groups did not fit in the cookie and are kept by the sidecar instead.
    groups_elsewhere: bool = False
    # A single sign-on provider's refresh token (encrypted with the rest), to renew the identity.
    refresh_token: str | None = field(default=None, repr=False)
    # Random, made at sign-in, kept by refreshes and re-checks: what signing out revokes.
    id: str = field(default_factory=lambda: new_session_id())
    # How the person signed in (RFC 8176 amr values: pwd, otp, hwk...), and when (epoch seconds) the
    # second factor was given, 0 for never. A pending session has the password and waits for the
    # second factor: it passes no /auth (sidecar.factors).
    methods: tuple[str, ...] = ("pwd",)
    factor_at: float = 0.0
    pending: bool = False


def new_session_id() -> str:
    """128 random bits, base64url: a session id nobody can guess or choose."""
    return secrets.token_urlsafe(16)


class _Refused(Exception):
    """Why a cookie value is not a session: for the debug log, never for the client."""


class SessionCodec:
    """Turns sessions into cookie values and back, with key rotation and a memo of decoded cookies."""

    def __init__(
        self,
        keys: Sequence[tuple[str, bytes]],
        *,
        lifetime: float,
        idle_timeout: float,
        clock: Callable[[], float] = time.time,
        max_bytes: int = 3800,
        memo_entries: int = 10_000,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        problems = keylist.problems(keys, _key_problem, kind="key")
        for name, value in [("lifetime", lifetime), ("idle_timeout", idle_timeout),
                            ("max_bytes", max_bytes), ("memo_entries", memo_entries)]:
            if not value > 0:
                problems.append(f"{name} must be positive, got {value}")
        if problems:
            raise ValueError("; ".join(problems))
        self._sealer = Sealer(keys)
        self._lifetime = lifetime
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._max_bytes = max_bytes
        # Memo keys are HMACs under a key of this process: the memo holds no cookie value.
        self._fingerprint = Fingerprint()
        self._memo: ExpiringMap[bytes, Session] = ExpiringMap(memo_entries, idle_timeout, clock)
        # The identities of the sessions memoised, one per person: most of an entry is its identity,
        # which every browser of one user carries alike. Bounded like the memo; full, it starts again.
        self._identities: dict[tuple[object, ...], Identity] = {}
        self._identities_max = memo_entries
        self._lookups = metrics.lookups("session")

    @property
    def lifetime(self) -> float:
        return self._lifetime

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def __repr__(self) -> str:
        return (f"SessionCodec(kids={self._sealer.kids!r}, lifetime={self._lifetime:g}, "
                f"idle_timeout={self._idle_timeout:g})")

    def start(self, identity: Identity) -> Session:
        """A new session for an identity that has just signed in."""
        now = self._clock()
        return Session(identity, issued_at=now, last_seen=now, checked_at=now)

    def touched(self, session: Session) -> Session:
        """A copy of the session, last seen now."""
        return dataclasses.replace(session, last_seen=self._clock())

    def refresh_due(self, session: Session) -> bool:
        """Whether to send a new cookie to slide the idle window (not on every request)."""
        return self._clock() - session.last_seen > min(self._idle_timeout / 2, REFRESH_AFTER)

    def encode(self, session: Session) -> str:
        """The cookie value for a session; raises SessionTooLarge when it is over ``max_bytes``."""
        text = json.dumps(_payload(session), ensure_ascii=False, separators=(",", ":"))
        plaintext = FORMAT + zlib.compress(text.encode(), 9, wbits=-zlib.MAX_WBITS)
        value = self._sealer.seal(plaintext)
        if len(value) > self._max_bytes:
            raise SessionTooLarge(len(value), self._max_bytes)
        return value

    def decode(self, value: str) -> Session | None:
        """The session in a cookie value, or None if it is not a valid, current one. Never raises."""
        try:
            return self._decode(value)
        except _Refused as exc:
            log.debug("session cookie refused: %s", exc)
            return None

    def _decode(self, value: str) -> Session:
        if len(value) > self._max_bytes + DECODE_MARGIN or not value.isascii():
            raise _Refused("too long or not ASCII")
        digest = self._fingerprint(value.encode())
        session = self._memo.get(digest)
        if session is None:
            self._lookups.miss.inc()
            session = self._open(value)
            self._memo[digest] = session
        else:
            self._lookups.hit.inc()
        if (reason := self._stale(session)) is not None:
            self._memo.pop(digest, None)
            raise _Refused(reason)
        return session

    def _open(self, value: str) -> Session:
        try:
            plaintext = self._sealer.open(value)
        except Unsealable as exc:
            raise _Refused(str(exc)) from None
        return self._sharing(_from_payload(_inflate(plaintext)))

    def _sharing(self, session: Session) -> Session:
        """The session with the identity already kept for an equal one (every field alike), if any."""
        identity = session.identity
        key = tuple(tuple(value.items()) if isinstance(value, Mapping) else value
                    for value in (getattr(identity, f.name) for f in dataclasses.fields(identity)))
        kept = self._identities.get(key)
        if kept is not None:
            return dataclasses.replace(session, identity=kept)
        if len(self._identities) >= self._identities_max:
            self._identities.clear()
        self._identities[key] = identity
        return session

    def _stale(self, session: Session) -> str | None:
        now = self._clock()
        if now - session.issued_at > self._lifetime:
            return "expired"
        if now - session.last_seen > self._idle_timeout:
            return "idle for too long"
        if max(session.issued_at, session.last_seen, session.checked_at) > now + FUTURE_LEEWAY:
            return "dated in the future"
        return None


User = tuple[str, str]  # (source, username)


class Revocations:
    """Signed-out sessions, refused until they would have expired anyway.

    :meth:`revoke` remembers one session id until ``issued_at + lifetime``; :meth:`revoke_user`
    marks a user (source, username) so that every session of theirs issued until now is refused
    (sign out everywhere); :meth:`is_revoked` is a few dict lookups, no IO, cheap enough for every
    /auth. The lists live in this process; with a shared store (:meth:`share`) every revocation is
    also written there, and those of other instances arrive by pub/sub (or the store's poll) into
    these same lists, so the check stays a lookup. A store that is down changes nothing here: what
    is known stays enforced, and this instance's new revocations are written when it is back.

    Bounded, and failing closed: no revocation is forgotten before its session expires. When
    ``max_sessions`` ids are held, expired ones go; if that frees less than a quarter of the list,
    the users with the most revoked sessions become user marks (signed out everywhere) until it
    does, so a flood of sign-outs by one account ends as one mark. When ``max_users`` marks are held
    and none has expired, one global mark signs out everyone signed in until now, and both lists
    start again. Each such pass frees a quarter of a list, so its cost per revocation is constant.

    Marks compare with ``issued_at`` as cookies hold it, whole seconds rounded down: a mark made
    at t refuses the sessions issued until t, and those issued later within that second too.
    """

    def __init__(self, *, lifetime: float, clock: Callable[[], float] = time.time,
                 max_sessions: int = 50_000, max_users: int = 10_000, metrics: Metrics = NO_METRICS) -> None:
        if not (lifetime > 0 and max_sessions >= 4 and max_users >= 1):
            raise ValueError("lifetime must be positive, max_sessions at least 4, max_users at least 1")
        self.lifetime = lifetime
        self._clock = clock
        self._max_sessions = max_sessions
        self._max_users = max_users
        self._sessions: dict[str, tuple[float, User]] = {}  # id -> (issued_at, user)
        self._users: dict[User, float] = {}  # user -> their sessions issued until then are revoked
        self._everyone = -1.0  # every session issued until then is revoked
        self._revoked = metrics.revocations()
        self._fleet: Fleet | None = None

    def share(self, fleet: Fleet) -> None:
        """Write revocations to the fleet's store too, and take in those of the other instances."""
        if self._fleet is None:
            self._fleet = fleet
            fleet.watch(self._heard, self._resync)

    def _publish(self, revoked: Revoked) -> None:
        fleet = self._fleet
        if fleet is not None:
            fleet.spawn("revoke", functools.partial(fleet.store.revoke, revoked), keep=True)

    def _heard(self, event: Event) -> None:
        if event[0] == "revoke":
            self.apply(event[1])

    async def _resync(self) -> None:
        assert self._fleet is not None
        for revoked in await self._fleet.call("revocations", self._fleet.store.revocations):
            self.apply(revoked)

    def apply(self, revoked: Revoked) -> None:
        """A revocation made by another instance (or read back from the store)."""
        if revoked.expires <= self._clock():
            return
        user = (revoked.source, revoked.username)
        if revoked.kind == "user":
            self._mark(user, revoked.at)
        elif revoked.id not in self._sessions:
            if len(self._sessions) >= self._max_sessions:
                self._make_room(self._clock())
            self._sessions[revoked.id] = (revoked.at, user)

    def __len__(self) -> int:
        """How many entries are held (ids and user marks): what the bounds limit."""
        return len(self._sessions) + len(self._users)

    def revoke(self, session: Session) -> None:
        """Refuse this session (and every refreshed cookie of it) until it expires."""
        if session.id not in self._sessions and len(self._sessions) >= self._max_sessions:
            self._make_room(self._clock())
        who = session.identity
        self._sessions[session.id] = (session.issued_at, (who.source, who.username))
        self._revoked["session"].inc()
        self._publish(Revoked("session", who.source, who.username, session.issued_at,
                              session.issued_at + self.lifetime, session.id))

    def revoke_user(self, source: str, username: str) -> None:
        """Refuse every session of this user issued until now: sign out everywhere."""
        now = self._clock()
        self._mark((source, username), now)
        self._revoked["user"].inc()
        self._publish(Revoked("user", source, username, now, now + self.lifetime))

    def is_revoked(self, session: Session) -> bool:
        issued = session.issued_at
        if issued <= self._everyone or session.id in self._sessions:
            return True
        users = self._users
        return bool(users) and issued <= users.get((session.identity.source, session.identity.username), -1.0)

    def _mark(self, user: User, not_before: float) -> None:
        if user not in self._users and len(self._users) >= self._max_users:
            now = self._clock()
            self._users = {u: t for u, t in self._users.items() if t + self.lifetime >= now}
            if len(self._users) >= self._max_users:
                self._sign_out_everyone(max(not_before, now))
                return
        self._users[user] = max(self._users.get(user, 0.0), not_before)

    def _make_room(self, now: float) -> None:
        target = self._max_sessions * 3 // 4
        self._sessions = {i: e for i, e in self._sessions.items() if e[0] + self.lifetime >= now}
        if len(self._sessions) <= target:
            return
        newest: dict[User, float] = {}
        counts: dict[User, int] = {}
        for issued, user in self._sessions.values():
            counts[user] = counts.get(user, 0) + 1
            newest[user] = max(newest.get(user, 0.0), issued)
        chosen: set[User] = set()
        held = len(self._sessions)
        for user in sorted(counts, key=counts.__getitem__, reverse=True):
            if held <= target:
                break
            chosen.add(user)
            held -= counts[user]
        log.warning("session revocation list full: %d users signed out everywhere instead", len(chosen))
        everyone = self._everyone
        for user in chosen:
            self._mark(user, max(now, newest[user]))
            if self._everyone != everyone:
                return
        self._sessions = {i: e for i, e in self._sessions.items() if e[1] not in chosen}

    def _sign_out_everyone(self, not_before: float) -> None:
        log.warning("session revocation lists full: every session issued until now is signed out")
        self._everyone = max(self._everyone, not_before)
        # Entries dated later (another instance's clock a little ahead) are kept.
        self._sessions = {i: e for i, e in self._sessions.items() if e[0] > self._everyone}
        self._users = {u: t for u, t in self._users.items() if t > self._everyone}


@dataclass(frozen=True)
class CookieSettings(Cookie):
    """How the session cookie is set (:class:`sidecar.cookies.Cookie`, named ``sidecar_session`` by default)."""

    name: str = "sidecar_session"


def _key_problem(key: object) -> str | None:
    return None if isinstance(key, bytes) and len(key) == KEY_BYTES else f"must be {KEY_BYTES} bytes"


def _payload(session: Session) -> dict[str, object]:
    who = session.identity
    folded = {fold(name) for name in who.groups}
    # With find_group_perms the rule groups are mostly the groups folded: not stored twice.
    implied = folded <= who.rule_groups
    return {
        "u": who.username,
        "n": [who.first_name, who.last_name, who.email],
        "g": list(who.groups),
        "r": sorted(who.rule_groups - folded if implied else who.rule_groups),
        "R": implied,
        "f": (int(who.is_active) | int(who.is_staff) << 1 | int(who.is_superuser) << 2
              | int(session.groups_elsewhere) << 3),
        "x": dict(who.extra),
        "s": who.source,
        "t": [int(session.issued_at), int(session.last_seen), int(session.checked_at)],
        "i": session.id,
        **({"k": session.refresh_token} if session.refresh_token is not None else {}),
        **({"m": list(session.methods)} if session.methods != ("pwd",) else {}),
        **({"a": int(session.factor_at)} if session.factor_at else {}),
        **({"p": 1} if session.pending else {}),
    }


def _from_payload(data: Any) -> Session:
    # Class patterns such as str(x) cost about a microsecond each: types are checked below instead.
    match data:
        case {"u": username, "n": [first, last, email], "g": [*groups], "r": [*rules], "R": implied,
              "f": flags, "x": extra, "s": source, "t": [issued, seen, checked], "i": session_id}:
            names = _strings(groups)
            bits = _typed(flags, int)
            if bits not in range(16):
                raise _Refused("unknown flags in the payload")
            folded = frozenset(fold(name) for name in names) if _typed(implied, bool) else frozenset()
            identity = Identity(
                username=_typed(username, str), first_name=_typed(first, str), last_name=_typed(last, str),
                email=_typed(email, str), groups=names, rule_groups=frozenset(_strings(rules)) | folded,
                is_active=bool(bits & 1), is_staff=bool(bits & 2), is_superuser=bool(bits & 4),
                extra=MappingProxyType(_text_map(extra)),
                source=_typed(source, str),
            )
            refresh = data.get("k")
            if refresh is not None:
                _typed(refresh, str)
            if not SESSION_ID.fullmatch(_typed(session_id, str)):
                raise _Refused("the session id is malformed")
            methods = _strings(_typed(data.get("m", ["pwd"]), list))
            pending = data.get("p", 0)
            if pending not in (0, 1) or type(pending) is not int:
                raise _Refused("the pending mark is malformed")
            return Session(identity, issued_at=_seconds(issued), last_seen=_seconds(seen), checked_at=_seconds(checked),
                           groups_elsewhere=bool(bits & 8), refresh_token=refresh, id=session_id,
                           methods=methods, factor_at=_seconds(data.get("a", 0)), pending=bool(pending))
    raise _Refused("the payload lacks a field")


def _typed(value: Any, kind: type[T]) -> T:
    # Exact types: JSON's true is no integer here, nor 1 a boolean.
    if type(value) is not kind:
        raise _Refused(f"a field of the payload is not of type {kind.__name__}")
    return value


def _seconds(value: Any) -> float:
    seconds = _typed(value, int)
    # Exact as a float, so the clock arithmetic can neither overflow nor round.
    if not 0 <= seconds <= 2**53:
        raise _Refused("a time in the payload is out of range")
    return float(seconds)


def _strings(items: Iterable[Any]) -> tuple[str, ...]:
    texts = tuple(items)
    if not all(type(text) is str for text in texts):
        raise _Refused("a list in the payload holds something other than strings")
    return texts


def _text_map(value: Any) -> dict[str, str]:
    mapping = _typed(value, dict)
    return dict(zip(_strings(mapping), _strings(mapping.values()), strict=True))


def _inflate(plaintext: bytes) -> Any:
    """The JSON in a plaintext, inflating at most MAX_PLAINTEXT bytes."""
    if plaintext[:1] != FORMAT:
        raise _Refused("unknown payload format")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflater.decompress(plaintext[1:], MAX_PLAINTEXT)
    except zlib.error:
        raise _Refused("the payload is not DEFLATE data") from None
    if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise _Refused("the payload is truncated, too large or followed by other data")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise _Refused("the payload is not JSON") from None
