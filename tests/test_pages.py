"""Login and message pages: escaped by construction, accessible, no inline code, strict static files."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from sidecar.pages import NAMED_COLOURS, SURFACES, Pages, Theme, accent_hex, contrast, public_files

HOSTILE = [
    "<script>alert(1)</script>",
    '"onmouseover="alert(1)',
    "' onfocus='alert(1)",
    "Tom & Jerry &amp; &lt;b&gt;",
    "</textarea></title><img src=x onerror=alert(1)>",
    "$title ${username} $$",
]
VOID = {"meta", "link", "img", "input", "br", "hr"}
FOCUSABLE = {"a", "input", "button", "select", "textarea"}
STATIC = Path(__file__).resolve().parents[1] / "sidecar" / "static"


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    text: str = ""
    parent: Element | None = field(default=None, repr=False)


class Page(HTMLParser):
    """Every element in document order, each with the text inside it."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.doctype = ""
        self._open: Element | None = None
        self.feed(html)
        self.close()

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs), parent=self._open)
        self.elements.append(element)
        if tag not in VOID:
            self._open = element

    def handle_endtag(self, tag: str) -> None:
        assert self._open is not None and self._open.tag == tag, f"unbalanced </{tag}>"
        self._open = self._open.parent

    def handle_data(self, data: str) -> None:
        element = self._open
        while element is not None:
            element.text += data
            element = element.parent

    def all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        return [e for e in self.elements if (tag is None or e.tag == tag)
                and all(e.attrs.get(k) == v for k, v in attrs.items())]

    def one(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"expected one {tag} {attrs}, found {len(found)}"
        return found[0]


@pytest.fixture
def pages() -> Pages:
    return Pages(Theme(help_text="Call the desk.", help_url="https://help.example.com/"),
                 static_prefix="/_sidecar/static")


def login(pages: Pages, **kwargs: Any) -> Page:
    defaults: dict[str, Any] = {"action": "/_sidecar/login", "csrf_token": "token", "rd": "/"}
    return Page(pages.login(**{**defaults, **kwargs}))


def text(element: Element) -> str:
    return " ".join(element.text.split())


# Escaping


@pytest.mark.parametrize("evil", HOSTILE)
def test_request_values_are_escaped_in_the_login_page(pages: Pages, evil: str) -> None:
    page = login(pages, username=evil, error=evil, rd=evil, csrf_token=evil,
                 providers=[(evil, "https://sso.example.com/?q=" + evil.replace(" ", "+"))])
    assert page.one("input", name="username").attrs["value"] == evil
    assert page.one("input", name="rd").attrs["value"] == evil
    assert page.one("input", name="csrf").attrs["value"] == evil
    assert text(page.one(id="error")) == "Error: " + " ".join(evil.split())
    assert text(page.one("a", **{"class": "button secondary"})) == " ".join(evil.split())
    assert not page.all("script") and not page.all("textarea")
    assert len(page.all("img")) == 0
    assert not [name for e in page.elements for name in e.attrs if name.startswith("on")]


@pytest.mark.parametrize("evil", HOSTILE)
def test_theme_values_are_escaped(evil: str) -> None:
    pages = Pages(Theme(title=evil, help_text=evil, help_url="https://help.example.com/?" + evil.replace(" ", "+")),
                  static_prefix="/_sidecar/static")
    page = login(pages)
    assert text(page.one("title")) == text(page.one("h1")) == " ".join(evil.split())
    assert text(page.one("footer")).startswith(" ".join(evil.split()))
    assert page.one("footer").text.count("Get help signing in") == 1
    assert not page.all("script") and not page.all("textarea")


@pytest.mark.parametrize("evil", HOSTILE)
def test_message_values_are_escaped(pages: Pages, evil: str) -> None:
    page = Page(pages.message(title=evil, text=evil, link=(evil, "/_sidecar/login?rd=" + evil.replace(" ", "+")),
                              status_hint=evil))
    assert text(page.one("title")) == text(page.one("h1")) == " ".join(evil.split())
    assert text(page.one("p", **{"class": "text"})) == " ".join(evil.split())
    assert text(page.one("p", **{"class": "hint"})) == " ".join(evil.split())
    link = page.one("a", **{"class": "button"})
    assert text(link) == " ".join(evil.split())
    assert link.attrs["href"] == "/_sidecar/login?rd=" + evil.replace(" ", "+")
    assert not page.all("script")


def test_a_quote_in_a_url_stays_inside_the_attribute(pages: Pages) -> None:
    url = 'https://sso.example.com/start?x="><script>alert(1)</script>'
    page = login(pages, providers=[("SSO", url)])
    assert page.one("a", **{"class": "button secondary"}).attrs["href"] == url
    assert not page.all("script")


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JavaScript:alert(1)", " javascript:alert(1)", "java\tscript:alert(1)",
    "java\nscript:alert(1)", "data:text/html,<script>alert(1)</script>", "vbscript:msgbox(1)",
    "//evil.example/", "/\\evil.example/", "\\\\evil.example", "https:evil.example", "relative/path",
    "ftp://files.example.com/", "", "http://[::1",
])
def test_unsafe_urls_are_refused_everywhere(pages: Pages, url: str) -> None:
    with pytest.raises(ValueError):
        pages.login(action="/_sidecar/login", csrf_token="t", rd="/", providers=[("SSO", url)])
    with pytest.raises(ValueError):
        pages.login(action=url, csrf_token="t", rd="/")
    with pytest.raises(ValueError):
        pages.message(title="t", text="t", link=("Go", url))
    with pytest.raises(ValueError, match="help_url"):
        Theme(help_url=url)


