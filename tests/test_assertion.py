"""Signed assertions: round trip, key rotation and refetching, every forged or mismatched token refused, the memo."""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.error import HTTPError

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jose import jws, jwt

from sidecar.assertion import AssertionSigner, generate_key
from sidecar.config import HeaderConfig
from sidecar.contrib.assertion import (
    KEYS_MAX_AGE,
    MAX_TOKEN,
    REFETCH_INTERVAL,
    REQUIRED,
    RETRY_AFTER_FAILURE,
    AssertionVerifier,
    fetch_jwks,
    parse_jwks,
)
from sidecar.errors import AccessDenied, AssertionRejected
from sidecar.headers import HeaderWriter
from sidecar.identity import Identity

KEY_A = generate_key()
KEY_B = generate_key()
FOREIGN = generate_key()
NOW = 1_700_000_000.0
ISSUER = "https://sso.example.com"
AUDIENCE = "apps.example.com"
ALICE = Identity(
    username="alice",
    first_name="Alice",
    last_name="Müller",
    email="alice@example.com",
    groups=("NetBox-Admins", "Staff"),
    rule_groups=frozenset({"netbox-admins", "staff"}),
    is_staff=True,
    extra={"department": "Ops"}, source="ldap"
)
HEADER_KEYS = ("user", "first_name", "last_name", "email", "groups", "is_staff", "is_superuser")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FakeJwks:
    """A JWK set endpoint that counts its fetches and can fail."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self, url: str) -> dict[str, Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.document


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_signer(clock: Clock, keys: list[tuple[str, str]] | None = None, **options: Any) -> AssertionSigner:
    settings: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "clock": clock, **options}
    return AssertionSigner(keys or [("a", KEY_A)], **settings)


def make_verifier(clock: Clock, **options: Any) -> AssertionVerifier:
    if "jwks" not in options and "jwks_url" not in options:
        options["jwks"] = make_signer(clock).jwks()
    return AssertionVerifier(issuer=ISSUER, audience=AUDIENCE, clock=clock, **options)


def plain(identity: Identity) -> dict[str, str]:
    """The identity as the real header writer renders it, keyed as verify() expects."""
    config = HeaderConfig()
    rendered = dict(HeaderWriter(config).render(identity))
    names = (config.user, config.first_name, config.last_name, config.email, config.groups,
             config.is_staff, config.is_superuser)
    return {key: rendered[name] for key, name in zip(HEADER_KEYS, names, strict=True)}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(base64.urlsafe_b64decode(header + "==")), json.loads(base64.urlsafe_b64decode(payload + "=="))


def claims_for(identity: Identity = ALICE, /, **changes: Any) -> dict[str, Any]:
    """The claims the signer would make at NOW; a change of None removes the claim."""
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": identity.username, "iat": int(NOW), "nbf": int(NOW),
        "exp": int(NOW) + 60, "jti": "j", "given_name": identity.first_name, "family_name": identity.last_name,
        "email": identity.email, "groups": list(identity.groups), "is_staff": identity.is_staff,
        "is_superuser": identity.is_superuser,
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def forge(claims: dict[str, Any], *, key: str = KEY_A, kid: str = "a", algorithm: str = "ES256") -> str:
    """A token signed with any key and algorithm python-jose knows: only the verifier's checks stand in the way."""
    return jws.sign(json.dumps(claims).encode(), key, headers={"kid": kid}, algorithm=algorithm)


