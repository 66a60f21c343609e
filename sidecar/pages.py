"""The HTML pages the sidecar serves itself: the login form, "not allowed here", "signed out".

Pages are filled from ``string.Template`` files in ``templates/``: every value is HTML-escaped on
its way in unless it is markup this module built from escaped parts (:class:`_Html`). Nothing is
inline, no ``style=`` and no ``<script>``, so :attr:`Pages.CSP` forbids both. The theme's accent
reaches the page through a generated ``theme.css``, with variants contrast-checked for text and
focus rings in light and dark mode.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from importlib.resources import files
from pathlib import PurePosixPath
from string import Template
from urllib.parse import urlsplit

HEX_COLOUR = re.compile(r"#(?:[0-9a-f]{3}|[0-9a-f]{6})", re.IGNORECASE)
# Named colours an operator may use for the accent, with their values for the contrast checks.
NAMED_COLOURS = {
    "black": "#000000", "navy": "#000080", "darkblue": "#00008b", "mediumblue": "#0000cd",
    "blue": "#0000ff", "royalblue": "#4169e1", "steelblue": "#4682b4", "teal": "#008080",
    "darkcyan": "#008b8b", "seagreen": "#2e8b57", "green": "#008000", "darkgreen": "#006400",
    "olive": "#808000", "purple": "#800080", "indigo": "#4b0082", "rebeccapurple": "#663399",
    "darkslateblue": "#483d8b", "maroon": "#800000", "darkred": "#8b0000", "firebrick": "#b22222",
    "crimson": "#dc143c", "brown": "#a52a2a", "chocolate": "#d2691e", "darkorange": "#ff8c00",
    "slategray": "#708090", "darkslategray": "#2f4f4f", "dimgray": "#696969",
}
ACCENT_RULE = f"expected #rgb, #rrggbb or one of {', '.join(NAMED_COLOURS)}"
# The card colours in login.css (light, dark): accent text and focus rings are checked against them.
SURFACES = ("#ffffff", "#1b1f27")
TEXT_CONTRAST = 4.5  # WCAG AA for text; also ample for the 3:1 a focus ring needs
# An inline image, as CSP's img-src allows: "data:image/png;base64,...".
DATA_IMAGE = re.compile(r"data:image/(?:png|gif|jpeg|webp|avif|svg\+xml)[;,]", re.IGNORECASE)
# Characters browsers strip or reinterpret in URLs ("java\tscript:", "/\\evil.example").
URL_TRAPS = re.compile(r"[\x00-\x20\x7f\\]")
CONTENT_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".svg": "image/svg+xml", ".png": "image/png",
                 ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8"}
THEME_CSS = "theme.css"
FAVICON = "favicon.ico"
# What browsers and crawlers ask every site for unprompted; the proxies answer them from the sidecar
# without sign-in (see deploy/), so they never end at the login page.
PUBLIC_FILES = (FAVICON, "robots.txt")

# Fragments of the pages; their placeholders are filled by _fill like the templates' own.
_STYLESHEET = Template('<link rel="stylesheet" href="$href">\n')
_ICON = Template('<link rel="icon" href="$href">\n')
_LOGO = Template('<img class="logo" src="$src" alt="">\n')
_HELP = Template('<footer class="help">\n$text$link</footer>\n')
_HELP_TEXT = Template("<p>$text</p>\n")
_HELP_LINK = Template('<p><a href="$url">Get help signing in</a></p>\n')
_ERROR = Template('<div class="error" id="error" role="alert"><strong>Error:</strong> $error</div>\n')
_PROVIDERS = Template(
    '<div class="providers">\n<p class="divider"><span>or</span></p>\n<ul role="list">\n$buttons</ul>\n</div>\n'
)
_PROVIDER = Template('<li><a class="button secondary" href="$url">$label</a></li>\n')
_HINT = Template('<p class="hint">$hint</p>\n')
_LINK = Template('<p class="actions"><a class="button" href="$url">$label</a></p>\n')
_LINKS = Template('<p class="actions"><a class="button" href="$url">$label</a>'
                  '<a class="button secondary" href="$second_url">$second_label</a></p>\n')
_SIGNED_IN_AS = Template("You are signed in as <strong>$username</strong>, but you are not allowed here.")
_CONFIRM = Template(
    '<form method="post" action="$action">\n<input type="hidden" name="csrf" value="$csrf_token">\n'
    '<button class="button" type="submit" autofocus>$label</button>\n$choice</form>\n'
)
_CODE = Template("<li><code>$code</code></li>\n")
_FACTOR = Template(
    '<li><span class="factor-name">$label</span> <span class="hint">added $added</span>\n'
    '<form method="post" action="$action">\n<input type="hidden" name="csrf" value="$csrf_token">\n'
    '<input type="hidden" name="factor" value="$id">\n'
    '<button class="button secondary" type="submit" aria-label="Remove $label added $added">Remove</button>\n'
    '</form></li>\n'
)
_SCRIPT = Template('<script src="$src"></script>\n')
# The passkey choice: hidden until static/passkey.js finds WebAuthn in the browser and shows it.
_PASSKEY = Template(
    '<div class="providers">\n<p class="divider"><span>or</span></p>\n'
    '<button class="button secondary" type="button" id="passkey" data-purpose="$purpose" data-options="$options" '
    'data-submit="$submit" hidden>$label</button>\n'
    '<div class="error" id="passkey-error" role="alert" hidden><strong>Error:</strong> <span></span></div>\n'
    '</div>\n$script'
)
_CHOICE = Template('<button class="button secondary" type="submit" name="scope" value="$value">$label</button>\n')


class _Html(str):
    """Markup this module built from escaped parts: a template takes it as it is."""


def _fill(template: Template, **values: str) -> _Html:
    return _Html(template.substitute({k: v if isinstance(v, _Html) else escape(v) for k, v in values.items()}))


def _template(name: str) -> Template:
    return Template((files("sidecar") / "templates" / name).read_text(encoding="utf-8"))


def _is_local_path(url: str) -> bool:
    return url.startswith("/") and not url.startswith("//") and not URL_TRAPS.search(url)


def url_problem(url: str) -> str | None:
    """Why ``url`` is not an absolute http(s) URL or a path on this site (``/...``), or None."""
    if URL_TRAPS.search(url):
        return f"spaces, control characters and backslashes are not allowed: {url!r}"
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"not a URL: {url!r}"
    if not (_is_local_path(url) or (parts.scheme.lower() in ("http", "https") and parts.netloc)):
        return f"expected an http(s) URL or a path starting with /, got {url!r}"
    return None


def check_url(url: str, what: str) -> str:
    """An absolute http(s) URL or a path on this site (``/...``); anything else is a ValueError."""
    if (problem := url_problem(url)) is not None:
        raise ValueError(f"{what}: {problem}")
    return url


def logo_problem(url: str) -> str | None:
    """Why ``url`` cannot be the logo, or None: img-src 'self' data: blocks all but data:image/... and /paths."""
    if DATA_IMAGE.match(url) or _is_local_path(url):
        return None
    return f"expected a data:image/... URI or a path starting with /, got {url[:60]!r}"


def accent_hex(accent: str) -> str:
    """The accent as #rrggbb; ValueError unless it is #rgb, #rrggbb or an allowed colour name."""
    if HEX_COLOUR.fullmatch(accent):
        digits = accent[1:].lower()
        return "#" + (digits if len(digits) == 6 else "".join(d * 2 for d in digits))
    if accent.lower() in NAMED_COLOURS:
        return NAMED_COLOURS[accent.lower()]
    raise ValueError(f"accent: {ACCENT_RULE}, got {accent!r}")


