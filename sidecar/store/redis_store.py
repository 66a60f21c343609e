"""The store in Redis (or Valkey), shared by every replica and worker; directly or through Sentinel.

Each budget is three keys under the prefix: ``fail:KIND:VALUE`` (a sorted set of failures by
when), ``flight:KIND:VALUE`` (attempts in flight, by until when they count) and ``ban:KIND:VALUE``
(a string that expires with the ban). Reserving and settling are Lua scripts, so "check every
budget, then take a place in each" is one atomic step across the fleet, and they read the Redis
server's clock. Revocations are one sorted set (``revoked``) scored by when each can be forgotten,
so it is bounded by the sessions' lifetime; every change is published on ``events`` by the script
that makes it, so no change is published without being stored or stored without being published.

Every command is bounded by ``state.timeout``; a failure of any kind is :class:`StoreUnavailable`.
The asyncio client reconnects by itself, so a Redis that returns is used again without a restart.
A ``revision`` counter, raised by the same scripts, lets a poll see that nothing changed with one GET.
Not for Redis Cluster: a script's keys may lie in different slots.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from sidecar.config import StateConfig
from sidecar.store import (
    Ban,
    Budget,
    Event,
    Groups,
    Listener,
    Outcome,
    Revoked,
    Rules,
    Seen,
    Spent,
    StoreUnavailable,
    User,
)

log = logging.getLogger("sidecar.store")

T = TypeVar("T")
RECONNECT_EVERY = 1.0  # seconds between two attempts to subscribe again

# KEYS: fail, flight, ban of each budget in turn. ARGV: ticket, max_failures, window, hold (ms).
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ticket, max, window, hold = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, #KEYS, 3 do
  local ban = redis.call('PTTL', KEYS[i + 2])
  if ban > 0 then return {(i + 2) / 3, ban, 0, 0} end
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  redis.call('ZREMRANGEBYSCORE', KEYS[i + 1], '-inf', now)
  local failures, flying = redis.call('ZCARD', KEYS[i]), redis.call('ZCARD', KEYS[i + 1])
  if failures + flying >= max then return {(i + 2) / 3, 0, failures, flying} end
end
for i = 1, #KEYS, 3 do
  redis.call('ZADD', KEYS[i + 1], now + hold, ticket)
  redis.call('PEXPIRE', KEYS[i + 1], hold)
end
return {0, 0, 0, 0}
"""