def handmade(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A token with any header, signed by any function of the signing input."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def refused(verifier: AssertionVerifier, token: str, headers: dict[str, str] | None = None) -> str:
    """The reason a token is refused; it must never repeat the token or any part of it."""
    with pytest.raises(AssertionRejected) as caught:
        verifier.verify(token, plain(ALICE) if headers is None else headers)
    message = f"{caught.value} {caught.value.reason} {caught.value.args}"
    for part in [token, *token.split(".")]:
        assert len(part) < 8 or part not in message
    return caught.value.reason


def public_pem(private_pem: str) -> bytes:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# Round trip and format


def test_round_trip(clock: Clock) -> None:
    token = make_signer(clock).sign(ALICE)
    claims = make_verifier(clock).verify(token, plain(ALICE))
    assert claims == claims_for(jti=claims["jti"])
    assert len(claims["jti"]) >= 22


def test_header_names_es256_the_first_key_and_jwt(clock: Clock) -> None:
    token = make_signer(clock, [("new", KEY_B), ("old", KEY_A)]).sign(ALICE)
    assert segments(token)[0] == {"alg": "ES256", "kid": "new", "typ": "JWT"}


def test_jwks_publishes_every_public_key_and_no_private_part(clock: Clock) -> None:
    document = make_signer(clock, [("new", KEY_B), ("old", KEY_A)]).jwks()
    assert [key["kid"] for key in document["keys"]] == ["new", "old"]
    for key in document["keys"]:
        assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
        assert len(base64.urlsafe_b64decode(key["x"] + "=")) == len(base64.urlsafe_b64decode(key["y"] + "=")) == 32
    assert json.loads(json.dumps(document)) == document


def test_jwks_is_a_fresh_copy(clock: Clock) -> None:
    signer = make_signer(clock)
    signer.jwks()["keys"][0]["kid"] = "changed"
    assert signer.jwks()["keys"][0]["kid"] == "a"


def test_python_jose_reads_our_assertions_and_we_read_its_tokens(clock: Clock) -> None:
    signer = make_signer(clock)
    key = signer.jwks()["keys"][0]
    options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}
    decoded = jwt.decode(signer.sign(ALICE), key, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER,
                         options=options)
    assert decoded["sub"] == "alice"
    assert make_verifier(clock).verify(forge(claims_for()), plain(ALICE))["email"] == "alice@example.com"


@pytest.mark.parametrize("identity", [
    Identity(username="jose", first_name="José", last_name="Ñúñez", groups=("Équipe",), source="ldap"),
    Identity(username="yamada", first_name="太郎", last_name="山田", email="山田@例え.jp", groups=("開発", "運用"),
             source="ldap"),
    Identity(username="party", first_name="🎉", last_name="Ünïcode 👩🏽‍💻", groups=("🚀",), is_superuser=True,
             source="ldap"),
])
def test_non_ascii_names_round_trip(clock: Clock, identity: Identity) -> None:
    token = make_signer(clock).sign(identity)
    claims = make_verifier(clock).verify(token, plain(identity))
    assert (claims["given_name"], claims["family_name"], claims["groups"]) == (
        identity.first_name, identity.last_name, list(identity.groups))
    # Sent as UTF-8, not as \u escapes.
    assert identity.last_name in base64.urlsafe_b64decode(token.split(".")[1] + "==").decode()


def test_claims_are_the_header_values_exactly(clock: Clock) -> None:
    padded = Identity(username="bob", first_name=" Bob", last_name="  Smith ", email="bob@example.com",
                      groups=("ops", "a|b", " ", "dev\n", " staff"), source="ldap")
    headers = plain(padded)
    assert headers["groups"] == "ops"  # a group is published as named, or not at all
    claims = make_verifier(clock).verify(make_signer(clock).sign(padded), headers)
    assert (claims["sub"], claims["given_name"], claims["family_name"]) == ("bob", "Bob", "Smith")
    assert claims["groups"] == ["ops"]


@pytest.mark.parametrize("identity", [
    Identity(username=" bob\r\n", source="ldap"),
    Identity(username="bob", first_name="Bob\x00", source="ldap"),
    Identity(username="bob", email="bob@example.com\x7f", source="ldap"),
])
def test_an_identity_that_would_have_to_be_altered_is_refused(identity: Identity) -> None:
    with pytest.raises(AccessDenied):
        plain(identity)


def test_another_group_separator_on_both_sides(clock: Clock) -> None:
    identity = Identity(username="carol", groups=("a|b", "c", "d,e"), source="ldap")
    token = make_signer(clock, group_separator=",").sign(identity)
    verifier = make_verifier(clock, group_separator=",")
    headers = {**plain(identity), "groups": "a|b,c"}
    assert verifier.verify(token, headers)["groups"] == ["a|b", "c"]