@dataclass(frozen=True)
class Theme:
    """What an operator may change on the pages. Invalid values raise ValueError, all at once:
    :meth:`problems` is the one list of rules, which the configuration loader reports at load."""

    title: str = "Sign in"
    logo_url: str | None = None
    accent: str = "#2563eb"
    help_text: str = ""
    help_url: str | None = None

    def __post_init__(self) -> None:
        found = self.problems(title=self.title, logo_url=self.logo_url, accent=self.accent, help_url=self.help_url)
        if found:
            raise ValueError("; ".join(f"{name}: {problem}" for name, problem in found))

    @staticmethod
    def problems(*, title: str, logo_url: str | None, accent: str, help_url: str | None) -> list[tuple[str, str]]:
        """(field, problem) for each value a Theme would refuse."""
        found = [] if title.strip() else [("title", "must not be empty")]
        try:
            accent_hex(accent)
        except ValueError:
            found.append(("accent", f"{ACCENT_RULE}, got {accent!r}"))
        if logo_url is not None and (problem := logo_problem(logo_url)) is not None:
            found.append(("logo_url", problem))
        if help_url is not None and (problem := url_problem(help_url)) is not None:
            found.append(("help_url", problem))
        return found


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _luminance(colour: str) -> float:
    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """The WCAG contrast ratio of two #rrggbb colours, from 1 to 21."""
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def _mix(colour: str, toward: str, amount: float) -> str:
    mixed = (round(c + (t - c) * amount) for c, t in zip(_rgb(colour), _rgb(toward), strict=True))
    return "#" + "".join(f"{c:02x}" for c in mixed)


