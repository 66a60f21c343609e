"""Brute-force regulation: counts per username and per address, bans, and what clears them."""

from __future__ import annotations

from sidecar.regulation import Regulator


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


def test_success_clears_the_username_but_not_the_address() -> None:
    clock = Clock()
    r = regulator(clock)
    r.failed("alice", "10.0.0.1")
    r.failed("alice", "10.0.0.1")
    r.succeeded("alice")
    assert r.failed("alice", "10.0.0.1") == ["client '10.0.0.1' banned for 300 s after 3 failures in 60 s"]
    assert r.banned("alice", "10.0.0.2") is None


def test_success_does_not_lift_a_ban() -> None:
    clock = Clock()
    r = regulator(clock)
    for _ in range(3):
        r.failed("alice", None)
    r.succeeded("alice")
    assert r.banned("alice", None) is not None


def test_memory_is_bounded() -> None:
    clock = Clock()
    r = Regulator(max_failures=3, window=60, ban=60, max_entries=100, clock=clock)
    for i in range(10_000):
        r.failed(f"user{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(r._records) <= 100
