"""A private OpenID Connect provider on 127.0.0.1: panva's oidc-provider (Node), for sign-on and Bearer tests.

    with OidcProvider(tmp_path, clients=[oidc_client("sidecar", "sidecar-secret", [redirect_uri])],
                      accounts=DEMO_ACCOUNTS) as op:
        op.issuer, op.discovery_url, op.jwks_url, op.discovery["token_endpoint"]
        op.client_credentials_token("sidecar", "sidecar-secret", RESOURCE)  # -> a JWT access token
        op.sign_in_with_browser(page, "alice")   # page sits on the provider's login form
        op.restart(keys=[rsa_jwk("k2"), *op.keys])  # key rotation: same port, clients, accounts

Everything is decided here and written to DIR/config.json; tests/testbed/oidc/provider.mjs only
reads it. The Node side needs its packages: `npm ci --prefix tests/testbed/oidc` (tests/install.sh).

What the provider does (oidc-provider 9.13.3, see provider.mjs):
- Login form (devInteractions): `input[name=login]` + `input[name=password]`, any password; the login
  is the account id looked up in `accounts` (an unknown login signs in with claims {sub} only).
  Then a consent form. Both submit with `button[type=submit]`. Consent is asked once per
  client, account and new scope set; a later flow in the same browser session skips both forms.
- Scopes openid, offline_access, email, profile (incl. preferred_username and the nested `org`
  claim), groups. conformIdTokenClaims is off, so the granted claims are in the ID token itself.
- Refresh tokens (clients allowed the refresh_token grant only), refresh_tokens=:
  "always" (the default, like Keycloak): every code exchange returns one. oidc-provider drops
  offline_access from any authorization request whose prompt lacks `consent` (OpenID Connect
  Core 11), so without prompt=consent the token response's scope has no offline_access and the
  refresh token dies with the provider session (an RP-initiated logout ends it).
  "offline_access" (the library's rule): a refresh token only when offline_access survives, i.e.
  scope has offline_access AND prompt=consent (which shows the consent form every time).
- Resource indicators: `resource=https://api.example.test` (RESOURCE) at the token endpoint gives a
  JWT access token with aud = the resource, signed with the first key; client_credentials works
  for every client by default (sub = client_id). JWT access tokens issued for an account also carry
  `access_token_claims` (default email, preferred_username, groups). Tokens for no resource are
  opaque (userinfo only).
- RP-initiated logout at end_session_endpoint (/session/end): a confirmation page whose
  "Yes, sign me out" button is `button[name=logout][value=yes]` (see confirm_logout()).
- Introspection and revocation are on. All state is in memory: a restart forgets sessions, grants,
  refresh and opaque tokens (JWTs stay verifiable while their key is still published).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.testbed import free_port, require_binary
from tests.testbed.process import ManagedProcess

HERE = Path(__file__).resolve().parent / "oidc"
INSTALL_HINT = "npm ci --prefix tests/testbed/oidc"

RESOURCE = "https://api.example.test"
RESOURCE_SCOPE = "api:read api:write"

ERROR_TITLE = "oops! something went wrong"  # the provider's error page


DEFAULT_CLAIMS: dict[str, list[str]] = {
    "openid": ["sub"],
    "email": ["email", "email_verified"],
    "profile": ["name", "given_name", "family_name", "preferred_username", "org"],
    "groups": ["groups"],
}
DEFAULT_SCOPES = ["openid", "offline_access", "email", "profile", "groups"]
DEFAULT_ACCESS_TOKEN_CLAIMS = ["email", "preferred_username", "groups"]

DEMO_ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {
        "sub": "alice",
        "email": "alice@example.com",
        "email_verified": True,
        "given_name": "Alice",
        "family_name": "Liddell",
        "name": "Alice Liddell",
        "preferred_username": "alice",
        "groups": ["staff", "netbox-users"],
        "org": {"department": "Engineering", "cost_center": "4711"},
    },
    "bob": {
        "sub": "bob",
        "email": "bob@example.com",
        "email_verified": False,
        "given_name": "Bob",
        "family_name": "Builder",
        "name": "Bob Builder",
        "preferred_username": "bob",
        "groups": ["netbox-users"],
        "org": {"department": "Operations"},
    },
    "jose": {
        "sub": "8f14e45f-ceea-467f-a0e6-0d1c5b3a9e21",  # a sub that is not the login
        "email": "jose@example.com",
        "email_verified": True,
        "given_name": "José",
        "family_name": "山田",
        "name": "José 山田",
        "preferred_username": "jose",
        "groups": [],
        "org": {"department": "Ventas"},
    },
}


# Keys


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64_fixed(number: int, size: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(size, "big")).rstrip(b"=").decode()


def rsa_jwk(kid: str, bits: int = 2048) -> dict[str, str]:
    """A new private RSA JWK for RS256 signing."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private, public = key.private_numbers(), key.public_key().public_numbers()
    return {
        "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": _b64(public.n), "e": _b64(public.e), "d": _b64(private.d),
        "p": _b64(private.p), "q": _b64(private.q),
        "dp": _b64(private.dmp1), "dq": _b64(private.dmq1), "qi": _b64(private.iqmp),
    }


