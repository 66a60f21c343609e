"""Single sign-on's edges against a provider served in this process: a provider that is down, answers
5xx or no JSON object, a token answer without an ID token, a refresh without a token, a callback
with a bad state, an error or a store that is down, logout without an end-session endpoint; and the
claims and state cookie checks."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from sidecar.config import Allow, ClaimMap
from sidecar.config import OidcProvider as ProviderConfig
from sidecar.errors import AccessDenied, InvalidCredentials, ProviderUnavailable, Unavailable, UnknownUser
from sidecar.identity import Identity
from sidecar.oidc import HttpClient, Pending, Provider, SingleSignOn, StateCookie, identity_from_claims
from sidecar.redirects import RedirectPolicy
from sidecar.secrets import Secret
from sidecar.sessions import Session
from tests.testbed import free_port

SECRET = "x" * 40
# sidecar.oidc._token passes auth=aiohttp.BasicAuth(...), both of which aiohttp 3.14 deprecates: a
# warning (reported), not what these tests are about.
pytestmark = [pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning")]


class FakeOp:
    """A provider in this process whose every answer the test sets."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.answers: dict[str, tuple[int, str]] = {}
        self.discovery: dict[str, Any] = {
            "issuer": self.base, "authorization_endpoint": f"{self.base}/authorize",
            "token_endpoint": f"{self.base}/token", "userinfo_endpoint": f"{self.base}/userinfo",
            "jwks_uri": f"{self.base}/jwks", "response_types_supported": ["code"],
            "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
        }

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/.well-known/openid-configuration":
            return web.json_response(self.discovery)
        status, text = self.answers.get(request.path, (404, "{}"))
        return web.Response(status=status, text=text, content_type="application/json")


@pytest.fixture
async def op() -> AsyncIterator[FakeOp]:
    fake = FakeOp()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", fake.port).start()
    yield fake
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    lifetime = client.lifetime(web.Application())
    await lifetime.__anext__()
    yield client
    with pytest.raises(StopAsyncIteration):
        await lifetime.__anext__()


def oidc(op: FakeOp, http: HttpClient, **config: Any) -> Provider:
    made = ProviderConfig(name="op", label="Op", client_id="sidecar", client_secret=Secret("s"), issuer=op.base,
                          **config)
    return Provider(made, http, redirect_uri="https://app.test/_sidecar/oidc/op/callback", leeway=5)


def oauth2(op: FakeOp, http: HttpClient, **config: Any) -> Provider:
    made = ProviderConfig(name="gh", label="GitHub", client_id="sidecar", client_secret=Secret("s"), type="oauth2",
                          authorization_url=f"{op.base}/authorize", token_url=f"{op.base}/token",
                          userinfo_url=f"{op.base}/userinfo", use_userinfo=True,
                          claims=ClaimMap(username="login", groups=None), **config)
    return Provider(made, http, redirect_uri="https://app.test/_sidecar/oidc/gh/callback", leeway=5)


def pending(provider: str = "op", started: float | None = None) -> Pending:
    return Pending(provider=provider, state="st", nonce="no", verifier="v" * 43, rd="https://app.test/x",
                   started=time.time() if started is None else started)


# -- claims and the state cookie ---------------------------------------------------------------------

@pytest.mark.parametrize("username", [" alice", "", 7])
def test_a_missing_padded_or_odd_username_claim_is_refused(username: Any) -> None:
    with pytest.raises(InvalidCredentials, match="'preferred_username' claim is missing, padded or not a string"):
        identity_from_claims({"preferred_username": username}, ClaimMap(), Allow(), "oidc:op")