def test_a_missing_header_counts_as_empty(clock: Clock) -> None:
    identity = Identity(username="dave", source="ldap")
    headers = {key: value for key, value in plain(identity).items() if value}
    assert set(headers) == {"user", "is_staff", "is_superuser"}
    make_verifier(clock).verify(make_signer(clock).sign(identity), headers)


def test_generate_key_makes_distinct_p256_keys() -> None:
    first, second = generate_key(), generate_key()
    assert first != second and first.startswith("-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(first.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)


def test_reprs_show_no_key(clock: Clock) -> None:
    text = repr(make_signer(clock)) + repr(make_verifier(clock))
    assert "kids=['a']" in text and "PRIVATE" not in text and make_signer(clock).jwks()["keys"][0]["x"] not in text


# The memo


def test_the_memo_returns_the_same_assertion_for_half_the_lifetime(clock: Clock) -> None:
    signer = make_signer(clock, lifetime=60)
    first = signer.sign(ALICE)
    clock.now += 29.9
    assert signer.sign(ALICE) == first
    clock.now += 0.2
    second = signer.sign(ALICE)
    assert second != first
    assert segments(second)[1]["iat"] == int(clock.now)
    clock.now += 29.9
    assert signer.sign(ALICE) == second


def test_the_memo_tells_identities_apart(clock: Clock) -> None:
    signer = make_signer(clock)
    token = signer.sign(ALICE)
    changes: list[dict[str, Any]] = [
        {"username": "alice2"}, {"groups": ("Staff",)}, {"is_staff": False}, {"is_superuser": True},
        {"email": "other@example.com"}, {"first_name": "Alicia"}, {"last_name": "Muller"},
    ]
    for change in changes:
        assert signer.sign(dataclasses.replace(ALICE, **change)) != token, change


def test_the_memo_is_bounded_and_forgets_the_oldest(clock: Clock) -> None:
    signer = make_signer(clock, memo_entries=2)
    users = [Identity(username=name, source="ldap") for name in ("u1", "u2", "u3")]
    tokens = [signer.sign(user) for user in users]
    assert signer.sign(users[2]) == tokens[2] and signer.sign(users[1]) == tokens[1]
    assert signer.sign(users[0]) != tokens[0]


def test_assertions_served_from_the_memo_still_verify(clock: Clock) -> None:
    signer, verifier = make_signer(clock), make_verifier(clock)
    token = signer.sign(ALICE)
    clock.now += 29
    assert signer.sign(ALICE) == token
    verifier.verify(token, plain(ALICE))


# Rotation


def test_rotation_with_a_given_key_set(clock: Clock) -> None:
    old = make_signer(clock, [("old", KEY_A)])
    both = make_signer(clock, [("new", KEY_B), ("old", KEY_A)])
    old_token, new_token = old.sign(ALICE), both.sign(ALICE)
    while_both = make_verifier(clock, jwks=both.jwks())
    while_both.verify(old_token, plain(ALICE))
    while_both.verify(new_token, plain(ALICE))
    after = make_verifier(clock, jwks=make_signer(clock, [("new", KEY_B)]).jwks())
    after.verify(new_token, plain(ALICE))
    assert refused(after, old_token) == "the assertion is signed by an unknown key"


def test_rotation_with_a_fetched_key_set(clock: Clock) -> None:
    old = make_signer(clock, [("old", KEY_A)])
    endpoint = FakeJwks(old.jwks())
    verifier = make_verifier(clock, jwks_url="https://sso.example.com/.well-known/jwks.json", fetch=endpoint)
    assert endpoint.calls == 0
    verifier.verify(old.sign(ALICE), plain(ALICE))
    assert endpoint.calls == 1
    # Step 1: the new key is published second; step 2: it signs, and applications learn it.
    both = make_signer(clock, [("new", KEY_B), ("old", KEY_A)])
    endpoint.document = both.jwks()
    clock.now += REFETCH_INTERVAL
    verifier.verify(both.sign(ALICE), plain(ALICE))
    assert endpoint.calls == 2
    verifier.verify(old.sign(ALICE), plain(ALICE))
    assert endpoint.calls == 2
    # Step 3: the old key is dropped; applications stop accepting it when their keys are refreshed.
    endpoint.document = make_signer(clock, [("new", KEY_B)]).jwks()
    clock.now += KEYS_MAX_AGE
    assert refused(verifier, make_signer(clock, [("old", KEY_A)]).sign(ALICE)) == (
        "the assertion is signed by an unknown key")
    assert endpoint.calls == 3


def test_unknown_kids_fetch_the_key_set_once_a_minute(clock: Clock) -> None:
    endpoint = FakeJwks(make_signer(clock).jwks())
    verifier = make_verifier(clock, jwks_url="http://127.0.0.1:9091/.well-known/jwks.json", fetch=endpoint)
    for n in range(50):
        refused(verifier, forge(claims_for(), key=FOREIGN, kid=f"k{n}"))
        clock.now += 1
    assert endpoint.calls == 1
    clock.now += REFETCH_INTERVAL - 50
    refused(verifier, forge(claims_for(), key=FOREIGN, kid="another"))
    assert endpoint.calls == 2


def test_a_failed_fetch_keeps_the_known_keys_and_is_retried_soon(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    signer = make_signer(clock)
    endpoint = FakeJwks(signer.jwks())
    url = "https://sso.example.com/jwks"
    verifier = make_verifier(clock, jwks_url=url, fetch=endpoint)
    verifier.verify(signer.sign(ALICE), plain(ALICE))
    endpoint.error = OSError("connection refused")
    clock.now += KEYS_MAX_AGE
    with caplog.at_level(logging.WARNING, "sidecar.contrib.assertion"):
        verifier.verify(signer.sign(ALICE), plain(ALICE))
        verifier.verify(signer.sign(ALICE), plain(ALICE))
    assert endpoint.calls == 2
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"cannot fetch assertion keys from {url} (OSError: connection refused); keeping the 1 known")]
    endpoint.error = None
    clock.now += RETRY_AFTER_FAILURE
    verifier.verify(signer.sign(ALICE), plain(ALICE))
    assert endpoint.calls == 3


