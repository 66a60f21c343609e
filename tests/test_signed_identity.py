"""The sidecar's side of signed identity: config, the assertion on /auth, /.well-known/jwks.json."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from sidecar.assertion import generate_key
from sidecar.config import parse_config
from sidecar.contrib.assertion import AssertionVerifier
from sidecar.errors import AssertionRejected, ConfigError
from tests.conftest import StartSidecar, basic
from tests.testbed import ROOT

OLD, NEW = generate_key(), generate_key()
PLAIN = {"user": "Remote-User", "first_name": "Remote-User-First-Name", "last_name": "Remote-User-Last-Name",
         "email": "Remote-User-Email", "groups": "Remote-User-Group", "is_staff": "Remote-User-Staff",
         "is_superuser": "Remote-User-Superuser"}


def assertion(*keys: tuple[str, str]) -> dict[str, Any]:
    return {"assertion": {"keys": [{"id": kid, "private_key": pem} for kid, pem in keys], "audience": "netbox",
                          "issuer": "https://sidecar.test"}}


async def verified(client: Any, user: str, password: str) -> dict[str, Any]:
    response = await client.get("/auth", headers=basic(user, password))
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    verifier = AssertionVerifier(issuer="https://sidecar.test", audience="netbox", jwks=jwks)
    plain = {key: response.headers[name] for key, name in PLAIN.items()}
    return verifier.verify(response.headers["Remote-User-Assertion"], plain)


async def test_auth_answers_carry_a_verifiable_assertion(sidecar: StartSidecar) -> None:
    client = await sidecar(top=assertion(("k1", OLD)))
    claims = await verified(client, "jose", "jose-pass")
    assert (claims["sub"], claims["given_name"], claims["family_name"]) == ("jose", "José", "山田")
    jwks = await client.get("/.well-known/jwks.json")
    assert jwks.headers["Cache-Control"] == "public, max-age=300"
    assert all("d" not in key for key in (await jwks.json())["keys"])  # public parts only


async def test_rotation_publishes_both_keys_and_signs_with_the_first(sidecar: StartSidecar) -> None:
    client = await sidecar(top=assertion(("new", NEW), ("old", OLD)))
    kids = [key["kid"] for key in (await (await client.get("/.well-known/jwks.json")).json())["keys"]]
    assert kids == ["new", "old"]
    assert (await verified(client, "alice", "alice-pass"))["sub"] == "alice"


async def test_an_assertion_does_not_vouch_for_other_headers(sidecar: StartSidecar) -> None:
    client = await sidecar(top=assertion(("k1", OLD)))
    response = await client.get("/auth", headers=basic("alice", "alice-pass"))
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    verifier = AssertionVerifier(issuer="https://sidecar.test", audience="netbox", jwks=jwks)
    plain = {key: response.headers[name] for key, name in PLAIN.items()} | {"user": "bob"}
    with pytest.raises(AssertionRejected):
        verifier.verify(response.headers["Remote-User-Assertion"], plain)


async def test_without_keys_the_assertion_is_empty_and_there_is_no_jwks(sidecar: StartSidecar) -> None:
    client = await sidecar()
    # Present and empty, like any unknown identity value (Caddy < 2.10 would fill in a missing one).
    assert (await client.get("/auth", headers=basic("alice", "alice-pass"))).headers["Remote-User-Assertion"] == ""
    assert (await client.get("/.well-known/jwks.json")).status == 404


def test_config_problems_are_reported_without_key_material() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"ldap": {"server_uri": "ldap://x", "user_dn_template": "uid=%(user)s,dc=x"},
                      "assertion": {"keys": [{"id": "k 1", "private_key": "not-a-pem-Secret"}]}})
    text = "\n".join(caught.value.problems)
    assert "assertion.keys[0].id" in text and "assertion.keys[0].private_key" in text
    assert "assertion.audience: is required" in text and "not-a-pem-Secret" not in text


def test_generate_signing_key_makes_a_usable_key() -> None:
    result = subprocess.run([sys.executable, "-m", "sidecar", "generate-signing-key"], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0 and "BEGIN PRIVATE KEY" in result.stdout
    parse_config({"ldap": {"server_uri": "ldap://x", "user_dn_template": "uid=%(user)s,dc=x"},
                  **assertion(("k", result.stdout))})
