"""The second factor in process: enrolment, sign-in with a code, step-up, and the attack cases
(a half-signed-in cookie at /auth, replayed forms and codes, CSRF, another user's enrolment, brute
force), against the users file and a real SQLite store."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from aiohttp.test_utils import TestClient
from jose import jwt

from sidecar.assertion import generate_key
from sidecar.config import parse_config
from sidecar.local import hash_password
from sidecar.sealing import derive_key
from sidecar.sessions import SessionCodec
from tests.conftest import StartApp, basic

PUBLIC = "https://app.test/_sidecar"
SESSION = "__Host-sidecar_session"
CSRF = "__Host-sidecar_csrf"
BROWSER = {"Accept": "text/html,application/xhtml+xml"}
SESSION_SECRET = "s" * 40
ADMIN = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/admin/x"}
HOME = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/home"}
OPEN = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/open"}
Client = TestClient[Any, Any]
USED: dict[str, str] = {}  # secret -> the code that confirmed it


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.yaml"
    path.write_text("users:\n"
                    f"  alice:\n    password: '{hash_password('alice-pass')}'\n"
                    f"  bob:\n    password: '{hash_password('bob-pass')}'\n")
    return path


def settings(tmp_path: Path, users_file: Path, **top: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "server": {"public_url": PUBLIC},
        "sessions": {"keys": [{"id": "k1", "secret": SESSION_SECRET}], "default_redirect": "https://app.test/"},
        "local_users": {"file": str(users_file)},
        "second_factor": {"key": "f" * 40, "store": str(tmp_path / "factors.sqlite3")},
        "access": {"second_factor": "optional", "rules": [
            {"path": "/admin", "second_factor": "required", "second_factor_max_age": 300},
            {"path": "/open", "second_factor": "never"},
        ]},
        "regulation": {"max_failures": 5},
    }
    data.update(top)
    return data


@pytest.fixture
def start(app_client: StartApp, tmp_path: Path, users_file: Path) -> Any:
    async def start(**top: Any) -> Client:
        return await app_client(parse_config(settings(tmp_path, users_file, **top)))

    return start


def set_cookies(response: Any) -> dict[str, str]:
    return {v.split("=", 1)[0]: v.split(";", 1)[0].split("=", 1)[1] for v in response.headers.getall("Set-Cookie", [])}


async def csrf(client: Client) -> str:
    response = await client.get("/login")
    return set_cookies(response)[CSRF]


async def sign_in(client: Client, username: str, password: str, rd: str = "https://app.test/admin/x") -> Any:
    token = await csrf(client)
    return await client.post("/login", data={"username": username, "password": password, "csrf": token, "rd": rd},
                             headers={"Cookie": f"{CSRF}={token}"}, allow_redirects=False)


def cookies(session: str, token: str | None = None) -> dict[str, str]:
    value = f"{SESSION}={session}" + (f"; {CSRF}={token}" if token else "")
    return {"Cookie": value}


async def auth(client: Client, session: str, where: dict[str, str] = ADMIN, **headers: str) -> Any:
    return await client.get("/auth", headers={**cookies(session), **where, **headers}, allow_redirects=False)


async def enrol_page(client: Client, session: str) -> tuple[str, str, str]:
    """The enrolment page's (csrf token, sealed offer, secret)."""
    token = await csrf(client)
    response = await client.get("/factor/enrol?rd=https://app.test/admin/x", headers=cookies(session, token),
                                allow_redirects=False)
    assert response.status == 200, await response.text()
    html = await response.text()
    offer = re.search(r'name="enrolment" value="([^"]+)"', html)
    secret = re.search(r'<code id="secret">([A-Z2-7 ]+)</code>', html)
    assert offer is not None and secret is not None
    return token, offer.group(1), secret.group(1).replace(" ", "")