def test_a_fetched_key_set_with_a_problem_is_not_used(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    signer = make_signer(clock)
    endpoint = FakeJwks({"keys": []})
    verifier = make_verifier(clock, jwks_url="https://sso.example.com/jwks", fetch=endpoint)
    with caplog.at_level(logging.WARNING, "sidecar.contrib.assertion"):
        assert refused(verifier, signer.sign(ALICE)) == "the assertion is signed by an unknown key"
    assert "ValueError: jwks: expected" in caplog.text


def test_threads_waiting_on_one_fetch_share_it(clock: Clock) -> None:
    signer = make_signer(clock)
    document = signer.jwks()
    calls = []

    def slow_fetch(url: str) -> dict[str, Any]:
        calls.append(url)
        time.sleep(0.05)
        return document

    verifier = make_verifier(clock, jwks_url="http://localhost:9091/jwks", fetch=slow_fetch)
    token = signer.sign(ALICE)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(verifier.verify(token, plain(ALICE))["sub"]))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["alice"] * 8 and len(calls) == 1


# Forged tokens


@pytest.mark.parametrize("secret", ["public PEM", "public JWK", "x coordinate"])
@pytest.mark.parametrize(("algorithm", "digest"), [("HS256", "sha256"), ("HS512", "sha512")])
def test_hmac_keyed_with_the_public_key_is_refused(clock: Clock, secret: str, algorithm: str, digest: str) -> None:
    jwk = make_signer(clock).jwks()["keys"][0]
    key = {"public PEM": public_pem(KEY_A), "public JWK": json.dumps(jwk).encode(),
           "x coordinate": jwk["x"].encode()}[secret]
    token = handmade({"alg": algorithm, "kid": "a", "typ": "JWT"}, claims_for(),
                     lambda data: hmac.digest(key, data, digest))
    assert refused(make_verifier(clock), token) == "the assertion is not signed with ES256"


@pytest.mark.parametrize("signature", [b"", b"\x00" * 64])
def test_alg_none_is_refused(clock: Clock, signature: bytes) -> None:
    for alg in ["none", "None", "NONE"]:
        token = handmade({"alg": alg, "kid": "a"}, claims_for(), lambda _: signature)
        assert refused(make_verifier(clock), token) == "the assertion is not signed with ES256"