def ec_jwk(kid: str) -> dict[str, str]:
    """A new private P-256 JWK for ES256 signing."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = key.private_numbers(), key.public_key().public_numbers()
    return {
        "kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
        "x": _b64_fixed(public.x, 32), "y": _b64_fixed(public.y, 32), "d": _b64_fixed(private.private_value, 32),
    }


def public_jwk(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """The public half of a private JWK made by rsa_jwk() or ec_jwk()."""
    private = {"d", "p", "q", "dp", "dq", "qi"}
    return {k: v for k, v in jwk.items() if k not in private}


# Clients


def oidc_client(
    client_id: str,
    client_secret: str,
    redirect_uris: Sequence[str] = (),
    *,
    post_logout_redirect_uris: Sequence[str] = (),
    **metadata: Any,
) -> dict[str, Any]:
    """Client metadata for OidcProvider(clients=[...]); extra keyword arguments are more metadata.

    Defaults: grant types authorization_code, refresh_token and client_credentials, response type
    code, client_secret_basic (pass token_endpoint_auth_method="client_secret_post" for the other).
    """
    client: dict[str, Any] = {
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uris": list(redirect_uris),
        "post_logout_redirect_uris": list(post_logout_redirect_uris),
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    client.update(metadata)
    if not client["redirect_uris"]:  # a client_credentials-only client
        client["grant_types"] = [g for g in client["grant_types"] if g == "client_credentials"]
        client["response_types"] = []
    return client


# The provider


class OidcProvider(ManagedProcess):
    """oidc-provider (Node) in its own process group on 127.0.0.1:<free port>."""

    name = "oidc-provider"
    stop_timeout = 5.0
    new_session = True

    def __init__(
        self,
        workdir: Path,
        *,
        clients: Iterable[Mapping[str, Any]],
        accounts: Mapping[str, Mapping[str, Any]] | None = None,
        keys: Sequence[Mapping[str, Any]] | None = None,
        port: int | None = None,
        access_token_ttl: int = 60,
        id_token_ttl: int = 60,
        refresh_token_ttl: int = 24 * 60 * 60,
        resource_servers: Mapping[str, str] | None = None,
        access_token_claims: Sequence[str] = DEFAULT_ACCESS_TOKEN_CLAIMS,
        claims: Mapping[str, Sequence[str]] | None = None,
        refresh_tokens: str = "always",
    ) -> None:
        if refresh_tokens not in ("always", "offline_access"):
            raise ValueError(f"refresh_tokens must be 'always' or 'offline_access', not {refresh_tokens!r}")
        self.workdir = workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        self.clients = [dict(c) for c in clients]
        self.accounts = {k: dict(v) for k, v in (DEMO_ACCOUNTS if accounts is None else accounts).items()}
        self.keys: list[dict[str, Any]] = [dict(k) for k in keys] if keys else [rsa_jwk("rsa-1")]
        self.access_token_ttl = access_token_ttl
        self.id_token_ttl = id_token_ttl
        self.refresh_token_ttl = refresh_token_ttl
        # resource indicator -> the scopes it offers; access tokens for these are JWTs.
        self.resource_servers = dict({RESOURCE: RESOURCE_SCOPE} if resource_servers is None else resource_servers)
        self.access_token_claims = list(access_token_claims)
        self.claims = {k: list(v) for k, v in (claims or DEFAULT_CLAIMS).items()}
        self.refresh_tokens = refresh_tokens
        self.discovery: dict[str, Any] = {}
        self.log_file = self.workdir / "provider.log"  # one line per request, `! event: message` per error
        self.cwd = HERE
        self._config_file = self.workdir / "config.json"
        self._cookie_keys = [secrets.token_urlsafe(32)]

    @property
    def jwks_url(self) -> str:
        return str(self.discovery["jwks_uri"])

    @property
    def token_endpoint(self) -> str:
        return str(self.discovery["token_endpoint"])

    @property
    def signing_alg(self) -> str:
        """The first key's alg: ID tokens and JWT access tokens are signed with it."""
        return str(self.keys[0].get("alg", "RS256"))

    def prepare(self) -> None:
        """Check that node and the packages are there; write config.json."""
        require_binary("node", "Debian: apt-get install nodejs npm")
        if not node_modules_installed():
            raise FileNotFoundError(f"oidc-provider is not installed in {HERE}: run `{INSTALL_HINT}`")
        self._config_file.write_text(json.dumps(self.config(), indent=2, ensure_ascii=False))

    def command(self) -> Sequence[str]:
        return [require_binary("node"), str(HERE / "provider.mjs"), str(self._config_file)]

    def environment(self) -> Mapping[str, str]:
        return {**os.environ, "NODE_ENV": "test", "NO_COLOR": "1"}

    def ready(self) -> bool:
        """Ready once it serves the discovery document (which it keeps)."""
        try:
            with urllib.request.urlopen(self.discovery_url, timeout=1) as response:
                self.discovery = dict(json.load(response))
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def restart(self, *, keys: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Stop and start again on the same port with the same clients and accounts.

        keys: the new key list (the first signs); e.g. [rsa_jwk("k2"), *op.keys] rotates while the
        old key stays published, [rsa_jwk("k2")] drops it. All sessions, grants, refresh tokens and
        opaque tokens are forgotten.
        """
        self.stop()
        if keys is not None:
            self.keys = [dict(k) for k in keys]
        self.start()

    def config(self) -> dict[str, Any]:
        """The JSON provider.mjs reads."""
        alg = self.signing_alg
        clients = []
        for client in self.clients:
            client = {"id_token_signed_response_alg": alg, **client}
            clients.append(client)
        return {
            "port": self.port,
            "issuer": self.issuer,
            "clients": clients,
            "keys": self.keys,
            "signing_alg": alg,
            "accounts": self.accounts,
            "claims": self.claims,
            "scopes": sorted(set(DEFAULT_SCOPES) | set(self.claims)),
            "resource_servers": {k: {"scope": v} for k, v in self.resource_servers.items()},
            "access_token_claims": self.access_token_claims,
            "refresh_tokens": self.refresh_tokens,
            "ttl": {
                "AccessToken": self.access_token_ttl,
                "ClientCredentials": self.access_token_ttl,
                "IdToken": self.id_token_ttl,
                "RefreshToken": self.refresh_token_ttl,
            },
            "cookie_keys": self._cookie_keys,
        }

    # Helpers for tests

    def token_request(
        self, form: Mapping[str, str], *, client_id: str, client_secret: str, auth: str = "basic"
    ) -> dict[str, Any]:
        """POST form to the token endpoint, authenticating the client (basic or post); the JSON reply.

        Raises OidcError with the provider's error and error_description on a 4xx/5xx.
        """
        data = dict(form)
        headers = {"Accept": "application/json"}
        if auth == "basic":
            # RFC 6749 2.3.1: form-urlencode id and secret before base64.
            pair = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            data.update(client_id=client_id, client_secret=client_secret)
        return self._post_json(self.token_endpoint, data, headers)

    def client_credentials_token(
        self, client_id: str, client_secret: str, resource: str = RESOURCE, scope: str | None = None
    ) -> str:
        """A JWT access token for resource (aud = resource, sub = client_id) via client_credentials."""
        form = {"grant_type": "client_credentials", "resource": resource}
        if scope is not None:
            form["scope"] = scope
        reply = self.token_request(form, client_id=client_id, client_secret=client_secret)
        return str(reply["access_token"])

    def authorization_url(
        self,
        client_id: str,
        redirect_uri: str,
        *,
        scope: str = "openid email profile groups",
        state: str | None = None,
        nonce: str | None = None,
        code_challenge: str | None = None,
        **extra: str,
    ) -> str:
        """An authorization-code request URL (S256 PKCE when code_challenge is given)."""
        params = {"client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code", "scope": scope}
        if state is not None:
            params["state"] = state
        if nonce is not None:
            params["nonce"] = nonce
        if code_challenge is not None:
            params.update(code_challenge=code_challenge, code_challenge_method="S256")
        params.update(extra)
        return f"{self.discovery['authorization_endpoint']}?{urllib.parse.urlencode(params)}"

    def sign_in_with_browser(
        self, page: Any, username: str, password: str = "any-password", timeout: float = 10.0
    ) -> None:
        """Drive a Playwright (sync API) page through the provider until it leaves for the client.

        The page is on the provider's login form (or anywhere in the authorization flow): fill in
        `login` (the account id) and any password, submit, then submit the consent form if it comes.
        Login and consent are each done only when shown, so an existing session or consent given
        before are fine. Raises RuntimeError with the page's text when stuck on the provider.
        """
        deadline = time.monotonic() + timeout
        while self._on_provider(page.url):
            if page.locator("input[name=login]").count():
                page.fill("input[name=login]", username)
                page.fill("input[name=password]", password)
                page.click("button[type=submit]")
            elif page.locator("input[name=prompt][value=consent]").count():
                page.click("button[type=submit]")
            elif page.title() == ERROR_TITLE or time.monotonic() > deadline:
                raise RuntimeError(f"stuck on the provider at {page.url}:\n{page.inner_text('body')[:2000]}")
            else:
                page.wait_for_timeout(25)
                continue
            page.wait_for_load_state()
            if time.monotonic() > deadline:
                raise RuntimeError(f"stuck on the provider at {page.url}:\n{page.inner_text('body')[:2000]}")

    async def sign_in_with_browser_async(
        self, page: Any, username: str, password: str = "any-password", timeout: float = 10.0
    ) -> None:
        """sign_in_with_browser() for a Playwright async-API page."""
        deadline = time.monotonic() + timeout
        while self._on_provider(page.url):
            if await page.locator("input[name=login]").count():
                await page.fill("input[name=login]", username)
                await page.fill("input[name=password]", password)
                await page.click("button[type=submit]")
            elif await page.locator("input[name=prompt][value=consent]").count():
                await page.click("button[type=submit]")
            elif await page.title() == ERROR_TITLE or time.monotonic() > deadline:
                text = (await page.inner_text("body"))[:2000]
                raise RuntimeError(f"stuck on the provider at {page.url}:\n{text}")
            else:
                await page.wait_for_timeout(25)
                continue
            await page.wait_for_load_state()
            if time.monotonic() > deadline:
                text = (await page.inner_text("body"))[:2000]
                raise RuntimeError(f"stuck on the provider at {page.url}:\n{text}")

    def confirm_logout(self, page: Any) -> None:
        """On the provider's "Do you want to sign-out" page (sync API): press "Yes, sign me out"."""
        page.click("button[name=logout][value=yes]")
        page.wait_for_load_state()

    # Internals

    def _on_provider(self, url: str) -> bool:
        return url.startswith(self.issuer + "/")

    def _post_json(self, url: str, form: Mapping[str, str], headers: Mapping[str, str]) -> dict[str, Any]:
        body = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            raise OidcError(error.code, text) from None


class OidcError(Exception):
    """A 4xx/5xx from the provider: .status, .error, .description (from its JSON body when it has one)."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        self.error = str(parsed.get("error", "")) if isinstance(parsed, dict) else ""
        self.description = str(parsed.get("error_description", "")) if isinstance(parsed, dict) else ""
        super().__init__(f"{status} {self.error}: {self.description or body[:300]}")


def node_modules_installed() -> bool:
    return (HERE / "node_modules" / "oidc-provider").is_dir()
