"""Render the dashboard's panels, with the data of a real Prometheus, into a PNG (no Grafana needed).

    python deploy/grafana/render.py --demo [--duration 120]          # everything on 127.0.0.1
    python deploy/grafana/render.py --prometheus http://127.0.0.1:9090 --minutes 60

Each panel of auth-sidecar.json is drawn where its gridPos puts it, from its own PromQL queries
asked of Prometheus's HTTP API (``$__rate_interval`` becomes four scrape intervals, every variable
``.*``), as an HTML page that headless Chromium turns into ``dashboard.png``. So the picture shows
what the dashboard's queries really answer, and a query Prometheus refuses fails the render.

``--demo`` first makes that data: a private slapd (tests/testbed), a sidecar with metrics on, a
Prometheus (Debian's ``prometheus`` package) scraping it every second, and, for ``--duration``
seconds, a bounded load on 127.0.0.1 of Basic logins (right, wrong, banned, forbidden), session
cookies, Bearer tokens and requests without credentials, with a reload, a refused reload and a
few sign-ins and sign-outs on the way. Every process is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import html
import json
import math
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # tests/testbed is imported from the work tree, not installed

DASHBOARD = HERE / "auth-sidecar.json"
PICTURE = HERE / "dashboard.png"
WIDTH = 1600  # px for the 24 columns of a Grafana grid
ROW = 34  # px per grid unit of height
SCRAPE = 1  # seconds between two scrapes in --demo
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
# Grafana's dark theme and its classic palette; outcomes keep one colour everywhere.
PALETTE = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#FADE2A", "#37872D"]
COLOURS = {"allow": "#73BF69", "ok": "#73BF69", "deny": "#FF9830", "throttled": "#B877D9", "forbidden": "#F2495C",
           "bad_request": "#FADE2A", "unavailable": "#C4162A", "error": "#E02F44", "unauthenticated": "#5794F2",
           "failed": "#F2495C", "refused": "#F2495C"}
THRESHOLDS = {"green": "#73BF69", "orange": "#FF9830", "red": "#F2495C"}


# -- asking Prometheus ----------------------------------------------------------------------------


def prometheus_api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        body = json.load(answer)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {params.get('query')!r}: {body}")
    return body["data"]["result"]


def expand(expr: str, rate_interval: str) -> str:
    expr = expr.replace("$__rate_interval", rate_interval)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)  # every template variable: all values


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip() or \
        ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"


# -- drawing ---------------------------------------------------------------------------------------


def fmt(value: float, unit: str, decimals: int | None = None) -> str:
    if value is None or math.isnan(value):
        return "–"
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else decimals}f}%"
    if unit == "s":
        for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= scale or scale == 1e-6:
                shown = value / scale
                return f"{shown:.{0 if shown >= 100 else 1 if shown >= 10 else 2}f} {suffix}"
    suffix = {"reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k{suffix}"
    return f"{value:.{0 if value == int(value) or abs(value) >= 100 else 2}f}{suffix}"


def colour(name: str, index: int) -> str:
    for word, hue in COLOURS.items():
        if re.search(rf"\b{word}\b", name):
            return hue
    return PALETTE[index % len(PALETTE)]


Series = list[tuple[str, dict[float, float]]]
Line = tuple[str, dict[float, float] | None, dict[float, float]]  # name, its floor when stacked, its top


def stack(series: Series, times: list[float], stacked: bool) -> tuple[list[Line], float]:
    """Each series' line (on top of the ones before it when stacked), and the highest point."""
    base = {t: 0.0 for t in times}
    lines: list[Line] = []
    peak = 0.0
    for name, points in series:
        tops = {t: (base[t] + points.get(t, 0.0)) if stacked else points.get(t, math.nan) for t in times}
        peak = max(peak, max((v for v in tops.values() if not math.isnan(v)), default=0.0))
        lines.append((name, dict(base) if stacked else None, tops))
        if stacked:
            base = tops
    return lines, peak