def test_the_allow_list_refuses_other_groups_and_unverified_or_other_domains() -> None:
    with pytest.raises(AccessDenied, match="alice is in none of the allowed groups"):
        identity_from_claims({"preferred_username": "alice", "groups": ["staff"]}, ClaimMap(),
                             Allow(groups=frozenset({"admins"})), "oidc:op")
    domains = Allow(email_domains=frozenset({"example.org"}))
    unverified_or_elsewhere: list[dict[str, Any]] = [
        {"email": "a@example.org"}, {"email": "a@example.org", "email_verified": "true"},
        {"email": "a@evil.test", "email_verified": True}]
    for claims in unverified_or_elsewhere:
        with pytest.raises(AccessDenied, match="is not verified or not in an allowed domain"):
            identity_from_claims({"preferred_username": "alice", **claims}, ClaimMap(), domains, "oidc:op")
    admitted = identity_from_claims({"preferred_username": "alice", "email": "a@Example.ORG", "email_verified": True},
                                    ClaimMap(), domains, "oidc:op")
    assert (admitted.username, admitted.email) == ("alice", "a@Example.ORG")


def test_a_state_cookie_that_is_garbage_odd_or_expired_is_no_sign_in() -> None:
    now = [1_000_000.0]
    cookie = StateCookie(SECRET, secure=True, clock=lambda: now[0])
    sealer = cookie._sealer
    assert cookie.open("not-sealed") is None
    assert cookie.open(sealer.seal(b'{"provider": "op"}')) is None  # fields missing
    odd = b'{"provider":1,"state":"s","nonce":"n","verifier":"v","rd":"/","started":1000000.0}'
    assert cookie.open(sealer.seal(odd)) is None
    good = b'{"provider":"op","state":"s","nonce":"n","verifier":"v","rd":"/","started":1000000.0}'
    assert cookie.open(sealer.seal(good)) == Pending("op", "s", "n", "v", "/", 1000000.0)
    now[0] += 601
    assert cookie.open(sealer.seal(good)) is None  # older than STATE_TTL


def test_the_http_client_is_unavailable_before_it_starts() -> None:
    with pytest.raises(ProviderUnavailable, match="the HTTP client is not running"):
        HttpClient().session  # noqa: B018


# -- the provider ------------------------------------------------------------------------------------

async def test_an_oauth2_provider_has_no_nonce_and_signs_in_through_userinfo(op: FakeOp, http: HttpClient) -> None:
    provider = oauth2(op, http)
    url = await provider.authorization_url(pending("gh"))
    assert url.startswith(f"{op.base}/authorize?") and "nonce" not in url and "code_challenge_method=S256" in url
    op.answers["/token"] = (200, '{"access_token": "at"}')
    op.answers["/userinfo"] = (200, '{"login": "octocat", "email": "o@github.test"}')
    grant = await provider.complete("code", pending("gh"))
    assert (grant.identity.username, grant.identity.email, grant.identity.source, grant.refresh_token) == (
        "octocat", "o@github.test", "oidc:gh", None)
    assert await provider.logout_url("https://app.test/") is None  # logout: false


async def test_a_token_answer_without_an_access_token_is_refused(op: FakeOp, http: HttpClient) -> None:
    op.answers["/token"] = (200, '{"token_type": "bearer"}')
    with pytest.raises(InvalidCredentials, match="the provider's token answer has no access token"):
        await oauth2(op, http).complete("code", pending("gh"))


async def test_a_token_answer_without_an_id_token_is_refused(op: FakeOp, http: HttpClient) -> None:
    op.answers["/token"] = (200, '{"access_token": "at"}')
    with pytest.raises(InvalidCredentials, match="the provider's token answer has no ID token"):
        await oidc(op, http).complete("code", pending())


@pytest.mark.parametrize(("answer", "error", "message"), [
    ((502, "{}"), ProviderUnavailable, "op: POST {base}/token answered 502"),
    ((200, "[1]"), InvalidCredentials, "op: POST {base}/token answered 200 without a JSON object"),
    ((400, '{"error": "invalid_grant"}'), InvalidCredentials, "op refused at {base}/token: invalid_grant"),
])
async def test_a_failing_refresh_is_refused_as_the_provider_answered(op: FakeOp, http: HttpClient,
                                                                     answer: tuple[int, str], error: type[Exception],
                                                                     message: str) -> None:
    op.answers["/token"] = answer
    with pytest.raises(error) as caught:
        await oidc(op, http).refresh("rt")
    assert caught.value.reason == message.format(base=op.base)  # type: ignore[attr-defined]


