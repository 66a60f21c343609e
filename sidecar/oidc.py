"""Single sign-on with OpenID Connect providers (and plain OAuth2 ones such as GitHub).

``/oidc/<name>/start`` binds a random state, nonce and PKCE verifier to the browser in a
short-lived encrypted cookie and sends the browser to the provider. The provider sends it back to
the callback with a code; the sidecar checks the state, exchanges the code (proving the verifier),
verifies the ID token strictly (:mod:`sidecar.tokens`), maps claims to an identity, checks who is
allowed, and ends in the same session cookie as the login form. A refresh token, when granted,
renews the identity; ``/logout`` can also end the provider's session (RP-initiated logout).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from sidecar.config import Allow, ClaimMap, OidcProvider
from sidecar.cookies import Cookie
from sidecar.errors import (
    AccessDenied,
    AuthError,
    FetchFailed,
    InvalidCredentials,
    ProviderUnavailable,
    Unavailable,
    UnknownUser,
    Unsealable,
)
from sidecar.fetch import fetch_json
from sidecar.identity import Identity, fold
from sidecar.jwks import Discovery, JwksCache
from sidecar.logs import audit
from sidecar.metrics import NO_METRICS, Metrics
from sidecar.redirects import RedirectPolicy
from sidecar.sealing import Sealer, derive_key
from sidecar.sessions import Session
from sidecar.store.fleet import Fleet
from sidecar.tokens import Expectations, allowed_algorithms, claim, claim_strings

log = logging.getLogger("sidecar.oidc")

STATE_TTL = 600  # seconds a sign-in may take at the provider
HTTP_TIMEOUT = 10.0
# Seconds a replica holds a session's refresh: past its token call's timeout, and after it is done,
# until the browser has the new cookie (a replica given the old one must not spend the old token).
REFRESH_LOCK = 60.0
MAX_RESPONSE = 256 * 1024
# Error codes a provider may send back (RFC 6749 4.1.2.1), as people should read them.
PROVIDER_ERRORS = {
    "access_denied": "You did not allow the sign-in at the provider.",
    "login_required": "The provider needs you to sign in again.",
    "consent_required": "The provider needs your consent first.",
    "interaction_required": "The provider needs you to act first.",
    "temporarily_unavailable": "The provider is busy. Try again in a minute.",
    "server_error": "The provider had a problem. Try again in a minute.",
}


class HttpClient:
    """The one aiohttp session for talking to providers, opened and closed with the application."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ProviderUnavailable("the HTTP client is not running")
        return self._session

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
                                              headers={"User-Agent": "auth-sidecar"})
        yield
        await self._session.close()
        self._session = None


def identity_from_claims(claims: Mapping[str, Any], mapping: ClaimMap, allow: Allow, source: str,
                         prefix: str = "") -> Identity:
    """The identity a provider's claims describe, if the provider's allow-list lets it in.

    The name is used as the provider says it, behind the provider's ``username_prefix``: never
    trimmed or otherwise altered into what might be somebody else's name."""
    username = claim(claims, mapping.username)
    if not isinstance(username, str) or not username.strip() or username != username.strip():
        raise InvalidCredentials(f"the {mapping.username!r} claim is missing, padded or not a string")
    groups = claim_strings(claims, mapping.groups) if mapping.groups else ()
    email = _text(claims, mapping.email)
    if allow.groups and not allow.groups & set(groups):
        raise AccessDenied(f"{username} is in none of the allowed groups")
    if allow.email_domains:
        domain = email.rpartition("@")[2].lower()
        # Only an address the provider says it verified proves a domain: a missing claim is no.
        if claims.get("email_verified") is not True or domain not in allow.email_domains:
            raise AccessDenied(f"{username}'s email {email!r} is not verified or not in an allowed domain")
    return Identity(
        username=prefix + username,
        first_name=_text(claims, mapping.first_name),
        last_name=_text(claims, mapping.last_name),
        email=email,
        groups=tuple(sorted(set(groups), key=str.casefold)),
        rule_groups=frozenset(fold(g) for g in groups),
        source=source,
    )


def _text(claims: Mapping[str, Any], path: str) -> str:
    value = claim(claims, path) if path else None
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Pending:
    """A sign-in in progress, as the state cookie carries it."""

    provider: str
    state: str
    nonce: str
    verifier: str
    rd: str
    started: float