def test_rs256_from_a_foreign_key_is_refused(clock: Clock) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    token = forge(claims_for(), key=pem, algorithm="RS256")
    assert refused(make_verifier(clock), token) == "the assertion is not signed with ES256"


@pytest.mark.parametrize("algorithm", ["ES384", "ES512", "es256", "EdDSA", "PS256"])
def test_other_algorithms_are_refused(clock: Clock, algorithm: str) -> None:
    token = handmade({"alg": algorithm, "kid": "a"}, claims_for(), lambda _: b"\x01" * 64)
    assert refused(make_verifier(clock), token) == "the assertion is not signed with ES256"


def test_es256_from_a_foreign_key_under_our_kid_is_refused(clock: Clock) -> None:
    assert refused(make_verifier(clock), forge(claims_for(), key=FOREIGN)) == "the signature is not valid"


@pytest.mark.parametrize("header", [
    {"alg": "ES256"},
    {"alg": "ES256", "kid": 1},
    {"alg": "ES256", "kid": "a", "typ": "JWE"},
    {"alg": "ES256", "kid": "a", "jku": "https://evil.example/jwks"},
    {"alg": "ES256", "kid": "a", "jwk": {"kty": "EC"}},
    {"alg": "ES256", "kid": "a", "crit": ["exp"], "exp": 1},
    {"alg": "ES256", "kid": "a", "b64": False},
])
def test_headers_beyond_alg_kid_typ_are_refused(clock: Clock, header: dict[str, Any]) -> None:
    token = jws.sign(json.dumps(claims_for()).encode(), KEY_A, headers=header, algorithm="ES256")
    assert refused(make_verifier(clock), token) == "the assertion's header is not alg ES256, a kid and typ JWT"


def test_a_tampered_payload_is_refused(clock: Clock) -> None:
    header, _, signature = make_signer(clock).sign(ALICE).split(".")
    mallory = Identity(username="mallory", groups=("NetBox-Admins",), is_superuser=True, source="ldap")
    token = f"{header}.{b64(json.dumps(claims_for(mallory)).encode())}.{signature}"
    assert refused(make_verifier(clock), token, plain(mallory)) == "the signature is not valid"


def test_a_tampered_signature_is_refused(clock: Clock) -> None:
    header, payload, signature = make_signer(clock).sign(ALICE).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    for index in (0, 31, 32, 63):
        changed = raw.copy()
        changed[index] ^= 1
        assert refused(make_verifier(clock), f"{header}.{payload}.{b64(bytes(changed))}") == (
            "the signature is not valid")
    assert refused(make_verifier(clock), f"{header}.{payload}.{b64(bytes(raw[:32]))}") == (
        "the signature is not 64 bytes long")


def test_a_signature_spelled_with_spare_bits_is_refused(clock: Clock) -> None:
    header, payload, signature = make_signer(clock).sign(ALICE).split(".")
    # 64 bytes leave 2 spare bits in the last base64 character.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelled = signature[:-1] + alphabet[alphabet.index(signature[-1]) ^ 1]
    assert refused(make_verifier(clock), f"{header}.{payload}.{respelled}") == "a segment is not canonical base64url"


def test_a_token_for_another_issuer_or_audience_is_refused(clock: Clock) -> None:
    verifier = make_verifier(clock)
    assert refused(verifier, make_signer(clock, issuer="https://other.example").sign(ALICE)) == (
        "the assertion comes from another issuer")
    assert refused(verifier, make_signer(clock, audience="other-apps").sign(ALICE)) == (
        "the assertion is meant for another audience")
    assert refused(verifier, forge(claims_for(aud=[AUDIENCE]))) == "the assertion is meant for another audience"


def test_expiry_with_leeway(clock: Clock) -> None:
    token = make_signer(clock, lifetime=60).sign(ALICE)
    verifier = make_verifier(clock, leeway=5)
    clock.now = NOW + 64.9
    verifier.verify(token, plain(ALICE))
    clock.now = NOW + 65
    assert refused(verifier, token) == "the assertion has expired"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_a_token_from_the_future_is_refused_beyond_the_leeway(clock: Clock, claim: str) -> None:
    verifier = make_verifier(clock, leeway=5)
    verifier.verify(forge(claims_for(**{claim: int(NOW) + 5})), plain(ALICE))
    reason = refused(verifier, forge(claims_for(**{claim: int(NOW) + 6})))
    assert reason == {"nbf": "the assertion is not valid yet", "iat": "the assertion is issued in the future"}[claim]