async def test_a_provider_that_is_down_is_unavailable(http: HttpClient) -> None:
    down = FakeOp()  # nothing listens on its port
    with pytest.raises(ProviderUnavailable):
        await oauth2(down, http).refresh("rt")


async def test_a_provider_offering_only_symmetric_algorithms_is_unavailable(op: FakeOp, http: HttpClient) -> None:
    op.discovery["id_token_signing_alg_values_supported"] = ["HS256", "none"]
    with pytest.raises(ProviderUnavailable, match="op: no signing algorithm offered"):
        await oidc(op, http)._verified("a.b.c", None)


async def test_renewing_without_a_refresh_token(op: FakeOp, http: HttpClient) -> None:
    provider = oidc(op, http)
    session = Session(Identity(username="alice", source="oidc:op"), issued_at=1.0, last_seen=1.0, checked_at=1.0)
    assert await provider.renew(session) is session  # the provider vouched for it at sign-in
    kept_elsewhere = Session(Identity(username="alice", source="oidc:op"), issued_at=1.0, last_seen=1.0,
                             checked_at=1.0, groups_elsewhere=True)
    with pytest.raises(UnknownUser, match="oidc:op cannot describe alice again: no refresh token"):
        await provider.renew(kept_elsewhere)


async def test_logout_without_an_end_session_endpoint_is_no_provider_logout(op: FakeOp, http: HttpClient) -> None:
    assert await oidc(op, http, logout=True).logout_url("https://app.test/") is None
    op.discovery["end_session_endpoint"] = f"{op.base}/logout"
    assert await oidc(op, http, logout=True).logout_url("https://app.test/") == (
        f"{op.base}/logout?client_id=sidecar&post_logout_redirect_uri=https%3A%2F%2Fapp.test%2F")


# -- the start and callback handlers ------------------------------------------------------------------

class Landing:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def signed_in(self, identity: Identity, rd: str, refresh_token: str | None = None, *,
                        amr: tuple[str, ...] = (), auth_time: float | None = None) -> web.Response:
        if self.error is not None:
            raise self.error
        return web.Response(status=303, headers={"Location": rd}, text=identity.username)

    def message(self, status: int, title: str, text: str) -> web.Response:
        return web.Response(status=status, text=f"{title}: {text}")


def sso(providers: list[Provider], landing: Landing | None = None) -> SingleSignOn:
    return SingleSignOn(providers, state=StateCookie(SECRET, secure=True),
                        redirects=RedirectPolicy(hosts=["app.test"], default="https://app.test/"),
                        path="/_sidecar", landing=landing or Landing())


def callback(sign_on: SingleSignOn, query: str, started: Pending | None) -> web.Request:
    headers = {}
    if started is not None:
        header = sign_on.state.seal(started)
        headers["Cookie"] = header.split(";", 1)[0]
    return make_mocked_request("GET", f"/_sidecar/oidc/op/callback?{query}", headers=headers)


