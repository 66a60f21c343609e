"""Brute-force regulation: budgets per username and per address, reservations, bans, and what clears them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.app import make_app
from sidecar.config import parse_config
from sidecar.errors import Throttled
from sidecar.regulation import Regulator, Ticket
from sidecar.routes import SIDECAR
from tests.conftest import PEOPLE, basic, config_for
from tests.testbed.delay import DelayedDirectory
from tests.testbed.slapd import Slapd


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def regulator(clock: Clock, **overrides: float) -> Regulator:
    settings = {"max_failures": 3, "window": 60.0, "ban": 300.0, **overrides}
    return Regulator(clock=clock, **settings)  # type: ignore[arg-type]


def test_a_username_is_banned_after_max_failures_within_the_window() -> None:
    clock = Clock()
    r = regulator(clock)
    assert r.failed("alice", "10.0.0.1") == []
    assert r.failed("alice", "10.0.0.2") == []
    started = r.failed("alice", "10.0.0.3")
    assert started == ["user 'alice' banned for 300 s after 3 failures in 60 s"]
    assert r.banned("ALICE", "192.0.2.9") is not None  # any spelling, any address
    assert r.banned("bob", "10.0.0.1") is None
    clock.now += 301
    assert r.banned("alice", "10.0.0.1") is None


def test_an_address_is_banned_whatever_names_it_tries() -> None:
    clock = Clock()
    r = regulator(clock)
    for name in ("alice", "bob", "carol"):
        r.failed(name, "10.0.0.66")
    assert "client '10.0.0.66'" in (r.banned("dave", "10.0.0.66") or "")
    assert r.banned("dave", "10.0.0.67") is None


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    r = regulator(clock)
    r.failed("alice", None)
    r.failed("alice", None)
    clock.now += 61
    assert r.failed("alice", None) == []
    assert r.banned("alice", None) is None


async def test_success_clears_the_username_but_not_the_address() -> None:
    clock = Clock()
    r = regulator(clock)
    r.failed("alice", "10.0.0.1")
    r.failed("alice", "10.0.0.1")
    r.settle(await r.admit("alice", "10.0.0.1"), "succeeded", "alice", "10.0.0.1")
    assert r.failed("alice", "10.0.0.1") == ["client '10.0.0.1' banned for 300 s after 3 failures in 60 s"]
    assert r.banned("alice", "10.0.0.2") is None


async def test_success_does_not_lift_a_ban() -> None:
    clock = Clock()
    r = regulator(clock)
    for _ in range(3):
        r.failed("alice", None)
    with pytest.raises(Throttled):
        await r.admit("alice", None)
    assert r.banned("alice", None) is not None


async def test_attempts_in_flight_count_before_any_answer() -> None:
    r = regulator(Clock(), wait=0.05)
    tickets = [await r.admit("alice", f"10.0.0.{i}") for i in range(3)]
    with pytest.raises(Throttled, match="3 attempts in flight"):
        await r.admit("ALICE", "10.0.0.9")  # the budget is held by attempts whose answer has not come
    r.settle(tickets[0], "unknown")  # the directory did not answer: the place is given back, nothing counted
    r.settle(await r.admit("alice", "10.0.0.9"), "failed")
    assert r.banned("alice", None) is not None  # two in flight and one failure fill the budget of 3


async def test_a_burst_of_good_attempts_waits_its_turn_and_a_burst_of_bad_ones_is_refused() -> None:
    r = regulator(Clock(), max_failures=5)

    async def attempt(outcome: str) -> str:
        try:
            ticket = await r.admit(None, "10.0.0.1")  # fifty sign-ins behind one office address
        except Throttled:
            return "refused"
        await asyncio.sleep(0)  # the directory's answer
        r.settle(ticket, outcome)
        return outcome

    assert await asyncio.gather(*(attempt("succeeded") for _ in range(50))) == ["succeeded"] * 50
    outcomes = await asyncio.gather(*(attempt("failed") for _ in range(50)))
    assert outcomes.count("failed") == 5 and outcomes.count("refused") == 45


def test_a_burst_from_many_threads_reserves_at_most_the_budget() -> None:
    # The directory's threads reserve a resolved name; there, a full budget is refused at once.
    r = regulator(Clock(), max_failures=5)
    admitted: list[object] = []
    barrier = threading.Barrier(50)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            ticket = r._reserve(Ticket([]), [("client", "10.0.0.1")])
        except Throttled:
            return
        r.admit_resolved(ticket, "alice")
        admitted.append(ticket)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 5


async def test_the_directory_spelling_draws_on_the_same_budget() -> None:
    r = regulator(Clock())
    for _ in range(3):
        r.failed("iris", None)
    ticket = await r.admit("İrİs", "10.0.0.1")  # another spelling is not banned as typed...
    with pytest.raises(Throttled, match="'iris'"):
        r.admit_resolved(ticket, "iris")  # ...but the directory resolved it to the banned name
    r.settle(ticket, "unknown")
    ticket = await r.admit("İrİs", "10.0.0.1")
    r.admit_resolved(ticket, "İrİs")  # the same name as typed is held once, not twice
    assert len(ticket.records) == 2


async def test_a_failure_counts_under_every_name_it_was_admitted_as() -> None:
    r = regulator(Clock())
    for _ in range(3):
        ticket = await r.admit("İrİs", None)
        r.admit_resolved(ticket, "iris")
        r.settle(ticket, "failed")
    assert r.banned("iris", None) is not None and r.banned("İrİs", None) is not None


async def test_known_addresses_are_remembered_per_user() -> None:
    clock = Clock()
    r = regulator(clock, remember=100.0)
    r.settle(await r.admit("alice", "10.0.0.1"), "succeeded", "Alice", "10.0.0.1")
    assert r.known("ALICE", "10.0.0.1")
    assert not r.known("alice", "10.0.0.2") and not r.known("bob", "10.0.0.1") and not r.known("alice", None)
    clock.now += 101
    assert not r.known("alice", "10.0.0.1")


async def test_a_ticket_settles_once() -> None:
    r = regulator(Clock())
    ticket = await r.admit("alice", None)
    r.settle(ticket, "failed")
    r.settle(ticket, "failed")
    assert r.banned("alice", None) is None  # one failure, not two


async def test_users_who_sign_in_take_no_place_in_the_table() -> None:
    # A table full of successes would refuse the next new name ("the regulation table is full").
    r = Regulator(max_failures=3, window=60, ban=600, max_entries=100)
    for i in range(1_000):
        r.settle(await r.admit(f"user{i}", f"10.0.{i // 256}.{i % 256}"), "succeeded", f"user{i}", "10.0.0.1")
    r.settle(await r.admit("nobody", "10.1.0.1"), "unknown")  # the directory did not answer: nothing counted
    assert len(r._records) == 0
    r.settle(await r.admit("mallory", "10.2.0.1"), "failed")
    assert sorted(r._records) == [("client", "10.2.0.1"), ("user", "mallory")]  # a failure is kept
    r.settle(await r.admit("mallory", "10.2.0.1"), "succeeded", "mallory", "10.2.0.1")
    assert sorted(r._records) == [("client", "10.2.0.1")]  # the address's failure still counts
    assert r.banned("mallory", "10.2.0.1") is None


async def test_memory_is_bounded_and_a_flood_never_evicts_a_ban() -> None:
    clock = Clock()
    r = Regulator(max_failures=3, window=60, ban=600, max_entries=100, clock=clock)
    for _ in range(3):
        r.failed("victim", None)
    refused = 0
    for i in range(10_000):
        try:
            r.settle(await r.admit(f"user{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"), "failed")
        except Throttled:
            refused += 1  # full of live records: new names wait, none is forgotten
        r.remember_client(f"other{i}", f"10.9.{i // 256 % 256}.{i % 256}")
    assert len(r._records) <= 100 and len(r._known) <= 100
    assert refused > 9_000
    assert r.banned("victim", None) is not None
    clock.now += 601  # everything expired: room again
    r.settle(await r.admit("newcomer", "10.0.0.1"), "failed")


def test_an_ipv6_subscriber_counts_as_one_address() -> None:
    r = regulator(Clock())
    for i in range(3):
        r.failed(f"name{i}", f"2001:db8:1:2::{i + 1}")
    assert r.banned("dave", "2001:db8:1:2:ffff::9") is not None  # the same /64
    assert r.banned("dave", "2001:db8:1:3::1") is None


def test_a_known_address_stays_known_while_it_is_used() -> None:
    clock = Clock()
    r = regulator(clock, remember=100.0)
    r.remember_client("alice", "10.0.0.1")
    for _ in range(5):
        clock.now += 60
        assert r.renew("ALICE", "10.0.0.1")  # what a cached login honoured does: known, and renewed
    clock.now += 101
    assert not r.known("alice", "10.0.0.1")
    assert not r.renew("alice", "10.0.0.1")  # lapsed: not known, so not renewed either
    assert not r.known("alice", "10.0.0.1")
    assert not r.renew("alice", None) and not r.renew("bob", "10.0.0.1")


# -- through the app, against a real slapd 100 ms away ------------------------------------------


def far_config(slapd: Slapd, far: DelayedDirectory, **regulation: Any) -> Any:
    return config_for(slapd, server_uri=far.uri, top={
        "regulation": {"max_failures": 5, **regulation},
        "cache": {"failure_timeout": 0},  # every attempt is a new question
    })


def from_address(i: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"}


async def test_a_burst_of_wrong_passwords_puts_at_most_max_failures_on_the_directory(slapd: Slapd) -> None:
    with DelayedDirectory(slapd.port, 0.1) as far:
        async with TestClient(TestServer(make_app(far_config(slapd, far)))) as client:
            attempts = [basic("alice", f"wrong-{i}") for i in range(200)]
            attempts[100] = basic("alice", "alice-pass")  # the right password, amid the burst
            responses = await asyncio.gather(*(client.get("/auth", headers={**a, **from_address(i)})
                                               for i, a in enumerate(attempts)))
            statuses = [r.status for r in responses]
        assert far.binds_as(slapd.user_dn("alice")) <= 5
        assert statuses == [401] * 200  # the right one came when the budget was spent: no oracle


async def test_one_address_trying_many_names_puts_at_most_max_failures_on_the_directory(slapd: Slapd) -> None:
    with DelayedDirectory(slapd.port, 0.1) as far:
        async with TestClient(TestServer(make_app(far_config(slapd, far)))) as client:
            names = ["alice", "bob", "carol", "dave", "jose"] * 40
            responses = await asyncio.gather(*(client.get("/auth", headers={**basic(name, "guess"), **from_address(7)})
                                               for name in names))
        assert all(r.status == 401 for r in responses)
        assert sum(far.binds_as(slapd.user_dn(name)) for name in set(names)) <= 5


async def test_strangers_cannot_lock_a_user_out_of_what_already_works(slapd: Slapd) -> None:
    with DelayedDirectory(slapd.port, 0.0) as far:
        async with TestClient(TestServer(make_app(far_config(slapd, far)))) as client:
            mine = from_address(1)
            assert (await client.get("/auth", headers={**basic("alice", "alice-pass"), **mine})).status == 200
            for i in range(2, 7):  # five wrong passwords from five other addresses: alice's budget is spent
                assert (await client.get("/auth", headers={**basic("alice", "nope"), **from_address(i)})).status == 401
            binds = far.binds_as(slapd.user_dn("alice"))
            # The login that already works goes on working from where alice uses it, without the directory...
            assert (await client.get("/auth", headers={**basic("alice", "alice-pass"), **mine})).status == 200
            # ...while from anywhere else a ban is a ban, right password or not: nothing to learn there.
            stranger = from_address(99)
            assert (await client.get("/auth", headers={**basic("alice", "alice-pass"), **stranger})).status == 401
            assert (await client.get("/auth", headers={**basic("alice", "nope2"), **stranger})).status == 401
            assert far.binds_as(slapd.user_dn("alice")) == binds


async def test_a_spelling_the_directory_folds_cannot_dodge_the_ban_of_its_name(slapd: Slapd) -> None:
    if "iris" not in slapd.users:
        slapd.add_user("iris", "iris-pass")
    with DelayedDirectory(slapd.port, 0.0) as far:
        async with TestClient(TestServer(make_app(far_config(slapd, far)))) as client:
            for i in range(5):
                wrong = await client.get("/auth", headers={**basic("iris", f"no-{i}"), **from_address(i)})
                assert wrong.status == 401
            binds = far.binds_as(slapd.user_dn("iris"))
            # slapd matches İ (U+0130) to i: "İrİs" is iris, and meets iris's ban before any bind.
            folded = await client.get("/auth", headers={**basic("İrİs", "iris-pass"), **from_address(50)})
            assert folded.status == 401
            assert far.binds_as(slapd.user_dn("iris")) == binds


async def test_a_ban_never_ends_a_signed_in_session(slapd: Slapd) -> None:
    from tests.test_signin import auth as with_session
    from tests.test_signin import session_of
    from tests.test_signin import settings as signin_settings

    data = signin_settings(slapd, regulation={"max_failures": 3})
    async with TestClient(TestServer(make_app(parse_config(data)))) as client:
        session = await session_of(client, "alice", "alice-pass")
        for i in range(5):
            assert (await client.get("/auth", headers={**basic("alice", "nope"), **from_address(i)})).status == 401
        assert (await client.get("/auth", headers=basic("alice", "nope"))).status == 401  # banned
        response = await with_session(client, session)
        assert response.status == 200 and response.headers["Remote-User"] == "alice"


async def test_a_bind_left_unanswered_counts_and_goes_nowhere_else(slapd: Slapd) -> None:
    # A slow (or slowed) directory answers users' binds after ldap.timeout: each went out and may
    # have been counted by the directory, so each counts here, and none is sent to another server.
    with DelayedDirectory(slapd.port, 1.5, only_binds_under=PEOPLE) as far, \
            DelayedDirectory(slapd.port, 0.0) as other:
        config = config_for(slapd, server_uri=[far.uri, other.uri], timeout=1,
                            top={"regulation": {"max_failures": 3}, "cache": {"failure_timeout": 0}})
        async with TestClient(TestServer(make_app(config))) as client:
            statuses = [(await client.get("/auth", headers={**basic("alice", f"wrong-{i}"), **from_address(i)})).status
                        for i in range(8)]
        await asyncio.sleep(1.6)  # the last held bind reaches slapd
    alice = slapd.user_dn("alice")
    assert far.binds_as(alice) + other.binds_as(alice) <= 3
    assert statuses[:far.binds_as(alice)] == [503] * far.binds_as(alice) and 401 in statuses


def test_known_addresses_last_as_long_as_cached_logins(slapd: Slapd) -> None:
    app = make_app(config_for(slapd, cache_timeout=28_800))
    verifier = app[SIDECAR].authenticators[-1].verifier  # type: ignore[attr-defined]
    assert verifier.regulator.remember == 28_800


def test_an_expiring_map_is_bounded_and_lapses_in_order() -> None:
    from sidecar.cache import ExpiringMap

    clock = Clock()
    entries: ExpiringMap[int, str] = ExpiringMap(3, 10.0, clock)
    for i in range(5):
        entries[i] = str(i)
        clock.now += 1
    assert len(entries) == 3 and entries.get(0) is None and entries.get(4) == "4"
    entries[2] = "two"  # put again: lapses last now
    clock.now += 9.5  # 3 and 4 have lapsed (put at 1003 and 1004), 2 was put again at 1005
    assert entries.get(3) is None and entries.get(2) == "two" and entries.values() == ["two"]
    clock.now += 1
    assert entries.get(2) is None


async def test_attempts_that_waited_and_then_shared_one_look_give_their_places_back(slapd: Slapd) -> None:
    # Two colleagues' checks fill the address's budget; two requests of a third arrive with the same
    # password, wait, and are answered by one look at the directory: every place must come back.
    with DelayedDirectory(slapd.port, 0.2, only_binds_under=PEOPLE) as far:
        config = config_for(slapd, server_uri=far.uri, top={"regulation": {"max_failures": 2}})
        app = make_app(config)
        async with TestClient(TestServer(app)) as client:
            office = from_address(7)
            answers = await asyncio.gather(
                client.get("/auth", headers={**basic("alice", "alice-pass"), **office}),
                client.get("/auth", headers={**basic("bob", "bob-pass"), **office}),
                client.get("/auth", headers={**basic("carol", "carol-pass"), **office}),
                client.get("/auth", headers={**basic("carol", "carol-pass"), **office}),
            )
            assert [a.status for a in answers] == [200] * 4
            regulator = app[SIDECAR].authenticators[-1].verifier.regulator  # type: ignore[attr-defined]
            assert [record.in_flight for record in regulator._records.values()] == [0] * len(regulator._records)


async def test_an_attempt_that_leaves_while_the_fleet_is_asked_returns_its_places() -> None:
    from sidecar.store import Budget, Rules, Spent
    from sidecar.store.fleet import Fleet
    from sidecar.store.memory import MemoryStore

    class Slow(MemoryStore):
        async def reserve(self, ticket: str, budgets: Sequence[Budget], rules: Rules) -> Spent | None:
            await asyncio.sleep(60)
            return None

    regulator = Regulator(max_failures=1, window=60, ban=60)
    regulator.share(Fleet(Slow(), poll_every=60))
    attempt = asyncio.ensure_future(regulator.admit("alice", "192.0.2.1"))
    await asyncio.sleep(0.05)
    assert regulator.banned("alice", None) is not None  # its place is held while the fleet is asked
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert regulator.banned("alice", "192.0.2.1") is None  # and returned when the caller leaves