def test_rd_is_data_not_a_link(pages: Pages) -> None:
    page = login(pages, rd="javascript:alert(1)")
    assert page.one("input", name="rd").attrs == {"type": "hidden", "name": "rd", "value": "javascript:alert(1)"}
    assert not [e for e in page.all("a") if "javascript" in (e.attrs.get("href") or "")]


# Structure and accessibility


def test_the_page_declares_language_viewport_referrer_and_robots(pages: Pages) -> None:
    page = login(pages)
    assert page.doctype.lower() == "doctype html"
    assert page.one("html").attrs["lang"] == "en"
    meta = {e.attrs.get("name"): e.attrs.get("content") for e in page.all("meta") if "name" in e.attrs}
    assert meta == {"viewport": "width=device-width, initial-scale=1", "referrer": "same-origin",
                    "robots": "noindex"}
    assert page.one("meta", charset="utf-8")
    assert len(page.all("main")) == 1 and len(page.all("h1")) == 1


def test_the_form_posts_username_password_csrf_and_rd(pages: Pages) -> None:
    page = login(pages, action="/_sidecar/login", csrf_token="c", rd="/dcim/")
    form = page.one("form")
    assert form.attrs["method"] == "post" and form.attrs["action"] == "/_sidecar/login"
    assert [(e.attrs["name"], e.attrs["type"]) for e in page.all("input")] == [
        ("csrf", "hidden"), ("rd", "hidden"), ("username", "text"), ("password", "password")]
    assert page.one("button").attrs["type"] == "submit"
    assert "value" not in page.one("input", name="password").attrs


def test_every_visible_input_has_a_label_tied_to_it(pages: Pages) -> None:
    page = login(pages)
    labels = {e.attrs["for"]: text(e) for e in page.all("label")}
    visible = [e for e in page.all("input") if e.attrs["type"] != "hidden"]
    assert {e.attrs["id"]: labels.get(e.attrs["id"] or "") for e in visible} == {
        "username": "Username", "password": "Password"}


def test_inputs_carry_autocomplete_hints(pages: Pages) -> None:
    page = login(pages)
    username, password = page.one(id="username").attrs, page.one(id="password").attrs
    assert username["autocomplete"] == "username"
    assert username["autocapitalize"] == "none" and username["spellcheck"] == "false"
    assert password["autocomplete"] == "current-password"
    assert "required" in username and "required" in password


def test_without_an_error_there_is_no_alert_and_focus_starts_on_the_username(pages: Pages) -> None:
    page = login(pages, username="alice")
    assert not page.all(role="alert") and not page.all(id="error")
    assert not [e for e in page.elements if "aria-invalid" in e.attrs or "aria-describedby" in e.attrs]
    assert [e.attrs["id"] for e in page.elements if "autofocus" in e.attrs] == ["username"]
    assert page.one(id="username").attrs["value"] == "alice"


