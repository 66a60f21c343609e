"""The second step of a browser sign-in: the code page, and setting up an authenticator app.

``GET /factor`` asks the session's user for a code (or a passkey, :mod:`sidecar.passkeys`); ``POST
/factor`` checks it and answers with a new session that records the factor (``methods``, and
when, ``factor_at``). Someone without a factor is sent to ``/factor/enrol``: a QR code and the
secret as text, confirmed by a first code, then recovery codes shown once.

Who the user is comes from the session cookie, never from a form: a half-signed-in (pending)
session reaches these pages and no others (/auth refuses it). Every form is CSRF-checked as the
login form is. Wrong codes draw on the regulator's budgets like wrong passwords. The secret being
enrolled travels in the form sealed to the user and the session (AES-GCM, associated data), so no
other session can confirm it, and a form replayed after success changes nothing: its code's time
step is used. A factor is added without one only by a user who has none yet; otherwise only within
MANAGE_WITHIN seconds of giving one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from cryptography.exceptions import InvalidTag

from sidecar import base64url
from sidecar.errors import SessionTooLarge, Throttled, Unavailable
from sidecar.factor_store import Cipher, User
from sidecar.factors import MANAGE_WITHIN, Codes, Replayed, second_factor
from sidecar.logs import audit
from sidecar.regulation import Regulator
from sidecar.sessions import Session, new_session_id
from sidecar.signin import THROTTLED_ERROR, UNAVAILABLE_ERROR, SignIn

log = logging.getLogger("sidecar.signin")
T = TypeVar("T")

PENDING_FOR = 600  # seconds a half-signed-in session may take to give its second factor
ENROL_FOR = 900  # seconds an offered TOTP secret may be confirmed
WRONG_CODE = "That code is not right, or was used already. Wait for the next one and try again."
CODE_TEXT = "Your password was right. Now give the code from your authenticator app."
STEP_UP_TEXT = "This page asks you to confirm it is you: give the code from your authenticator app."


class SecondFactor:
    """The handlers of the second step (see the module's docstring)."""

    def __init__(self, *, signin: SignIn, codes: Codes, cipher: Cipher, regulator: Regulator | None,
                 passkeys: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.signin = signin
        self.landing = signin.landing
        self.pages = signin.pages
        self.jar = signin.jar
        self.codes = codes
        self.store = codes.store
        self._cipher = cipher
        self.regulator = regulator
        self._clock = clock
        self.path = signin.path
        self.passkeys = passkeys  # the pages offer passkeys (sidecar.passkeys serves them)

    # -- handlers -----------------------------------------------------------------------------

    async def show_code(self, request: web.Request) -> web.Response:
        rd = self.signin.redirects.safe(request.query.get("rd"))
        session = self.session(request)
        if session is None:
            return _see_other(self.signin.login_url(rd))
        try:
            factors = await self.store.factors(_user(session))
        except Unavailable as exc:
            return self.unavailable(request, session, exc)
        if not factors:
            return _see_other(self._enrol_url(rd))
        return self._code_form(request, session, rd)

    async def submit_code(self, request: web.Request) -> web.Response:
        form = await self.signin.form_fields(request)
        session = self.session(request)
        if form is None or session is None:
            return self._expired()
        rd = self.signin.redirects.safe(form.get("rd"))
        user = _user(session)
        client = self.signin.client_address(request)
        try:
            method = await self.regulated(request, session, lambda: self._check(user, form.get("code", "")))
        except Throttled:
            return self._code_form(request, session, rd, error=THROTTLED_ERROR, status=429)
        except Unavailable as exc:
            return self.unavailable(request, session, exc)
        if method is None:
            return self._code_form(request, session, rd, error=WRONG_CODE, status=401)
        cookie = self.upgraded(session, method, client, request)
        if cookie is None:
            return self.landing.message(503, "Sign-in failed", UNAVAILABLE_ERROR)
        response = web.Response(status=303, headers={"Location": rd, "Cache-Control": "no-store"})
        response.headers.add("Set-Cookie", cookie)
        return response

    async def show_enrol(self, request: web.Request) -> web.Response:
        rd = self.signin.redirects.safe(request.query.get("rd"))
        session = self.session(request)
        if session is None:
            return _see_other(self.signin.login_url(rd))
        try:
            if not await self.may_enrol(session):
                return _see_other(self.signin.factor_url(rd))
        except Unavailable as exc:
            return self.unavailable(request, session, exc)
        offer = self.codes.offer(session.identity.username)
        return self._enrol_form(request, session, rd, offer.secret)

    async def submit_enrol(self, request: web.Request) -> web.Response:
        form = await self.signin.form_fields(request)
        session = self.session(request)
        if form is None or session is None:
            return self._expired()
        rd = self.signin.redirects.safe(form.get("rd"))
        secret = self._open_offer(session, form.get("enrolment", ""))
        if secret is None:
            log.warning("enrolment refused for %s: the offer is not this session's, or expired client=%s",
                        session.identity.username, self.signin.client_address(request))
            return self._expired()
        user = _user(session)
        client = self.signin.client_address(request)
        try:
            if not await self.may_enrol(session):
                log.warning("enrolment refused for %s: a factor exists and none was given recently client=%s",
                            session.identity.username, client)
                return _see_other(self.signin.factor_url(rd))
            confirmed = await self.regulated(request, session, lambda: self._confirm(user, secret, form))
        except Throttled:
            return self._enrol_form(request, session, rd, secret, error=THROTTLED_ERROR, status=429)
        except Unavailable as exc:
            return self.unavailable(request, session, exc)
        if confirmed is None:
            return self._enrol_form(request, session, rd, secret, error=WRONG_CODE, status=401)
        codes = confirmed
        log.info("second factor enrolled for %s: totp client=%s", user[1], client,
                 extra=audit("factor_enrolled", request.headers, user=user[1], source=user[0], kind="totp",
                             client=client))
        cookie = self.upgraded(session, "otp", client, request)
        if cookie is None:
            return self.landing.message(503, "Sign-in failed", UNAVAILABLE_ERROR)
        if not codes:
            response = web.Response(status=303, headers={"Location": rd, "Cache-Control": "no-store"})
            response.headers.add("Set-Cookie", cookie)
            return response
        return self.landing.page(200, self.pages.recovery_codes(codes=codes, url=rd), set_cookie=cookie)

    async def show_factors(self, request: web.Request) -> web.Response:
        """Manage my factors: only within MANAGE_WITHIN seconds of giving one (else the code page first)."""
        session = self.session(request)
        if session is None:
            return _see_other(self.signin.login_url(self._factors_url()))
        if not self._recent(session):
            return _see_other(self.signin.factor_url(self._factors_url()))
        user = _user(session)
        try:
            factors = await self.store.factors(user)
            left = await self.store.recovery_codes_left(user)
        except Unavailable as exc:
            return self.unavailable(request, session, exc)
        token = self.signin.csrf_token(request)
        listed = [(f.id, "Authenticator app" if f.kind == "totp" else f.label,
                   time.strftime("%Y-%m-%d", time.gmtime(f.created))) for f in factors]
        page = self.pages.factors(factors=listed, recovery_left=left, csrf_token=token,
                                  remove=self.path + "/factors/remove", enrol=self._enrol_url(self._factors_url()),
                                  recovery_action=self.path + "/factors/recovery")
        return self.signin.csrf_page(200, page, csrf=token)

    async def _managing(self, request: web.Request) -> tuple[dict[str, str], Session] | web.Response:
        """A "manage my factors" form and its session, or where the browser goes instead: the form
        expired (no CSRF or session), or the code page when no factor was given recently."""
        form = await self.signin.form_fields(request)
        session = self.session(request)
        if form is None or session is None:
            return self._expired()
        if not self._recent(session):
            return _see_other(self.signin.factor_url(self._factors_url()))
        return form, session

    async def remove_factor(self, request: web.Request) -> web.Response:
        managing = await self._managing(request)
        if isinstance(managing, web.Response):
            return managing
        form, session = managing
        user = _user(session)
        try:
            removed = await self.store.remove(user, form.get("factor", ""))
        except Unavailable as exc:
            return self.unavailable(request, session, exc)
        if removed:
            client = self.signin.client_address(request)
            log.info("second factor %s of %s removed client=%s", form["factor"], user[1], client,
                     extra=audit("factor_removed", request.headers, user=user[1], source=user[0], client=client))
        return _see_other(self._factors_url())

    async def new_recovery_codes(self, request: web.Request) -> web.Response:
        managing = await self._managing(request)
        if isinstance(managing, web.Response):
            return managing
        session = managing[1]
        try:
            codes = await self.codes.new_recovery_codes(_user(session))
        except Unavailable as exc:
            return self.unavailable(request, session, exc)
        log.info("new recovery codes for %s", session.identity.username,
                 extra=audit("recovery_codes", request.headers, user=session.identity.username))
        return self.landing.page(200, self.pages.recovery_codes(codes=codes, url=self._factors_url()))

    # -- helpers ------------------------------------------------------------------------------

    def _recent(self, session: Session) -> bool:
        """A full session whose second factor was given within MANAGE_WITHIN seconds."""
        return (not session.pending and second_factor(session.methods)
                and self._clock() - session.factor_at <= MANAGE_WITHIN)

    def _factors_url(self) -> str:
        return self.signin.public_url + "/factors"

    def session(self, request: web.Request) -> Session | None:
        """The session of the cookie, pending or not; a pending one only for PENDING_FOR seconds."""
        session = self.jar.open(self.signin.cookie.read(request.headers.get("Cookie")) or "")
        if session is not None and session.pending and self._clock() - session.issued_at > PENDING_FOR:
            return None
        return session

    async def _check(self, user: User, code: str) -> str | None:
        factors = await self.store.factors(user)
        try:
            return await self.codes.check(user, factors, code)
        except Replayed as exc:
            log.warning("replayed code of %s refused: %s", user[1], exc)
            return None

    async def _confirm(self, user: User, secret: str, form: dict[str, str]) -> list[str] | None:
        """The recovery codes to show (none if the user has some), or None for a wrong code."""
        try:
            if not await self.codes.confirm(user, secret, form.get("code", "").strip()):
                return None
        except Replayed as exc:
            log.warning("replayed code of %s refused at enrolment: %s", user[1], exc)
            return None
        await self.codes.enrol(user, secret)
        if await self.store.recovery_codes_left(user):
            return []
        return await self.codes.new_recovery_codes(user)

    async def regulated(self, request: web.Request, session: Session,
                            check: Callable[[], Awaitable[T | None]]) -> T | None:
        """``check`` run within the regulator's budgets: None (a wrong code) counts as a failure."""
        who = session.identity.username
        client = self.signin.client_address(request)
        regulator = self.regulator
        ticket = await regulator.admit(who, client) if regulator is not None else None
        outcome = "unknown"
        try:
            found = await check()
            outcome = "failed" if found is None else "succeeded"
        finally:
            if regulator is not None and ticket is not None:
                for ban in regulator.settle(ticket, outcome, who if outcome == "succeeded" else None, client):
                    log.warning("regulation: %s", ban, extra=audit("ban", user=who, client=client, reason=ban))
                await regulator.written(ticket)  # a wrong code: in the fleet's budgets before the answer
        if found is None:
            log.warning("401 second factor refused for %s client=%s", who, client,
                        extra=audit("factor_refused", request.headers, user=who, client=client, status=401))
        return found

    async def may_enrol(self, session: Session) -> bool:
        return self._recent(session) or not await self.store.factors(_user(session))

    def upgraded(self, session: Session, method: str, client: str, request: web.Request) -> str | None:
        """The Set-Cookie of the session with its second factor: a new id (the old cookie is revoked,
        so a pending one cannot be used again), the method recorded, and now as its time."""
        now = self._clock()
        methods = tuple(dict.fromkeys((*session.methods, method)))
        upgraded = dataclasses.replace(session, pending=False, methods=methods, factor_at=now, last_seen=now,
                                       id=new_session_id())
        try:
            value = self.jar.encode(upgraded)
        except SessionTooLarge:
            log.error("session of %s is too large for a cookie", session.identity.username)
            return None
        self.jar.sign_out(self.signin.cookie.read(request.headers.get("Cookie")) or "")
        self.jar.issued(upgraded, client)
        who = session.identity
        log.info("signed in %s (%s) with %s client=%s", who.username, who.source, "|".join(methods), client,
                 extra=audit("sign_in", request.headers, user=who.username, source=who.source, client=client,
                             methods="|".join(methods)))
        return self.signin.cookie.set_cookie_header(value, self.landing.max_age)

    def _code_form(self, request: web.Request, session: Session, rd: str, *, error: str | None = None,
                   status: int = 200) -> web.Response:
        token = self.signin.csrf_token(request)
        passkey = self._passkey("signin", "Use a passkey")
        page = self.pages.factor_code(action=self.path + "/factor", csrf_token=token, rd=rd, error=error,
                                      text=CODE_TEXT if session.pending else STEP_UP_TEXT, passkey=passkey)
        return self.signin.csrf_page(status, page, csrf=token, scripts=self.passkeys)

    def _enrol_form(self, request: web.Request, session: Session, rd: str, secret: str, *,
                    error: str | None = None, status: int = 200) -> web.Response:
        token = self.signin.csrf_token(request)
        offer = self.codes.offer_for(session.identity.username, secret)
        page = self.pages.factor_enrol(action=self.path + "/factor/enrol", csrf_token=token, rd=rd,
                                       token=self._seal_offer(session, secret), secret=secret, qr=offer.qr,
                                       username=session.identity.username, error=error,
                                       passkey=self._passkey("register", "Use a passkey instead"))
        return self.signin.csrf_page(status, page, csrf=token, scripts=self.passkeys)

    def _passkey(self, purpose: str, label: str) -> str:
        if not self.passkeys:
            return ""
        return self.pages.passkey_choice(purpose=purpose, options=self.path + "/factor/passkey/options",
                                         submit=f"{self.path}/factor/passkey/{purpose}", label=label)

    def _seal_offer(self, session: Session, secret: str) -> str:
        plaintext = json.dumps({"k": secret, "e": int(self._clock()) + ENROL_FOR}).encode()
        return base64url.encode(self._cipher.seal(_user(session), _offer_of(session), plaintext))

    def _open_offer(self, session: Session, token: str) -> str | None:
        """The secret offered to this session's user and session, while it may be confirmed; else None."""
        try:
            data = json.loads(self._cipher.open(_user(session), _offer_of(session), base64url.decode(token)))
        except (InvalidTag, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("k"), str) or not isinstance(data.get("e"), int):
            return None
        return data["k"] if data["e"] >= self._clock() else None

    def _enrol_url(self, rd: str) -> str:
        return self.signin.factor_url(rd).replace("/factor", "/factor/enrol", 1)

    def _expired(self) -> web.Response:
        return self.landing.message(400, "Sign-in failed", "Your form expired. Please sign in again.")

    def unavailable(self, request: web.Request, session: Session, exc: Unavailable) -> web.Response:
        log.error("503 second factor of %s: %s client=%s", session.identity.username, exc.reason,
                  self.signin.client_address(request))
        return self.landing.message(503, "Sign-in failed", UNAVAILABLE_ERROR)


def _user(session: Session) -> User:
    return session.identity.source, session.identity.username


def _offer_of(session: Session) -> str:
    # The associated data of a sealed offer: this session only (a pending one's id is replaced on success).
    return f"enrolment {session.id}"


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def routes(factor: SecondFactor) -> list[web.RouteDef]:
    return [
        web.get("/factor", factor.show_code),
        web.post("/factor", factor.submit_code),
        web.get("/factor/enrol", factor.show_enrol),
        web.post("/factor/enrol", factor.submit_enrol),
        web.get("/factors", factor.show_factors),
        web.post("/factors/remove", factor.remove_factor),
        web.post("/factors/recovery", factor.new_recovery_codes),
    ]
