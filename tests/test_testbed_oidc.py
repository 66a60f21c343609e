"""The OpenID Connect test bed itself: oidc-provider's discovery, keys, tokens, a browser sign-in, rotation."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from jose import JWTError, jwt

from tests.conftest import need
from tests.testbed import free_port, in_ci
from tests.testbed.oidc import (
    DEMO_ACCOUNTS,
    RESOURCE,
    OidcError,
    OidcProvider,
    ec_jwk,
    node_modules_installed,
    oidc_client,
    rsa_jwk,
)


def need_provider() -> None:
    need("node")
    if not node_modules_installed():
        message = "oidc-provider is not installed: run `npm ci --prefix tests/testbed/oidc`"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


class Receiver:
    """A redirect_uri on 127.0.0.1: records each request's path and query, answers 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.hits: list[tuple[str, dict[str, str]]] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                hits.append((url.path, dict(urllib.parse.parse_qsl(url.query))))
                body = b"received"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def last(self, path: str) -> dict[str, str]:
        for hit_path, query in reversed(self.hits):
            if hit_path == path:
                return query
        raise AssertionError(f"nothing arrived at {path}: {self.hits}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def op(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    need_provider()
    clients = [
        oidc_client("sidecar", "sidecar-secret", [f"{receiver.base}/callback"],
                    post_logout_redirect_uris=[f"{receiver.base}/signed-out"]),
        oidc_client("other-app", "other-secret", [f"{receiver.base}/other"],
                    token_endpoint_auth_method="client_secret_post"),
    ]
    keys = [rsa_jwk("rsa-1"), ec_jwk("ec-1")]
    with OidcProvider(tmp_path_factory.mktemp("oidc"), clients=clients, accounts=DEMO_ACCOUNTS, keys=keys) as server:
        yield server


def get_json(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return json.load(response)


def header(token: str) -> dict[str, Any]:
    return dict(jwt.get_unverified_header(token))


def verify(op: OidcProvider, token: str, audience: str) -> dict[str, Any]:
    """Check signature (against the live JWKS), iss, aud and exp the way a relying party would.

    The key is picked by kid first: python-jose given a whole JWKS with RSA and EC keys raises
    JWKError on the first key of the wrong type instead of trying the next.
    """
    kid = header(token).get("kid")
    keys = [k for k in get_json(op.jwks_url)["keys"] if k.get("kid") == kid]
    if not keys:
        raise JWTError(f"no key {kid!r} in the JWKS")
    return dict(jwt.decode(token, keys[0], algorithms=[keys[0]["alg"]], audience=audience, issuer=op.issuer))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def test_discovery(op: OidcProvider) -> None:
    d = op.discovery
    assert d["issuer"] == op.issuer == f"http://127.0.0.1:{op.port}"
    assert get_json(op.discovery_url) == d
    assert d["jwks_uri"] == op.jwks_url == f"{op.issuer}/jwks"
    assert d["end_session_endpoint"] == f"{op.issuer}/session/end"  # RP-initiated logout
    assert d["token_endpoint"] == f"{op.issuer}/token"
    assert d["userinfo_endpoint"] == f"{op.issuer}/me"
    assert {"openid", "offline_access", "email", "profile", "groups"} <= set(d["scopes_supported"])
    assert {"groups", "org", "preferred_username", "email"} <= set(d["claims_supported"])
    assert d["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(d["grant_types_supported"])
    assert {"client_secret_basic", "client_secret_post"} <= set(d["token_endpoint_auth_methods_supported"])
    assert set(d["id_token_signing_alg_values_supported"]) == {"RS256", "ES256"}


def test_jwks_lists_the_public_keys(op: OidcProvider) -> None:
    keys = get_json(op.jwks_url)["keys"]
    assert [(k["kid"], k["kty"], k["alg"]) for k in keys] == [("rsa-1", "RSA", "RS256"), ("ec-1", "EC", "ES256")]
    assert not any("d" in k for k in keys)


def test_client_credentials_gives_a_jwt_for_the_resource(op: OidcProvider) -> None:
    token = op.client_credentials_token("sidecar", "sidecar-secret", RESOURCE, scope="api:read")
    assert header(token) == {"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"}
    claims = verify(op, token, RESOURCE)
    assert claims["aud"] == RESOURCE
    assert claims["sub"] == claims["client_id"] == "sidecar"
    assert claims["scope"] == "api:read"
    assert claims["exp"] - claims["iat"] == 60
    assert set(claims) == {"iss", "aud", "sub", "client_id", "scope", "iat", "exp", "jti"}

    other = op.client_credentials_token("other-app", "other-secret")  # its own client auth method: post
    other_claims = verify(op, other, RESOURCE)
    assert other_claims["client_id"] == other_claims["sub"] == "other-app"
    assert "scope" not in other_claims  # no scope asked, none granted

    with pytest.raises(OidcError) as bad_secret:
        op.client_credentials_token("sidecar", "wrong")
    assert (bad_secret.value.status, bad_secret.value.error) == (401, "invalid_client")
    with pytest.raises(OidcError) as unknown:
        op.client_credentials_token("sidecar", "sidecar-secret", "https://elsewhere.example.test")
    assert unknown.value.error == "invalid_target"


def test_code_flow_with_pkce_in_a_browser(op: OidcProvider, receiver: Receiver, browser: Any) -> None:
    redirect_uri = f"{receiver.base}/callback"
    verifier, challenge = pkce()
    state, nonce = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(op.authorization_url("sidecar", redirect_uri, scope="openid offline_access email profile groups",
                                       state=state, nonce=nonce, code_challenge=challenge))
        assert page.locator("input[name=login]").count() == 1
        op.sign_in_with_browser(page, "alice")
        assert page.url.startswith(redirect_uri + "?")
        query = receiver.last("/callback")
        assert query["state"] == state
        assert query["iss"] == op.issuer  # RFC 9207

        form = {"grant_type": "authorization_code", "code": query["code"], "redirect_uri": redirect_uri,
                "code_verifier": verifier}
        with pytest.raises(OidcError) as stolen:  # a code is bound to the client it was issued to
            op.token_request(form, client_id="other-app", client_secret="other-secret", auth="post")
        assert stolen.value.error == "invalid_grant"

        tokens = op.token_request(form, client_id="sidecar", client_secret="sidecar-secret")
        assert tokens["token_type"] == "Bearer"
        assert tokens["expires_in"] == 60
        # offline_access is dropped without prompt=consent; refresh_tokens="always" issues one anyway.
        assert tokens["scope"] == "openid email profile groups"
        assert tokens["refresh_token"]
        assert tokens["access_token"].count(".") == 0  # no resource: opaque, for userinfo

        id_token = tokens["id_token"]
        assert header(id_token) == {"alg": "RS256", "kid": "rsa-1"}  # no typ
        claims = verify(op, id_token, "sidecar")
        alice = DEMO_ACCOUNTS["alice"]
        assert claims["nonce"] == nonce
        assert claims["aud"] == "sidecar"
        for name in ("sub", "email", "email_verified", "name", "given_name", "family_name",
                     "preferred_username", "groups", "org"):
            assert claims[name] == alice[name], name
        assert claims["org"] == {"department": "Engineering", "cost_center": "4711"}
        assert claims["exp"] - claims["iat"] == 60
        # No azp (one audience), at_hash, sid (no back-channel logout) or auth_time (not asked for).
        assert set(claims) == {"iss", "aud", "iat", "exp", "nonce", "sub", "email", "email_verified", "name",
                               "given_name", "family_name", "preferred_username", "groups", "org"}

        userinfo = get_json(op.discovery["userinfo_endpoint"], tokens["access_token"])
        assert userinfo["groups"] == alice["groups"] and userinfo["sub"] == "alice"

        refreshed = op.token_request({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                                     client_id="sidecar", client_secret="sidecar-secret")
        again = verify(op, refreshed["id_token"], "sidecar")
        assert again["groups"] == alice["groups"] and again["sub"] == "alice"
        assert again["nonce"] == nonce  # a refreshed ID token repeats the first nonce
        assert refreshed["access_token"] != tokens["access_token"]
        assert refreshed["refresh_token"] == tokens["refresh_token"]  # not rotated (confidential client)

        # The same browser again: the session and the consent are remembered, no form is shown.
        page.goto(op.authorization_url("sidecar", redirect_uri, state="second", code_challenge=challenge))
        op.sign_in_with_browser(page, "alice")
        assert receiver.last("/callback")["state"] == "second"

        # RP-initiated logout: a confirmation page, then back to the registered post-logout URI.
        logout = {"id_token_hint": id_token, "post_logout_redirect_uri": f"{receiver.base}/signed-out",
                  "state": "bye"}
        page.goto(f"{op.discovery['end_session_endpoint']}?{urllib.parse.urlencode(logout)}")
        op.confirm_logout(page)
        page.wait_for_url(f"{receiver.base}/signed-out*")
        assert receiver.last("/signed-out") == {"state": "bye"}
        with pytest.raises(OidcError) as ended:  # no offline_access: the refresh token ended with the session
            op.token_request({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                             client_id="sidecar", client_secret="sidecar-secret")
        assert ended.value.error == "invalid_grant"
    finally:
        context.close()


def test_user_access_token_for_the_resource_is_a_jwt(op: OidcProvider, receiver: Receiver, browser: Any) -> None:
    redirect_uri = f"{receiver.base}/other"
    verifier, challenge = pkce()
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(op.authorization_url("other-app", redirect_uri, scope="openid groups api:read",
                                       resource=RESOURCE, code_challenge=challenge))
        op.sign_in_with_browser(page, "bob")
        code = receiver.last("/other")["code"]
    finally:
        context.close()
    tokens = op.token_request({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                               "code_verifier": verifier, "resource": RESOURCE},
                              client_id="other-app", client_secret="other-secret", auth="post")
    access = verify(op, tokens["access_token"], RESOURCE)
    assert access["sub"] == "bob" and access["client_id"] == "other-app"
    assert access["scope"] == "api:read"
    assert access["groups"] == ["netbox-users"] and access["email"] == "bob@example.com"
    assert verify(op, tokens["id_token"], "other-app")["groups"] == ["netbox-users"]


def test_refresh_tokens_by_the_offline_access_rule(receiver: Receiver, browser: Any, tmp_path: Path) -> None:
    """refresh_tokens="offline_access": only offline_access with prompt=consent gets a refresh token."""
    need_provider()
    redirect_uri = f"{receiver.base}/strict"
    client = oidc_client("strict", "strict-secret", [redirect_uri])
    with OidcProvider(tmp_path, clients=[client], refresh_tokens="offline_access") as op:
        context = browser.new_context()
        page = context.new_page()
        try:
            replies = []
            for prompt in ({}, {"prompt": "consent"}):
                verifier, challenge = pkce()
                page.goto(op.authorization_url("strict", redirect_uri, scope="openid offline_access groups",
                                               code_challenge=challenge, **prompt))
                op.sign_in_with_browser(page, "alice")
                form = {"grant_type": "authorization_code", "code": receiver.last("/strict")["code"],
                        "redirect_uri": redirect_uri, "code_verifier": verifier}
                replies.append(op.token_request(form, client_id="strict", client_secret="strict-secret"))
        finally:
            context.close()
        without, with_consent = replies
        assert without["scope"] == "openid groups" and "refresh_token" not in without
        assert set(with_consent["scope"].split()) == {"openid", "offline_access", "groups"}
        assert with_consent["refresh_token"]
        assert op.log().count("POST /interaction/") == 3  # login + consent, then consent again


def test_restart_rotates_keys_on_the_same_port(tmp_path: Path) -> None:
    need_provider()
    client = oidc_client("sidecar", "s", ["http://127.0.0.1:9/cb"])
    with OidcProvider(tmp_path, clients=[client], accounts={}, access_token_ttl=5) as op:
        first = get_json(op.jwks_url)["keys"]
        assert len(first) == 1 and first[0]["alg"] == "RS256"  # one RS256 key made by default
        token = op.client_credentials_token("sidecar", "s")
        claims = verify(op, token, RESOURCE)
        assert claims["exp"] - claims["iat"] == 5

        port, pid = op.port, op.pid
        op.restart(keys=[rsa_jwk("rsa-2"), *op.keys])  # a new first key signs; the old one stays published
        assert op.port == port and op.pid != pid
        assert [k["kid"] for k in get_json(op.jwks_url)["keys"]] == ["rsa-2", first[0]["kid"]]
        rotated = op.client_credentials_token("sidecar", "s")
        assert header(rotated) == {"alg": "RS256", "typ": "at+jwt", "kid": "rsa-2"}
        verify(op, token, RESOURCE)  # the old token still verifies

        op.restart(keys=[ec_jwk("ec-3")])  # the old keys dropped, and ES256 from now on
        assert [k["kid"] for k in get_json(op.jwks_url)["keys"]] == ["ec-3"]
        assert header(op.client_credentials_token("sidecar", "s")) == {"alg": "ES256", "typ": "at+jwt", "kid": "ec-3"}
        assert op.discovery["id_token_signing_alg_values_supported"] == ["ES256"]
        assert op.config()["clients"][0]["id_token_signed_response_alg"] == "ES256"  # ID tokens follow
        with pytest.raises(JWTError):
            verify(op, token, RESOURCE)
        pid = op.pid
    assert op.pid is None
    assert pid is not None
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(pid, 0)


def test_start_without_node_modules_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need("node")
    monkeypatch.setattr("tests.testbed.oidc.HERE", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"npm ci --prefix tests/testbed/oidc"):
        OidcProvider(tmp_path / "work", clients=[]).start()