def test_an_error_is_an_alert_described_on_the_password_which_takes_focus(pages: Pages) -> None:
    page = login(pages, username="alice", error="Wrong username or password.")
    alert = page.one(role="alert")
    assert alert.attrs["id"] == "error"
    assert text(alert) == "Error: Wrong username or password."  # a word, not colour alone
    password = page.one(id="password").attrs
    assert password["aria-invalid"] == "true" and password["aria-describedby"] == "error"
    assert [e.attrs["id"] for e in page.elements if "autofocus" in e.attrs] == ["password"]
    assert page.elements.index(alert) < page.elements.index(page.one("form"))


def focus_order(page: Page) -> list[str]:
    focusable = [e for e in page.elements if e.tag in FOCUSABLE and e.attrs.get("type") != "hidden"]
    return [e.attrs.get("id") or f"{e.tag}:{text(e)}" for e in focusable]


def test_focus_follows_username_password_submit_then_help(pages: Pages) -> None:
    page = login(pages)
    assert focus_order(page) == ["username", "password", "button:Sign in", "a:Get help signing in"]
    assert not [e for e in page.elements if "tabindex" in e.attrs]


def test_providers_are_links_after_the_form_and_absent_when_none(pages: Pages) -> None:
    page = login(pages, providers=[("Sign in with Okta", "https://okta.example.com/start"),
                                   ("Sign in with Entra", "/_sidecar/oidc/entra")])
    assert focus_order(page) == ["username", "password", "button:Sign in", "a:Sign in with Okta",
                                 "a:Sign in with Entra", "a:Get help signing in"]
    assert [e.attrs["href"] for e in page.all("a", **{"class": "button secondary"})] == [
        "https://okta.example.com/start", "/_sidecar/oidc/entra"]
    assert not login(pages).all(**{"class": "providers"})


def test_help_region_only_when_configured() -> None:
    bare = login(Pages(Theme(), static_prefix="/s"))
    assert not bare.all("footer") and focus_order(bare)[-1] == "button:Sign in"
    text_only = login(Pages(Theme(help_text="Ask Bob."), static_prefix="/s"))
    assert text(text_only.one("footer")) == "Ask Bob." and not text_only.all("a")
    link_only = login(Pages(Theme(help_url="/help"), static_prefix="/s"))
    assert link_only.one("a").attrs["href"] == "/help"


def test_a_logo_is_decorative_beside_the_heading() -> None:
    logo = "data:image/svg+xml;base64,PHN2Zy8+"
    page = login(Pages(Theme(logo_url=logo), static_prefix="/s"))
    assert page.one("img").attrs == {"class": "logo", "src": logo, "alt": ""}
    assert not login(Pages(Theme(), static_prefix="/s")).all("img")


def test_message_page_without_link_or_hint(pages: Pages) -> None:
    page = Page(pages.message(title="Signed out", text="You have been signed out."))
    assert text(page.one("h1")) == "Signed out" and text(page.one("title")) == "Signed out"
    assert not page.all(**{"class": "hint"}) and not page.all("a", **{"class": "button"})
    assert page.one("html").attrs["lang"] == "en"


# Not allowed here


@pytest.mark.parametrize("evil", HOSTILE)
def test_the_forbidden_page_names_the_user_escaped_and_offers_to_sign_out(pages: Pages, evil: str) -> None:
    back = 'https://app.test/?a="<b>&c'
    page = Page(pages.forbidden(username=evil, sign_out="/_sidecar/logout", back=back))
    assert text(page.one("title")) == text(page.one("h1")) == "Not allowed here"
    said = page.one("p", **{"class": "text"})
    assert text(said) == f"You are signed in as {' '.join(evil.split())}, but you are not allowed here."
    assert page.one("strong").parent is said and page.one("strong").text == evil
    assert not page.all("script") and not page.all("img")
    sign_out, start = [e for e in page.all("a") if (e.attrs.get("class") or "").startswith("button")]
    assert (text(sign_out), sign_out.attrs["href"], sign_out.attrs["class"]) == (
        "Sign out", "/_sidecar/logout", "button")
    assert (text(start), start.attrs["href"], start.attrs["class"]) == (
        "Back to the start page", back, "button secondary")


def test_the_forbidden_page_without_a_session_names_nobody(pages: Pages) -> None:
    page = Page(pages.forbidden(username=None, sign_out="/_sidecar/logout", back="/"))
    assert text(page.one("p", **{"class": "text"})) == "You are not allowed here."
    (back,) = page.all("a", **{"class": "button"})
    assert (text(back), back.attrs["href"]) == ("Back to the start page", "/")
    assert "Sign out" not in page.one("main").text