def segments(times: list[float], tops: dict[float, float]) -> list[list[float]]:
    """The runs of times that have a value (a gap where a series had none)."""
    runs: list[list[float]] = [[]]
    for t in times:
        if math.isnan(tops[t]):
            runs.append([])
        else:
            runs[-1].append(t)
    return [run for run in runs if run]


def timeseries_svg(series: Series, times: list[float], width: int, height: int, unit: str, stacked: bool) -> str:
    left, right, top, bottom = 62, 10, 8, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    if not series:
        return (f'<svg width="{width}" height="{height}"><text x="{width / 2}" y="{height / 2}" class="nodata">'
                "No data</text></svg>")
    lines, peak = stack(series, times, stacked)
    peak = peak * 1.1 or 1.0
    t0, t1 = times[0], max(times[-1], times[0] + 1)

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return top + plot_h - v / peak * plot_h

    parts = [f'<svg width="{width}" height="{height}">']
    for i in range(5):
        level = peak / 1.1 * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(level):.1f}" y2="{y(level):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y(level) + 4:.1f}" class="axis" text-anchor="end">'
                     f"{html.escape(fmt(level, unit))}</text>")
    for i in range(6):
        t = t0 + (t1 - t0) * i / 5
        label = datetime.datetime.fromtimestamp(t).strftime("%H:%M:%S")
        anchor = "end" if i == 5 else "middle"
        parts.append(f'<text x="{x(t):.1f}" y="{height - 6}" class="axis" text-anchor="{anchor}">{label}</text>')
    for index, (name, under, tops) in enumerate(lines):
        hue = colour(name, index)
        for run in segments(times, tops):
            path = " ".join(f"{x(t):.1f},{y(tops[t]):.1f}" for t in run)
            if under is not None:
                floor = " ".join(f"{x(t):.1f},{y(under[t]):.1f}" for t in reversed(run))
                parts.append(f'<polygon points="{path} {floor}" fill="{hue}" fill-opacity="0.35" stroke="none"/>')
            parts.append(f'<polyline points="{path}" fill="none" stroke="{hue}" stroke-width="1.5"/>' if len(run) > 1
                         else f'<circle cx="{x(run[0]):.1f}" cy="{y(tops[run[0]]):.1f}" r="2" fill="{hue}"/>')
    parts.append("</svg>")
    return "".join(parts)


def stat(panel: dict[str, Any], base: str, end: float, rate_interval: str) -> tuple[str, str]:
    """A stat panel's text and colour: its query's value now, mapped and coloured as configured."""
    defaults, target = panel["fieldConfig"]["defaults"], panel["targets"][0]
    result = prometheus_api(base, "query", query=expand(target["expr"], rate_interval), time=str(end))
    if not result:
        return "No data", "#ccccdc"
    number = float(result[0]["value"][1])
    if panel["options"].get("textMode") == "name":
        return legend(target["legendFormat"], result[0]["metric"]), "#ccccdc"
    for mapping in defaults.get("mappings", []):
        if (shown := mapping["options"].get(f"{number:g}")) is not None:
            return shown["text"], COLOURS.get(shown["text"], "#73BF69")
    steps = defaults.get("thresholds", {}).get("steps") or [{"color": "#ccccdc", "value": None}]
    hue = [step["color"] for step in steps if step["value"] is None or number >= step["value"]][-1]
    return fmt(number, defaults.get("unit", "short"), defaults.get("decimals")), THRESHOLDS.get(hue, hue)


def series_of(panel: dict[str, Any], base: str, times: list[float], rate_interval: str) -> Series:
    found: Series = []
    for target in panel["targets"]:
        result = prometheus_api(base, "query_range", query=expand(target["expr"], rate_interval),
                                start=str(times[0]), end=str(times[-1]), step=str(times[1] - times[0]))
        for item in sorted(result, key=lambda r: legend(target["legendFormat"], r["metric"])):
            points = {float(t): float(v) for t, v in item["values"]}
            if points := {t: v for t, v in points.items() if math.isfinite(v)}:
                found.append((legend(target["legendFormat"], item["metric"]), points))
    return found