@pytest.mark.parametrize("claim", REQUIRED)
def test_a_missing_claim_is_refused(clock: Clock, claim: str) -> None:
    assert refused(make_verifier(clock), forge(claims_for(**{claim: None}))) == (
        f"the assertion lacks the claims {claim}")


@pytest.mark.parametrize(("claim", "value", "kind"), [
    ("exp", NOW + 60, "int"), ("exp", str(int(NOW) + 60), "int"), ("exp", True, "int"), ("nbf", 1.5, "int"),
    ("iat", [1], "int"), ("sub", 7, "str"), ("email", ["alice@example.com"], "str"),
    ("groups", "NetBox-Admins|Staff", "list"), ("is_staff", 1, "bool"), ("is_superuser", "false", "bool"),
])
def test_a_claim_of_the_wrong_type_is_refused(clock: Clock, claim: str, value: Any, kind: str) -> None:
    reason = refused(make_verifier(clock), forge(claims_for(**{claim: value})))
    assert reason == f"the {claim} claim is not of type {kind}"


@pytest.mark.parametrize("groups", [["NetBox-Admins|Staff"], ["NetBox-Admins", "", "Staff"], ["NetBox-Admins", 1]])
def test_ambiguous_group_claims_are_refused(clock: Clock, groups: list[Any]) -> None:
    assert refused(make_verifier(clock), forge(claims_for(groups=groups))) == (
        "the groups claim holds something other than group names")


# Valid signatures whose claims do not match the plain headers


@pytest.mark.parametrize(("key", "value", "claim"), [
    ("user", "bob", "sub"),
    ("user", "Alice", "sub"),
    ("user", "", "sub"),
    ("first_name", "Alicia", "given_name"),
    ("last_name", "Muller", "family_name"),
    ("email", "mallory@example.com", "email"),
    ("groups", "NetBox-Admins|Staff|Superusers", "groups"),
    ("groups", "Staff|NetBox-Admins", "groups"),
    ("groups", "NetBox-Admins", "groups"),
    ("groups", "", "groups"),
    ("is_staff", "false", "is_staff"),
    ("is_staff", "True", "is_staff"),
    ("is_superuser", "true", "is_superuser"),
    ("is_superuser", "", "is_superuser"),
])
def test_claims_that_do_not_match_the_headers_are_refused(clock: Clock, key: str, value: str, claim: str) -> None:
    token = make_signer(clock).sign(ALICE)
    headers = {**plain(ALICE), key: value}
    assert refused(make_verifier(clock), token, headers) == f"the {claim} claim does not match the {key} header"


def test_an_assertion_for_another_user_is_refused(clock: Clock) -> None:
    bob = Identity(username="bob", groups=("Staff",), source="ldap")
    assert refused(make_verifier(clock), make_signer(clock).sign(bob), plain(ALICE)) == (
        "the sub claim does not match the user header")


# Garbage


@pytest.mark.parametrize("token", [
    "", "abc", "a.b", "a.b.c.d", "..", "a.b.c", "eyJhbGciOiJFUzI1NiJ9", "é.é.é", "\x00.\x00.\x00",
    b64(b"[1]") + ".e30.AA", b64(b'"ES256"') + ".e30.AA", b64(b"{\"alg\": NaN}") + ".e30.AA",
    b64(b"[" * 10_000) + ".e30.AA", "eyJhbGciOiJFUzI1NiJ9 .e30.AA", "eyJhbGciOiJFUzI1NiJ9=.e30.AA",
])
def test_garbage_is_refused(clock: Clock, token: str) -> None:
    refused(make_verifier(clock), token)


def test_no_token_is_refused(clock: Clock) -> None:
    verifier = make_verifier(clock)
    assert refused(verifier, "") == "no assertion"
    with pytest.raises(AssertionRejected, match="no assertion"):
        verifier.verify(None, plain(ALICE))  # type: ignore[arg-type]