async def test_starting_with_an_unknown_or_unreachable_provider(http: HttpClient,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    down = FakeOp()
    sign_on = sso([oidc(down, http)])
    answer = await sign_on.start(make_mocked_request("GET", "/_sidecar/oidc/nope/start", match_info={"name": "nope"}))
    assert (answer.status, answer.text) == (404, "Unknown sign-in provider: There is no such way to sign in here.")
    with caplog.at_level(logging.INFO, "sidecar.oidc"):
        answer = await sign_on.start(make_mocked_request("GET", "/_sidecar/oidc/op/start", match_info={"name": "op"}))
    assert answer.status == 503 and "cannot be reached" in str(answer.text)
    assert "Set-Cookie" not in answer.headers
    assert any(m.startswith("sign-in with op cannot start: ") for m in caplog.messages)


async def test_a_callback_with_a_wrong_state_or_a_gone_provider_is_a_400(http: HttpClient, op: FakeOp) -> None:
    sign_on = sso([oidc(op, http)])
    answer = await sign_on.callback(callback(sign_on, "state=other&code=c", pending()))
    assert answer.status == 400 and "expired or was started elsewhere" in str(answer.text)
    answer = await sign_on.callback(callback(sign_on, "state=st&code=c", pending("gone")))
    assert (answer.status, answer.text) == (
        400, "Sign-in failed: This sign-in was started with a provider that is gone. Please start again.")
    assert "sidecar_oidc=" in answer.headers["Set-Cookie"]  # the state cookie is cleared


@pytest.mark.parametrize(("error", "text"), [
    ("access_denied", "You did not allow the sign-in at the provider."),
    ("something_new", "The provider did not complete the sign-in."),
])
async def test_a_callback_with_the_providers_error_is_a_401(http: HttpClient, op: FakeOp, error: str,
                                                            text: str) -> None:
    sign_on = sso([oidc(op, http)])
    answer = await sign_on.callback(callback(sign_on, f"state=st&error={error}", pending()))
    assert (answer.status, answer.text) == (401, f"Sign-in failed: {text}")


async def test_a_callback_while_the_provider_is_down_is_a_503(http: HttpClient, op: FakeOp,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    sign_on = sso([oidc(op, http)])
    op.answers["/token"] = (503, "{}")
    with caplog.at_level(logging.INFO, "sidecar.oidc"):
        answer = await sign_on.callback(callback(sign_on, "state=st&code=c", pending()))
    assert (answer.status, answer.text) == (
        503, "Sign-in failed: The sign-in service cannot be reached. Try again soon.")
    assert f"sign-in with op failed: op: POST {op.base}/token answered 503" in caplog.messages


async def test_a_callback_while_the_factor_store_is_down_is_a_503(http: HttpClient, op: FakeOp,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    sign_on = sso([oauth2(op, http)], Landing(Unavailable("the factor store is down")))
    op.answers["/token"] = (200, '{"access_token": "at"}')
    op.answers["/userinfo"] = (200, '{"login": "octocat"}')
    with caplog.at_level(logging.INFO, "sidecar.oidc"):
        answer = await sign_on.callback(callback(sign_on, "state=st&code=c", pending("gh")))
    assert (answer.status, answer.text) == (
        503, "Sign-in failed: Sign-in is unavailable right now. Try again in a minute.")
    assert "sign-in with gh failed: the factor store is down" in caplog.messages
    working = sso([oauth2(op, http)])
    answer = await working.callback(callback(working, "state=st&code=c", pending("gh")))
    assert (answer.status, answer.text, answer.headers["Location"]) == (303, "octocat", "https://app.test/x")


async def test_provider_logout_for_no_session_or_a_provider_that_is_down(http: HttpClient) -> None:
    down = FakeOp()
    sign_on = sso([oidc(down, http, logout=True)])
    assert await sign_on.logout_url(None, "https://app.test/") is None
    session = Session(Identity(username="alice", source="oidc:op"), issued_at=1.0, last_seen=1.0, checked_at=1.0)
    assert await sign_on.logout_url(session, "https://app.test/") is None  # signed out here at least


async def test_userinfo_about_another_subject_than_the_id_token_is_refused(op: FakeOp, http: HttpClient) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = {**jwk.construct(private, "RS256").public_key().to_dict(), "kid": "k1", "use": "sig"}
    op.answers["/jwks"] = (200, json.dumps({"keys": [public]}))
    now = int(time.time())
    token = jwt.encode({"iss": op.base, "aud": "sidecar", "sub": "alice", "iat": now, "exp": now + 60,
                        "nonce": "no", "preferred_username": "alice"}, private.decode(), algorithm="RS256",
                       headers={"kid": "k1"})
    op.answers["/token"] = (200, json.dumps({"access_token": "at", "id_token": token}))
    op.answers["/userinfo"] = (200, '{"sub": "mallory", "preferred_username": "mallory"}')
    with pytest.raises(InvalidCredentials, match="userinfo describes another subject than the ID token"):
        await oidc(op, http, use_userinfo=True).complete("code", pending())
    op.answers["/userinfo"] = (200, '{"sub": "alice", "email": "alice@app.test"}')
    grant = await oidc(op, http, use_userinfo=True).complete("code", pending())
    assert (grant.identity.username, grant.identity.email) == ("alice", "alice@app.test")