def render_panel(panel: dict[str, Any], base: str, times: list[float], rate_interval: str) -> str:
    grid = panel["gridPos"]
    column = WIDTH / 24
    box = (f'left:{grid["x"] * column + 4:.0f}px;top:{grid["y"] * ROW + 4}px;'
           f'width:{grid["w"] * column - 8:.0f}px;height:{grid["h"] * ROW - 8}px')
    if panel["type"] == "row":
        return f'<div class="row" style="{box}">{html.escape(panel["title"])}</div>'
    title = f'<div class="title">{html.escape(panel["title"])}</div>'
    if panel["type"] == "stat":
        text, hue = stat(panel, base, times[-1], rate_interval)
        shown = f'<div class="stat" style="color:{hue}">{html.escape(text)}</div>'
        return f'<div class="panel" style="{box}">{title}{shown}</div>'
    width, height = int(grid["w"] * column - 8), grid["h"] * ROW - 8
    defaults = panel["fieldConfig"]["defaults"]
    series = series_of(panel, base, times, rate_interval)
    keys = "".join(f'<span><i style="background:{colour(name, i)}"></i>{html.escape(name)}</span>'
                   for i, (name, _) in enumerate(series))
    legend_rows = max(1, math.ceil(sum(len(name) * 6.2 + 30 for name, _ in series) / (width - 16)))
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal"
    chart = timeseries_svg(series, times, width - 8, height - 34 - 16 * legend_rows, defaults.get("unit", "short"),
                           stacked)
    return f'<div class="panel" style="{box}">{title}{chart}<div class="legend">{keys}</div></div>'


STYLE = """
body { margin: 0; background: #111217; font: 12px Inter, "DejaVu Sans", sans-serif; color: #ccccdc; }
header { height: 44px; padding: 0 16px; display: flex; align-items: center; gap: 16px;
         border-bottom: 1px solid #2c3235; }
header b { font-size: 16px; color: #fff; } header span { color: #8e8e9e; }
main { position: relative; }
.panel { position: absolute; background: #181b1f; border: 1px solid #2c3235; border-radius: 2px; overflow: hidden; }
.title { padding: 6px 8px; font-weight: 500; font-size: 13px; color: #ccccdc; }
.row { position: absolute; font-size: 14px; font-weight: 500; color: #fff; padding-top: 8px; }
.stat { font-size: 34px; font-weight: 500; text-align: center; margin-top: 14px; }
.grid { stroke: #2c3235; stroke-width: 1; } .axis { fill: #8e8e9e; font-size: 10px; }
.nodata { fill: #8e8e9e; font-size: 14px; text-anchor: middle; }
.legend { padding: 0 8px; font-size: 11px; line-height: 16px; white-space: normal; }
.legend span { margin-right: 12px; white-space: nowrap; }
.legend i { display: inline-block; width: 12px; height: 3px; margin: 0 4px 3px 0; vertical-align: middle; }
"""


def render(base: str, start: float, end: float, out: Path, *, step: int, rate_interval: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    times = [float(t) for t in range(int(start), int(end) + 1, step)]
    panels = [render_panel(p, base, times, rate_interval) for p in dashboard["panels"]]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"]) * ROW + 60
    when = datetime.datetime.fromtimestamp
    span = f"{when(start):%Y-%m-%d %H:%M:%S} – {when(end):%H:%M:%S}"
    page = (f"<!doctype html><meta charset=utf-8><style>{STYLE}</style>"
            f"<header><b>{html.escape(dashboard['title'])}</b><span>{span} · data from Prometheus at "
            f"{html.escape(base)} · deploy/grafana/auth-sidecar.json</span></header>"
            f'<main style="height:{height - 44}px">{"".join(panels)}</main>')
    with tempfile.TemporaryDirectory(prefix="auth-sidecar-render-") as tmp:
        page_file = Path(tmp) / "dashboard.html"
        page_file.write_text(page)
        subprocess.run([CHROMIUM, *CHROMIUM_ARGS, f"--user-data-dir={tmp}/profile", f"--screenshot={out}",
                        f"--window-size={WIDTH},{height}", page_file.as_uri()],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {out}", file=sys.stderr)


# -- the demo: real processes and a bounded load ---------------------------------------------------


@contextlib.contextmanager
def prometheus(workdir: Path, target: str) -> Iterator[str]:
    from tests.testbed import free_port, stop_process, wait_for_port

    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": f"{SCRAPE}s", "evaluation_interval": f"{SCRAPE}s"},
                                  "scrape_configs": [{"job_name": "auth-sidecar",
                                                      "static_configs": [{"targets": [target]}]}]}))
    with open(workdir / "prometheus.log", "wb") as log:
        process = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir}/tsdb",
                                    f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, signal.SIGTERM, timeout=10)


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def scraped(base: str) -> None:
    """Wait for Prometheus's first scrape of the sidecar (``up`` is 1), so the picture starts with data."""
    deadline = time.monotonic() + 30
    while not any(item["value"][1] == "1" for item in prometheus_api(base, "query", query="up")):
        if time.monotonic() > deadline:
            raise RuntimeError("Prometheus did not scrape the sidecar within 30 s")
        time.sleep(0.2)