def test_a_payload_that_is_not_a_json_object_is_refused_after_the_signature(clock: Clock) -> None:
    for payload, reason in [(b"[]", "the payload is not a JSON object"), (b"{", "the payload is not JSON"),
                            (b'{"exp": Infinity}', "the payload is not JSON")]:
        token = jws.sign(payload, KEY_A, headers={"kid": "a"}, algorithm="ES256")
        assert refused(make_verifier(clock), token) == reason


def test_an_oversized_token_is_refused_before_parsing(clock: Clock) -> None:
    token = forge(claims_for(padding="x" * MAX_TOKEN))
    assert refused(make_verifier(clock), token) == f"the assertion is longer than {MAX_TOKEN} characters"


# Configuration of the verifier


@pytest.mark.parametrize("url", [
    "http://sso.example.com/.well-known/jwks.json",
    "http://10.0.0.1/jwks",
    "http://127.0.0.1.evil.example/jwks",
    "http://localhost.evil.example/jwks",
    "http://localhost@evil.example/jwks",
    "ftp://127.0.0.1/jwks",
    "file:///etc/jwks.json",
    "https:///jwks",
    "http://[::1/jwks",
    "127.0.0.1/jwks",
])
def test_a_jwks_url_that_is_neither_https_nor_loopback_is_refused(clock: Clock, url: str) -> None:
    with pytest.raises(ValueError, match="jwks_url: must be https"):
        make_verifier(clock, jwks_url=url)


@pytest.mark.parametrize("url", [
    "https://sso.example.com/.well-known/jwks.json",
    "http://127.0.0.1:9091/.well-known/jwks.json",
    "http://127.0.0.2/jwks",
    "http://[::1]:9091/jwks",
    "http://localhost:9091/jwks",
])
def test_https_and_loopback_jwks_urls_are_accepted(clock: Clock, url: str) -> None:
    make_verifier(clock, jwks_url=url, fetch=FakeJwks({}))


def test_the_verifier_reports_every_problem(clock: Clock) -> None:
    with pytest.raises(ValueError) as caught:
        AssertionVerifier(issuer="", audience="", leeway=-1, group_separator="")
    assert str(caught.value) == ("give exactly one of jwks and jwks_url; issuer: must not be empty; "
                                 "audience: must not be empty; leeway: must not be negative, got -1; "
                                 "group_separator: must not be empty")
    with pytest.raises(ValueError, match=r"^issuer: must not be empty; jwks: expected"):
        AssertionVerifier(issuer="", audience=AUDIENCE, jwks={"keys": []})
    with pytest.raises(ValueError, match="give exactly one of jwks and jwks_url"):
        make_verifier(clock, jwks=make_signer(clock).jwks(), jwks_url="https://sso.example.com/jwks")


def test_given_key_sets_are_checked_entry_by_entry(clock: Clock) -> None:
    good = make_signer(clock).jwks()["keys"][0]
    private = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    entries = [
        {**good, "d": b64(private.to_bytes(32, "big"))},
        {**good, "kid": "rsa", "kty": "RSA"},
        {**good, "kid": "p384", "crv": "P-384"},
        {**good, "kid": "hs", "alg": "HS256"},
        {**good, "kid": "enc", "use": "enc"},
        {**good, "kid": "short", "x": good["x"][:-2]},
        {**good, "kid": "off", "y": good["x"]},
        {key: value for key, value in good.items() if key != "kid"},
        "not a key",
        good,
    ]
    with pytest.raises(ValueError) as caught:
        parse_jwks({"keys": entries})
    assert str(caught.value).split("; ") == [
        "jwks.keys[0]: 'a' is a private key: publish only the public part",
        "jwks.keys[1]: 'rsa' is not an EC P-256 key",
        "jwks.keys[2]: 'p384' is not an EC P-256 key",
        "jwks.keys[3]: 'hs' is not for ES256 signatures",
        "jwks.keys[4]: 'enc' is not for ES256 signatures",
        "jwks.keys[5]: 'short' has no x and y of 32 bytes in base64url",
        "jwks.keys[6]: 'off' is not a point on P-256",
        "jwks.keys[7]: no kid",
        "jwks.keys[8]: not a JSON object",
    ]
    assert b64(private.to_bytes(32, "big")) not in str(caught.value)
    with pytest.raises(ValueError, match=r"jwks.keys\[1\]: kid 'a' is used twice"):
        make_verifier(clock, jwks={"keys": [good, good]})
    for document in [{}, {"keys": []}, [], {"keys": good}]:
        with pytest.raises(ValueError, match="jwks: expected"):
            make_verifier(clock, jwks=document)


