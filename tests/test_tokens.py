"""Token verification: valid ID and Bearer tokens, and every forgery, confusion and bad claim refused."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwe, jwk, jws, jwt
from jose.backends.base import Key

from sidecar.errors import InvalidCredentials, TokenRejected, UnknownKey
from sidecar.tokens import ASYMMETRIC, Expectations, KeySet, allowed_algorithms, claim, claim_strings, verify

NOW = 1_700_000_000.0
ISSUER = "https://idp.example.com/realms/main"
CLIENT = "sidecar"
NONCE = "n-0S6_WzA2Mj"
UNSET = object()


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_jwk(private_pem: bytes, alg: str, kid: str | None, **members: Any) -> dict[str, Any]:
    """The public JWK of a key as a provider publishes it, without the alg python-jose adds."""
    key = jwk.construct(private_pem, alg).public_key().to_dict()
    del key["alg"]
    return {**key, **({"kid": kid} if kid else {}), **members}


RSA_PEM = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
OTHER_RSA_PEM = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PEMS = {alg: pem(ec.generate_private_key(curve)) for alg, curve in
           [("ES256", ec.SECP256R1()), ("ES384", ec.SECP384R1()), ("ES512", ec.SECP521R1())]}
RSA_JWK = public_jwk(RSA_PEM, "RS256", "rsa-1")
EC_JWK = public_jwk(EC_PEMS["ES256"], "ES256", "ec-1")
KEYS = KeySet.of([RSA_JWK, EC_JWK])


def claims(**changes: Any) -> dict[str, Any]:
    """Good ID token claims; a change to UNSET removes that claim."""
    base: dict[str, Any] = {"iss": ISSUER, "aud": CLIENT, "sub": "f81d4fae-7dec", "iat": int(NOW) - 10,
                            "exp": int(NOW) + 300, "nonce": NONCE, "preferred_username": "alice"}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not UNSET}


def sign(payload: dict[str, Any] | bytes, key: bytes = RSA_PEM, alg: str = "RS256", kid: str | None = "rsa-1",
         **headers: Any) -> str:
    extra = {**({"kid": kid} if kid is not None else {}), **headers}
    if isinstance(payload, bytes):
        return jws.sign(payload, signing_key(key, alg), headers=extra, algorithm=alg)
    return jwt.encode(payload, signing_key(key, alg), algorithm=alg, headers=extra)


@functools.cache
def signing_key(private_pem: bytes, alg: str) -> Key:
    # Loading a PEM checks the RSA key, which takes long enough to slow every test down.
    return jwk.construct(private_pem, alg)


def expect(**changes: Any) -> Expectations:
    settings: dict[str, Any] = {"issuer": ISSUER, "audiences": frozenset({CLIENT}),
                                "algorithms": frozenset({"RS256", "ES256"}), "require_nonce": NONCE,
                                "authorized_party": CLIENT}
    return Expectations(**{**settings, **changes})


def rejected(token: str, keys: KeySet = KEYS, expected: Expectations | None = None, now: float = NOW) -> str:
    with pytest.raises(TokenRejected) as info:
        verify(token, keys, expected or expect(), now)
    reason = info.value.reason
    assert not [part for part in [token, *token.split(".")] if len(part) >= 8 and part in reason]
    return reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: str = "") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{signature}"


def hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = unsigned(header, payload)[:-1]
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


# Valid tokens


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
def test_rsa_tokens_verify(alg: str) -> None:
    got = verify(sign(claims(), alg=alg), KEYS, expect(algorithms=frozenset({alg})), NOW)
    assert got == claims()


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
def test_ec_tokens_verify(alg: str) -> None:
    keys = KeySet.of([RSA_JWK, public_jwk(EC_PEMS[alg], alg, "ec-x")])
    got = verify(sign(claims(), EC_PEMS[alg], alg, "ec-x"), keys, expect(algorithms=frozenset({alg})), NOW)
    assert got["sub"] == "f81d4fae-7dec"


def test_a_bearer_token_needs_no_nonce_and_may_name_several_audiences() -> None:
    expected = expect(audiences=frozenset({"api://netbox"}), require_nonce=None, authorized_party=None)
    token = sign(claims(aud=["api://netbox", "api://other"], nonce=UNSET))
    assert verify(token, KEYS, expected, NOW)["aud"] == ["api://netbox", "api://other"]


def test_several_audiences_with_our_azp_are_accepted() -> None:
    assert verify(sign(claims(aud=[CLIENT, "other"], azp=CLIENT)), KEYS, expect(), NOW)["azp"] == CLIENT


def test_a_rejection_is_invalid_credentials() -> None:
    assert issubclass(TokenRejected, InvalidCredentials)
    assert issubclass(UnknownKey, TokenRejected)


# Algorithm confusion and unsigned tokens


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("kid", ["rsa-1", None])
def test_unsigned_tokens_are_refused(alg: str, kid: str | None) -> None:
    header = {"alg": alg, **({"kid": kid} if kid else {})}
    assert "is not one of" in rejected(unsigned(header, claims()))


@pytest.mark.parametrize("secret", [
    pytest.param(jwk.construct(RSA_PEM, "RS256").public_key().to_pem(), id="public-key-pem"),
    pytest.param(RSA_JWK["n"].encode(), id="jwk-n"),
    pytest.param(json.dumps(RSA_JWK).encode(), id="jwk-json"),
])
@pytest.mark.parametrize("alg", ["HS256"])
def test_hmac_signed_with_the_public_key_is_refused_before_any_key_is_used(
        secret: bytes, alg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    constructed: list[Any] = []
    monkeypatch.setattr(jwk, "construct", lambda *args: constructed.append(args))
    token = hs256({"alg": alg, "kid": "rsa-1", "typ": "JWT"}, claims(), secret)
    assert "alg 'HS256' is not one of ES256, RS256" in rejected(token)
    assert constructed == []


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "none", "PS256", "EdDSA", "RSA-OAEP", "dir", ""])
def test_expectations_admit_only_asymmetric_algorithms(alg: str) -> None:
    with pytest.raises(ValueError, match="algorithms"):
        expect(algorithms=frozenset({"RS256", alg}))


def test_a_token_alg_outside_the_expected_ones_is_refused() -> None:
    token = sign(claims(), EC_PEMS["ES256"], "ES256", "ec-1")
    assert "alg 'ES256' is not one of RS256" in rejected(token, expected=expect(algorithms=frozenset({"RS256"})))


@pytest.mark.parametrize("alg", [None, 256, ["RS256"]])
def test_a_missing_or_odd_alg_is_refused(alg: Any) -> None:
    assert "is not one of" in rejected(unsigned({"alg": alg, "kid": "rsa-1"}, claims(), "c2ln"))


# Keys


def test_a_foreign_key_with_our_kid_is_refused() -> None:
    assert rejected(sign(claims(), OTHER_RSA_PEM)) == "the signature does not verify"


def test_an_unknown_kid_asks_for_a_refresh() -> None:
    with pytest.raises(UnknownKey) as info:
        verify(sign(claims(), kid="rotated-2"), KEYS, expect(), NOW)
    assert info.value.kid == "rotated-2"
    assert info.value.reason == "no key with kid 'rotated-2' in the key set"


def test_a_long_kid_is_cut_short_in_the_reason() -> None:
    with pytest.raises(UnknownKey) as info:
        verify(sign(claims(), kid="k" * 5000), KEYS, expect(), NOW)
    assert len(info.value.reason) < 120


def test_without_kid_the_one_key_for_the_alg_is_used() -> None:
    assert verify(sign(claims(), kid=None), KEYS, expect(), NOW)["sub"] == "f81d4fae-7dec"
    assert verify(sign(claims(), kid=None), KeySet.of([{**RSA_JWK, "kid": None}]), expect(), NOW)


def test_without_kid_two_keys_for_the_alg_are_refused() -> None:
    keys = KeySet.of([RSA_JWK, public_jwk(OTHER_RSA_PEM, "RS256", "rsa-2")])
    assert rejected(sign(claims(), kid=None), keys) == "the token names no kid and the key set has 2 keys for RS256"


def test_without_kid_and_without_a_key_for_the_alg_the_token_is_refused() -> None:
    token = sign(claims(), kid=None)
    assert "has 0 keys for RS256" in rejected(token, KeySet.of([EC_JWK]))


def test_an_ec_key_for_an_rs256_header_is_refused() -> None:
    assert rejected(sign(claims(), kid="ec-1")) == "the key with kid 'ec-1' is not for RS256"


def test_an_ec_key_of_another_curve_is_refused() -> None:
    keys = KeySet.of([public_jwk(EC_PEMS["ES384"], "ES384", "ec-1")])
    token = sign(claims(), EC_PEMS["ES384"], "ES256", "ec-1")
    assert rejected(token, keys) == "the key with kid 'ec-1' is not for ES256"


def test_a_jwk_alg_other_than_the_header_alg_is_refused() -> None:
    keys = KeySet.of([{**RSA_JWK, "alg": "RS512"}])
    assert rejected(sign(claims()), keys) == "the key with kid 'rsa-1' is not for RS256"
    assert verify(sign(claims()), KeySet.of([{**RSA_JWK, "alg": "RS256"}]), expect(), NOW)


def test_an_encryption_key_is_not_used_for_signatures() -> None:
    assert "is not for RS256" in rejected(sign(claims()), KeySet.of([{**RSA_JWK, "use": "enc"}]))


def test_keys_sharing_a_kid_but_not_a_type_both_serve() -> None:
    keys = KeySet.of([RSA_JWK, {**EC_JWK, "kid": "rsa-1"}])
    assert verify(sign(claims()), keys, expect(), NOW)
    assert verify(sign(claims(), EC_PEMS["ES256"], "ES256", "rsa-1"), keys, expect(), NOW)


def test_a_private_jwk_verifies_with_its_public_part_only() -> None:
    # filterwarnings=error: python-jose warns when asked to verify with a private key.
    private = {**jwk.construct(RSA_PEM, "RS256").to_dict(), "kid": "rsa-1"}
    assert "d" in private
    assert verify(sign(claims()), KeySet.of([private]), expect(), NOW)


@pytest.mark.parametrize("broken", [{"n": None}, {"n": 12345}, {"e": "!!"}, {"n": "AQAB", "e": "AQAB"}])
def test_a_malformed_key_is_refused(broken: dict[str, Any]) -> None:
    keys = KeySet.of([{key: value for key, value in {**RSA_JWK, **broken}.items() if value is not None}])
    assert rejected(sign(claims()), keys) in {
        "the key with kid 'rsa-1' lacks a member",
        "the key with kid 'rsa-1' is malformed",
        "the signature does not verify",
    }


def test_a_kid_that_is_not_a_string_is_refused() -> None:
    token = jwt.encode(claims(), RSA_PEM, algorithm="RS256", headers={"kid": 7})
    assert rejected(token) == "the token's kid is not a string"


def test_critical_header_extensions_are_refused() -> None:
    token = sign(claims(), crit=["exp"], exp=1)
    assert rejected(token) == "the token's header lists critical extensions"


def test_a_key_embedded_in_the_header_is_ignored() -> None:
    forged = sign(claims(), OTHER_RSA_PEM, jwk=public_jwk(OTHER_RSA_PEM, "RS256", "rsa-1"))
    assert rejected(forged) == "the signature does not verify"


def test_the_key_set_is_immutable() -> None:
    with pytest.raises(TypeError):
        KEYS.by_kid["evil"] = (RSA_JWK,)  # type: ignore[index]
    with pytest.raises(TypeError):
        KEYS.all[0]["kty"] = "oct"  # type: ignore[index]


# Tampering and malformed tokens


def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = sign(claims()).split(".")
    forged = f"{header}.{b64(json.dumps(claims(sub='admin')).encode())}.{signature}"
    assert rejected(forged) == "the signature does not verify"


def test_a_tampered_signature_is_refused() -> None:
    header, payload, signature = sign(claims()).split(".")
    middle = len(signature) // 2
    flipped = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1:]
    assert rejected(f"{header}.{payload}.{flipped}") == "the signature does not verify"


def test_a_stripped_signature_is_refused() -> None:
    header, payload, _ = sign(claims()).split(".")
    assert rejected(f"{header}.{payload}.") == "the signature does not verify"


def test_a_jwe_is_refused() -> None:
    token = jwe.encrypt(json.dumps(claims()).encode(), bytes(32), algorithm="dir", encryption="A256GCM").decode()
    assert token.count(".") == 4
    assert rejected(token) == "the token is encrypted (JWE): only signed tokens are accepted"


def test_an_oversized_token_is_refused() -> None:
    token = sign(claims(padding="x" * 20_000))
    assert rejected(token) == "the token is longer than 16384 bytes"
    assert verify(token, KEYS, expect(max_token_bytes=64 * 1024), NOW)


@pytest.mark.parametrize("garbage", [
    "", ".", "..", "abc", "a.b", "a.b.c.d", "a..c", "!!!.###.$$$", "é.é.é", "a b.c d.e f",
    "eyJhbGciOiJSUzI1NiJ9.e30.sig=", "Zm9v.e30.c2ln", "W10.e30.c2ln", "_w.e30.c2ln", "eyJ.e30.c2ln", "a.e30.c2ln",
])
def test_garbage_is_refused(garbage: str) -> None:
    rejected(garbage)


def test_a_signed_payload_that_is_not_a_json_object_is_refused() -> None:
    assert rejected(sign(b"not json")) == "the token's payload is not JSON"
    assert rejected(sign(b"[1, 2]")) == "the token's payload is not a JSON object"
    nan = json.dumps(claims(exp=0)).replace('"exp": 0', '"exp": NaN').encode()
    assert rejected(sign(nan)) == "the token's payload is not JSON"


# Claims


def test_another_issuer_is_refused() -> None:
    assert "iss 'https://evil.example.com' is not" in rejected(sign(claims(iss="https://evil.example.com")))
    assert "is not" in rejected(sign(claims(iss=ISSUER + "/")))
    assert rejected(sign(claims(iss=UNSET))).startswith("iss None")


def test_another_audience_is_refused() -> None:
    assert rejected(sign(claims(aud="someone-else"))) == "aud 'someone-else' names none of sidecar"
    assert "names none of" in rejected(sign(claims(aud=["a", "b"], azp=CLIENT)))


@pytest.mark.parametrize("aud", [UNSET, [], 7, [CLIENT, 7], {"aud": CLIENT}])
def test_a_missing_or_odd_audience_is_refused(aud: Any) -> None:
    assert rejected(sign(claims(aud=aud))) == "aud is missing or not a string or list of strings"


def test_several_audiences_need_our_azp() -> None:
    assert rejected(sign(claims(aud=[CLIENT, "other"]))) == "azp None is not 'sidecar'"
    assert rejected(sign(claims(aud=[CLIENT, "other"], azp="other"))) == "azp 'other' is not 'sidecar'"


def test_an_azp_present_must_be_ours() -> None:
    assert rejected(sign(claims(azp="other"))) == "azp 'other' is not 'sidecar'"


def test_expiry_allows_the_leeway_and_no_more() -> None:
    assert verify(sign(claims(exp=int(NOW) - 29)), KEYS, expect(), NOW)
    assert rejected(sign(claims(exp=int(NOW) - 31))) == "the token has expired"
    assert rejected(sign(claims(exp=int(NOW) - 1)), expected=expect(leeway=0)) == "the token has expired"


def test_a_token_issued_in_the_future_is_refused() -> None:
    assert verify(sign(claims(iat=int(NOW) + 29)), KEYS, expect(), NOW)
    assert rejected(sign(claims(iat=int(NOW) + 31))) == "the token was issued in the future"


def test_a_token_not_valid_yet_is_refused() -> None:
    assert verify(sign(claims(nbf=int(NOW) + 29)), KEYS, expect(), NOW)
    assert rejected(sign(claims(nbf=int(NOW) + 31))) == "the token is not valid yet (nbf)"
    assert rejected(sign(claims(nbf="soon"))) == "nbf is missing or not a number"


def test_max_age_refuses_old_tokens() -> None:
    token = sign(claims(iat=int(NOW) - 700, exp=int(NOW) + 300))
    assert verify(token, KEYS, expect(), NOW)
    assert rejected(token, expected=expect(max_age=600)) == "the token was issued more than 600 seconds ago"
    assert verify(token, KEYS, expect(max_age=680), NOW)


@pytest.mark.parametrize("name", ["exp", "iat"])
@pytest.mark.parametrize("value", [UNSET, None, "1700000300", True, [1]])
def test_times_must_be_numbers(name: str, value: Any) -> None:
    assert rejected(sign(claims(**{name: value}))) == f"{name} is missing or not a number"


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", [10**400, 2**53 + 1, -1, -(10**400), 1e300])
def test_absurd_times_are_refused_without_overflowing(name: str, value: int | float) -> None:
    assert rejected(sign(claims(**{name: value}))) == f"{name} is out of range"


def test_times_may_be_fractional_and_far_off() -> None:
    assert verify(sign(claims(exp=NOW + 0.5, iat=NOW - 0.5)), KEYS, expect(), NOW)
    assert verify(sign(claims(exp=2**53, iat=0)), KEYS, expect(), NOW)


@pytest.mark.parametrize("sub", [UNSET, "", None, 42, ["alice"]])
def test_a_subject_is_required(sub: Any) -> None:
    assert rejected(sign(claims(sub=sub))) == "the token has no sub"


@pytest.mark.parametrize("nonce", [UNSET, "", "n-other", NONCE + "x", None, 1])
def test_the_nonce_must_be_the_one_sent(nonce: Any) -> None:
    assert rejected(sign(claims(nonce=nonce))) == "the nonce is missing or not the one sent"


def test_the_nonce_is_not_in_the_repr_of_expectations() -> None:
    assert NONCE not in repr(expect())


def test_expectations_report_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as info:
        Expectations(issuer="", audiences=frozenset(), algorithms=frozenset({"HS256"}), leeway=300,
                     max_age=0, max_token_bytes=0)
    message = str(info.value)
    for name in ["issuer", "audiences", "algorithms", "leeway", "max_age", "max_token_bytes"]:
        assert f"{name}:" in message


# allowed_algorithms


def test_allowed_algorithms_keep_the_asymmetric_ones() -> None:
    advertised = ["RS256", "HS256", "HS512", "none", "PS256", "EdDSA", "ES256", "ES512"]
    assert allowed_algorithms(advertised) == {"RS256", "ES256", "ES512"}
    assert allowed_algorithms(None) == {"RS256"}
    assert allowed_algorithms(ASYMMETRIC) == ASYMMETRIC
    assert allowed_algorithms(["ES384", {"alg": "RS256"}, None, 256]) == {"ES384"}  # type: ignore[list-item]


@pytest.mark.parametrize("advertised", [[], ["none"], ["HS256", "HS384", "HS512"], ["PS256", "EdDSA"]])
def test_allowed_algorithms_refuse_nothing_usable(advertised: list[str]) -> None:
    with pytest.raises(ValueError, match="no signing algorithm offered"):
        allowed_algorithms(advertised)


def test_asymmetric_holds_only_what_python_jose_can_verify() -> None:
    assert {"none", "HS256", "HS384", "HS512"}.isdisjoint(ASYMMETRIC)
    for alg in ASYMMETRIC:
        assert jwk.get_key(alg) is not None


# claim()


NESTED = {
    "sub": "abc",
    "preferred_username": "alice",
    "email_verified": False,
    "realm_access": {"roles": ["admin", "user"]},
    "org": {"department": {"name": "Ops"}, "size": 0},
    "https://example.com/roles": ["editor"],
    "https://example.com/ns": {"groups": "ops"},
    "groups": ["a", 7, "b", None],
}


@pytest.mark.parametrize(("path", "value"), [
    ("sub", "abc"),
    ("realm_access.roles", ["admin", "user"]),
    ("org.department.name", "Ops"),
    ("org.size", 0),
    ("email_verified", False),
    ("https://example.com/roles", ["editor"]),
    ("https://example.com/ns.groups", "ops"),
    ("missing", None),
    ("realm_access.missing", None),
    ("sub.deeper", None),
    ("org.department.name.deeper", None),
    ("", None),
    (".", None),
    ("realm_access.", None),
])
def test_claim_follows_dotted_paths(path: str, value: Any) -> None:
    assert claim(NESTED, path) == value


@pytest.mark.parametrize(("path", "strings"), [
    ("realm_access.roles", ("admin", "user")),
    ("https://example.com/ns.groups", ("ops",)),
    ("groups", ("a", "b")),
    ("org", ()),
    ("org.size", ()),
    ("missing", ()),
])
def test_claim_strings_accepts_a_list_or_a_single_string(path: str, strings: tuple[str, ...]) -> None:
    assert claim_strings(NESTED, path) == strings