def code(secret: str, steps: int = 0) -> str:
    """The code of now, or of a step before or after (within the skew accepted)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps)


async def post_enrol(client: Client, session: str, token: str, offer: str, value: str, **extra: str) -> Any:
    return await client.post("/factor/enrol", data={"csrf": token, "enrolment": offer, "code": value,
                                                    "rd": "https://app.test/admin/x"},
                             headers={**cookies(session, token), **extra}, allow_redirects=False)


async def post_code(client: Client, session: str, value: str, token: str | None = None) -> Any:
    token = token or await csrf(client)
    return await client.post("/factor", data={"csrf": token, "code": value, "rd": "https://app.test/admin/x"},
                             headers=cookies(session, token), allow_redirects=False)


async def enrolled(client: Client, username: str = "alice", password: str = "alice-pass") -> tuple[str, str, list[str]]:
    """A user with TOTP set up: (their full session, the secret, the recovery codes). The code
    confirmed is kept in USED."""
    response = await sign_in(client, username, password)
    assert response.status == 303 and response.headers["Location"] == "https://app.test/admin/x"
    session = set_cookies(response)[SESSION]
    token, offer, secret = await enrol_page(client, session)
    USED[secret] = code(secret)
    response = await post_enrol(client, session, token, offer, USED[secret])
    assert response.status == 200, await response.text()
    html = await response.text()
    recovery = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", html)
    return set_cookies(response)[SESSION], secret, recovery


# -- enrolment and sign-in ------------------------------------------------------------------------

async def test_a_required_path_sends_a_password_session_to_enrol_then_passes(start: Any) -> None:
    client = await start()
    response = await sign_in(client, "alice", "alice-pass")
    session = set_cookies(response)[SESSION]
    assert (await auth(client, session, HOME)).status == 200  # optional, and alice has no factor
    refused = await auth(client, session, ADMIN, **BROWSER)
    assert refused.status == 401
    assert refused.headers["Location"] == f"{PUBLIC}/factor?rd=https%3A%2F%2Fapp.test%2Fadmin%2Fx"
    to_enrol = await client.get("/factor?rd=https://app.test/admin/x", headers=cookies(session), allow_redirects=False)
    assert to_enrol.status == 303 and "/factor/enrol?rd=" in to_enrol.headers["Location"]

    token, offer, secret = await enrol_page(client, session)
    page = await client.get("/factor/enrol", headers=cookies(session, token))
    html = await page.text()
    assert '<img class="qr" src="data:image/svg+xml' in html
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'; connect-src 'self'" in csp and "unsafe" not in csp  # our passkey script only
    assert '<script src="/_sidecar/static/passkey.js?v=' in html and "<script>" not in html
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    wrong = await post_enrol(client, session, token, offer, "000000" if code(secret) != "000000" else "111111")
    assert wrong.status == 401 and "That code is not right" in await wrong.text()
    assert 'aria-invalid="true"' in await wrong.text()

    done = await post_enrol(client, session, token, offer, code(secret))
    assert done.status == 200
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", await done.text())
    assert len(codes) == 10 and len(set(codes)) == 10
    full = set_cookies(done)[SESSION]
    allowed = await auth(client, full, ADMIN)
    assert allowed.status == 200
    assert allowed.headers["Remote-User"] == "alice"
    assert allowed.headers["Remote-User-Auth-Methods"] == "pwd|otp"
    assert (await auth(client, session, HOME)).status == 401  # the password-only cookie was replaced


async def test_an_enrolled_user_is_half_signed_in_until_the_code(start: Any) -> None:
    client = await start()
    _, secret, _ = await enrolled(client)
    response = await sign_in(client, "alice", "alice-pass")
    assert response.status == 303
    assert response.headers["Location"] == "/_sidecar/factor?rd=https%3A%2F%2Fapp.test%2Fadmin%2Fx"
    half = set_cookies(response)[SESSION]
    page = await client.get("/factor", headers=cookies(half))
    assert page.status == 200 and 'autocomplete="one-time-code"' in await page.text()
    done = await post_code(client, half, code(secret, 1))
    assert done.status == 303 and done.headers["Location"] == "https://app.test/admin/x"
    full = set_cookies(done)[SESSION]
    assert (await auth(client, full, ADMIN)).headers["Remote-User-Auth-Methods"] == "pwd|otp"


async def test_a_recovery_code_signs_in_once(start: Any) -> None:
    client = await start()
    _, _, recovery = await enrolled(client)
    half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    done = await post_code(client, half, recovery[0].upper().replace("-", " "))
    assert done.status == 303
    again = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    assert (await post_code(client, again, recovery[0])).status == 401
    assert (await post_code(client, again, recovery[1])).status == 303


async def test_enrolments_and_used_codes_outlive_a_restart(start: Any) -> None:
    client = await start()
    _, secret, _ = await enrolled(client)  # the code of this step is used
    await client.close()
    client = await start()
    half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    assert (await client.get("/factor", headers=cookies(half), allow_redirects=False)).status == 200
    replayed = await post_code(client, half, USED[secret])
    assert replayed.status == 401  # that step was used before the restart
    assert (await post_code(client, half, code(secret, 1))).status == 303


async def test_the_signed_assertion_carries_amr_and_auth_time(start: Any) -> None:
    client = await start(assertion={"keys": [{"id": "a1", "private_key": generate_key()}], "audience": "app"})
    full, _, _ = await enrolled(client)
    before = int(time.time())
    response = await auth(client, full, ADMIN)
    claims = jwt.get_unverified_claims(response.headers["Remote-User-Assertion"])
    assert claims["amr"] == ["pwd", "otp"]
    assert before - 5 <= claims["auth_time"] <= before + 1
    basic_claims = jwt.get_unverified_claims((await client.get("/auth", headers={**basic("bob", "bob-pass"), **HOME}))
                                             .headers["Remote-User-Assertion"])
    assert basic_claims["amr"] == ["pwd"] and "auth_time" not in basic_claims


# -- what /auth refuses -----------------------------------------------------------------------------

async def test_a_half_signed_in_cookie_never_passes_auth(start: Any) -> None:
    client = await start()
    await enrolled(client)
    half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    for where in (ADMIN, HOME, OPEN):  # required, optional, and never: the password alone is not a sign-in
        assert (await auth(client, half, where)).status == 401
        browser = await auth(client, half, where, **BROWSER)
        assert browser.status == 401 and "/_sidecar/factor?rd=" in browser.headers["Location"]
        assert "Remote-User" not in browser.headers


async def test_basic_and_bearer_are_refused_where_a_factor_is_required(start: Any) -> None:
    client = await start(app_tokens={"rules": [{"scheme": "Token"}]})
    refused = await client.get("/auth", headers={**basic("bob", "bob-pass"), **ADMIN})
    assert refused.status == 403
    assert await refused.text() == "403 Forbidden: this path needs a second factor: sign in with a browser\n"
    wrong = await client.get("/auth", headers={**basic("bob", "not-bob-pass"), **ADMIN})
    assert wrong.status == 401  # a wrong password is told nothing more
    assert (await client.get("/auth", headers={**basic("bob", "bob-pass"), **HOME})).status == 200
    assert (await client.get("/auth", headers={**basic("bob", "bob-pass"), **OPEN})).status == 200
    passed = await client.get("/auth", headers={"Authorization": "Token 0123abcd", **ADMIN})
    assert passed.status == 200 and passed.headers["Remote-User"] == ""  # the application's own token


def forged(session: str, **changes: Any) -> str:
    """The same session with other times, sealed with the configured key (what only we can do)."""
    import dataclasses
    codec = SessionCodec([("k1", derive_key(SESSION_SECRET, "session key"))], lifetime=43200, idle_timeout=3600)
    decoded = codec.decode(session)
    assert decoded is not None
    return codec.encode(dataclasses.replace(decoded, **changes))


async def test_step_up_on_admin_after_the_configured_age(start: Any) -> None:
    client = await start()
    full, secret, _ = await enrolled(client)
    aged = forged(full, factor_at=time.time() - 301)  # the factor was given six minutes ago
    assert (await auth(client, aged, HOME)).status == 200  # optional: any factor will do
    refused = await auth(client, aged, ADMIN, **BROWSER)
    assert refused.status == 401 and "/_sidecar/factor?rd=" in refused.headers["Location"]
    page = await client.get("/factor", headers=cookies(aged))
    assert "confirm it is you" in await page.text()
    done = await post_code(client, aged, code(secret, 1))
    assert done.status == 303
    assert (await auth(client, set_cookies(done)[SESSION], ADMIN)).status == 200


# -- attacks ------------------------------------------------------------------------------------------

async def test_the_code_form_replayed_is_refused(start: Any) -> None:
    client = await start()
    _, secret, _ = await enrolled(client)
    half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    token = await csrf(client)
    value = code(secret, 1)
    first = await post_code(client, half, value, token)
    assert first.status == 303
    again = await post_code(client, half, value, token)  # the same form, the same half cookie
    assert again.status == 400 and SESSION not in set_cookies(again)  # its half cookie was revoked
    full = set_cookies(first)[SESSION]
    replayed = await post_code(client, full, value)  # the same code on a live session: its step is used
    assert replayed.status == 401


async def test_a_replayed_totp_code_is_refused(start: Any) -> None:
    client = await start()
    _, secret, _ = await enrolled(client)
    first = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    second = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    value = code(secret, 1)
    assert (await post_code(client, first, value)).status == 303
    assert (await post_code(client, second, value)).status == 401  # another browser, the same code


@pytest.mark.parametrize("problem", ["no csrf cookie", "wrong csrf", "foreign origin"])
async def test_enrolment_is_csrf_protected(start: Any, problem: str) -> None:
    client = await start()
    session = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    token, offer, secret = await enrol_page(client, session)
    data = {"csrf": token, "enrolment": offer, "code": code(secret), "rd": "/"}
    headers = cookies(session, token)
    if problem == "no csrf cookie":
        headers = cookies(session)
    elif problem == "wrong csrf":
        data["csrf"] = "x" * 43
    else:
        headers["Origin"] = "https://evil.example"
    response = await client.post("/factor/enrol", data=data, headers=headers, allow_redirects=False)
    assert response.status == 400
    assert (await client.get("/factor", headers=cookies(session), allow_redirects=False)).status == 303  # none


async def test_no_one_enrols_a_factor_for_another_user(start: Any) -> None:
    client = await start()
    alice = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    bob = set_cookies(await sign_in(client, "bob", "bob-pass"))[SESSION]
    token, offer, secret = await enrol_page(client, alice)
    # Bob posts the offer made to alice's session (with his own session): it does not open.
    response = await post_enrol(client, bob, token, offer, code(secret))
    assert response.status == 400
    # Nor does a form name the user: a username field is ignored, the session decides.
    token, offer, secret = await enrol_page(client, bob)
    response = await client.post("/factor/enrol", data={"csrf": token, "enrolment": offer, "code": code(secret),
                                                        "username": "alice", "rd": "/"},
                                 headers=cookies(bob, token), allow_redirects=False)
    assert response.status == 200
    assert (await client.get("/factor", headers=cookies(alice), allow_redirects=False)).status == 303  # alice: none


async def test_a_password_alone_cannot_add_a_factor_to_an_enrolled_account(start: Any) -> None:
    client = await start()
    _, secret, _ = await enrolled(client)
    # A session from before the enrolment (the password only, no factor): it may not add another.
    stale = forged(set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION], pending=False)
    response = await client.get("/factor/enrol", headers=cookies(stale), allow_redirects=False)
    assert response.status == 303 and "/factor?rd=" in response.headers["Location"]
    half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    assert (await client.get("/factor/enrol", headers=cookies(half), allow_redirects=False)).status == 303


async def test_brute_forcing_codes_is_banned_like_passwords(start: Any) -> None:
    client = await start()
    _, secret, _ = await enrolled(client)
    half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    right = code(secret, 1)
    wrong = [c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c != right][:5]
    statuses = [(await post_code(client, half, value)).status for value in wrong]
    assert statuses == [401, 401, 401, 401, 401]
    assert (await post_code(client, half, right)).status == 429  # banned: even the right code now
    # A password the cache knows, from an address alice used, is still honoured (a stranger's ban must
    # not lock her out of a session): it ends half-signed-in, and the ban refuses its code.
    again = await sign_in(client, "alice", "alice-pass")
    assert "/factor?rd=" in again.headers["Location"]
    assert (await post_code(client, set_cookies(again)[SESSION], right)).status == 429


async def test_a_store_that_cannot_answer_is_a_503_never_a_sign_in(start: Any, tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite3").mkdir()
    client = await start(second_factor={"key": "f" * 40, "store": str(tmp_path / "dir.sqlite3")})
    response = await sign_in(client, "alice", "alice-pass")
    assert response.status == 503
    assert SESSION not in set_cookies(response)


async def test_the_form_and_pages_need_a_session(start: Any) -> None:
    client = await start()
    for path in ("/factor", "/factor/enrol"):
        response = await client.get(path + "?rd=https://app.test/x", allow_redirects=False)
        assert response.status == 303
        assert parse_qs(urlsplit(response.headers["Location"]).query)["rd"] == ["https://app.test/x"]
    assert (await post_code(client, "garbage", "123456")).status == 400


async def test_a_trusted_provider_s_amr_is_the_second_factor_else_ours_is_asked(start: Any, tmp_path: Path) -> None:
    from sidecar.identity import Identity
    from sidecar.routes import SIDECAR

    client = await start(oidc={"providers": [{"name": "corp", "issuer": "https://idp.test", "client_id": "c",
                                              "client_secret": "x", "username_prefix": "corp:"}]},
                         second_factor={"key": "f" * 40, "store": str(tmp_path / "factors.sqlite3"),
                                        "trust_amr": ["corp"]})
    landing = client.server.app[SIDECAR].signin.landing
    carol = Identity("corp:carol", source="oidc:corp")
    said = await landing.signed_in(carol, "https://app.test/admin/x", amr=("pwd", "mfa"), auth_time=time.time() - 20)
    assert said.headers["Location"] == "https://app.test/admin/x"
    allowed = await auth(client, set_cookies(said)[SESSION], ADMIN)
    assert allowed.status == 200 and allowed.headers["Remote-User-Auth-Methods"] == "pwd|mfa"
    plain = await landing.signed_in(carol, "https://app.test/admin/x")  # no amr: our own factor on /admin
    refused = await auth(client, set_cookies(plain)[SESSION], ADMIN, **BROWSER)
    assert refused.status == 401 and "/_sidecar/factor?rd=" in refused.headers["Location"]


# -- managing factors, and the passkey endpoints' refusals ------------------------------------------

async def test_factors_are_listed_removed_and_recovery_codes_renewed_after_a_recent_factor(start: Any) -> None:
    client = await start()
    full, secret, recovery = await enrolled(client)
    token = await csrf(client)
    page = await client.get("/factors", headers=cookies(full, token))
    html = await page.text()
    assert page.status == 200 and "Authenticator app" in html and "10 recovery codes left." in html
    factor = re.search(r'name="factor" value="([^"]+)"', html)
    assert factor is not None
    renewed = await client.post("/factors/recovery", data={"csrf": token}, headers=cookies(full, token))
    assert renewed.status == 200
    half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    assert (await post_code(client, half, recovery[0])).status == 401  # the old codes stopped working

    aged = forged(full, factor_at=time.time() - 400)  # too long ago to manage: give a code first
    for response in (await client.get("/factors", headers=cookies(aged, token), allow_redirects=False),
                     await client.post("/factors/remove", data={"csrf": token, "factor": factor.group(1)},
                                       headers=cookies(aged, token), allow_redirects=False)):
        assert response.status == 303 and "/factor?rd=" in response.headers["Location"]
    removed = await client.post("/factors/remove", data={"csrf": token, "factor": factor.group(1)},
                                headers=cookies(full, token), allow_redirects=False)
    assert removed.status == 303 and removed.headers["Location"] == f"{PUBLIC}/factors"
    assert (await sign_in(client, "alice", "alice-pass")).headers["Location"] == "https://app.test/admin/x"
    assert secret  # (enrolled with it)


async def test_removing_needs_the_csrf_token(start: Any) -> None:
    client = await start()
    full, _, _ = await enrolled(client)
    page = await client.get("/factors", headers=cookies(full, await csrf(client)))
    factor = re.search(r'name="factor" value="([^"]+)"', await page.text())
    assert factor is not None
    forged_post = await client.post("/factors/remove", data={"factor": factor.group(1)},
                                    headers={**cookies(full), "Origin": "https://evil.example"})
    assert forged_post.status == 400
    assert "/factor?rd=" in (await sign_in(client, "alice", "alice-pass")).headers["Location"]  # still enrolled


async def test_the_passkey_endpoints_refuse_forged_and_foreign_requests(start: Any) -> None:
    client = await start()
    alice = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    bob = set_cookies(await sign_in(client, "bob", "bob-pass"))[SESSION]
    token = await csrf(client)
    no_csrf = await client.post("/factor/passkey/options", data={"purpose": "register"}, headers=cookies(alice))
    assert no_csrf.status == 400
    options = await client.post("/factor/passkey/options", data={"csrf": token, "purpose": "register"},
                                headers=cookies(alice, token))
    body = await options.json()
    assert options.status == 200 and body["options"]["rp"]["id"] == "app.test"
    assert body["options"]["authenticatorSelection"]["residentKey"] == "required"
    # Alice's state with bob's session: it does not open, whatever the credential.
    foreign = await client.post("/factor/passkey/register", data={"csrf": token, "state": body["state"],
                                                                  "credential": "{}"}, headers=cookies(bob, token))
    assert foreign.status == 400
    junk = await client.post("/factor/passkey/register", data={"csrf": token, "state": body["state"],
                                                               "credential": '{"id": 1}'},
                             headers=cookies(alice, token))
    assert junk.status == 401  # a credential that does not verify: a failure, counted
    signin = await client.post("/factor/passkey/options", data={"csrf": token, "purpose": "signin"},
                               headers=cookies(alice, token))
    assert (await signin.json())["options"]["allowCredentials"] == []  # no credential of hers is named
    assert (await client.post("/factor/passkey/options", data={"csrf": token, "purpose": "x"},
                              headers=cookies(alice, token))).status == 400


def test_a_session_cookie_keeps_its_methods_and_refuses_a_forged_pending_mark() -> None:
    import dataclasses
    import json
    import zlib

    from sidecar.identity import Identity
    from sidecar.sealing import Sealer

    key = derive_key(SESSION_SECRET, "session key")
    codec = SessionCodec([("k1", key)], lifetime=43200, idle_timeout=3600)
    now = float(int(time.time()))
    session = dataclasses.replace(codec.start(Identity("alice", source="local")), methods=("pwd", "hwk"),
                                  factor_at=now, pending=False)
    back = codec.decode(codec.encode(session))
    assert back is not None and (back.methods, back.factor_at, back.pending) == (("pwd", "hwk"), now, False)
    assert codec.decode(codec.encode(dataclasses.replace(session, pending=True))) is not None
    plain = SessionCodec([("k1", key)], lifetime=43200, idle_timeout=3600).decode(
        codec.encode(dataclasses.replace(session, methods=("pwd",), factor_at=0.0)))
    assert plain is not None and plain.methods == ("pwd",) and plain.factor_at == 0.0
    sealer = Sealer([("k1", key)])
    for mark in (2, True, "1"):  # only 0 or 1, as an integer
        payload = json.loads(zlib.decompress(sealer.open(codec.encode(session))[1:], -zlib.MAX_WBITS))
        payload["p"] = mark
        raw = b"\x01" + zlib.compress(json.dumps(payload).encode(), 9, wbits=-zlib.MAX_WBITS)
        assert SessionCodec([("k1", key)], lifetime=43200, idle_timeout=3600).decode(sealer.seal(raw)) is None


async def test_two_instances_on_one_store_share_enrolments_and_used_codes(start: Any) -> None:
    first, second = await start(), await start()  # as server.workers > 1 on one host: one SQLite file
    _, secret, _ = await enrolled(first)
    half = set_cookies(await sign_in(second, "alice", "alice-pass"))[SESSION]
    assert "/factor?rd=" in (await sign_in(second, "alice", "alice-pass")).headers["Location"]
    assert (await post_code(second, half, USED[secret])).status == 401  # used on the other instance
    value = code(secret, 1)
    assert (await post_code(second, half, value)).status == 303
    other = set_cookies(await sign_in(first, "alice", "alice-pass"))[SESSION]
    assert (await post_code(first, other, value)).status == 401


async def test_a_store_failing_mid_way_is_a_503_on_every_page_never_a_pass(start: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.factor_store import FactorStoreUnavailable
    from sidecar.routes import SIDECAR

    client = await start()
    full, secret, _ = await enrolled(client)
    half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    store = client.server.app[SIDECAR].signin.codes.store
    token, offer, second = await enrol_page(client, full)  # a second factor, being added

    async def down(*args: Any) -> Any:
        raise FactorStoreUnavailable("the disk is gone")

    for name in ("factors", "add", "remove", "use_step", "set_recovery_codes", "use_recovery_code",
                 "recovery_codes_left"):
        monkeypatch.setattr(store, name, down)
    form = {"csrf": token, "rd": "/"}
    answers = [
        await client.get("/factor", headers=cookies(half, token)),
        await post_code(client, half, code(secret, 1), token),
        await post_enrol(client, full, token, offer, code(second)),
        await client.get("/factors", headers=cookies(full, token)),
        await client.post("/factors/remove", data={**form, "factor": "x"}, headers=cookies(full, token)),
        await client.post("/factors/recovery", data=form, headers=cookies(full, token)),
        await client.post("/factor/passkey/options", data={**form, "purpose": "signin"}, headers=cookies(half, token)),
        await sign_in(client, "alice", "alice-pass"),
    ]
    assert [a.status for a in answers] == [503] * len(answers)
    assert all(SESSION not in set_cookies(a) for a in answers)
    assert (await auth(client, half, HOME)).status == 401  # still half-signed-in


async def test_a_half_sign_in_lapses_and_an_old_offer_cannot_add_a_factor(start: Any) -> None:
    client = await start()
    session = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    token, offer, secret = await enrol_page(client, session)
    full, _, _ = await enrolled(client, "alice")  # enrolled meanwhile, in another tab
    aged = forged(full, factor_at=time.time() - 400)
    # The offer made before she enrolled: its session has no factor, and one exists now.
    stale = await post_enrol(client, session, token, offer, code(secret))
    assert stale.status == 303 and "/factor?rd=" in stale.headers["Location"]
    # An offer made while the factor was fresh, confirmed once it is old: the same.
    fresh_token, fresh_offer, fresh_secret = await enrol_page(client, full)
    late = await post_enrol(client, aged, fresh_token, fresh_offer, code(fresh_secret))
    assert late.status == 303 and "/factor?rd=" in late.headers["Location"]
    half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    lapsed = forged(half, issued_at=time.time() - 601, last_seen=time.time())
    response = await client.get("/factor?rd=https://app.test/x", headers=cookies(lapsed), allow_redirects=False)
    assert response.status == 303 and "/login?rd=" in response.headers["Location"]


async def test_a_half_sign_in_is_not_a_session_until_its_factor(start: Any) -> None:
    from sidecar.routes import SIDECAR

    client = await start()
    _, secret, _ = await enrolled(client)
    index = client.server.app[SIDECAR].signin.jar.index
    assert index is not None
    before = [k.id for k in index.sessions("alice")]
    half = set_cookies(await sign_in(client, "alice", "alice-pass"))[SESSION]
    assert [k.id for k in index.sessions("alice")] == before  # not listed (nor counted as issued)
    done = await post_code(client, half, code(secret, 1))
    assert len(index.sessions("alice")) == len(before) + 1
    assert done.status == 303