# Keys of the signer


def pem_of(key: Any, encryption: Any = None) -> str:
    encryption = encryption or serialization.NoEncryption()
    pem: bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return pem.decode()


def test_signer_keys_are_checked_without_showing_them(clock: Clock) -> None:
    keys = [
        ("rsa", pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048))),
        ("p384", pem_of(ec.generate_private_key(ec.SECP384R1()))),
        ("ed", pem_of(ed25519.Ed25519PrivateKey.generate())),
        ("locked", pem_of(ec.generate_private_key(ec.SECP256R1()), serialization.BestAvailableEncryption(b"pw"))),
        ("garbage", KEY_A.replace("A", "B", 5)[:-40]),
        ("public", public_pem(KEY_A).decode()),
        ("bad kid!", KEY_A),
        ("a", KEY_A),
        ("a", KEY_B),
    ]
    with pytest.raises(ValueError) as caught:
        make_signer(clock, keys, lifetime=0.5, issuer="", memo_entries=0)
    message = str(caught.value)
    assert message.split("; ") == [
        "keys: the key of 'rsa' is not an EC key: ES256 needs EC P-256 (auth-sidecar generate-signing-key)",
        "keys: the key of 'p384' is on curve secp384r1: ES256 needs P-256 (secp256r1)",
        "keys: the key of 'ed' is Ed25519: python-jose has no EdDSA, use EC P-256 (auth-sidecar generate-signing-key)",
        "keys: the key of 'locked' is encrypted: give it without a passphrase",
        "keys: the key of 'garbage' is not a PEM private key",
        "keys: the key of 'public' is not a PEM private key",
        "keys: a kid is 1 to 32 of A-Z a-z 0-9 _ -, got 'bad kid!'",
        "keys: kid 'a' is used twice",
        "issuer: must not be empty",
        "lifetime: must be at least 1 second, got 0.5",
        "memo_entries: must be positive, got 0",
    ]
    for _, pem in keys:
        assert all(line not in message for line in pem.splitlines()[1:-1])


def test_a_signer_needs_a_key(clock: Clock) -> None:
    with pytest.raises(ValueError, match=r"^keys: at least one \(kid, PEM private key\) is required$"):
        AssertionSigner([], issuer=ISSUER, audience=AUDIENCE)


# The default fetch, against a real HTTP server


class JwksServer(ThreadingHTTPServer):
    document = b""


class JwksHandler(BaseHTTPRequestHandler):
    server: JwksServer

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/jwks.json")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.server.document if self.path == "/jwks.json" else b"[" * (65 * 1024)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer(("127.0.0.1", 0), JwksHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_default_fetch_reads_a_loopback_key_set(clock: Clock, jwks_server: JwksServer) -> None:
    signer = make_signer(clock)
    jwks_server.document = json.dumps(signer.jwks()).encode()
    base = f"http://127.0.0.1:{jwks_server.server_port}"
    verifier = make_verifier(clock, jwks_url=f"{base}/jwks.json")
    assert verifier.verify(signer.sign(ALICE), plain(ALICE))["sub"] == "alice"
    with pytest.raises(HTTPError) as caught:
        fetch_jwks(f"{base}/redirect")
    caught.value.close()
    assert caught.value.code == 302
    with pytest.raises(ValueError, match="larger than 65536 bytes"):
        fetch_jwks(f"{base}/big")


def test_the_application_side_imports_without_the_server_stack() -> None:
    code = ("import sys\n"
            "for name in ('aiohttp', 'ldap3', 'yaml', 'cachetools'): sys.modules[name] = None\n"
            "import sidecar.contrib.assertion\n")
    subprocess.run([sys.executable, "-c", code], check=True)
