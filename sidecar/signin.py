"""Browser sign-in: the login form and sign-out (the session side of /auth is sidecar.session_auth).

``GET /login`` shows the form with a CSRF token (double submit: a ``SameSite=Strict`` cookie and
a form field that must match); ``POST /login`` checks it, the regulation, then the password, and
answers with the session cookie and a redirect to ``rd`` (only to allowed hosts). ``/logout``
revokes the session (its second button every session of the user) and clears the cookie: a
replayed value is refused until it would have expired; then ``/signed-out`` says so, unless
``logout_redirect`` or the provider's own sign-out page takes the browser elsewhere.
``/forbidden`` is the "not allowed here" page the proxies show instead of their bare 403.

Forms are read as browsers post them and nothing else: URL-encoded UTF-8, at most 16 KiB, each
field once; anything else is a 400 page and one warning.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, quote, urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from sidecar.basic import check_password_shape, normalize_username
from sidecar.cookies import Cookie
from sidecar.errors import AccountRefused, AuthError, SessionTooLarge, Throttled, Unavailable
from sidecar.factors import Codes, second_factor
from sidecar.forwarded import ClientAddress
from sidecar.identity import Identity
from sidecar.logs import audit
from sidecar.oidc import SingleSignOn
from sidecar.pages import Pages
from sidecar.passwords import PasswordVerifier
from sidecar.redirects import RedirectPolicy
from sidecar.session_auth import SessionJar
from sidecar.sessions import CookieSettings

log = logging.getLogger("sidecar.signin")

CSRF_MAX_AGE = 3600  # seconds a sign-in form stays usable

GENERIC_ERROR = "Wrong username or password."
THROTTLED_ERROR = "Too many failed attempts. Wait a few minutes, then try again."
UNAVAILABLE_ERROR = "Sign-in is unavailable right now. Try again in a minute."
# Only ever after the account's source accepted the password (AccountRefused): no stranger reads it.
REFUSED_ERROR = "This account may not sign in. If you think it should, ask your administrator."
MAX_FORM = 16 * 1024
MAX_FIELDS = 16  # the forms have five fields at most
FORM_TYPE = "application/x-www-form-urlencoded"
BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
LOGOUT_TEXT = ("Sign out of every application behind this gateway? To end your sessions in other browsers "
               "and on other devices as well, choose the second button.")
EVERYWHERE = "everywhere"  # the logout form's "scope" when every session of the user ends
EVERYWHERE_LABEL = "End my sessions everywhere"


def is_browser(request: web.Request) -> bool:
    headers = request.headers
    return "text/html" in headers.get("Accept", "") and "X-Requested-With" not in headers


class Landing:
    """Where every sign-in ends — the login form and each provider alike: the session cookie and
    the way back, or a page saying why not — and how the sign-in pages are served."""

    def __init__(self, *, pages: Pages, jar: SessionJar, cookie: CookieSettings, max_age: int, path: str,
                 csp: str, codes: Codes | None = None, clock: Callable[[], float] = time.time) -> None:
        self.pages = pages
        self.codes = codes  # second factors: a user who enrolled one gives it after the password
        self._clock = clock
        self.jar = jar
        self.cookie = cookie
        self.max_age = max_age
        self.path = path
        self.csp = csp

    async def signed_in(self, identity: Identity, rd: str, refresh_token: str | None = None, *,
                        client: str | None = None, amr: tuple[str, ...] = (),
                        auth_time: float | None = None) -> web.Response:
        """The end of any sign-in, the second factor considered: a trusted provider's ``amr`` that
        names one counts (given at ``auth_time``); else a user who enrolled a factor is half-signed-in
        and sent to the code page first. Unavailable when the factor store cannot say."""
        now = self._clock()
        methods, factor_at, pending = amr or ("pwd",), 0.0, False
        if second_factor(methods):
            factor_at = min(auth_time or now, now)
        elif self.codes is not None:
            pending = await self.codes.enrolled((identity.source, identity.username))
        if pending:
            rd = f"{self.path}/factor?rd={quote(rd, safe='')}"
        return self.finish(identity, rd, refresh_token, client=client, pending=pending, methods=methods,
                           factor_at=factor_at)

    def finish(self, identity: Identity, rd: str, refresh_token: str | None = None, *,
               client: str | None = None, pending: bool = False, methods: tuple[str, ...] = ("pwd",),
               factor_at: float = 0.0) -> web.Response:
        """The session cookie, and back to where the person was going (``client``, the address
        signing in, if known, for the admin channel's list of sessions). A ``pending`` session waits
        for its second factor: ``rd`` is then the code page."""
        session = dataclasses.replace(self.jar.codec.start(identity), refresh_token=refresh_token, pending=pending,
                                      methods=methods, factor_at=factor_at)
        try:
            value = self.jar.encode(session)
        except SessionTooLarge:
            log.error("session of %s is too large for a cookie", identity.username)
            return self.message(503, "Sign-in failed", UNAVAILABLE_ERROR)
        if not pending:  # a half sign-in is counted and listed once its factor makes it a whole one
            self.jar.issued(session, client)
        response = web.Response(status=303, headers={"Location": rd, "Cache-Control": "no-store"})
        response.headers.add("Set-Cookie", self.cookie.set_cookie_header(value, self.max_age))
        return response

    def message(self, status: int, title: str, text: str) -> web.Response:
        link = ("Back to sign-in", self.path + "/login")
        return self.page(status, self.pages.message(title=title, text=text, link=link))

    def page(self, status: int, html: str, *, set_cookie: str | None = None, scripts: bool = False) -> web.Response:
        """A page of ours; with ``scripts``, our own script files may run (the passkey pages)."""
        headers = CIMultiDict({
            "Content-Security-Policy": self.csp + ("; script-src 'self'; connect-src 'self'" if scripts else ""),
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        })
        if set_cookie is not None:
            headers.add("Set-Cookie", set_cookie)
        return web.Response(status=status, text=html, content_type="text/html", headers=headers)


class SignIn:
    """The login and logout pages."""

    def __init__(self, *, landing: Landing, verifier: PasswordVerifier | None, sso: SingleSignOn | None,
                 redirects: RedirectPolicy, client_address: ClientAddress, public_url: str,
                 logout_redirect: str | None, clock: Callable[[], float] = time.time) -> None:
        self.landing = landing
        self.pages = landing.pages
        self.verifier = verifier
        self.sso = sso
        self.jar = landing.jar
        self.cookie = cookie = landing.cookie
        self.redirects = redirects
        self.client_address = client_address
        self.public_url = public_url
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(public_url))
        self.path = landing.path  # where the proxy serves our pages
        self.logout_redirect = logout_redirect
        self._clock = clock
        self.csrf = Cookie("sidecar_csrf", secure=cookie.secure, same_site="Strict")
        self.codes = landing.codes

    def login_url(self, original_url: str | None) -> str:
        """Where a browser without a session is sent: the login page, with the page it wanted."""
        if not original_url:
            return f"{self.public_url}/login"
        return f"{self.public_url}/login?rd={quote(original_url, safe='')}"

    def factor_url(self, original_url: str | None) -> str:
        """Where a session without the second factor a page asks for is sent (sidecar.second_factor)."""
        if not original_url:
            return f"{self.public_url}/factor"
        return f"{self.public_url}/factor?rd={quote(original_url, safe='')}"

    # -- handlers -----------------------------------------------------------------------------

    async def show_login(self, request: web.Request) -> web.Response:
        rd = self.redirects.safe(request.query.get("rd"))
        return self._form(request, rd=rd)

    async def submit_login(self, request: web.Request) -> web.Response:
        form = await self.form_fields(request)
        if form is None:
            return self.csrf_page(400, self.pages.message(title="Sign-in failed",
                                                      text="Your sign-in form expired. Please try again.",
                                                      link=("Back to sign-in", self.path + "/login")))
        rd = self.redirects.safe(form.get("rd"))
        if self.verifier is None:
            return self.message_page(404, "Sign-in failed", "Passwords are not accepted here: use a button below.")
        typed = form.get("username", "")
        client = self.client_address(request)
        try:
            username = normalize_username(typed)
            verdict = await self.verifier.verify(username, check_password_shape(form.get("password", "")), client)
        except Unavailable as exc:
            log.error("503 sign-in of %r: %s client=%s", typed[:64], exc.reason, client,
                      extra=audit("sign_in_failed", request.headers, user=typed[:64], client=client, status=503,
                                  reason=exc.reason))
            return self._form(request, rd=rd, username=typed, error=UNAVAILABLE_ERROR, status=503)
        except AuthError as refusal:
            log.warning("%d sign-in refused for %r: %s client=%s", refusal.status, typed[:64], refusal.reason, client,
                        extra=audit("sign_in_refused", request.headers, user=typed[:64], client=client,
                                    status=refusal.status, reason=refusal.reason))
            if isinstance(refusal, AccountRefused):
                return self._form(request, rd=rd, username=typed, error=REFUSED_ERROR, status=403)
            throttled = isinstance(refusal, Throttled)
            error = THROTTLED_ERROR if throttled else GENERIC_ERROR
            return self._form(request, rd=rd, username=typed, error=error, status=429 if throttled else 401)
        assert verdict.identity is not None  # verify answers an identity or raises
        who = verdict.identity
        try:
            response = await self.landing.signed_in(verdict.identity, rd, client=client)
        except Unavailable as exc:  # the second factors' store
            log.error("503 sign-in of %s: %s client=%s", who.username, exc.reason, client)
            return self._form(request, rd=rd, username=typed, error=UNAVAILABLE_ERROR, status=503)
        if "/factor?rd=" in response.headers["Location"]:
            log.info("password of %s (%s) right, second factor asked client=%s", who.username, who.source, client,
                     extra=audit("sign_in_password", request.headers, user=who.username, source=who.source,
                                 client=client))
        else:
            log.info("signed in %s (%s) client=%s", who.username, who.source, client,
                     extra=audit("sign_in", request.headers, user=who.username, source=who.source, client=client))
        response.headers.add("Set-Cookie", self.csrf.clear_cookie_header())
        return response

    def message_page(self, status: int, title: str, text: str) -> web.Response:
        return self.landing.message(status, title, text)

    async def show_logout(self, request: web.Request) -> web.Response:
        token = self.csrf_token(request)
        page = self.pages.confirm(title="Sign out", text=LOGOUT_TEXT, action=self.path + "/logout", csrf_token=token,
                                  button="Sign out", choice=(EVERYWHERE, EVERYWHERE_LABEL))
        return self.csrf_page(200, page, csrf=token)

    async def submit_logout(self, request: web.Request) -> web.Response:
        fields = await self.form_fields(request)
        if fields is None:
            return self.csrf_page(400, self.pages.message(title="Sign-out failed",
                                                      text="Your sign-out form expired. Please try again.",
                                                      link=("Back", self.path + "/logout")))
        everywhere = fields.get("scope") == EVERYWHERE
        session = self.jar.sign_out(self.cookie.read(request.headers.get("Cookie")) or "",
                                    everywhere=everywhere)
        if session is not None:
            who, client = session.identity, self.client_address(request)
            log.info("signed out %s (%s)%s client=%s", who.username, who.source, " everywhere" if everywhere else "",
                     client, extra=audit("sign_out_everywhere" if everywhere else "sign_out", request.headers,
                                         user=who.username, source=who.source, client=client))
        target = self.logout_redirect or self.path + "/login"
        provider = None
        if self.sso is not None:
            # Signed in through a provider that ends its own session too: go there, then come back
            # (to the page the provider knows: the one registered as its post-logout URI).
            back = target if "://" in target else self.origin + target
            provider = await self.sso.logout_url(session, back)
        if provider is not None:
            target = provider
        elif self.logout_redirect is None:
            target = self.path + "/signed-out" + ("?everywhere" if everywhere else "")
        response = web.Response(status=303, headers={"Location": target, "Cache-Control": "no-store"})
        response.headers.add("Set-Cookie", self.cookie.clear_cookie_header())
        return response

    async def show_signed_out(self, request: web.Request) -> web.Response:
        text = ("You are signed out, here and on your other devices." if "everywhere" in request.query
                else "You are signed out.")
        return self.csrf_page(200, self.pages.message(title="Signed out", text=text,
                                                  link=("Sign in again", self.path + "/login")))

    def forbidden(self, request: web.Request) -> web.Response:
        """The 403 page for a browser that /auth refused: /auth's own answer in forward-auth mode,
        else what the proxy fetches instead of its bare 403 (nginx's error_page, Apache's
        ErrorDocument, HAProxy's backend). It names the user of the session cookie, if any: the
        one a sign-out would end (a Basic user is named by nobody, whatever the proxy)."""
        session = self.jar.open(self.cookie.read(request.headers.get("Cookie")) or "")
        page = self.pages.forbidden(username=session.identity.username if session is not None else None,
                                    sign_out=self.path + "/logout", back=self.redirects.default)
        return self.landing.page(403, page)

    async def static(self, request: web.Request) -> web.Response:
        found = self.pages.static_file(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff",
                                                "Cache-Control": "public, max-age=3600"})

    # -- helpers ------------------------------------------------------------------------------

    def _form(self, request: web.Request, *, rd: str, username: str = "", error: str | None = None,
              status: int = 200) -> web.Response:
        token = self.csrf_token(request)
        providers = self.sso.buttons(rd) if self.sso is not None else ()
        page = self.pages.login(action=self.path + "/login", csrf_token=token, rd=rd, username=username, error=error,
                                providers=providers, passwords=self.verifier is not None)
        return self.csrf_page(status, page, csrf=token)

    def csrf_page(self, status: int, html: str, *, csrf: str | None = None, scripts: bool = False) -> web.Response:
        cookie = self.csrf.set_cookie_header(csrf, CSRF_MAX_AGE) if csrf is not None else None
        return self.landing.page(status, html, set_cookie=cookie, scripts=scripts)

    def csrf_token(self, request: web.Request) -> str:
        existing = self.csrf.read(request.headers.get("Cookie"))
        if existing and 32 <= len(existing) <= 64 and existing.replace("-", "").replace("_", "").isalnum():
            return existing
        return secrets.token_urlsafe(32)

    async def form_fields(self, request: web.Request) -> dict[str, str] | None:
        """The posted form when its CSRF token and origin check out, else None (logged)."""
        client = self.client_address(request)
        origin = request.headers.get("Origin")
        if origin is not None and origin != self.origin:
            log.warning("form refused: Origin %r is not %r client=%s", origin[:100], self.origin, client)
            return None
        fields = await self._read_form(request)
        if isinstance(fields, str):
            log.warning("form refused: %s client=%s", fields, client)
            return None
        cookie = self.csrf.read(request.headers.get("Cookie")) or ""
        if not cookie or not hmac.compare_digest(cookie.encode(), fields.get("csrf", "").encode()):
            log.warning("form refused: CSRF token missing or wrong client=%s", client)
            return None
        return fields

    async def _read_form(self, request: web.Request) -> dict[str, str] | str:
        """The fields of a URL-encoded UTF-8 body of at most MAX_FORM bytes, each given once, as
        browsers post our forms; else why not (any other type, charset or encoding, a body too
        large or not percent-encoded UTF-8, a field twice)."""
        if (why := _not_a_form(request)) is not None:
            return why
        body = bytearray()
        try:
            while len(body) <= MAX_FORM and (chunk := await request.content.readany()):
                body += chunk
        except HttpProcessingError as exc:  # a broken chunked or compressed body
            return f"unreadable body ({type(exc).__name__})"
        if len(body) > MAX_FORM:
            return f"more than {MAX_FORM} bytes"
        if BAD_ESCAPE.search(body):
            return "a % is not followed by two hex digits"
        try:
            pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body),
                              encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS)
        except ValueError as exc:  # UnicodeDecodeError included
            return f"unreadable body ({type(exc).__name__})"
        fields = dict(pairs)
        if len(fields) != len(pairs):
            return "a field is given twice"
        return fields


def _not_a_form(request: web.Request) -> str | None:
    """Why the request's headers do not announce a form as browsers post ours, or None."""
    content_type, _, parameters = request.headers.get("Content-Type", "").partition(";")
    if content_type.strip().lower() != FORM_TYPE:
        return f"content type {content_type[:60]!r} is not {FORM_TYPE}"
    for parameter in parameters.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "charset" and value.strip('"').lower() not in ("utf-8", "utf8"):
            return f"charset {value[:40]!r} is not UTF-8"
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        return "the body is content-encoded"
    if (request.content_length or 0) > MAX_FORM:
        return f"{request.content_length} bytes"
    return None
