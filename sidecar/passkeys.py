"""Passkeys (WebAuthn) as a second factor, through the ``webauthn`` package and static/passkey.js.

Each ceremony is two posts of the page's script, CSRF-checked like every form of ours: ``POST
/factor/passkey/options`` answers the browser's options and a *state*, the challenge sealed to the
user and the session (AES-GCM, :class:`~sidecar.factor_store.Cipher`), valid for STATE_FOR
seconds; ``POST /factor/passkey/register`` or ``/factor/passkey/signin`` send back the credential
with the state. A verified registration stores the public key (a passkey is added under the rules
of :meth:`SecondFactor.may_enrol`); a verified assertion from a credential the user still has
upgrades the session as a code does (``hwk``). A credential not (or no longer) the user's is a
wrong factor: it counts in the regulator, and the session stays as it was.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidTag
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import exceptions as webauthn_errors
from webauthn.helpers import parse_authentication_credential_json
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from sidecar import base64url
from sidecar.errors import Throttled, Unavailable
from sidecar.factor_store import Cipher, Factor, User, new_factor_id
from sidecar.logs import audit
from sidecar.second_factor import SecondFactor
from sidecar.sessions import Session

log = logging.getLogger("sidecar.signin")

STATE_FOR = 300  # seconds between the options and the credential
PURPOSES = ("register", "signin")
MAX_CREDENTIAL = 12 * 1024  # a credential's JSON (the form itself is capped at 16 KiB)


class Refused(Exception):
    """A credential that does not verify: for the log line, never for the client."""


# What webauthn raises for a credential that does not verify (it has no common base before 3), and
# what malformed JSON or CBOR raises on its way there.
_WEBAUTHN_ERRORS = (
    "InvalidRegistrationResponse", "InvalidAuthenticationResponse", "InvalidJSONStructure", "InvalidCBORData",
    "InvalidAuthenticatorDataStructure", "InvalidPublicKeyStructure", "InvalidBackupFlags", "InvalidCertificateChain",
    "InvalidTPMCertInfoStructure", "InvalidTPMPubAreaStructure", "SignatureVerificationException",
    "UnsupportedAlgorithm", "UnsupportedEC2Curve", "UnsupportedPublicKey", "UnsupportedPublicKeyType")
INVALID: tuple[type[Exception], ...] = (Refused, ValueError, KeyError, TypeError,
                                        *(getattr(webauthn_errors, name) for name in _WEBAUTHN_ERRORS))


class Passkeys:
    """The passkey handlers, sharing sessions, regulation and upgrades with :class:`SecondFactor`."""

    def __init__(self, factor: SecondFactor, cipher: Cipher, *, rp_id: str, rp_name: str,
                 origins: tuple[str, ...], clock: Callable[[], float] = time.time) -> None:
        self.factor = factor
        self.store = factor.store
        self._cipher = cipher
        self.rp_id = rp_id
        self.rp_name = rp_name
        self.origins = list(origins)
        self._clock = clock

    async def options(self, request: web.Request) -> web.Response:
        form = await self.factor.signin.form_fields(request)
        session = self.factor.session(request)
        purpose = form.get("purpose", "") if form is not None else ""
        if form is None or session is None or purpose not in PURPOSES:
            return _json(400, {"error": "expired"})
        user = _user(session)
        try:
            passkeys = [f for f in await self.store.factors(user) if f.kind == "passkey"]
            if purpose == "register" and not await self.factor.may_enrol(session):
                return _json(403, {"error": "give your second factor first"})
        except Unavailable as exc:
            log.error("503 passkey options for %s: %s", user[1], exc.reason)
            return _json(503, {"error": "unavailable"})
        if purpose == "register":
            descriptors = [PublicKeyCredentialDescriptor(id=f.credential_id) for f in passkeys]
            options: Any = generate_registration_options(
                rp_id=self.rp_id, rp_name=self.rp_name, user_name=user[1],
                user_id=self._cipher.digest(user, "webauthn user handle")[:16],
                exclude_credentials=descriptors,
                authenticator_selection=AuthenticatorSelectionCriteria(
                    resident_key=ResidentKeyRequirement.REQUIRED,
                    user_verification=UserVerificationRequirement.PREFERRED))
        else:
            # Passkeys are discoverable: the browser offers those it holds for this site, and the page
            # names none of the user's credentials. The one chosen must be one of theirs (_asserted).
            options = generate_authentication_options(rp_id=self.rp_id, allow_credentials=[],
                                                      user_verification=UserVerificationRequirement.PREFERRED)
        state = self._seal(session, purpose, options.challenge)
        return _json(200, {"options": json.loads(options_to_json(options)), "state": state})

    async def register(self, request: web.Request) -> web.Response:
        return await self._finish(request, "register")

    async def sign_in(self, request: web.Request) -> web.Response:
        return await self._finish(request, "signin")

    async def _finish(self, request: web.Request, purpose: str) -> web.Response:
        form = await self.factor.signin.form_fields(request)
        session = self.factor.session(request)
        if form is None or session is None:
            return _json(400, {"error": "expired"})
        challenge = self._open(session, purpose, form.get("state", ""))
        credential = form.get("credential", "")
        if challenge is None or not credential or len(credential) > MAX_CREDENTIAL:
            log.warning("passkey %s refused for %s: no current state, or no credential", purpose,
                        session.identity.username)
            return _json(400, {"error": "expired"})
        rd = self.factor.signin.redirects.safe(form.get("rd"))
        user = _user(session)
        client = self.factor.signin.client_address(request)
        check = self._registered if purpose == "register" else self._asserted
        try:
            if purpose == "register" and not await self.factor.may_enrol(session):
                return _json(403, {"error": "give your second factor first"})
            method = await self.factor.regulated(request, session, lambda: check(user, credential, challenge))
        except Throttled:
            return _json(429, {"error": "throttled"})
        except Unavailable as exc:
            log.error("503 passkey %s for %s: %s", purpose, user[1], exc.reason)
            return _json(503, {"error": "unavailable"})
        if method is None:
            return _json(401, {"error": "refused"})
        if purpose == "register":
            log.info("second factor enrolled for %s: passkey client=%s", user[1], client,
                     extra=audit("factor_enrolled", request.headers, user=user[1], source=user[0], kind="passkey",
                                 client=client))
            rd = await self._after_registration(user, rd)
        cookie = self.factor.upgraded(session, method, client, request)
        if cookie is None:
            return _json(503, {"error": "unavailable"})
        response = _json(200, {"location": rd})
        response.headers.add("Set-Cookie", cookie)
        return response

    async def _after_registration(self, user: User, rd: str) -> str:
        """Where a new passkey's page goes: on to ``rd``, or first where recovery codes are made."""
        try:
            if not await self.store.recovery_codes_left(user):
                return self.factor.signin.public_url + "/factors"
        except Unavailable as exc:
            log.error("passkey of %s registered, recovery codes unknown: %s", user[1], exc.reason)
        return rd

    async def _registered(self, user: User, credential: str, challenge: bytes) -> str | None:
        try:
            verified = verify_registration_response(credential=credential, expected_challenge=challenge,
                                                    expected_rp_id=self.rp_id, expected_origin=self.origins)
        except INVALID as exc:
            log.warning("passkey registration of %s refused: %s", user[1], _why(exc))
            return None
        await self.store.add(user, Factor(new_factor_id(), "passkey", "Passkey", self._clock(),
                                          verified.credential_public_key, verified.credential_id,
                                          verified.sign_count))
        return "hwk"

    async def _asserted(self, user: User, credential: str, challenge: bytes) -> str | None:
        try:
            raw_id = parse_authentication_credential_json(credential).raw_id
            passkeys = [f for f in await self.store.factors(user) if f.kind == "passkey"]
            factor = next((f for f in passkeys if f.credential_id == raw_id), None)
            if factor is None:
                raise Refused("the credential is not one of the user's (removed, or another user's)")
            verified = verify_authentication_response(
                credential=credential, expected_challenge=challenge, expected_rp_id=self.rp_id,
                expected_origin=self.origins, credential_public_key=factor.secret,
                credential_current_sign_count=factor.sign_count)
        except INVALID as exc:
            log.warning("passkey sign-in of %s refused: %s", user[1], _why(exc))
            return None
        await self.store.counted(user, factor.id, verified.new_sign_count)
        return "hwk"

    def _seal(self, session: Session, purpose: str, challenge: bytes) -> str:
        plaintext = json.dumps({"c": base64url.encode(challenge), "e": int(self._clock()) + STATE_FOR}).encode()
        return base64url.encode(self._cipher.seal(_user(session), f"passkey {purpose} {session.id}", plaintext))

    def _open(self, session: Session, purpose: str, state: str) -> bytes | None:
        try:
            sealed = base64url.decode(state)
            data = json.loads(self._cipher.open(_user(session), f"passkey {purpose} {session.id}", sealed))
            if not isinstance(data, dict) or not isinstance(data.get("e"), int) or data["e"] < self._clock():
                return None
            return base64url.decode(data["c"])
        except (InvalidTag, ValueError, KeyError, TypeError):
            return None


def _user(session: Session) -> User:
    return session.identity.source, session.identity.username


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store",
                                                          "X-Content-Type-Options": "nosniff"})


def routes(passkeys: Passkeys) -> list[web.RouteDef]:
    return [
        web.post("/factor/passkey/options", passkeys.options),
        web.post("/factor/passkey/register", passkeys.register),
        web.post("/factor/passkey/signin", passkeys.sign_in),
    ]