def readable_on(colour: str, surface: str) -> str:
    """The colour, darkened or lightened just enough to read as text on the surface."""
    toward = "#000000" if _luminance(surface) > 0.18 else "#ffffff"
    steps = (colour if i == 0 else _mix(colour, toward, i / 20) for i in range(21))
    return next(c for c in steps if contrast(c, surface) >= TEXT_CONTRAST)


def theme_stylesheet(accent: str) -> str:
    """theme.css: the accent for buttons, the text on them, and its readable form for links and focus."""
    colour = accent_hex(accent)
    on_accent = max(("#ffffff", "#000000"), key=lambda text: contrast(text, colour))
    light, dark = (readable_on(colour, surface) for surface in SURFACES)
    return (
        "/* Generated from the theme's accent; login.css uses these variables. */\n"
        f":root {{\n  --accent: {colour};\n  --on-accent: {on_accent};\n  --accent-ink: {light};\n}}\n"
        f"@media (prefers-color-scheme: dark) {{\n  :root {{ --accent-ink: {dark}; }}\n}}\n"
    )


def _shipped_files() -> dict[str, tuple[bytes, str]]:
    # The allowlist: the files shipped in static/ now, by exact name, so no path reaches the disk.
    return {
        entry.name: (entry.read_bytes(), CONTENT_TYPES[suffix])
        for entry in (files("sidecar") / "static").iterdir()
        if entry.is_file() and (suffix := PurePosixPath(entry.name).suffix) in CONTENT_TYPES
    }


def _static_files(theme: Theme) -> dict[str, tuple[bytes, str]]:
    return {**_shipped_files(), THEME_CSS: (theme_stylesheet(theme.accent).encode(), CONTENT_TYPES[".css"])}


def public_files() -> dict[str, tuple[bytes, str]]:
    """(content, content type) of each of PUBLIC_FILES: the icon, and a robots.txt that asks
    crawlers to stay out (what is behind the gateway is for signed-in people)."""
    shipped = _shipped_files()
    return {name: shipped[name] for name in PUBLIC_FILES}