class StateCookie:
    """The short-lived sealed cookie that binds a sign-in in progress to this browser."""

    def __init__(self, secret: str, *, secure: bool, clock: Callable[[], float] = time.time) -> None:
        # A key of its own: a state cookie can never be taken for a session, nor the reverse.
        self._sealer = Sealer([(None, derive_key(secret, "oidc state"))])
        self._cookie = Cookie("sidecar_oidc", secure=secure, same_site="Lax")
        self.name = self._cookie.cookie_name()
        self._clock = clock

    def seal(self, pending: Pending) -> str:
        payload = json.dumps(dataclasses.asdict(pending), separators=(",", ":")).encode()
        return self._cookie.set_cookie_header(self._sealer.seal(payload), STATE_TTL)

    def cleared(self) -> str:
        return self._cookie.clear_cookie_header()

    def read(self, header: str | None) -> Pending | None:
        return self.open(self._cookie.read(header))

    def open(self, value: str | None) -> Pending | None:
        if not value or len(value) > 4096:
            return None
        try:
            pending = Pending(**json.loads(self._sealer.open(value)))
        except (Unsealable, ValueError, TypeError, RecursionError):
            return None
        if not all(isinstance(v, str) for v in dataclasses.astuple(pending)[:5]):
            return None
        if not 0 <= self._clock() - pending.started <= STATE_TTL:
            return None
        return pending


@dataclass(frozen=True, slots=True)
class Grant:
    identity: Identity
    refresh_token: str | None
    # How the provider says the user signed in (its ID token's amr and auth_time), only from a
    # provider the operator trusts with it (second_factor.trust_amr); else () and None.
    amr: tuple[str, ...] = ()
    auth_time: float | None = None


class Admission(Protocol):
    """A source's group rules: the identity admitted as they make it, or AccountRefused."""

    def __bool__(self) -> bool: ...

    def admit(self, identity: Identity) -> Awaitable[Identity]: ...