def test_the_forbidden_page_refuses_links_a_browser_would_misread(pages: Pages) -> None:
    for bad in ("javascript:alert(1)", "//evil.test/", "/\\evil.test"):
        with pytest.raises(ValueError):
            pages.forbidden(username="u", sign_out=bad, back="/")
        with pytest.raises(ValueError):
            pages.forbidden(username=None, sign_out="/o", back=bad)


def test_the_public_files_are_a_real_icon_and_a_robots_txt_that_keeps_crawlers_out() -> None:
    files = public_files()
    icon, kind = files["favicon.ico"]
    assert kind == "image/x-icon"
    # An ICO directory of one 32x32 image holding a PNG (every browser reads that).
    reserved, type_, count = struct.unpack("<HHH", icon[:6])
    width, height, *_, size, offset = struct.unpack("<BBBBHHII", icon[6:22])
    assert (reserved, type_, count, width, height) == (0, 1, 1, 32, 32)
    assert icon[offset:offset + 8] == b"\x89PNG\r\n\x1a\n" and offset + size == len(icon)
    assert files["robots.txt"] == (b"User-agent: *\nDisallow: /\n", "text/plain; charset=utf-8")
    pages = Pages(Theme(), static_prefix="/s")
    assert pages.static_file("favicon.ico") == files["favicon.ico"]


def renders(pages: Pages) -> list[str]:
    return [
        pages.login(action="/l", csrf_token="t", rd="/"),
        pages.login(action="/l", csrf_token="t", rd="/", error="e", providers=[("a", "/b")]),
        pages.message(title="t", text="x", link=("l", "/"), status_hint="h"),
        pages.forbidden(username="u", sign_out="/o", back="/"),
        pages.forbidden(username=None, sign_out="/o", back="/"),
    ]


def test_nothing_inline_that_the_csp_would_block() -> None:
    pages = Pages(Theme(logo_url="/logo.png", help_text="h", help_url="/h"), static_prefix="/s")
    for html in renders(pages):
        page = Page(html)
        assert not page.all("script") and not page.all("style")
        assert not [(e.tag, name) for e in page.elements for name in e.attrs
                    if name == "style" or name.startswith("on")]
        assert all(e.attrs["rel"] in ("stylesheet", "icon") and (e.attrs.get("href") or "").startswith("/s/")
                   for e in page.all("link"))


def test_csp_is_strict() -> None:
    assert Pages.CSP == ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                         "frame-ancestors 'none'; base-uri 'none'")


# Theme validation


@pytest.mark.parametrize(("accent", "hex_value"), [
    ("#2563eb", "#2563eb"), ("#ABC", "#aabbcc"), ("#A1b2C3", "#a1b2c3"), ("navy", "#000080"), ("Teal", "#008080"),
])
def test_accepted_accents(accent: str, hex_value: str) -> None:
    assert accent_hex(accent) == hex_value
    assert f"--accent: {hex_value};" in Pages(Theme(accent=accent), static_prefix="/s").theme_css()


@pytest.mark.parametrize("accent", [
    "", "red;}body{display:none", "#12", "#1234", "#12345", "#1234567", "#ggg", "rgb(0,0,0)", "url(x)",
    "expression(alert(1))", "navy ", " #fff", "#fff;", "var(--x)", "inherit", "transparent", "white",
    "#fff\n", "\\23 fff",
])
def test_refused_accents(accent: str) -> None:
    with pytest.raises(ValueError, match="accent"):
        Theme(accent=accent)


@pytest.mark.parametrize("logo", [
    "https://cdn.example.com/logo.png", "//cdn.example.com/logo.png", "javascript:alert(1)",
    "data:text/html,<script>", "logo.png", "/logo .png", "data:image/svg",
])
def test_refused_logos(logo: str) -> None:
    with pytest.raises(ValueError, match="logo_url"):
        Theme(logo_url=logo)


def test_every_theme_problem_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as caught:
        Theme(title=" ", accent="pink", logo_url="https://x/", help_url="javascript:x")
    message = str(caught.value)
    assert all(key in message for key in ("title", "accent", "logo_url", "help_url"))


