"""The demo's upstream application: a page showing whom the request belongs to, and every header.

It trusts the identity headers nginx copies from auth-sidecar's answer, as NetBox would, and lists
all request headers below them, so you see exactly what reached the application.

    python examples/demo/app.py --port 8000      # stdlib only; listens on 127.0.0.1
"""

from __future__ import annotations

import argparse
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

IDENTITY_HEADERS = (
    "Remote-User",
    "Remote-User-First-Name",
    "Remote-User-Last-Name",
    "Remote-User-Email",
    "Remote-User-Group",
    "Remote-User-Staff",
    "Remote-User-Superuser",
)
GROUP_SEPARATOR = "|"  # the sidecar's headers.group_separator

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 56em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .3em 1.5em; }
dt { font-weight: 600; } dd { margin: 0; }
ul { margin: 0; padding-left: 1.2em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
td { font-family: ui-monospace, monospace; word-break: break-all; }
tr.identity { background: #eef6ff; }
.none { color: #888; }
"""


def utf8(value: str) -> str:
    """A header value as UTF-8 text: http.server decodes header bytes as latin-1."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def field(value: str | None) -> str:
    """An escaped value, or a grey dash when the header is missing or empty."""
    return escape(value) if value else '<span class="none">—</span>'


def flag(value: str | None) -> str:
    return "yes" if value == "true" else "no"


def group_list(value: str | None) -> str:
    groups = [group for group in (value or "").split(GROUP_SEPARATOR) if group]
    if not groups:
        return field(None)
    return "<ul>" + "".join(f"<li>{escape(group)}</li>" for group in groups) + "</ul>"


def identity_section(headers: list[tuple[str, str]]) -> str:
    """Who the request belongs to, according to the identity headers (names in any case)."""
    get = {name.lower(): value for name, value in headers}.get
    user = get("remote-user")
    if not user:
        return "<p>No <code>Remote-User</code> header: this request did not pass auth-sidecar.</p>"
    name = " ".join(part for part in (get("remote-user-first-name"), get("remote-user-last-name")) if part)
    rows = [
        ("User", f'<span id="user">{escape(user)}</span>'),
        ("Name", field(name)),
        ("Email", field(get("remote-user-email"))),
        ("Groups", group_list(get("remote-user-group"))),
        ("Staff", flag(get("remote-user-staff"))),
        ("Superuser", flag(get("remote-user-superuser"))),
    ]
    return "<dl>" + "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows) + "</dl>"


def header_table(headers: list[tuple[str, str]]) -> str:
    """Every header in the order received; identity headers highlighted."""
    identity = {name.lower() for name in IDENTITY_HEADERS}
    rows = "".join(
        f"<tr{' class=identity' if name.lower() in identity else ''}>"
        f"<th>{escape(name)}</th><td>{field(value)}</td></tr>"
        for name, value in headers
    )
    return f"<table><tr><th>Header</th><th>Value</th></tr>{rows}</table>"


def page(method: str, path: str, headers: list[tuple[str, str]]) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>auth-sidecar demo</title>
<style>{STYLE}</style></head><body>
<h1>auth-sidecar demo application</h1>
{identity_section(headers)}
<h2>Request headers received for <code>{escape(method)} {escape(path)}</code></h2>
{header_table(headers)}
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        headers = [(name, utf8(value)) for name, value in self.headers.items()]
        body = page(self.command, self.path, headers).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # the page differs per user
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the demo shows the sidecar's log, not one line per page view."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    port = parser.parse_args().port
    with ThreadingHTTPServer(("127.0.0.1", port), Handler) as server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
