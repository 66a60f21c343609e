"""Single sign-on in a real browser: Chromium -> nginx -> auth-sidecar -> a real OpenID provider.

Each test gets its own provider, sidecar and nginx (a provider restart forgets every session and
refresh token, and some tests restart or stop it).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import ldap_settings, need
from tests.testbed import ROOT, free_port, wait_for_port
from tests.testbed.nginx import Nginx, render_site
from tests.testbed.oidc import DEMO_ACCOUNTS, OidcProvider, oidc_client, rsa_jwk
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd

PROTECTED = "/devices/?site=r%C3%BCdesheim&sort=name"


@dataclass
class Site:
    base: str
    provider: OidcProvider
    sidecar: SidecarProcess

    def protected(self) -> str:
        return self.base + PROTECTED


def start_site(workdir: Path, slapd: Slapd, *, recheck_every: float,
               accounts: dict[str, dict[str, Any]] | None = None) -> Iterator[Site]:
    need("nginx")
    need("node")
    sidecar_port, listen, app_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{listen}"
    client = oidc_client("sidecar", "sidecar-secret", [f"{base}/_sidecar/oidc/callback"],
                         post_logout_redirect_uris=[f"{base}/_sidecar/login"])
    with OidcProvider(workdir / "op", clients=[client], accounts=accounts) as provider:
        config = {
            "server": {"listen": f"127.0.0.1:{sidecar_port}", "public_url": f"{base}/_sidecar"},
            "ldap": ldap_settings(slapd),
            "sessions": {"keys": [{"id": "k1", "secret": "o" * 40}], "secure": False,
                         "recheck_every": recheck_every, "default_redirect": f"{base}/"},
            "oidc": {"providers": [{
                "name": "idp", "label": "Sign in with Demo IdP", "issuer": provider.issuer,
                "client_id": "sidecar", "client_secret": "sidecar-secret",
                "scopes": ["openid", "email", "profile", "groups"], "logout": True,
                "shares_usernames": True,  # the provider's accounts are the directory's people
            }]},
        }
        app = subprocess.Popen([sys.executable, str(ROOT / "examples/demo/app.py"), "--port", str(app_port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(app_port)
            with SidecarProcess(workdir, config) as sidecar:
                site = render_site(listen_port=listen, sidecar_port=sidecar_port, app_port=app_port)
                with Nginx(workdir / "nginx", site):
                    yield Site(base, provider, sidecar)
        finally:
            app.terminate()
            app.wait(timeout=10)


@pytest.fixture
def site(slapd: Slapd, tmp_path: Path) -> Iterator[Site]:
    yield from start_site(tmp_path, slapd, recheck_every=300)


@pytest.fixture
def rechecking(slapd: Slapd, tmp_path: Path) -> Iterator[Site]:
    yield from start_site(tmp_path, slapd, recheck_every=1)


def sign_in(site: Site, page: Any, username: str) -> None:
    page.goto(site.protected())
    page.get_by_role("link", name="Sign in with Demo IdP").click()
    site.provider.sign_in_with_browser(page, username)
    page.wait_for_url(site.protected())


def session_cookie(page: Any) -> str:
    (value,) = [c["value"] for c in page.context.cookies() if c["name"] == "sidecar_session"]
    return str(value)


def test_sign_in_with_the_provider_lands_on_the_page_asked_for(site: Site, page: Any) -> None:
    page.goto(site.protected())
    assert page.get_by_label("Password").count() == 1  # the LDAP form and the provider, side by side
    sign_in(site, page, "alice")
    assert page.url == site.protected()
    assert page.locator("#user").inner_text() == "alice"
    assert "Alice Liddell" in page.content() and "netbox-users" in page.content()


def test_claims_with_non_ascii_names(site: Site, page: Any) -> None:
    sign_in(site, page, "jose")
    assert page.locator("#user").inner_text() == "jose"  # preferred_username, not the opaque sub
    assert "José 山田" in page.content()


def test_refresh_renews_and_a_refused_refresh_ends_the_session(rechecking: Site, page: Any) -> None:
    sign_in(rechecking, page, "alice")
    first = session_cookie(page)
    time.sleep(1.2)
    page.reload()
    assert page.locator("#user").inner_text() == "alice"
    assert session_cookie(page) != first  # renewed through the refresh token
    rechecking.provider.restart()  # the provider forgets its refresh tokens
    time.sleep(1.2)
    page.goto(rechecking.protected())
    assert "/_sidecar/login" in page.url  # the refused refresh ended the session
    assert "session of alice ended" in rechecking.sidecar.log()


def test_key_rotation_mid_session(site: Site, browser: Any, page: Any) -> None:
    sign_in(site, page, "alice")
    site.provider.restart(keys=[rsa_jwk("rotated"), *site.provider.keys])
    page.reload()
    assert page.locator("#user").inner_text() == "alice"  # the session does not depend on the keys
    other = browser.new_context().new_page()
    sign_in(site, other, "bob")  # an ID token signed with the new key: fetched, verified
    assert other.locator("#user").inner_text() == "bob"
    other.context.close()


def test_provider_down_keeps_sessions_and_refuses_new_sign_ins_clearly(rechecking: Site, browser: Any,
                                                                     page: Any) -> None:
    sign_in(rechecking, page, "alice")
    rechecking.provider.stop()
    time.sleep(1.2)
    page.reload()
    assert page.locator("#user").inner_text() == "alice"
    assert "not re-checked, kept for now" in rechecking.sidecar.log()
    other = browser.new_context().new_page()
    other.goto(rechecking.protected())
    # The sidecar had the provider's metadata already: the code exchange is where it fails.
    response = other.goto(rechecking.base + "/_sidecar/oidc/callback?code=x&state=y")
    assert response is not None and response.status == 400
    assert "expired or was started elsewhere" in other.content()
    other.context.close()


def test_rp_initiated_logout_ends_the_provider_session_too(site: Site, page: Any) -> None:
    sign_in(site, page, "alice")
    page.goto(site.base + "/_sidecar/logout")
    page.get_by_role("button", name="Sign out").click()
    site.provider.confirm_logout(page)
    page.wait_for_url("**/_sidecar/login**")
    page.goto(site.protected())
    page.get_by_role("link", name="Sign in with Demo IdP").click()
    assert page.locator("input[name=login]").count() == 1  # the provider asks for the login again


def test_a_refused_consent_ends_on_a_clear_page(site: Site, page: Any) -> None:
    page.goto(site.protected())
    start = page.context.request.get(site.base + "/_sidecar/oidc/idp/start", max_redirects=0)
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    response = page.goto(f"{site.base}/_sidecar/oidc/callback?error=access_denied&state={state}")
    assert response is not None and response.status == 401
    assert "You did not allow the sign-in at the provider." in page.content()
    assert "sidecar_session" not in {c["name"] for c in page.context.cookies()}


def test_a_replayed_callback_is_refused(site: Site, page: Any) -> None:
    callbacks: list[str] = []
    page.on("request", lambda request: callbacks.append(request.url) if "/oidc/callback?" in request.url else None)
    sign_in(site, page, "alice")
    (callback,) = callbacks
    page.context.clear_cookies()
    response = page.goto(callback)  # the state cookie is gone with the first use
    assert response is not None and response.status == 400
    assert "sidecar_session" not in {c["name"] for c in page.context.cookies()}


def test_a_replayed_code_is_refused_by_the_provider(site: Site, page: Any) -> None:
    callbacks: list[str] = []
    page.on("request", lambda request: callbacks.append(request.url) if "/oidc/callback?" in request.url else None)
    page.goto(site.protected())
    page.get_by_role("link", name="Sign in with Demo IdP").click()
    (state,) = [c["value"] for c in page.context.cookies() if c["name"] == "sidecar_oidc"]
    site.provider.sign_in_with_browser(page, "alice")
    page.wait_for_url(site.protected())
    (callback,) = callbacks
    page.context.clear_cookies()
    # The browser gets its state cookie back: only the provider can still tell the code was used.
    page.context.add_cookies([{"name": "sidecar_oidc", "value": state, "url": site.base}])
    response = page.goto(callback)
    assert response is not None and response.status == 401
    assert "could not be completed" in page.content()
    assert "sidecar_session" not in {c["name"] for c in page.context.cookies()}


# Names that compress badly: together too large for a cookie, so the sidecar keeps them.
MANY_GROUPS = [f"g-{hashlib.sha256(str(i).encode()).hexdigest()[:32]}" for i in range(250)]


@pytest.fixture
def crowded(slapd: Slapd, tmp_path: Path) -> Iterator[Site]:
    accounts = {**DEMO_ACCOUNTS, "mia": {"sub": "mia", "preferred_username": "mia", "email": "mia@example.com",
                                         "email_verified": True, "groups": MANY_GROUPS}}
    yield from start_site(tmp_path, slapd, recheck_every=300, accounts=accounts)


def test_groups_kept_server_side_survive_a_restart_for_a_provider_sign_in(crowded: Site, page: Any) -> None:
    # They were read again only through the password sources, so such a session ended at the
    # sidecar's next start ("came from 'oidc:idp', which is not configured") although it is.
    sign_in(crowded, page, "mia")
    assert MANY_GROUPS[-1] in page.content()
    crowded.sidecar.stop()
    crowded.sidecar.start()  # forgets the groups it kept: only the provider can tell them again
    page.reload()
    assert page.url == crowded.protected() and page.locator("#user").inner_text() == "mia"
    assert MANY_GROUPS[0] in page.content() and MANY_GROUPS[-1] in page.content()
    assert "not configured" not in crowded.sidecar.log()