def test_static_prefix_must_be_a_local_path() -> None:
    for prefix in ("https://cdn.example.com/static", "static", "//cdn.example.com", "/a b"):
        with pytest.raises(ValueError, match="static_prefix"):
            Pages(Theme(), static_prefix=prefix)
    hrefs = [e.attrs.get("href") or "" for e in login(Pages(Theme(), static_prefix="/_sidecar/static/")).all("link")]
    assert [href.split("?")[0] for href in hrefs] == ["/_sidecar/static/login.css", "/_sidecar/static/theme.css",
                                                       "/_sidecar/static/favicon.ico"]


# Colours


@pytest.mark.parametrize("accent", ["#2563eb", "#ffd400", "#000", "#fff0f0", "#777", *NAMED_COLOURS])
def test_theme_css_keeps_text_and_focus_readable(accent: str) -> None:
    css = Pages(Theme(accent=accent), static_prefix="/s").theme_css()
    light_part, dark_part = css.split("@media (prefers-color-scheme: dark)")
    colours = dict(re.findall(r"--([\w-]+): (#[0-9a-f]{6})", light_part))
    dark = dict(re.findall(r"--([\w-]+): (#[0-9a-f]{6})", dark_part))
    assert colours["accent"] == accent_hex(accent) and list(dark) == ["accent-ink"]
    assert contrast(colours["on-accent"], colours["accent"]) >= 4.5
    assert contrast(colours["accent-ink"], SURFACES[0]) >= 4.5
    assert contrast(dark["accent-ink"], SURFACES[1]) >= 4.5


def test_surfaces_match_login_css() -> None:
    css = (STATIC / "login.css").read_text()
    assert f"--card: {SURFACES[0]};" in css and f"--card: {SURFACES[1]};" in css


def test_login_css_covers_focus_dark_mode_motion_and_phones() -> None:
    css = (STATIC / "login.css").read_text()
    for needle in (":focus-visible", "var(--accent-ink)", "prefers-color-scheme: dark",
                   "prefers-reduced-motion: reduce", "@media (max-width"):
        assert needle in css
    assert "@import" not in css and "url(" not in css and "@font-face" not in css


# Static files


def test_static_files_are_served_from_the_allowlist(pages: Pages) -> None:
    served = pages.static_file("login.css")
    assert served is not None
    assert served == ((STATIC / "login.css").read_bytes(), "text/css; charset=utf-8")
    theme = pages.static_file("theme.css")
    assert theme is not None and theme[0].decode() == pages.theme_css() and theme[1].startswith("text/css")


@pytest.mark.parametrize("name", [
    "../pages.py", "%2e%2e/pages.py", "..%2fpages.py", "/etc/passwd", "/work/main/sidecar/static/login.css",
    "static/login.css", "./login.css", "login.css/", "LOGIN.CSS", "login.css\x00", "..", ".", "",
    "../templates/login.html", "..\\pages.py", "theme.css/../../pages.py",
])
def test_static_files_refuse_anything_else(pages: Pages, name: str) -> None:
    assert pages.static_file(name) is None


def test_stylesheet_links_change_when_the_theme_does() -> None:
    def links(accent: str) -> list[str | None]:
        return [e.attrs["href"] for e in login(Pages(Theme(accent=accent), static_prefix="/s")).all("link")]

    blue, green = links("blue"), links("green")
    assert blue[0] == green[0] and blue[1] != green[1]
    assert [href.split("?")[0] for href in blue if href] == ["/s/login.css", "/s/theme.css", "/s/favicon.ico"]


def test_a_confirm_page_with_a_second_choice_posts_the_same_form(pages: Pages) -> None:
    html = pages.confirm(title="Sign out", text="Sure?", action="/_sidecar/logout", csrf_token="tok",
                         button="Sign out", choice=("everywhere", 'Everywhere "<b>"'))
    (form,) = re.findall(r"<form.*?</form>", html, re.DOTALL)
    assert form.count("<button") == 2 and 'name="csrf" value="tok"' in form
    assert form.index("autofocus") < form.index('name="scope" value="everywhere"')  # the usual choice first
    assert "Everywhere &quot;&lt;b&gt;&quot;" in form and "<b>" not in form
    assert pages.confirm(title="t", text="x", action="/a", csrf_token="t", button="Go").count("<button") == 1