class Pages:
    """Built once at start-up from the theme; renders the pages, and holds their static files.

    ``static_prefix`` is the public path where the caller serves :meth:`static_file` (for example
    ``/_sidecar/static``). Stylesheet links carry a content hash, so they may be cached for long.
    """

    # No inline style or script anywhere; the accent comes from theme.css.
    CSP = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )

    def __init__(self, theme: Theme, *, static_prefix: str) -> None:
        if found := self.problems(static_prefix=static_prefix):
            raise ValueError("; ".join(f"{name}: {problem}" for name, problem in found))
        prefix = static_prefix.rstrip("/")
        self.theme = theme
        self._files = _static_files(theme)
        links = "".join(
            _fill(_STYLESHEET, href=f"{prefix}/{name}?v={self._version(name)}") for name in ("login.css", THEME_CSS)
        ) + _fill(_ICON, href=f"{prefix}/{FAVICON}?v={self._version(FAVICON)}")
        head, tail = _template("layout.html").template.split("$content")
        self._head, self._tail = Template(head), Template(tail)
        self._shared = {"stylesheets": _Html(links), "brand": self._brand()}
        self._login_head = _fill(self._head, title=theme.title, **self._shared)
        self._page_tail = _fill(self._tail, help=self._help())
        self._login, self._message = _template("login.html"), _template("message.html")
        self._factor, self._enrol = _template("factor.html"), _template("enrol.html")
        self._recovery, self._factors = _template("recovery.html"), _template("factors.html")
        self._prefix = prefix

    def _version(self, name: str) -> str:
        return hashlib.sha256(self._files[name][0]).hexdigest()[:12]

    @staticmethod
    def problems(*, static_prefix: str) -> list[tuple[str, str]]:
        """(field, problem) for each value Pages would refuse."""
        if _is_local_path(static_prefix):
            return []
        return [("static_prefix", f"expected a path starting with /, got {static_prefix!r}")]

    def _brand(self) -> _Html:
        return _fill(_LOGO, src=self.theme.logo_url) if self.theme.logo_url else _Html("")

    def _help(self) -> _Html:
        theme = self.theme
        if not (theme.help_text or theme.help_url):
            return _Html("")
        text = _fill(_HELP_TEXT, text=theme.help_text) if theme.help_text else ""
        link = _fill(_HELP_LINK, url=theme.help_url) if theme.help_url else ""
        return _fill(_HELP, text=_Html(text), link=_Html(link))

    def login(self, *, action: str, csrf_token: str, rd: str, username: str = "",
              error: str | None = None, providers: Sequence[tuple[str, str]] = (), passwords: bool = True) -> str:
        """The login page. ``error`` is generic text from the caller; the password is never echoed.

        Without ``passwords`` (single sign-on only) it offers just the providers' buttons.
        """
        buttons = "".join(_fill(_PROVIDER, label=label, url=check_url(url, "provider URL"))
                          for label, url in providers)
        if not passwords:
            body = (_fill(_ERROR, error=error) if error else "") + _fill(_PROVIDERS, buttons=_Html(buttons))
            return self._login_head + body + self._page_tail
        form = _fill(
            self._login,
            action=check_url(action, "action"),
            csrf_token=csrf_token,
            rd=rd,
            username=username,
            error=_fill(_ERROR, error=error) if error else _Html(""),
            # With an error, focus goes to the password (the field to retype) and it names the error.
            username_state=_Html("" if error else " autofocus"),
            password_state=_Html(' aria-invalid="true" aria-describedby="error" autofocus' if error else ""),
            providers=_fill(_PROVIDERS, buttons=_Html(buttons)) if buttons else _Html(""),
        )
        return self._login_head + form + self._page_tail

    def message(self, *, title: str, text: str, link: tuple[str, str] | None = None,
                status_hint: str | None = None) -> str:
        """A page with a heading, a sentence, an optional (label, url) button and a small hint."""
        body = _fill(
            self._message,
            text=text,
            hint=_fill(_HINT, hint=status_hint) if status_hint else _Html(""),
            link=_fill(_LINK, label=link[0], url=check_url(link[1], "link")) if link else _Html(""),
        )
        return _fill(self._head, title=title, **self._shared) + body + self._page_tail

    def forbidden(self, *, username: str | None, sign_out: str, back: str) -> str:
        """"Not allowed here": who is signed in (``username``, or nobody named), a button to sign
        out (to use another account) and a way back to ``back``, the start page."""
        if username is None:
            body = _fill(self._message, text="You are not allowed here.",
                         hint=_fill(_HINT, hint="If you need it, ask your administrator for access."),
                         link=_fill(_LINK, label="Back to the start page", url=check_url(back, "back")))
        else:
            body = _fill(self._message, text=_fill(_SIGNED_IN_AS, username=username),
                         hint=_fill(_HINT, hint="Ask your administrator for access, or sign out and sign in "
                                                "with another account."),
                         link=_fill(_LINKS, label="Sign out", url=check_url(sign_out, "sign-out link"),
                                    second_label="Back to the start page", second_url=check_url(back, "back")))
        return _fill(self._head, title="Not allowed here", **self._shared) + body + self._page_tail

    def confirm(self, *, title: str, text: str, action: str, csrf_token: str, button: str,
                choice: tuple[str, str] | None = None) -> str:
        """A page asking to confirm one action with a CSRF-protected POST (sign-out).

        ``choice`` is a (value, label) second button: it posts the same form with ``scope=value``.
        """
        second = _fill(_CHOICE, value=choice[0], label=choice[1]) if choice else _Html("")
        form = _fill(_CONFIRM, action=check_url(action, "action"), csrf_token=csrf_token, label=button, choice=second)
        body = _fill(self._message, text=text, hint=_Html(""), link=form)
        return _fill(self._head, title=title, **self._shared) + body + self._page_tail

    def factor_code(self, *, action: str, csrf_token: str, rd: str, text: str, error: str | None = None,
                    passkey: str = "") -> str:
        """The second step of a sign-in: a TOTP or recovery code (``passkey``: the passkey choice's markup)."""
        body = _fill(self._factor, action=check_url(action, "action"), csrf_token=csrf_token, rd=rd, text=text,
                     error=_fill(_ERROR, error=error) if error else _Html(""),
                     code_state=_Html(' aria-invalid="true" aria-errormessage="error"' if error else ""),
                     passkey=_Html(passkey))
        return _fill(self._head, title="Second step", **self._shared) + body + self._page_tail

    def factor_enrol(self, *, action: str, csrf_token: str, rd: str, token: str, secret: str, qr: str,
                     username: str, error: str | None = None, passkey: str = "") -> str:
        """Setting up an authenticator app: the QR code (a data: URI the CSP allows), the key as text, a first code."""
        if not qr.startswith("data:image/svg+xml"):
            raise ValueError("qr: expected a data:image/svg+xml URI")
        spaced = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
        body = _fill(self._enrol, action=check_url(action, "action"), csrf_token=csrf_token, rd=rd, token=token,
                     secret=spaced, qr=qr, username=username,
                     error=_fill(_ERROR, error=error) if error else _Html(""),
                     code_state=_Html(' aria-invalid="true" aria-errormessage="error"' if error else ""),
                     passkey=_Html(passkey))
        return _fill(self._head, title="Set up a second factor", **self._shared) + body + self._page_tail

    def recovery_codes(self, *, codes: Sequence[str], url: str) -> str:
        """The recovery codes, shown once, and the way on to ``url``."""
        items = "".join(_fill(_CODE, code=code) for code in codes)
        body = _fill(self._recovery, codes=_Html(items), url=check_url(url, "url"))
        return _fill(self._head, title="Recovery codes", **self._shared) + body + self._page_tail

    def passkey_choice(self, *, purpose: str, options: str, submit: str, label: str) -> str:
        """The button that runs a passkey ceremony (``purpose`` register or signin) from the page it is on."""
        return _fill(_PASSKEY, purpose=purpose, options=check_url(options, "options"),
                     submit=check_url(submit, "submit"), label=label, script=_Html(self.script("passkey.js")))

    def factors(self, *, factors: Sequence[tuple[str, str, str]], recovery_left: int, csrf_token: str,
                remove: str, enrol: str, recovery_action: str, error: str | None = None) -> str:
        """"Manage my factors": each (id, label, date added) with a Remove button, the recovery codes left."""
        items = "".join(_fill(_FACTOR, id=factor_id, label=label, added=added, csrf_token=csrf_token,
                              action=check_url(remove, "remove")) for factor_id, label, added in factors)
        left = ("No recovery codes yet: make some, in case you lose your phone or key." if recovery_left == 0
                else f"{recovery_left} recovery codes left." if recovery_left != 1 else "1 recovery code left.")
        body = _fill(self._factors, items=_Html(items), recovery=left, enrol=check_url(enrol, "enrol"),
                     recovery_action=check_url(recovery_action, "recovery_action"), csrf_token=csrf_token,
                     error=_fill(_ERROR, error=error) if error else _Html(""))
        return _fill(self._head, title="Your second factors", **self._shared) + body + self._page_tail

    def script(self, name: str) -> str:
        """A script tag for a static file of ours (the pages that need one allow script-src 'self')."""
        return _fill(_SCRIPT, src=f"{self._prefix}/{name}?v={self._version(name)}")

    def theme_css(self) -> str:
        """The stylesheet the caller serves at ``{static_prefix}/theme.css``."""
        return self._files[THEME_CSS][0].decode()

    def static_file(self, name: str) -> tuple[bytes, str] | None:
        """(content, content type) of an allowed static file, None for any other name."""
        return self._files.get(name)
