"""Second factors in a real browser: Chromium (Playwright) -> nginx (deploy/nginx) -> auth-sidecar -> slapd.

TOTP is enrolled from the secret the page shows as text and used with computed codes (a wrong and a
replayed one refused, a step-up on /admin after its max age); passkeys are registered and used with
Chromium's virtual authenticator (the DevTools protocol's WebAuthn domain), and a passkey removed
from the store is refused though the authenticator still holds it. Screenshots go to artifacts/.

The site is http://localhost: a secure context for WebAuthn (passkeys refuse plain http elsewhere,
and an IP address as the relying party id).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.conftest import ldap_settings, need
from tests.testbed import ROOT, free_port, wait_for_port
from tests.testbed.nginx import Nginx, render_site
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd

ARTIFACTS = ROOT / "artifacts"
PROTECTED = "/devices/?q=rack%201"
MAX_AGE = 3  # seconds /admin accepts a factor for, before it asks again


@dataclass
class Site:
    base: str
    store: Path


@pytest.fixture(scope="module")
def site(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    need("nginx")
    workdir: Path = tmp_path_factory.mktemp("browser-factors")
    sidecar_port, listen, app_port = free_port(), free_port(), free_port()
    base = f"http://localhost:{listen}"
    store = workdir / "factors.sqlite3"
    config = {
        "server": {"listen": f"127.0.0.1:{sidecar_port}", "public_url": f"{base}/_sidecar"},
        "ldap": ldap_settings(slapd),
        "access": {"second_factor": "required", "rules": [
            {"path": "/admin", "second_factor": "required", "second_factor_max_age": MAX_AGE}]},
        "sessions": {"keys": [{"id": "k1", "secret": "b" * 40}], "secure": False, "default_redirect": f"{base}/"},
        "second_factor": {"key": "f" * 40, "store": str(store)},
        "login_page": {"title": "Sign in to NetBox"},
    }
    app = subprocess.Popen([sys.executable, str(ROOT / "examples/demo/app.py"), "--port", str(app_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(app_port)
        with SidecarProcess(workdir, config):
            site_conf = render_site(listen_port=listen, sidecar_port=sidecar_port, app_port=app_port)
            with Nginx(workdir / "nginx", site_conf):
                yield Site(base, store)
    finally:
        app.terminate()
        app.wait(timeout=10)


class Codes:
    """TOTP codes of one secret, each time step used once (as the sidecar insists)."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.used: set[int] = set()

    def fresh(self) -> str:
        now = int(time.time()) // 30
        step = next(s for s in (now, now + 1, now - 1) if s not in self.used)
        self.used.add(step)
        return self.totp.generate_otp(step)

    def wrong(self) -> str:
        valid = {self.totp.generate_otp(int(time.time()) // 30 + d) for d in (-1, 0, 1)}
        return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def password(page: Any, site: Site, username: str, path: str = PROTECTED) -> None:
    page.goto(site.base + path)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"{username}-pass")
    page.get_by_role("button", name="Sign in").click()


def sign_out(page: Any, site: Site) -> None:
    page.goto(site.base + "/_sidecar/logout")
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url("**/_sidecar/signed-out")


def test_totp_enrolment_sign_in_replay_and_step_up(site: Site, page: Any) -> None:
    password(page, site, "alice")
    page.wait_for_url("**/_sidecar/factor/enrol?rd=*")
    assert page.locator("img.qr").get_attribute("src").startswith("data:image/svg+xml")
    screenshot(page, "factor-enrol-desktop")
    codes = Codes(page.locator("#secret").inner_text().replace(" ", ""))

    page.get_by_label("Code from the app").fill(codes.wrong())
    page.get_by_role("button", name="Confirm").click()
    assert "That code is not right" in page.get_by_role("alert").inner_text()
    assert page.evaluate("document.activeElement.id") == "code"  # focus back where the retyping is
    assert page.get_by_label("Code from the app").get_attribute("aria-invalid") == "true"
    enrolment_code = codes.fresh()
    page.get_by_label("Code from the app").fill(enrolment_code)
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("heading", name="Recovery codes").wait_for()
    assert page.locator(".codes li").count() == 10
    screenshot(page, "factor-recovery-codes")
    page.get_by_role("link", name="Continue").click()
    page.wait_for_url(site.base + PROTECTED)
    assert page.locator("#user").inner_text() == "alice"
    assert "pwd|otp" in page.content()  # Remote-User-Auth-Methods, copied by nginx to the application

    sign_out(page, site)
    password(page, site, "alice")
    page.wait_for_url("**/_sidecar/factor?rd=*")
    screenshot(page, "factor-code-desktop")
    page.goto(site.base + PROTECTED)  # the half-signed-in cookie does not open the application
    assert "/_sidecar/factor?rd=" in page.url
    assert page.evaluate("document.activeElement.id") == "code"  # keyboard only: type, Tab, Enter
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent").strip() == "Continue"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "passkey"
    page.get_by_label("Code").fill(enrolment_code)  # replayed: its time step was used
    page.get_by_role("button", name="Continue").click()
    alert = page.get_by_role("alert")
    assert alert.inner_text().startswith("Error:")  # said in words, not by colour alone
    assert "That code is not right, or was used already" in alert.inner_text()
    assert page.evaluate("document.activeElement.id") == "code"
    page.keyboard.type(codes.fresh())
    page.keyboard.press("Enter")
    page.wait_for_url(site.base + PROTECTED)

    page.goto(site.base + "/admin/")
    assert page.locator("#user").inner_text() == "alice"  # the factor is fresh
    time.sleep(MAX_AGE + 1)  # past /admin's max age: the next visit asks again
    page.goto(site.base + "/admin/")
    assert "/_sidecar/factor?rd=" in page.url
    assert "confirm it is you" in page.content()
    page.get_by_label("Code").fill(codes.fresh())
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(site.base + "/admin/")
    assert page.locator("#user").inner_text() == "alice"

    page.goto(site.base + "/_sidecar/factors")
    assert page.get_by_role("list", name="Your second factors").locator("li").count() == 1
    assert "9 recovery codes left." in page.content() or "10 recovery codes left." in page.content()
    screenshot(page, "factor-manage-desktop")


def virtual_authenticator(page: Any) -> tuple[Any, str]:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    return cdp, added["authenticatorId"]


def test_passkey_registration_sign_in_and_a_removed_one_refused(site: Site, page: Any) -> None:
    cdp, authenticator = virtual_authenticator(page)
    password(page, site, "bob")
    page.wait_for_url("**/_sidecar/factor/enrol?rd=*")
    page.get_by_role("button", name="Use a passkey instead").click()
    page.wait_for_url("**/_sidecar/factors")  # no recovery codes yet: where they are made
    assert "No recovery codes yet" in page.content()
    page.get_by_role("button", name="Make new recovery codes").click()
    page.get_by_role("heading", name="Recovery codes").wait_for()
    page.goto(site.base + PROTECTED)
    assert page.locator("#user").inner_text() == "bob"
    assert "pwd|hwk" in page.content()
    credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(credentials) == 1 and credentials[0]["rpId"] == "localhost"

    sign_out(page, site)
    password(page, site, "bob")
    page.wait_for_url("**/_sidecar/factor?rd=*")
    page.get_by_role("button", name="Use a passkey").click()
    page.wait_for_url(site.base + PROTECTED)
    assert page.locator("#user").inner_text() == "bob"

    # That passkey is removed on the server, another of bob's stays; the authenticator keeps the first.
    with sqlite3.connect(site.store) as db:
        db.execute("UPDATE factors SET credential_id = x'0102030405060708' WHERE username = 'bob'")
    sign_out(page, site)
    password(page, site, "bob")
    page.wait_for_url("**/_sidecar/factor?rd=*")
    page.get_by_role("button", name="Use a passkey").click()
    alert = page.locator("#passkey-error")
    alert.wait_for(state="visible")
    assert "That passkey was not accepted" in alert.inner_text()
    assert "/_sidecar/factor?rd=" in page.url
    page.goto(site.base + PROTECTED)
    assert "/_sidecar/factor?rd=" in page.url  # still half-signed-in


@pytest.mark.parametrize(("name", "width", "height"), [("desktop", 1280, 800), ("phone", 390, 844)])
def test_factor_pages_fit_a_phone(site: Site, browser: Any, name: str, width: int, height: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    password(page, site, "carol")
    page.wait_for_url("**/_sidecar/factor/enrol?rd=*")
    assert page.evaluate("document.activeElement.id") == "code"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    screenshot(page, f"factor-enrol-{name}")
    context.close()
