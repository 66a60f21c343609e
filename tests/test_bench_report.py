"""bench/: the report's arithmetic (each issue-15 target met or missed with its ratio) and the
py-spy summary, on made-up figures; no load, no timing (speed is measured by bench/run.py); and
that bench/inproc.py measures what it says."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import need

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run: Any = load("run")
profile_top: Any = load("profile_top")


def row(name: str, rps: float, p99: float = 1.0, cpu: float = 0.0, trips: float | None = None) -> Any:
    return run.Result(name, rps, p99, int(rps * 5), 0, cpu_us=cpu, round_trips=trips)


ROWS = [row("ceiling", 20_000), row("ceiling-paced", 1000, p99=2.0), row("nginx-hop-paced", 1000, p99=2.2),
        row("bare-aiohttp", 10_000, cpu=50),
        row("bare-aiohttp-paced", 1000, p99=2.4), row("basic-warm", 9_500, cpu=60),
        row("basic-nocache", 2 * run.NOCACHE_BASELINE, trips=3.0),
        row("basic-bind-only", 4 * run.NOCACHE_BASELINE, trips=1.0), row("cookie-warm", 8_000, cpu=55),
        row("cookie-paced", 1000, p99=2.5), row("bearer-warm", 9_000, cpu=100)]


def test_each_target_is_met_or_missed_with_its_ratio() -> None:
    memory = run.MemoryResult(10_000, 100_000, 60.0, 80.0, 99.0, 101.0)
    lines = run.targets(ROWS, memory)
    text = "\n".join(lines)
    assert "- cookie-warm / bare-aiohttp: **80.0%** (target ≥ 90%: MISSED); per CPU second of the server: 91%" in text
    assert "- basic-warm / bare-aiohttp: **95.0%** (target ≥ 90%: met)" in text
    assert "- bearer-warm / bare-aiohttp: **90.0%** (target ≥ 90%: met); per CPU second of the server: 50%" in text
    assert ("**1.25×** (2.50 ms / 2.00 ms; target ≤ 1.3×: met; nginx-hop-paced: 2.20 ms, 1.10× the ceiling's; "
            "bare-aiohttp-paced: 2.40 ms, 1.20× the ceiling's)") in text
    assert "basic-bind-only / basic-nocache" in text
    assert ("**2.00×** (target ≥ 1.5×: met; 1.00 directory round trips per login against 3.00; "
            "basic-nocache is 2.00× its recorded baseline") in text
    assert "**99.0 MB** (target ≤ 100 MB: met" in text
    assert "redis and log.format json: not measured (--fleet)" in text


def test_the_table_gives_ratios_to_bare_aiohttp_only_to_rows_loaded_alone() -> None:
    paired = run.combined("cookie-warm-redis", [row("cookie-warm-redis", 5_000, cpu=70)])
    lines = run.table([*ROWS, paired])
    assert "| cookie-warm | 8,000 | 80% | 1.00 | 40,000 | 0 | 55 |  |" in lines
    assert "| basic-nocache |" in "\n".join(lines) and "| 3.00 |" in "\n".join(lines)
    assert "| cookie-paced | 1,000 |  |" in "\n".join(lines)  # paced: a rate set by the bench, no ratio
    assert "| cookie-warm-redis | 5,000 |  |" in "\n".join(lines)


def test_profile_top_counts_self_and_inclusive_once_per_sample(tmp_path: Path) -> None:
    raw = tmp_path / "cookie-warm.txt"
    raw.write_text(
        "<module> (sidecar/__main__.py:3);main (sidecar/server.py:70) 6\n"  # the loop, idle
        "main (sidecar/server.py:70);judge (sidecar/routes.py:160);judge (sidecar/routes.py:170);"
        "digest (hmac.py:198) 3\n"
        "judge (sidecar/routes.py:151) 1\n"
    )
    total, own, inclusive = profile_top.read(raw)
    assert total == 10
    assert own == {profile_top.EVENT_LOOP: 6, "digest (hmac.py)": 3, "judge (sidecar/routes.py)": 1}
    assert inclusive == {"judge (sidecar/routes.py)": 4, "digest (hmac.py)": 3}
    assert profile_top.packages(own) == {"event loop": 6, "other": 3, "sidecar": 1}
    lines = profile_top.top(raw, 2)
    assert lines[0].startswith("cookie-warm: 10 samples; self by package: event loop 60.0%")
    assert "| 60.0% | `(the event loop in C: epoll_wait, uvloop's socket work)` |" in lines


@pytest.mark.server
def test_the_in_process_measure_answers_every_row_with_200(tmp_path: Path) -> None:
    """bench/inproc.py on a real slapd and real sidecar servers: it refuses a row that does not
    answer 200, so a run that prints its rows measured the paths the bench means (no timing here)."""
    import subprocess

    need("slapd")
    done = subprocess.run([sys.executable, str(BENCH / "inproc.py"), "--requests", "1000"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split()[0] for line in done.stdout.splitlines() if "µs a request" in line]
    assert rows == ["bare-aiohttp", "basic-warm", "cookie-warm"]
    assert "basic-warm / bare-aiohttp, by the time a request takes:" in done.stdout