class Provider:
    """One configured provider: its metadata and keys, the code exchange, refresh and logout."""

    def __init__(self, config: OidcProvider, http: HttpClient, *, redirect_uri: str, leeway: float,
                 clock: Callable[[], float] = time.time, metrics: Metrics = NO_METRICS,
                 policy: Admission | None = None, fleet: Fleet | None = None, trust_amr: bool = False,
                 trust_acr: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.trust_amr = trust_amr
        self.trust_acr = trust_acr  # acr values that mean a second factor (as mfa), when trust_amr
        self._metrics = metrics
        self._policy = policy  # the provider's group rules (sidecar.policy.NamePolicy)
        self._refreshes = metrics.refreshes(config.name)
        self.name = config.name
        self.id = f"oidc:{config.name}"  # the identity source: sidecar.sources
        self._http = http
        self._redirect_uri = redirect_uri
        self._leeway = leeway
        self._clock = clock
        self._discovery: Discovery | None = None
        self._jwks: JwksCache | None = None
        # With a fleet: one replica refreshes a session at a time (rotating refresh tokens die of races).
        self.fleet = fleet

    async def metadata(self) -> Mapping[str, Any]:
        config = self.config
        if config.type == "oauth2":
            return {"authorization_endpoint": config.authorization_url, "token_endpoint": config.token_url,
                    "userinfo_endpoint": config.userinfo_url}
        assert config.issuer is not None
        if self._discovery is None:
            self._discovery = Discovery(self._http.session, config.issuer, metrics=self._metrics)
        return await self._discovery.document()

    async def authorization_url(self, pending: Pending) -> str:
        metadata = await self.metadata()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(pending.verifier.encode()).digest()).rstrip(b"=")
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self._redirect_uri,
            "scope": " ".join(self.config.scopes),
            "state": pending.state,
            "code_challenge": challenge.decode("ascii"),
            "code_challenge_method": "S256",
        }
        if self.config.type == "oidc":
            query["nonce"] = pending.nonce
        return f"{metadata['authorization_endpoint']}?{urlencode(query)}"

    async def complete(self, code: str, pending: Pending) -> Grant:
        tokens = await self._token({"grant_type": "authorization_code", "code": code,
                                    "redirect_uri": self._redirect_uri, "code_verifier": pending.verifier})
        return await self._grant(tokens, nonce=pending.nonce)

    async def renew(self, session: Session) -> Session:
        """The session with its identity described again through its refresh token (as it is
        without one: the provider vouched for it when it signed in)."""
        if session.refresh_token is None:
            if session.groups_elsewhere:  # what the sidecar kept of it is gone: nothing to go on
                raise UnknownUser(f"{self.id} cannot describe {session.identity.username} again: no refresh token")
            return session
        if self.fleet is None:
            grant = await self.refresh(session.refresh_token)
        else:
            async with self.fleet.holding(f"refresh:{session.id}", REFRESH_LOCK, keep_after=True) as held:
                if not held:  # another replica refreshes it, or just did: keep the session as it is for now
                    raise ProviderUnavailable(f"{self.id}: another instance is refreshing this session")
                grant = await self.refresh(session.refresh_token)
        return dataclasses.replace(session, identity=grant.identity, refresh_token=grant.refresh_token)

    async def refresh(self, refresh_token: str) -> Grant:
        try:
            tokens = await self._token({"grant_type": "refresh_token", "refresh_token": refresh_token})
            grant = await self._grant(tokens, nonce=None)
        except AuthError as exc:
            self._refreshes.refused(exc)
            raise
        self._refreshes.ok()
        # Providers that do not rotate refresh tokens let the old one be used again.
        return grant if grant.refresh_token else dataclasses.replace(grant, refresh_token=refresh_token)

    async def logout_url(self, return_to: str) -> str | None:
        if not self.config.logout:
            return None
        end_session = (await self.metadata()).get("end_session_endpoint")
        if not isinstance(end_session, str):
            return None
        query = urlencode({"client_id": self.config.client_id, "post_logout_redirect_uri": return_to})
        return f"{end_session}?{query}"

    async def _grant(self, tokens: Mapping[str, Any], *, nonce: str | None) -> Grant:
        claims: dict[str, Any] = {}
        if self.config.type == "oidc":
            id_token = tokens.get("id_token")
            if not isinstance(id_token, str):
                raise InvalidCredentials("the provider's token answer has no ID token")
            claims = await self._verified(id_token, nonce)
        signed = claims  # amr and auth_time count only from the signed ID token, never from userinfo
        if self.config.use_userinfo:
            info = await self._userinfo(tokens.get("access_token"))
            if claims and info.get("sub") != claims.get("sub"):
                raise InvalidCredentials("userinfo describes another subject than the ID token")
            claims = {**claims, **info}
        refresh = tokens.get("refresh_token")
        identity = identity_from_claims(claims, self.config.claims, self.config.allow, self.id,
                                        self.config.username_prefix)
        if self._policy:
            identity = await self._policy.admit(identity)
        return Grant(identity, refresh if isinstance(refresh, str) else None, *self._methods(signed))

    def _methods(self, signed: Mapping[str, Any]) -> tuple[tuple[str, ...], float | None]:
        """(amr, auth_time) of the signed ID token, when the operator trusts this provider with them."""
        if not self.trust_amr:
            return (), None
        amr, auth_time = signed.get("amr"), signed.get("auth_time")
        methods = tuple(v for v in amr if isinstance(v, str)) if isinstance(amr, list) else ()
        if signed.get("acr") in self.trust_acr and "mfa" not in methods:
            methods = (*methods, "mfa")
        return methods, float(auth_time) if type(auth_time) is int else None

    async def _verified(self, id_token: str, nonce: str | None) -> dict[str, Any]:
        metadata = await self.metadata()
        if self._jwks is None:
            self._jwks = JwksCache(self._http.session, str(metadata["jwks_uri"]), metrics=self._metrics)
        advertised = self.config.algorithms or metadata.get("id_token_signing_alg_values_supported")
        try:
            algorithms = allowed_algorithms(advertised)
        except ValueError as exc:
            raise ProviderUnavailable(f"{self.name}: {exc}") from None
        expected = Expectations(issuer=str(metadata["issuer"]), audiences=frozenset({self.config.client_id}),
                                algorithms=algorithms, leeway=self._leeway,
                                require_nonce=nonce, authorized_party=self.config.client_id)
        return await self._jwks.verify(id_token, expected, self._clock())

    async def _userinfo(self, access_token: object) -> dict[str, Any]:
        if not isinstance(access_token, str):
            raise InvalidCredentials("the provider's token answer has no access token")
        url = str((await self.metadata())["userinfo_endpoint"])
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        return await self._json("GET", url, headers=headers)

    async def _token(self, form: dict[str, str]) -> dict[str, Any]:
        url = str((await self.metadata())["token_endpoint"])
        auth = aiohttp.BasicAuth(self.config.client_id, self.config.client_secret.reveal())
        return await self._json("POST", url, data=form, auth=auth)

    async def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer = await fetch_json(self._http.session, url, method=method, timeout=HTTP_TIMEOUT,
                                      max_bytes=MAX_RESPONSE, allow_redirects=False, **kwargs)
        except FetchFailed as exc:
            raise ProviderUnavailable(f"{self.name}: {method} {url} failed: {exc}") from None
        status, document = answer.status, answer.document
        if status >= 500:
            raise ProviderUnavailable(f"{self.name}: {method} {url} answered {status}")
        if not isinstance(document, dict):
            raise InvalidCredentials(f"{self.name}: {method} {url} answered {status} without a JSON object")
        if status >= 400 or "error" in document:
            error = str(document.get("error", status))[:60]
            raise InvalidCredentials(f"{self.name} refused at {url}: {error}")
        return document


