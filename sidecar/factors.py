"""Second factors: what a path asks for, and checking what a person gives.

Vocabulary: a *factor* is an enrolled TOTP secret or passkey (:mod:`sidecar.factor_store`); a
*method* is how a session signed in, as RFC 8176 names them (``pwd`` a password, ``otp`` a one-time
code, TOTP or recovery, ``hwk`` a passkey); a *pending* session has the right password and waits
for its second factor.

:func:`demand_problem` is the /auth side: pure, given the verdict's methods and the time its factor
was given; :class:`Codes` checks TOTP and recovery codes against a store, refusing a TOTP code of a
time step already used (per user, kept in the store, so a restart does not forget it).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.factor_store import Factor, FactorStore, User, new_factor_id, normalize_code

PERIOD = 30  # seconds per TOTP step (RFC 6238's default: what every authenticator app assumes)
DIGITS = 6
SKEW = 1  # steps either side accepted: a phone's clock a little off, a code typed as it changes
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
RECOVERY_LENGTH = 10  # about 50 bits each: the regulator's bans make guessing hopeless
# RFC 8176 methods that are a second factor: ours (otp, hwk), and what trusted providers say.
SECOND = frozenset({"otp", "hwk", "swk", "sms", "tel", "mfa", "sc", "fpt", "face", "iris", "retina", "vbm"})
# Enrolling a factor when one exists already needs one given this recently (seconds): someone who
# only knows the password must not add their own.
MANAGE_WITHIN = 300


def second_factor(methods: tuple[str, ...]) -> bool:
    return not SECOND.isdisjoint(methods)


def demand_problem(mode: str, max_age: float | None, *, methods: tuple[str, ...], factor_at: float,
                   now: float) -> str | None:
    """Why a verdict does not meet what a path asks for (``required``, ``optional``, ``never``),
    or None. Optional asks only those who gave a factor (they enrolled one); max_age asks for a factor
    given within that many seconds."""
    if mode == "never":
        return None
    given = second_factor(methods) and factor_at > 0
    if not given:
        return None if mode == "optional" else "a second factor is required here"
    if max_age is not None and now - factor_at > max_age:
        return f"the second factor was given {now - factor_at:.0f} s ago; this path asks for one within {max_age:g} s"
    return None


class Replayed(Exception):
    """A TOTP code of a time step that was already used: refused like a wrong one."""


@dataclass(frozen=True)
class Enrolment:
    """A TOTP secret offered, not yet confirmed: the URI an app reads from the QR code, and both shown."""

    secret: str
    uri: str
    qr: str  # data:image/svg+xml URI (the pages' CSP allows data: images, nothing external)


class Codes:
    """TOTP and recovery codes of the users of one store."""

    def __init__(self, store: FactorStore, *, issuer: str, recovery_count: int = 10,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.issuer = issuer
        self.recovery_count = recovery_count
        self._clock = clock

    async def enrolled(self, user: User) -> bool:
        """Whether the user has a factor: then every password sign-in of theirs asks for it."""
        return bool(await self.store.factors(user))

    def offer(self, username: str) -> Enrolment:
        """A new secret for the user's app."""
        import pyotp  # pyotp and segno are imported where they are used: a sidecar without a second
        # factor never loads them (memory; issue 15)

        return self.offer_for(username, pyotp.random_base32())

    def offer_for(self, username: str, secret: str) -> Enrolment:
        import pyotp
        import segno

        uri = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(name=username,
                                                                                    issuer_name=self.issuer)
        qr = segno.make(uri, error="m").svg_data_uri(scale=5, border=2)
        return Enrolment(secret, uri, qr)

    def step(self) -> int:
        return int(self._clock()) // PERIOD

    def matching_step(self, secret: str, code: str) -> int | None:
        """The time step (within SKEW of now) whose code this is, or None."""
        if len(code) != DIGITS or not code.isascii() or not code.isdigit():
            return None
        import pyotp

        totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)
        now = self.step()
        found = None
        for step in range(now - SKEW, now + SKEW + 1):  # every step compared: no early exit to time
            if hmac.compare_digest(totp.generate_otp(step), code):
                found = step
        return found

    async def confirm(self, user: User, secret: str, code: str) -> bool:
        """A first code for a secret being enrolled; its step counts as used. Replayed if it was."""
        step = self.matching_step(secret, code)
        if step is None:
            return False
        if not await self.store.use_step(user, step):
            raise Replayed(f"time step {step}")
        return True

    async def check(self, user: User, factors: list[Factor], code: str) -> str | None:
        """The method a code proves (``otp``), or None; Replayed for a TOTP code already used."""
        code = code.strip().replace(" ", "")
        for factor in factors:
            if factor.kind == "totp" and (step := self.matching_step(factor.secret.decode(), code)) is not None:
                if not await self.store.use_step(user, step):
                    raise Replayed(f"time step {step}")
                return "otp"
        if len(normalize_code(code)) == RECOVERY_LENGTH and await self.store.use_recovery_code(user, code):
            return "otp"
        return None

    async def enrol(self, user: User, secret: str, label: str = "Authenticator app") -> Factor:
        factor = Factor(new_factor_id(), "totp", label, self._clock(), secret.encode())
        await self.store.add(user, factor)
        return factor

    async def new_recovery_codes(self, user: User) -> list[str]:
        """Fresh recovery codes (the old ones stop working), to be shown once."""
        codes = [_recovery_code() for _ in range(self.recovery_count)]
        await self.store.set_recovery_codes(user, codes)
        return codes


def _recovery_code() -> str:
    text = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
    return f"{text[:5]}-{text[5:]}"