# KEYS: as RESERVE, then the events channel's name and the revision. ARGV: ticket, outcome,
# max_failures, window, ban (ms), then each budget's kind and value (for the ban events).
SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ticket, outcome = ARGV[1], ARGV[2]
local max, window, ban = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local started = {}
for i = 1, #KEYS - 2, 3 do
  local n = (i + 2) / 3
  local kind, value = ARGV[4 + 2 * n], ARGV[5 + 2 * n]
  redis.call('ZREM', KEYS[i + 1], ticket)
  local banned = redis.call('PTTL', KEYS[i + 2]) > 0
  if outcome == 'failed' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
    redis.call('ZADD', KEYS[i], now, ticket)
    redis.call('PEXPIRE', KEYS[i], window)
    if redis.call('ZCARD', KEYS[i]) >= max and not banned then
      redis.call('SET', KEYS[i + 2], now, 'PX', ban)
      redis.call('DEL', KEYS[i])
      table.insert(started, n)
      redis.call('INCR', KEYS[#KEYS])
      redis.call('PUBLISH', KEYS[#KEYS - 1], cjson.encode({'ban', kind, value, ban / 1000}))
    end
  elseif outcome == 'succeeded' and kind == 'user' and not banned then
    redis.call('DEL', KEYS[i])
  end
end
return started
"""

# KEYS: as RESERVE, then the events channel and the revision. ARGV: window (ms), then each budget's
# kind and value.
LIFT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local found = {}
for i = 1, #KEYS - 2, 3 do
  local n = (i + 2) / 3
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[1]))
  local ban, failures = redis.call('PTTL', KEYS[i + 2]), redis.call('ZCARD', KEYS[i])
  if ban < 0 then ban = 0 end
  if ban > 0 or failures > 0 then table.insert(found, {n, ban, failures}) end
  redis.call('DEL', KEYS[i], KEYS[i + 2])
  redis.call('INCR', KEYS[#KEYS])
  redis.call('PUBLISH', KEYS[#KEYS - 1], cjson.encode({'lift', ARGV[2 * n], ARGV[2 * n + 1], 0}))
end
return found
"""

# KEYS: revoked, events, the revision. ARGV: the member (JSON), when it expires (ms).
REVOKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', KEYS[2], cjson.encode({'revoke', ARGV[1], ARGV[2]}))
return 1
"""

# KEYS: revoked. The members not yet expired, by the server's clock.
REVOCATIONS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGE', KEYS[1], now, '+inf', 'BYSCORE', 'WITHSCORES')
"""

# KEYS: the user's sessions (a hash by id). ARGV: the id, the session (JSON, last seen 5th), ttl (ms), per user.
NOTE_SESSION = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[4]) then
  local all, oldest, at = redis.call('HGETALL', KEYS[1]), nil, math.huge
  for i = 1, #all, 2 do
    local ok, seen = pcall(cjson.decode, all[i + 1])
    local when = ok and tonumber(seen[5]) or 0
    if when < at then oldest, at = all[i], when end
  end
  redis.call('HDEL', KEYS[1], oldest)
end
return 1
"""

UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def client_for(config: StateConfig) -> tuple[aioredis.Redis, list[aioredis.Redis]]:
    """The asyncio client ``state:`` describes: one Redis, or the master the sentinels name (then
    with the sentinels' own clients, to be closed with it)."""
    password = config.password.reveal() if config.password is not None else None
    tls = config.url.startswith("rediss:")
    common: dict[str, Any] = {"username": config.username, "password": password, "db": config.database,
                              "socket_timeout": config.timeout, "socket_connect_timeout": config.connect_timeout,
                              "decode_responses": True, "health_check_interval": 0}
    if tls:
        common["ssl"] = True
        if config.ca_file:
            common["ssl_ca_certs"] = config.ca_file
    sentinel = config.sentinel
    if sentinel is None:
        return aioredis.Redis.from_url(config.url, **{k: v for k, v in common.items() if k != "ssl"}), []
    sentinel_password = sentinel.password.reveal() if sentinel.password is not None else None
    sentinels = Sentinel(list(sentinel.addresses),  # type: ignore[no-untyped-call]
                         sentinel_kwargs={"password": sentinel_password, "socket_timeout": config.timeout,
                                          "socket_connect_timeout": config.connect_timeout},
                         **common)
    master: aioredis.Redis = sentinels.master_for(sentinel.master)
    return master, list(sentinels.sentinels)


class RedisStore:
    def __init__(self, client: aioredis.Redis, *, prefix: str, timeout: float,
                 others: list[aioredis.Redis] | None = None) -> None:
        self._client = client
        self._others = others or []
        self._prefix = prefix
        self.timeout = timeout
        self._channel = prefix + "events"
        self._revoked = prefix + "revoked"
        self._revision = prefix + "revision"  # counts the changes a poll must read again: bans, lifts, sign-outs
        self._tail = [self._channel, self._revision]
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)
        self._lift = client.register_script(LIFT)
        self._revoke = client.register_script(REVOKE)
        self._read_revoked = client.register_script(REVOCATIONS)
        self._unlock = client.register_script(UNLOCK)
        self._note_session = client.register_script(NOTE_SESSION)

    @classmethod
    def from_config(cls, config: StateConfig) -> RedisStore:
        client, others = client_for(config)
        return cls(client, prefix=config.key_prefix, timeout=config.timeout, others=others)

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` within the timeout. A connection found closed (Redis restarted, a failover) is
        tried once more at once, on a new one: every operation here is idempotent."""
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    return await call()
                except RedisConnectionError:
                    return await call()
        except TimeoutError:
            raise StoreUnavailable(f"{what}: no answer within {self.timeout:g} s") from None
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None

    def _keys(self, budgets: Sequence[Budget]) -> list[str]:
        return [f"{self._prefix}{part}:{kind}:{value}" for kind, value in budgets
                for part in ("fail", "flight", "ban")]

    @staticmethod
    def _names(budgets: Sequence[Budget]) -> list[str]:
        return [part for budget in budgets for part in budget]

    async def reserve(self, ticket: str, budgets: Sequence[Budget], rules: Rules) -> Spent | None:
        if not budgets:
            return None
        args: list[str | int] = [ticket, rules.max_failures, _ms(rules.window), _ms(rules.hold)]
        found = await self._call("reserve", lambda: self._reserve(keys=self._keys(budgets), args=args))
        index, ban, failures, flying = (int(x) for x in found)
        if not index:
            return None
        kind, value = budgets[index - 1]
        return Spent(kind, value, ban / 1000, failures, flying)

    async def settle(self, ticket: str, budgets: Sequence[Budget], outcome: Outcome, rules: Rules) -> list[Budget]:
        if not budgets:
            return []
        args: list[str | int] = [ticket, outcome, rules.max_failures, _ms(rules.window), _ms(rules.ban),
                                 *self._names(budgets)]
        started = await self._call("settle", lambda: self._settle(keys=[*self._keys(budgets), *self._tail],
                                                                  args=args))
        return [budgets[int(n) - 1] for n in started]

    async def bans(self, rules: Rules) -> list[Ban]:
        async def read() -> list[Ban]:
            found: dict[Budget, None] = {}
            for part in ("ban", "fail"):
                start = f"{self._prefix}{part}:"
                async for key in self._client.scan_iter(match=_glob_escape(start) + "*", count=500):
                    kind, _, value = key[len(start):].partition(":")
                    found[(kind, value)] = None
            if not found:
                return []
            since = await self._now_ms() - _ms(rules.window)
            pipe = self._client.pipeline(transaction=False)
            for kind, value in found:
                pipe.zcount(f"{self._prefix}fail:{kind}:{value}", f"({since}", "+inf")
                pipe.pttl(f"{self._prefix}ban:{kind}:{value}")
            answers = await pipe.execute()
            bans = []
            for n, (kind, value) in enumerate(found):
                failures, ban = int(answers[2 * n]), max(0, int(answers[2 * n + 1]))
                if ban or failures:
                    bans.append(Ban(kind, value, ban / 1000, failures))
            return sorted(bans, key=lambda ban: (not ban.remaining, ban.kind, ban.value))

        return await self._call("bans", read)

    async def _now_ms(self) -> int:
        seconds, micros = await self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def lift(self, budgets: Sequence[Budget], rules: Rules) -> list[Ban]:
        if not budgets:
            return []
        args: list[str | int] = [_ms(rules.window), *self._names(budgets)]
        found = await self._call("lift", lambda: self._lift(keys=[*self._keys(budgets), *self._tail],
                                                                                args=args))
        return [Ban(*budgets[int(n) - 1], int(ban) / 1000, int(failures)) for n, ban, failures in found]

    async def revoke(self, revoked: Revoked) -> None:
        member = _member(revoked)
        await self._call("revoke", lambda: self._revoke(keys=[self._revoked, *self._tail],
                                                        args=[member, _ms(revoked.expires)]))

    async def revocations(self) -> list[Revoked]:
        found = await self._call("revocations", lambda: self._read_revoked(keys=[self._revoked]))
        return [r for member, score in zip(found[::2], found[1::2], strict=True)
                if (r := _revoked(member, float(score) / 1000)) is not None]

    def _groups_key(self, user: User) -> str:
        return self._prefix + "groups:" + json.dumps(list(user))

    async def keep_groups(self, user: User, groups: Groups, ttl: float) -> None:
        value = json.dumps([list(groups[0]), sorted(groups[1])])
        await self._call("keep groups", lambda: self._client.set(self._groups_key(user), value, px=_ms(ttl)))

    async def groups(self, user: User) -> Groups | None:
        found = await self._call("groups", lambda: self._client.get(self._groups_key(user)))
        if found is None:
            return None
        try:
            names, rules = json.loads(found)
            return tuple(str(n) for n in names), frozenset(str(r) for r in rules)
        except (ValueError, TypeError):
            log.warning("state store: unreadable group list for %s, ignored", user[1])
            return None

    def _sessions_key(self, username: str) -> str:
        return self._prefix + "sessions:" + username.casefold()

    async def note_session(self, seen: Seen, ttl: float, per_user: int) -> None:
        value = json.dumps(list(seen))
        await self._call("note session", lambda: self._note_session(
            keys=[self._sessions_key(seen.username)], args=[seen.id, value, _ms(ttl), per_user]))

    async def sessions_of(self, username: str) -> list[Seen]:
        found = await self._call("sessions", lambda: self._client.hgetall(self._sessions_key(username)))
        sessions = []
        for value in found.values():
            try:
                session_id, name, source, issued, last_seen, client = json.loads(value)
                sessions.append(Seen(str(session_id), str(name), str(source), float(issued), float(last_seen),
                                     None if client is None else str(client)))
            except (ValueError, TypeError):
                continue
        return sessions

    async def forget_sessions(self, username: str, session_id: str | None = None) -> None:
        key = self._sessions_key(username)
        if session_id is None:
            await self._call("forget sessions", lambda: self._client.delete(key))
        else:
            await self._call("forget session", lambda: self._client.hdel(key, session_id))

    async def lock(self, name: str, ttl: float) -> str | None:
        token = secrets.token_hex(8)
        taken = await self._call("lock", lambda: self._client.set(self._prefix + "lock:" + name, token,
                                                                  nx=True, px=_ms(ttl)))
        return token if taken else None

    async def unlock(self, name: str, token: str) -> None:
        await self._call("unlock", lambda: self._unlock(keys=[self._prefix + "lock:" + name], args=[token]))

    async def revision(self) -> int:
        found = await self._call("revision", lambda: self._client.get(self._revision))
        return int(found or 0)

    async def ping(self) -> None:
        await self._call("ping", self._client.ping)

    async def listen(self, listener: Listener, ready: Callable[[], Awaitable[None]]) -> None:
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await self._call("subscribe", functools.partial(pubsub.subscribe, self._channel))
                await ready()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and (event := _event(message.get("data"))) is not None:
                        listener(event)
            except (StoreUnavailable, RedisError, OSError, TimeoutError) as exc:
                log.debug("state store: subscription lost (%s), subscribing again", exc)
            except Exception:  # a change that could not be read: the next resync reads it again
                log.exception("state store: the subscription failed, subscribing again")
            finally:
                await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]
            await asyncio.sleep(RECONNECT_EVERY)

    async def close(self) -> None:
        for client in [self._client, *self._others]:
            await _quietly(client.aclose())


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _member(revoked: Revoked) -> str:
    return json.dumps([revoked.kind, revoked.source, revoked.username, revoked.at, revoked.id])


def _revoked(member: object, expires: float) -> Revoked | None:
    try:
        kind, source, username, at, session_id = json.loads(str(member))
    except (ValueError, TypeError):
        return None
    if kind not in ("session", "user") or not isinstance(at, int | float):
        return None
    return Revoked(kind, str(source), str(username), float(at), expires, str(session_id))


def _event(data: object) -> Event | None:
    """A published change, or None for anything this version does not read."""
    try:
        found = json.loads(str(data))
        if found[0] == "revoke":
            revoked = _revoked(found[1], float(found[2]) / 1000)
            return ("revoke", revoked) if revoked is not None else None
        if found[0] in ("ban", "lift"):
            return (found[0], (str(found[1]), str(found[2])), float(found[3]))
    except (ValueError, TypeError, IndexError, KeyError):
        pass
    return None


async def _quietly(closing: Awaitable[object]) -> None:
    try:
        await closing
    except (RedisError, OSError, RuntimeError):
        pass