class Landing(Protocol):
    """Where a sign-in ends (sidecar.signin.Landing): the session and the way back, or a page."""

    async def signed_in(self, identity: Identity, rd: str, refresh_token: str | None = None, *,
                        amr: tuple[str, ...] = (), auth_time: float | None = None) -> web.Response: ...

    def message(self, status: int, title: str, text: str) -> web.Response: ...


class SingleSignOn:
    """The /oidc/<name>/start and callback handlers, and what sessions need from providers."""

    def __init__(self, providers: list[Provider], *, state: StateCookie, redirects: RedirectPolicy, path: str,
                 landing: Landing, clock: Callable[[], float] = time.time) -> None:
        self.providers = {p.name: p for p in providers}
        self._by_id = {p.id: p for p in providers}
        self.state = state
        self.redirects = redirects
        self.path = path
        self._landing = landing  # makes the session cookie and the redirect: shared with the login form
        self._page = landing.message
        self._clock = clock

    def buttons(self, rd: str) -> list[tuple[str, str]]:
        suffix = f"?{urlencode({'rd': rd})}" if rd else ""
        return [(p.config.label, f"{self.path}/oidc/{name}/start{suffix}") for name, p in self.providers.items()]

    async def start(self, request: web.Request) -> web.Response:
        provider = self.providers.get(request.match_info["name"])
        if provider is None:
            return self._page(404, "Unknown sign-in provider", "There is no such way to sign in here.")
        pending = Pending(provider=provider.name, state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32),
                          verifier=secrets.token_urlsafe(48), rd=self.redirects.safe(request.query.get("rd")),
                          started=self._clock())
        try:
            url = await provider.authorization_url(pending)
        except ProviderUnavailable as exc:
            log.error("sign-in with %s cannot start: %s", provider.name, exc.reason)
            return self._page(503, "Sign-in unavailable", "The sign-in service cannot be reached. Try again soon.")
        response = web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
        response.headers.add("Set-Cookie", self.state.seal(pending))
        return response

    async def callback(self, request: web.Request) -> web.Response:
        query = request.query
        pending = self.state.read(request.headers.get("Cookie"))
        if pending is None or not hmac.compare_digest(query.get("state", "").encode(), pending.state.encode()):
            log.warning("sign-in callback refused: the state is missing, expired or not this browser's")
            return self._refused(400, "This sign-in expired or was started elsewhere. Please start again.")
        provider = self.providers.get(pending.provider)
        if provider is None:
            return self._refused(400, "This sign-in was started with a provider that is gone. Please start again.")
        if "error" in query:
            error = query["error"][:60]
            log.warning("sign-in with %s refused by the provider: %s", provider.name, error)
            return self._refused(401, PROVIDER_ERRORS.get(error, "The provider did not complete the sign-in."))
        try:
            grant = await provider.complete(query.get("code", ""), pending)
        except ProviderUnavailable as exc:
            log.error("sign-in with %s failed: %s", provider.name, exc.reason)
            return self._refused(503, "The sign-in service cannot be reached. Try again soon.")
        except AuthError as exc:
            log.warning("%d sign-in with %s refused: %s", exc.status, provider.name, exc.reason,
                        extra=audit("sign_in_refused", request.headers, source=provider.name, status=exc.status,
                                    reason=exc.reason))
            text = ("Your account is not allowed here." if exc.status == 403
                    else "The sign-in could not be completed. Please start again.")
            return self._refused(exc.status, text)
        log.info("signed in %s with %s", grant.identity.username, provider.name,
                 extra=audit("sign_in", request.headers, user=grant.identity.username, source=grant.identity.source))
        try:
            response = await self._landing.signed_in(grant.identity, pending.rd, grant.refresh_token, amr=grant.amr,
                                                     auth_time=grant.auth_time)
        except Unavailable as exc:  # the second factors' store
            log.error("sign-in with %s failed: %s", provider.name, exc.reason)
            return self._refused(503, "Sign-in is unavailable right now. Try again in a minute.")
        response.headers.add("Set-Cookie", self.state.cleared())
        return response

    def _refused(self, status: int, text: str) -> web.Response:
        response = self._page(status, "Sign-in failed", text)
        response.headers.add("Set-Cookie", self.state.cleared())
        return response

    async def logout_url(self, session: Session | None, return_to: str) -> str | None:
        provider = self._by_id.get(session.identity.source) if session is not None else None
        if provider is None:
            return None
        try:
            return await provider.logout_url(return_to)
        except ProviderUnavailable:
            return None  # signed out here at least
