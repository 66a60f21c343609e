"""A real browser signs in: Chromium (Playwright) -> nginx (deploy/nginx) -> auth-sidecar -> slapd.

Screenshots of the login page (desktop and phone widths) are kept in artifacts/ for people to look at.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import group, ldap_settings, need
from tests.testbed import ROOT, free_port, wait_for_port
from tests.testbed.nginx import Nginx, render_site
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd

ARTIFACTS = ROOT / "artifacts"
PROTECTED = "/devices/?q=rack%201&sort=name"


@dataclass
class Site:
    base: str
    sidecar: SidecarProcess


@pytest.fixture(scope="module")
def site(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    need("nginx")
    workdir: Path = tmp_path_factory.mktemp("browser")
    sidecar_port, listen, app_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{listen}"
    config = {
        "server": {"listen": f"127.0.0.1:{sidecar_port}", "public_url": f"{base}/_sidecar"},
        "ldap": ldap_settings(slapd, group_type="nested_group_of_names", find_group_perms=True,
                              user_flags_by_group={"is_active": group("active")}),
        "access": {"rules": [{"path": "/admin", "groups": ["staff"]}, {"path": "/admin", "policy": "deny"}]},
        # Plain http on loopback, so the cookie cannot be Secure; re-checked every second.
        "sessions": {"keys": [{"id": "k1", "secret": "b" * 40}], "secure": False, "recheck_every": 1,
                     "default_redirect": f"{base}/"},
        "login_page": {"title": "Sign in to NetBox", "help_text": "Use your directory account.",
                       "help_url": "https://help.example.com/"},
    }
    app = subprocess.Popen([sys.executable, str(ROOT / "examples/demo/app.py"), "--port", str(app_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(app_port)
        with SidecarProcess(workdir, config) as sidecar:
            site_conf = render_site(listen_port=listen, sidecar_port=sidecar_port, app_port=app_port)
            with Nginx(workdir / "nginx", site_conf):
                yield Site(base, sidecar)
    finally:
        app.terminate()
        app.wait(timeout=10)


def test_sign_in_round_trip(site: Site, page: Any) -> None:
    page.goto(site.base + PROTECTED)
    assert "/_sidecar/login?rd=" in page.url
    assert page.title() == "Sign in to NetBox"

    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not-her-password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    assert "Wrong username or password." in alert.inner_text()
    assert page.get_by_label("Password").get_attribute("aria-invalid") == "true"

    page.get_by_label("Password").fill("alice-pass")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(site.base + PROTECTED)
    assert page.url == site.base + PROTECTED  # path and query intact
    assert page.locator("#user").inner_text() == "alice"
    assert "Alice Liddell" in page.content()

    page.goto(site.base + "/_sidecar/logout")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/_sidecar/signed-out")
    assert page.get_by_role("heading").inner_text() == "Signed out"
    page.goto(site.base + PROTECTED)
    assert "/_sidecar/login?rd=" in page.url  # protected again


def test_keyboard_only_sign_in(site: Site, page: Any) -> None:
    page.goto(site.base + PROTECTED)
    focused = page.evaluate("document.activeElement.id")
    assert focused == "username"  # the form starts where typing starts
    page.keyboard.type("carol")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.type("carol-pass")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent").strip() == "Sign in"
    page.keyboard.press("Enter")
    page.wait_for_url(site.base + PROTECTED)
    assert page.locator("#user").inner_text() == "carol"


def test_a_refreshed_cookie_reaches_the_browser_through_nginx(site: Site, page: Any) -> None:
    page.goto(site.base + PROTECTED)
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill("bob-pass")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(site.base + PROTECTED)
    first = session_cookie(page)
    time.sleep(1.2)  # past recheck_every: the next /auth re-checks and sends a new cookie
    page.reload()
    assert page.locator("#user").inner_text() == "bob"
    second = session_cookie(page)
    assert second["value"] != first["value"]
    assert second["httpOnly"] and second["sameSite"] == "Lax" and second["path"] == "/"


def session_cookie(page: Any) -> dict[str, Any]:
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "sidecar_session"]
    return dict(cookie)


@pytest.mark.parametrize(("name", "width", "height"), [("desktop", 1280, 800), ("phone", 390, 844)])
def test_login_page_screenshots(site: Site, browser: Any, name: str, width: int, height: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(site.base + PROTECTED)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"login-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    # Nothing overflows sideways: the form fits the screen at phone width too.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    context.close()
    assert path.stat().st_size > 5_000


def test_a_refused_user_sees_the_branded_page_through_nginx(site: Site, page: Any) -> None:
    sign_in_as(site, page, "carol")
    refused: list[str] = []  # what the CSP blocked, and any part of the page that failed to load
    page.on("console", lambda message: refused.append(message.text) if "Refused" in message.text else None)
    page.on("response", lambda answer: refused.append(f"{answer.status} {answer.url}")
            if answer.status >= 400 and answer.request.resource_type != "document" else None)
    response = page.goto(site.base + "/admin/users")
    assert response is not None and response.status == 403
    assert page.title() == "Not allowed here"
    assert "You are signed in as carol, but you are not allowed here." in page.locator("main").inner_text()
    # Styled like the login page, under its strict CSP: nothing refused, the accent on the button.
    sign_out = page.get_by_role("link", name="Sign out")
    assert sign_out.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(37, 99, 235)"
    assert refused == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "forbidden-desktop.png"), full_page=True)
    sign_out.click()
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url("**/_sidecar/signed-out")
    assert "You are signed out." in page.locator("main").inner_text()
    page.screenshot(path=str(ARTIFACTS / "signed-out-desktop.png"), full_page=True)


def sign_in_as(site: Site, page: Any, username: str) -> None:
    page.goto(site.base + PROTECTED)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"{username}-pass")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(site.base + PROTECTED)


def test_a_cookie_replayed_after_sign_out_is_refused_through_nginx(site: Site, browser: Any, page: Any) -> None:
    sign_in_as(site, page, "carol")
    stolen = session_cookie(page)
    replay = browser.new_context()
    replay.add_cookies([{key: stolen[key] for key in ("name", "value", "domain", "path")}])
    other = replay.new_page()
    other.goto(site.base + PROTECTED)
    assert other.locator("#user").inner_text() == "carol"  # the copied cookie works before signing out
    page.goto(site.base + "/_sidecar/logout")
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url("**/_sidecar/signed-out**")
    other.goto(site.base + PROTECTED)
    assert "/_sidecar/login?rd=" in other.url  # the old value is refused, not only cleared
    replay.close()


def test_signing_out_everywhere_ends_the_other_browsers_session(site: Site, browser: Any, page: Any) -> None:
    sign_in_as(site, page, "alice")
    phone = browser.new_context()
    second = phone.new_page()
    sign_in_as(site, second, "alice")
    page.goto(site.base + "/_sidecar/logout")
    page.get_by_role("button", name="End my sessions everywhere").click()
    page.wait_for_url("**/_sidecar/signed-out**")
    second.goto(site.base + PROTECTED)
    assert "/_sidecar/login?rd=" in second.url
    phone.close()
