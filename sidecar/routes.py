"""HTTP handlers: /auth (every proxied request), /healthz, /readyz, and what a proxy serves from
the sidecar without sign-in (/forbidden, /favicon.ico, /robots.txt). Thin: the work is elsewhere."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from sidecar.access import AccessRules
from sidecar.app_tokens import AppTokens
from sidecar.assertion import AssertionSigner
from sidecar.errors import AccessDenied, AuthError, FactorRequired, FactorUnavailable, MalformedRequest
from sidecar.factors import demand_problem
from sidecar.forwarded import ClientAddress, Original, original
from sidecar.htmx import HX_REDIRECT, is_htmx, page_url
from sidecar.ldap import Directory
from sidecar.logs import audit
from sidecar.metrics import METHODS, NO_METRICS, Metrics, Outcomes
from sidecar.pages import public_files
from sidecar.signin import SignIn, is_browser
from sidecar.store.fleet import Fleet
from sidecar.trace import current
from sidecar.verdict import Authenticator, Verdict

log = logging.getLogger("sidecar.auth")

READY_FOR = 2.0  # seconds a readiness answer is reused, so probes cannot flood the directory
MAX_NAME_SETS = 1024  # sets of request header names known to hold no identity header


class Sidecar:
    """Everything the handlers need, built once at start-up."""

    def __init__(self, *, authenticators: list[Authenticator], rules: AccessRules,
                 client_address: ClientAddress, directory: Directory | None, realm: str,
                 basic_auth: bool = True, signin: SignIn | None = None, forward_auth: bool = False,
                 signer: AssertionSigner | None = None, assertion_header: str = "Remote-User-Assertion",
                 identity_headers: frozenset[str] = frozenset(), identity_prefix: str = "remote-user-",
                 metrics: Metrics = NO_METRICS, app_tokens: AppTokens | None = None,
                 fleet: Fleet | None = None) -> None:
        self.authenticators = authenticators
        self.app_tokens = app_tokens or None  # the application's own tokens: passed on, unjudged
        # The answers of /auth, counted and timed by the kind of credentials that decided them.
        self._decisions = {method: metrics.decisions(method) for method in METHODS}
        self.anonymous = self._decisions["none"]
        self.passed_on = self._decisions["app_token"]
        self.signer = signer
        self.assertion_header = assertion_header
        self.rules = rules
        self.client_address = client_address
        self.directory = directory
        self.signin = signin
        # Traefik and Caddy pass any non-2xx to the browser as is: browsers need the 302 itself.
        # nginx, ingress-nginx and HAProxy accept only 401 and make the redirect from Location.
        self.forward_auth = forward_auth
        self.redirect_status = 302 if forward_auth else 401
        self.challenge: CIMultiDict[str] | None = (
            CIMultiDict({"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'}) if basic_auth else None
        )
        # Names as a proxy could spell them (any case, "_" for "-"): none may reach us from a client.
        self.identity_headers = identity_headers
        self.identity_prefix = identity_prefix
        self._names_seen: set[tuple[str, ...]] = set()
        self._ready: tuple[float, str | None] = (0.0, "not checked yet")
        self.fleet = fleet

    def decisions(self, authenticator: Authenticator | None) -> Outcomes:
        """Where the answer of this authenticator (None: of none) is counted."""
        if authenticator is None:
            return self.anonymous
        return self._decisions.get(authenticator.method, self.anonymous)

    def describe(self, request: web.Request) -> Original:
        """The request the proxy asks about, read strictly; MalformedRequest if anything in it is ambiguous."""
        target = original(request, forward_auth=self.forward_auth)
        headers = request.headers
        if len(headers.getall("Authorization", ())) > 1:
            raise MalformedRequest("more than one Authorization header")
        # A proxy sends the same names, in the same order, on every request: each set is read once.
        names = tuple(headers.keys())
        if names not in self._names_seen:
            self._check_names(names)
            if len(self._names_seen) >= MAX_NAME_SETS:
                self._names_seen.clear()
            self._names_seen.add(names)
        return target

    def _check_names(self, names: tuple[str, ...]) -> None:
        for name in names:
            folded = name.lower().replace("_", "-")
            if folded in self.identity_headers or folded.startswith(self.identity_prefix):
                raise MalformedRequest(f"the proxy passed on a client's identity header {name[:100]!r}: "
                                       "its deploy files must strip it (see deploy/)")

    def unauthenticated(self, request: web.Request, target: Original | None, *, factor: bool = False) -> web.Response:
        """No credentials: browsers go to the login page (with ``factor``, a session that lacks the
        second factor: to the code page), everyone else gets a plain 401."""
        signin = self.signin
        if signin is not None and is_htmx(request):
            # Neither a Basic prompt nor a redirect followed inside the page: htmx loads the login page.
            page = page_url(request, target)
            url = signin.factor_url(page) if factor else signin.login_url(page)
            return _answer(401, CIMultiDict({HX_REDIRECT: url}))
        if signin is not None and is_browser(request):
            wanted = target.url if target is not None else None
            location = signin.factor_url(wanted) if factor else signin.login_url(wanted)
            return _answer(self.redirect_status, CIMultiDict({"Location": location}))
        return _answer(401, self.challenge)

    async def ready(self) -> bool:
        return await self.unready() is None

    async def unready(self) -> str | None:
        """Why sign-ins cannot be served now (the directory's check that fails), or None."""
        if self.directory is None:
            return None
        checked_at, problem = self._ready
        if time.monotonic() - checked_at > READY_FOR:
            try:
                problem = await self.directory.readiness()
            except Exception:
                log.exception("readiness check failed unexpectedly")
                problem = "the readiness check failed unexpectedly (see the log)"
            self._ready = (time.monotonic(), problem)
        return problem

    def degraded(self) -> str | None:
        """What works only in part now (the shared store is down), or None. Not a reason to be taken
        out of the load balancer: every replica would be at once, for an outage they all survive."""
        fleet = self.fleet
        if fleet is None or fleet.up:
            return None
        return f"state store unreachable ({fleet.reason}): regulation counts locally"


SIDECAR = web.AppKey("sidecar", Sidecar)


async def auth(request: web.Request) -> web.StreamResponse:
    """/auth as a route (HEAD, a query string): as sidecar.server answers ``GET /auth`` itself."""
    return await answer(request, request.app[SIDECAR])


async def answer(request: web.Request, sidecar: Sidecar) -> web.StreamResponse:
    """/auth, every proxied request: sidecar.server calls it for ``GET /auth`` without routing, so
    nothing on its way may read ``request.app`` or ``request.match_info``. The application's own
    tokens are passed on before any other way in (sidecar.app_tokens)."""
    app_tokens = sidecar.app_tokens
    if app_tokens is not None:
        started = time.perf_counter()
        try:
            if app_tokens.passes(request, sidecar.describe(request)):
                sidecar.passed_on.ok(started)
                return app_tokens.answer()
        except MalformedRequest:
            pass  # judged (and refused) below, as any request
    return await judge(request, sidecar)


async def judge(request: web.Request, sidecar: Sidecar) -> web.StreamResponse:
    started = time.perf_counter()
    target: Original | None = None
    authenticator: Authenticator | None = None  # the one that answered, or raised
    try:
        target = sidecar.describe(request)
        verdict: Verdict | None = None
        for authenticator in sidecar.authenticators:
            verdict = await authenticator.authenticate(request)
            if verdict is not None:
                break
        if verdict is None:
            log.debug("401 no credentials client=%s", sidecar.client_address(request))
            sidecar.anonymous.count("unauthenticated", started)
            return sidecar.unauthenticated(request, target)
        assert verdict.identity is not None  # an authenticator answers an identity, or raises its refusal
        decisions = sidecar.decisions(authenticator)
        rules = sidecar.rules
        if rules and not rules.allows(verdict.identity, target):
            denied = AccessDenied(f"access rules refuse {verdict.identity.username}")
            denied.user = verdict.identity.username
            decisions.refused(denied, started)
            return _refuse(request, sidecar, target, denied)
        _demand_factor(rules, authenticator, verdict, target)
        if verdict.set_cookie is None and sidecar.signer is None:
            decisions.ok(started)
            return web.Response(headers=verdict.headers)
        headers = CIMultiDict(verdict.headers)
        if sidecar.signer is not None:
            # Signed now, not cached with the verdict: an assertion lives a minute, a verdict an hour.
            headers[sidecar.assertion_header] = sidecar.signer.sign(verdict.identity, amr=verdict.methods,
                                                                    auth_time=verdict.auth_time)
        if verdict.set_cookie is not None:
            headers.add("Set-Cookie", verdict.set_cookie)
        decisions.ok(started)
        return web.Response(headers=headers)
    except AuthError as exc:  # every refusal, from any authenticator or rule, is answered here
        sidecar.decisions(authenticator).refused(exc, started)
        return _refuse(request, sidecar, target, exc, exc.set_cookie)
    except Exception:
        log.exception("unexpected error answering /auth; refusing the request")
        sidecar.decisions(authenticator).count("error", started)
        return _answer(503)


def _demand_factor(rules: AccessRules, authenticator: Authenticator | None, verdict: Verdict,
                   target: Original) -> None:
    """Raise FactorRequired (a browser is sent to the code page) when the path asks for a second
    factor the session has not given (recently enough); FactorUnavailable for credentials that
    cannot carry one (Basic, Bearer)."""
    if not rules.asks_factors:
        return
    assert verdict.identity is not None
    mode, max_age = rules.factor_demand(verdict.identity, target)
    problem = demand_problem(mode, max_age, methods=verdict.methods, factor_at=verdict.factor_at, now=time.time())
    if problem is None:
        return
    method = authenticator.method if authenticator is not None else "none"
    refusal: AuthError = (FactorRequired(problem) if method == "session"
                          else FactorUnavailable(f"{problem}: {method} credentials cannot carry one"))
    refusal.user = verdict.identity.username
    raise refusal


def _refuse(request: web.Request, sidecar: Sidecar, target: Original | None, error: AuthError,
            set_cookie: str | None = None) -> web.Response:
    if (trace := current()) is not None:
        trace.refused(error)
    level = logging.ERROR if error.status >= 500 else logging.WARNING
    # The raw target's path: printable ASCII, so no decoded character can break the line.
    where = f"{target.method} {target.host}{target.target.split('?', 1)[0]}" if target is not None else "-"
    client = sidecar.client_address(request)
    fields = {"method": target.method, "host": target.host, "path": target.target.split("?", 1)[0]} if target else {}
    log.log(level, "%d %s client=%s %s", error.status, error.reason, client, where,
            extra=audit("refusal", request.headers, client=client, status=error.status, reason=error.reason,
                        user=error.user, **fields))
    if error.status == 401:
        response = sidecar.unauthenticated(request, target, factor=isinstance(error, FactorRequired))
    elif error.status == 403 and sidecar.forward_auth and sidecar.signin is not None and is_browser(request):
        response = sidecar.signin.forbidden(request)  # Traefik and Caddy show this answer as it is
    elif isinstance(error, FactorUnavailable):  # the credentials were right: say what is missing
        response = _answer(403, detail="this path needs a second factor: sign in with a browser")
    else:
        response = _answer(error.status)
    if set_cookie is not None:
        response.headers.add("Set-Cookie", set_cookie)
    return response


def _answer(status: int, headers: CIMultiDict[str] | None = None, *, detail: str = "") -> web.Response:
    text = f"{status} {_REASONS[status]}" + (f": {detail}" if detail else "")
    return web.Response(status=status, headers=headers, text=text + "\n")


_REASONS = {302: "Found", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}


async def jwks(request: web.Request) -> web.Response:
    signer = request.app[SIDECAR].signer
    assert signer is not None  # the route exists only with a signer
    return web.json_response(signer.jwks(), headers={"Cache-Control": "public, max-age=300"})


async def forbidden(request: web.Request) -> web.Response:
    """Where a proxy sends a request /auth refused with 403: the page for browsers, else plain text."""
    signin = request.app[SIDECAR].signin
    if signin is None or not is_browser(request):
        return _answer(403)
    return signin.forbidden(request)


def _public_file(body: bytes, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff",
                                                "Cache-Control": "public, max-age=86400"})

    return serve


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    problem = await request.app[SIDECAR].unready()
    # Which check fails names servers and DNs: for a probe asking directly, not through a proxy.
    forwarded = any(name in request.headers for name in ("X-Forwarded-For", "Forwarded", "X-Real-IP"))
    if problem is None:
        degraded = request.app[SIDECAR].degraded()
        if degraded is None:
            return web.Response(text="ready\n")
        return web.Response(text="ready, degraded\n" if forwarded else f"ready, degraded: {degraded}\n")
    return web.Response(status=503, text="not ready\n" if forwarded else f"not ready: {problem}\n")


def core_routes() -> list[web.RouteDef]:
    """What every sidecar answers; each feature of sidecar.app adds its own."""
    public = [web.get(f"/{name}", _public_file(*found)) for name, found in public_files().items()]
    return [web.get("/auth", auth), web.get("/healthz", healthz), web.get("/readyz", readyz),
            web.route("*", "/forbidden", forbidden), *public]


def assertion_routes() -> list[web.RouteDef]:
    return [web.get("/.well-known/jwks.json", jwks)]


def sign_in_routes(signin: SignIn, callback_path: str) -> list[web.RouteDef]:
    routes = [
        web.get("/login", signin.show_login),
        web.post("/login", signin.submit_login),
        web.get("/logout", signin.show_logout),
        web.post("/logout", signin.submit_logout),
        web.get("/signed-out", signin.show_signed_out),
        web.get("/static/{name}", signin.static),
    ]
    if signin.sso is not None:
        routes += [web.get("/oidc/{name}/start", signin.sso.start), web.get(callback_path, signin.sso.callback)]
    return routes
