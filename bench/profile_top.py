"""The top entries of a py-spy raw profile (`py-spy record --format raw`), self and inclusive.

    python bench/profile_top.py bench/profiles/cookie-warm.txt [--top 12]

A raw profile is one line per distinct stack, `frame;frame;...;frame COUNT`, outermost first, each
frame `function (file:line)`. A function's *self* share is the samples whose innermost frame it is
(where the time is spent), its *inclusive* share the samples it is anywhere in (counted once per
sample, recursion or not). Frames are named by function and file without the line, so that a
function's lines add up; files are shortened to their last two parts.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")
# The frames every sample of a server starts with, down to the one that runs the event loop. As an
# innermost frame, that one is the loop itself, in C (uvloop): waiting in epoll_wait, or its own
# work on the sockets; as a frame anywhere, they are in every sample and say nothing.
ENTRY = frozenset({"main (sidecar/cli.py)", "main (sidecar/server.py)", "main (bare.py)",
                   "run (uvloop/__init__.py)", "Runner.run (asyncio/runners.py)", "run (asyncio/runners.py)",
                   "<module> (sidecar/__main__.py)", "<module> (bare.py)", "_run_module_as_main (<frozen runpy>)",
                   "_run_code (<frozen runpy>)"})
EVENT_LOOP = "(the event loop in C: epoll_wait, uvloop's socket work)"


def frame_name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    file = "/".join(Path(match["file"]).parts[-2:])
    return f"{match['function']} ({file})"


def read(raw: Path) -> tuple[int, Counter[str], Counter[str]]:
    """Samples in all, and each function's self and inclusive sample counts."""
    total, own, inclusive = 0, Counter[str](), Counter[str]()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        own[EVENT_LOOP if frames[-1] in ENTRY else frames[-1]] += count
        for name in set(frames) - ENTRY:
            inclusive[name] += count
    return total, own, inclusive


def packages(own: Counter[str]) -> Counter[str]:
    """Self samples by where the code is: the event loop, aiohttp (with multidict, yarl), the
    sidecar, the standard library and everything else."""
    found = Counter[str]()
    for name, n in own.items():
        if name == EVENT_LOOP:
            found["event loop"] += n
        elif "(sidecar/" in name:
            found["sidecar"] += n
        elif any(f"({package}/" in name for package in ("aiohttp", "multidict", "yarl")):
            found["aiohttp"] += n
        else:
            found["other"] += n
    return found


def top(raw: Path, entries: int = 12) -> list[str]:
    """Markdown lines: the `entries` largest self and inclusive shares."""
    total, own, inclusive = read(raw)
    if total == 0:
        return [f"{raw.name}: no samples"]
    lines = [f"{raw.stem}: {total:,} samples; self by package: " + ", ".join(
        f"{name} {n / total:.1%}" for name, n in packages(own).most_common()), "", "| self | function |", "|---:|---|"]
    lines += [f"| {n / total:.1%} | `{name}` |" for name, n in own.most_common(entries)]
    lines += ["", "| inclusive | function |", "|---:|---|"]
    lines += [f"| {n / total:.1%} | `{name}` |" for name, n in inclusive.most_common(entries)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    for raw in args.raw:
        print("\n".join(top(raw, args.top)), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