@contextlib.contextmanager
def static_files(root: Path) -> Iterator[int]:
    """The Bearer issuer's key set, served as a file from this process."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


RATE = 150  # requests a second in --demo


def pick(sessions: list[str], token: str) -> dict[str, str]:
    """The headers of one /auth request of the demo's mix."""
    roll, user = random.random(), f"bench{random.randrange(12)}"
    if roll < 0.50:
        return basic("alice", "alice-pass")
    if roll < 0.62:
        return basic(user, f"{user}-pass")  # their verdicts lapse: the directory is asked again
    if roll < 0.80:
        return {"Cookie": f"sidecar_session={random.choice(sessions)}"}
    if roll < 0.88:
        return {"Authorization": f"Bearer {token}"}
    if roll < 0.92:
        return {}
    if roll < 0.95:
        return {**basic("carol", "carol-pass"), "X-Original-URL": "http://app.test/admin/"}
    # A guesser from one of a few addresses: wrong passwords, bans, then throttled.
    return {**basic(f"intruder{random.randrange(3)}", secrets.token_hex(4)),
            "X-Forwarded-For": f"192.0.2.{random.randrange(4)}"}


class Reloads:
    """A reload a third of the way, a refused one (a bad file) past half-way, then a good one again."""

    def __init__(self, process: Any, seconds: float) -> None:
        self.process = process
        good = process.config_file.read_text()
        bad = good.replace("max_failures: 5", "max_failures: -1")
        self.due = [(0.35 * seconds, good), (0.55 * seconds, bad), (0.65 * seconds, good)]

    def at(self, elapsed: float) -> None:
        while self.due and elapsed >= self.due[0][0]:
            self.process.config_file.write_text(self.due.pop(0)[1])
            os.kill(self.process.process.pid, signal.SIGHUP)


async def load(port: int, process: Any, seconds: float, token: str) -> None:
    """About RATE requests a second for `seconds`, of every kind; a reload, a refused one, sign-ins and outs."""
    import aiohttp

    url = f"http://127.0.0.1:{port}"
    reloads = Reloads(process, seconds)
    # No cookie jar: each request carries exactly the cookies written here.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async def form(path: str, cookies: str, fields: dict[str, str]) -> aiohttp.ClientResponse:
            async with http.get(f"{url}{path}", headers={"Cookie": cookies}) as page:
                csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
            assert csrf is not None, f"no form at {path}"
            async with http.post(f"{url}{path}", data={**fields, "csrf": csrf.group(1)}, allow_redirects=False,
                                 headers={"Cookie": f"{cookies}; sidecar_csrf={csrf.group(1)}"}) as answer:
                return answer

        async def sign_in() -> str:
            answer = await form("/login", "", {"username": "alice", "password": "alice-pass"})
            return answer.cookies["sidecar_session"].value

        sessions = [await sign_in()]
        started, tick = time.monotonic(), 0
        while (elapsed := time.monotonic() - started) < seconds:
            reloads.at(elapsed)
            if tick % RATE == 0:  # a sign-in about every second, and a sign-out of an older one
                sessions.append(await sign_in())
                if len(sessions) > 3:
                    await form("/logout", f"sidecar_session={sessions.pop(0)}", {})
            tick += 1
            async with http.get(f"{url}/auth", headers=pick(sessions, token), allow_redirects=False) as answer:
                await answer.read()
            await asyncio.sleep(max(0.0, started + tick / RATE - time.monotonic()))


