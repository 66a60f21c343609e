"""``auth-sidecar check-config``: the configuration as serve would read it, and with ``--online``,
what it points at, connected to for real.

Without ``--online``: ``FILE: ok``, or every problem with its line and exit status 2. With it, a
checklist follows, one line per check, ``ok``, ``FAIL`` or ``--`` (could not be checked), in plain
words, and exit status 1 when a check fails:

- each directory server (:meth:`sidecar.ldap.Directory.examine`): reachable, TLS included; the
  service bind; every base DN the configuration names exists ("base DN does not exist" otherwise);
  a group search answers; the group type fits the server; its clock, where it says (Active
  Directory's rootDSE ``currentTime``);
- each single sign-on provider and Bearer issuer: the discovery document, read as a sign-in reads
  it (it must be for exactly that issuer), the signing keys, the algorithms we would accept, and
  its clock (the HTTP ``Date`` of its answer).

- the shared state store (``state.backend: redis``): reachable (through the sentinels when they are
  configured: which master they name), signed in, a version with what the scripts use (Redis 6.2),
  allowed to run scripts that read its clock (TIME) and to write and read under
  ``state.key_prefix`` (an ACL that forbids it would make every replica count alone), and its clock.

A clock further from ours than ``oidc.leeway`` fails: tokens would be refused as not yet valid or
expired. The store's may be off by ``STORE_CLOCK`` at most: sign-outs expire by our clocks, bans
and windows by the store's.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sidecar.cli import DEFAULT_CONFIG, add_config_argument, fail
from sidecar.config import Config, load_config
from sidecar.errors import ConfigError

if TYPE_CHECKING:
    import aiohttp

    from sidecar.ldap import Check

DATE_RESOLUTION = 1.0  # seconds: an HTTP Date is whole seconds, cut off
STORE_CLOCK = 5.0  # seconds the state store's clock may be off ours
STORE_VERSION = (6, 2)  # ZADD GT, ZRANGE BYSCORE
MARKS = {True: "ok  ", False: "FAIL", None: "--  "}


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("file", nargs="?", metavar="FILE", help="the configuration (the same as --config)")
    add_config_argument(parser)
    parser.add_argument("--online", action="store_true",
                        help="also connect to the directory and the providers, and print a checklist")


def main(args: argparse.Namespace) -> int:
    path = args.file or args.config or DEFAULT_CONFIG
    try:
        config = load_config(path)
    except ConfigError as exc:
        return fail(f"{path}: {exc}")
    print(f"{path}: ok")
    if not args.online:
        return 0
    failed = asyncio.run(checklist(config))
    print("every check passed" if not failed else f"{failed} check{'s' if failed > 1 else ''} failed")
    return 1 if failed else 0


async def checklist(config: Config) -> int:
    """Print the checklist of what the configuration points at; the number of checks that failed."""
    failed = 0
    if config.ldap is not None:
        failed += await _directory(config)
    if config.state.backend == "redis":
        failed += _section(_store_title(config), await _store(config))
    oidc = config.oidc
    if oidc.providers or oidc.bearer:
        import aiohttp

        dates = _Dates()
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(dates.seen)
        async with aiohttp.ClientSession(trace_configs=[trace], headers={"User-Agent": "auth-sidecar"}) as session:
            for provider in oidc.providers:
                if provider.type == "oauth2" or provider.issuer is None:
                    failed += _section(f"oauth2 provider {provider.name}", [
                        (None, "no discovery document (type oauth2): its endpoints are not fetched")])
                    continue
                checks = await _issuer(session, dates, provider.issuer, jwks_url=None,
                                       algorithms=provider.algorithms, leeway=oidc.leeway)
                failed += _section(f"oidc provider {provider.name}: {provider.issuer}", checks)
            for bearer in oidc.bearer:
                checks = await _issuer(session, dates, bearer.issuer, jwks_url=bearer.jwks_url,
                                       algorithms=bearer.algorithms, leeway=oidc.leeway)
                failed += _section(f"bearer issuer {bearer.issuer}", checks)
    return failed


def _section(title: str, checks: Sequence[Check]) -> int:
    print(title)
    for passed, text in checks:
        first, *rest = text.split("\n")
        print(f"  {MARKS[passed]}  {first}")
        for line in rest:
            print(f"        {line}")
    return sum(passed is False for passed, _ in checks)


async def _directory(config: Config) -> int:
    from sidecar.ldap import Directory

    assert config.ldap is not None
    directory = Directory(config.ldap)
    failed = 0
    try:
        for uri in config.ldap.server_uri:
            report = await directory.examine(uri)
            checks = list(report.checks)
            if len(checks) > 1:  # it answered
                checks.append(_clock(report.clock_skew, config.oidc.leeway, "the server's",
                                     "not published by the server (Active Directory's rootDSE currentTime)"))
            failed += _section(f"directory {uri}", checks)
    finally:
        directory.close()
    return failed


def _clock(skew: float | None, leeway: float, whose: str, unknown: str, resolution: float = 0.0) -> Check:
    if skew is None:
        return None, f"clock: {unknown}"
    off = abs(skew)
    # Within the reading's own resolution (an HTTP Date has whole seconds) the clocks agree as far as
    # anyone can tell: a Date taken just before a second turns reads a second behind.
    said = f"clock: {whose} is {off:.0f} s {'ahead of' if skew > 0 else 'behind'} ours" \
        if off >= max(1.0, resolution + 0.5) else f"clock: {whose} agrees with ours"
    if off - resolution > leeway:
        return False, (f"{said}, more than oidc.leeway ({leeway:g} s): tokens would be refused as expired or "
                       "not yet valid; fix the time on this host or that one (NTP)")
    return True, f"{said} (oidc.leeway {leeway:g} s)"


def _store_title(config: Config) -> str:
    sentinel = config.state.sentinel
    if sentinel is None:
        return f"state store {config.state.url}"
    return f"state store: master {sentinel.master} of sentinels " + ", ".join(f"{h}:{p}" for h, p in sentinel.addresses)


async def _store(config: Config) -> list[Check]:
    """What the sidecar does with the store, done once: connect, run a script, write and read a key."""
    from redis.exceptions import RedisError

    from sidecar.store.redis_store import client_for

    state = config.state
    client, others = client_for(state)
    checks: list[Check] = []
    try:
        async with asyncio.timeout(max(5.0, 4 * state.connect_timeout)):
            try:
                info = await client.info("server")
            except (RedisError, OSError) as exc:
                return [(False, f"reachable: {type(exc).__name__}: {exc}")]
            tls = "TLS" if state.url.startswith("rediss:") else "plain, no TLS"
            checks.append((True, f"reachable ({tls}), signed in" + (f" as {state.username}" if state.username else "")))
            version = str(info.get("redis_version", "0"))
            found = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
            wanted = ".".join(map(str, STORE_VERSION))
            checks.append((found >= STORE_VERSION, f"version {version}" + ("" if found >= STORE_VERSION
                                                                          else f": {wanted} or later is needed")))
            key = state.key_prefix + "check-config"
            try:
                await client.set(key, "1", px=10_000)
                # The scripts read the store's clock (TIME): an ACL must allow it, not only @scripting.
                ran = await client.eval("redis.call('TIME') return redis.call('GET', KEYS[1])", 1, key)
                await client.delete(key)
                await client.publish(state.key_prefix + "events", "[]")
            except (RedisError, OSError) as exc:
                checks.append((False, f"writing under {state.key_prefix!r} and running scripts: {exc}"))
            else:
                checks.append((ran == "1", f"writes and reads under {state.key_prefix!r}, runs scripts (TIME too), "
                                           "publishes"))
            seconds, micros = await client.time()
            off = seconds + micros / 1e6 - time.time()
            checks.append((abs(off) <= STORE_CLOCK, f"clock: {off:+.1f} s from ours" + (
                "" if abs(off) <= STORE_CLOCK else f", more than {STORE_CLOCK:g} s: sign-outs would expire early "
                "or late on some replicas; fix the time on this host or that one (NTP)")))
    except TimeoutError:
        checks.append((False, "no answer within the time the check allows"))
    except (RedisError, OSError) as exc:
        checks.append((False, f"{type(exc).__name__}: {exc}"))
    finally:
        for each in [client, *others]:
            await each.aclose()
    return checks


class _Dates:
    """The ``Date`` of every answer, against our clock when it came: how far the other clock is."""

    def __init__(self) -> None:
        self.skews: dict[str, float] = {}

    async def seen(self, session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
        ours = time.time()
        date = params.response.headers.get("Date")
        try:
            theirs = parsedate_to_datetime(date).timestamp() if date else None
        except (TypeError, ValueError):
            theirs = None
        if theirs is not None:
            self.skews[str(params.url)] = theirs - ours


async def _issuer(session: aiohttp.ClientSession, dates: _Dates, issuer: str, *, jwks_url: str | None,
                  algorithms: tuple[str, ...], leeway: float) -> list[Check]:
    """The discovery document (when the keys or the algorithms come from it), the keys, the
    algorithms we would accept, and the issuer's clock: as the sign-in and the Bearer check read them."""
    from sidecar.errors import ProviderUnavailable
    from sidecar.jwks import Discovery, JwksCache
    from sidecar.tokens import allowed_algorithms

    checks: list[Check] = []
    document: dict[str, Any] = {}
    seen = []
    if jwks_url is None or not algorithms:
        discovery = Discovery(session, issuer)
        seen.append(discovery.url)
        try:
            document = await discovery.document()
        except ProviderUnavailable as exc:
            return [(False, f"discovery: {exc.reason}")]
        checks.append((True, f"discovery {discovery.url}: for this issuer, with every endpoint a sign-in needs"))
    keys_url = jwks_url or str(document["jwks_uri"])
    seen.append(keys_url)
    try:
        keys = await JwksCache(session, keys_url).keys()
    except ProviderUnavailable as exc:
        checks.append((False, f"signing keys: {exc.reason}"))
    else:
        kids = ", ".join(sorted({str(key.get("kid")) for key in keys.all if key.get("kid")})) or "no key ids"
        checks.append((True, f"signing keys {keys_url}: {len(keys.all)} ({kids})"))
    try:
        allowed = allowed_algorithms(algorithms or document.get("id_token_signing_alg_values_supported"))
    except ValueError as exc:
        checks.append((False, f"algorithms: {exc}"))
    else:
        checks.append((True, "algorithms accepted: " + ", ".join(sorted(allowed))))
    skew = next((dates.skews[url] for url in seen if url in dates.skews), None)
    checks.append(_clock(skew, leeway, "the issuer's", "its answers carry no Date", resolution=DATE_RESOLUTION))
    return checks