def demo(args: argparse.Namespace) -> None:
    from jose import jwt

    from tests.testbed import free_port, wait_for_port
    from tests.testbed.oidc import public_jwk, rsa_jwk
    from tests.testbed.sidecar import SidecarProcess
    from tests.testbed.slapd import Slapd

    with tempfile.TemporaryDirectory(prefix="auth-sidecar-demo-") as tmp:
        workdir = Path(tmp)
        for name in ("slapd", "sidecar", "prometheus", "keys"):
            (workdir / name).mkdir()
        key = rsa_jwk("demo")
        (workdir / "keys" / "jwks.json").write_text(json.dumps({"keys": [public_jwk(key)]}))
        issuer = "https://issuer.demo.test"
        now = int(time.time())
        token = jwt.encode({"iss": issuer, "aud": "demo-api", "sub": "robot", "iat": now, "exp": now + 3600},
                           key, algorithm="RS256", headers={"kid": "demo"})
        with Slapd(workdir / "slapd") as slapd, static_files(workdir / "keys") as keys_port:
            for i in range(12):
                slapd.add_user(f"bench{i}", f"bench{i}-pass")
            port, metrics_port = free_port(), free_port()
            config = {
                "server": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
                "ldap": {"server_uri": slapd.uri, "bind_dn": slapd.service_dn, "bind_password": slapd.service_password,
                         "user_search": {"base_dn": "ou=people,dc=example,dc=com", "filter": "(uid=%(user)s)"},
                         "group_search": {"base_dn": "ou=groups,dc=example,dc=com",
                                          "filter": "(objectClass=groupOfNames)"},
                         "group_type": "group_of_names", "cache_timeout": 5},
                "sessions": {"keys": [{"id": "demo", "secret": secrets.token_urlsafe(32)}], "secure": False},
                "regulation": {"max_failures": 5, "window": 60, "ban": 20},
                "access": {"rules": [{"path": "/admin", "users": ["alice"]}, {"path": "/admin", "policy": "deny"}]},
                "oidc": {"bearer": [{"issuer": issuer, "audiences": ["demo-api"], "algorithms": ["RS256"],
                                     "jwks_url": f"http://127.0.0.1:{keys_port}/jwks.json",
                                     "username_prefix": "api:"}]},
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                "log": {"level": "warning", "format": "json"},
                "admin": {"enabled": False},
            }
            with SidecarProcess(workdir / "sidecar", config) as process:
                wait_for_port(metrics_port)
                with prometheus(workdir / "prometheus", f"127.0.0.1:{metrics_port}") as base:
                    scraped(base)
                    start = time.time()
                    print(f"loading the sidecar for {args.duration} s; Prometheus at {base}", file=sys.stderr)
                    asyncio.run(load(port, process, args.duration, token))
                    time.sleep(2 * SCRAPE)  # the last scrape takes in the end of the load
                    end = time.time()
                    render(base, start, end, args.out, step=SCRAPE, rate_interval=f"{4 * SCRAPE}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", action="store_true", help="make the data first (slapd, sidecar, Prometheus, load)")
    source.add_argument("--prometheus", metavar="URL", help="a Prometheus that scrapes auth-sidecar")
    parser.add_argument("--duration", type=int, default=120, choices=range(10, 601), metavar="10-600",
                        help="--demo: seconds of load (default 120)")
    parser.add_argument("--minutes", type=int, default=60, help="--prometheus: how far back (default 60)")
    parser.add_argument("--step", type=int, default=15, help="--prometheus: seconds between points (default 15)")
    parser.add_argument("--out", type=Path, default=PICTURE, help=f"the PNG (default {PICTURE.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.demo:
        demo(args)
    else:
        end = time.time()
        render(args.prometheus.rstrip("/"), end - 60 * args.minutes, end, args.out, step=args.step,
               rate_interval=f"{4 * args.step}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
