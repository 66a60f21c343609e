"""sidecar.contrib.wsgi: the environ an application sees behind SidecarWSGIMiddleware.

Requests are environs as gunicorn builds them: ``HTTP_*`` keys, UTF-8 bytes decoded as latin-1.
The last tests run examples/flask/app.py through Flask's test client.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from sidecar.contrib.headers import decode, environ_key
from sidecar.contrib.wsgi import IDENTITY, SidecarWSGIMiddleware
from sidecar.errors import AssertionRejected
from sidecar.identity import Identity
from tests.django_project import need_module
from tests.testbed import ROOT

ALICE = {
    "Remote-User": "alice",
    "Remote-User-First-Name": "Alice",
    "Remote-User-Last-Name": "Liddell",
    "Remote-User-Email": "alice@example.com",
    "Remote-User-Group": "active|netbox-users|staff|superuser",
    "Remote-User-Staff": "true",
    "Remote-User-Superuser": "true",
}
ALICE_IDENTITY = {
    "username": "alice",
    "first_name": "Alice",
    "last_name": "Liddell",
    "email": "alice@example.com",
    "groups": ["active", "netbox-users", "staff", "superuser"],
    "is_staff": True,
    "is_superuser": True,
}
ALICE_CLAIMS = {"user": "alice", "first_name": "Alice", "last_name": "Liddell", "email": "alice@example.com",
                "groups": "active|netbox-users|staff|superuser", "is_staff": "true", "is_superuser": "true"}


def wire(headers: Mapping[str, str]) -> dict[str, str]:
    """Environ entries as gunicorn makes them: HTTP_NAME, and UTF-8 bytes decoded as latin-1."""
    return {environ_key(name): value.encode("utf-8").decode("latin-1") for name, value in headers.items()}


class Recorder:
    """A WSGI application that keeps the environ it was called with."""

    def __init__(self) -> None:
        self.environ: dict[str, Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.environ = dict(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def call(sent: Mapping[str, str], extra: Mapping[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """The environ the application sees for a request with the headers ``sent``; options go to the middleware."""
    app = Recorder()
    environ: dict[str, Any] = {**wire(sent), **(extra or {})}
    setup_testing_defaults(environ)
    body = SidecarWSGIMiddleware(app, **options)(environ, lambda status, headers, exc_info=None: lambda data: None)
    assert list(body) == [b"ok"]
    return app.environ


def identity_keys(environ: Mapping[str, Any]) -> list[str]:
    return sorted(key for key in environ if key.startswith("HTTP_REMOTE_USER") or key in ("REMOTE_USER", IDENTITY))


def test_an_identity_reaches_the_application() -> None:
    environ = call({**ALICE, "Accept": "text/html"})
    assert environ[IDENTITY] == ALICE_IDENTITY
    assert environ["REMOTE_USER"] == "alice"
    assert environ["HTTP_REMOTE_USER_EMAIL"] == "alice@example.com"  # the headers stay as they came
    assert environ["HTTP_ACCEPT"] == "text/html"


@pytest.mark.parametrize(("first", "last"), [("José", "山田"), ("Zoë 🦊", "Ærøskøbing-Łódź")])
def test_non_ascii_values_are_decoded(first: str, last: str) -> None:
    environ = call({**ALICE, "Remote-User": "josé", "Remote-User-First-Name": first,
                    "Remote-User-Last-Name": last, "Remote-User-Group": f"{last}|ops"})
    seen = environ[IDENTITY]
    assert (seen["username"], seen["first_name"], seen["last_name"], seen["groups"]) == \
        ("josé", first, last, [last, "ops"])
    assert environ["HTTP_REMOTE_USER_FIRST_NAME"] == first.encode().decode("latin-1")  # untouched: PEP 3333


def test_decode_leaves_everything_but_utf8_read_as_latin1_alone() -> None:
    assert decode("JosÃ©") == "José"
    assert decode("Jos\xe9") == "Jos\xe9"  # a genuine latin-1 byte is no UTF-8
    assert decode("山田") == "山田"  # already text
    assert decode("plain") == "plain"


def test_groups_and_flags_are_read_strictly() -> None:
    seen = call({**ALICE, "Remote-User-Group": "|a||b|a|", "Remote-User-Staff": "TRUE",
                 "Remote-User-Superuser": "yes"})[IDENTITY]
    assert (seen["groups"], seen["is_staff"], seen["is_superuser"]) == (["a", "b"], False, False)


@pytest.mark.parametrize("spoof", [
    {},
    {"Remote-User": ""},
    {"Remote-User-Email": "admin@evil.test", "Remote-User-Superuser": "true", "Remote-User-Group": "admins"},
    {"Remote-User-Anything": "x"},
])
def test_without_a_user_nothing_identity_like_reaches_the_application(spoof: dict[str, str]) -> None:
    outer = {"REMOTE_USER": "admin", IDENTITY: {"username": "admin"}, "HTTP_REMOTE_USERNAME": "admin"}
    environ = call({**spoof, "Accept": "*/*"}, outer)
    assert identity_keys(environ) == []
    assert environ["HTTP_ACCEPT"] == "*/*"


def test_an_outer_remote_user_never_replaces_the_headers() -> None:
    environ = call(ALICE, {"REMOTE_USER": "admin", IDENTITY: {"username": "admin"}})
    assert (environ["REMOTE_USER"], environ[IDENTITY]["username"]) == ("alice", "alice")


def test_header_names_and_separator_are_configurable() -> None:
    names = {"user": "X-Auth-Request-User", "groups": "X-Auth-Request-Groups"}
    environ = call({"X-Auth-Request-User": "carol", "X-Auth-Request-Groups": "a,b"}, headers=names, separator=",")
    assert (environ[IDENTITY]["username"], environ[IDENTITY]["groups"]) == ("carol", ["a", "b"])
    environ = call({**ALICE, "X-Auth-Request-Groups": "a"}, headers=names)
    assert identity_keys(environ) == [] and "HTTP_X_AUTH_REQUEST_GROUPS" not in environ


@pytest.mark.parametrize("names", [{"user": "Remote_User"}, {"mail": "X-Mail"}, {"user": ""}])
def test_bad_header_names_are_refused_at_start(names: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        SidecarWSGIMiddleware(Recorder(), headers=names)


class FakeVerifier:
    """Accepts the token "good" when the headers say what ``claims`` say (the real one's contract)."""

    def __init__(self, claims: Mapping[str, str]) -> None:
        self.claims = dict(claims)

    def verify(self, token: str, headers: Mapping[str, str]) -> object:
        if token != "good":
            raise AssertionRejected("the signature is not valid")
        if dict(headers) != self.claims:
            raise AssertionRejected("the claims do not match the headers")
        return self.claims


GOOD = {**ALICE, "Remote-User-Assertion": "good"}


def test_with_an_assertion_a_match_is_accepted() -> None:
    environ = call(GOOD, assertion=FakeVerifier(ALICE_CLAIMS))
    assert environ[IDENTITY] == ALICE_IDENTITY


@pytest.mark.parametrize(("headers", "reason"), [
    (ALICE, "no Remote-User-Assertion"),
    ({**ALICE, "Remote-User-Assertion": "forged.token.value"}, "the signature is not valid"),
    ({**GOOD, "Remote-User-Group": "active|netbox-users|staff|superuser|admins"}, "do not match"),
    ({"Remote-User-Assertion": "good"}, "without Remote-User"),
])
def test_with_an_assertion_anything_else_is_scrubbed_and_logged_once(
    caplog: pytest.LogCaptureFixture, headers: dict[str, str], reason: str,
) -> None:
    environ = call(headers, assertion=FakeVerifier(ALICE_CLAIMS))
    assert identity_keys(environ) == []
    warnings = [r for r in caplog.records if r.name == "sidecar.contrib" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and reason in warnings[0].getMessage()
    assert "forged.token.value" not in caplog.text


def test_the_real_assertion_verifier_with_the_sidecar_s_signer() -> None:
    import sidecar.assertion as signing
    signer = signing.AssertionSigner([("k1", signing.generate_key())], issuer="https://sso.test", audience="app")
    jose = Identity("jose", first_name="José", last_name="山田", groups=("active",), is_superuser=True, source="ldap")
    headers = {"Remote-User": "jose", "Remote-User-First-Name": "José", "Remote-User-Last-Name": "山田",
               "Remote-User-Group": "active", "Remote-User-Staff": "false", "Remote-User-Superuser": "true"}
    options = {"assertion": {"issuer": "https://sso.test", "audience": "app", "jwks": signer.jwks()}}
    seen = call({**headers, "Remote-User-Assertion": signer.sign(jose)}, **options)[IDENTITY]
    assert (seen["first_name"], seen["last_name"], seen["is_superuser"]) == ("José", "山田", True)
    demoted = {**headers, "Remote-User-Superuser": "false", "Remote-User-Assertion": signer.sign(jose)}
    assert identity_keys(call(demoted, **options)) == []
    wrong_audience = {**options["assertion"], "audience": "other-app"}
    assert identity_keys(call({**headers, "Remote-User-Assertion": signer.sign(jose)},
                              assertion=wrong_audience)) == []


def flask_example() -> ModuleType:
    need_module("flask")
    spec = importlib.util.spec_from_file_location("flask_example", Path(ROOT, "examples", "flask", "app.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_flask_example_serves_the_identity() -> None:
    client = flask_example().create_app().test_client()
    headers = wire({**ALICE, "Remote-User-First-Name": "José"})
    response = client.get("/", environ_base=headers)
    assert response.status_code == 200
    assert response.get_json() == {**ALICE_IDENTITY, "first_name": "José"}
    assert client.get("/admin", environ_base=headers).get_json() == {"welcome": "José"}
    assert client.get("/admin", environ_base={**headers, "HTTP_REMOTE_USER_SUPERUSER": "false"}).status_code == 403
    assert client.get("/", environ_base=wire({"Remote-User-Email": "a@evil.test"})).status_code == 401


def test_the_flask_example_with_an_assertion() -> None:
    client = flask_example().create_app(FakeVerifier(ALICE_CLAIMS)).test_client()
    assert client.get("/", environ_base=wire(GOOD)).status_code == 200
    assert client.get("/", environ_base=wire(ALICE)).status_code == 401


def test_the_flask_example_reads_its_assertion_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    example = flask_example()
    for variable in example.ASSERTION_SETTINGS.values():
        monkeypatch.delenv(variable, raising=False)
    assert example.assertion_from_environment() is None
    monkeypatch.setenv("SIDECAR_ASSERTION_ISSUER", "https://sso.test")
    with pytest.raises(RuntimeError, match="SIDECAR_ASSERTION_AUDIENCE"):
        example.assertion_from_environment()
    monkeypatch.setenv("SIDECAR_ASSERTION_AUDIENCE", "app")
    monkeypatch.setenv("SIDECAR_ASSERTION_JWKS_URL", "http://127.0.0.1:9180/.well-known/jwks.json")
    assert example.assertion_from_environment() == {
        "issuer": "https://sso.test", "audience": "app", "jwks_url": "http://127.0.0.1:9180/.well-known/jwks.json"}


def test_the_application_side_defaults_are_the_sidecars() -> None:
    # Two copies on purpose (the contrib imports no YAML); they must never drift apart.
    import dataclasses

    from sidecar.config import HeaderConfig
    from sidecar.contrib.headers import HeaderNames

    sidecar_side = HeaderConfig()
    for field in dataclasses.fields(HeaderNames):
        assert getattr(HeaderNames(), field.name) == getattr(sidecar_side, field.name)


@pytest.mark.parametrize("header", [name for name in ALICE if name != "Remote-User"])
def test_a_missing_header_is_no_or_empty_never_a_default_from_elsewhere(header: str) -> None:
    expected = {**ALICE_IDENTITY, {
        "Remote-User-First-Name": "first_name", "Remote-User-Last-Name": "last_name", "Remote-User-Email": "email",
        "Remote-User-Group": "groups", "Remote-User-Staff": "is_staff", "Remote-User-Superuser": "is_superuser",
    }[header]: {"Remote-User-Group": [], "Remote-User-Staff": False, "Remote-User-Superuser": False}.get(header, "")}
    stale = {IDENTITY: ALICE_IDENTITY, "REMOTE_USER": "alice"}  # from an earlier layer: never kept
    environ = call({name: value for name, value in ALICE.items() if name != header}, stale)
    assert environ[IDENTITY] == expected


def test_only_the_user_header_is_a_plain_identity() -> None:
    environ = call({"Remote-User": "alice"})
    assert environ[IDENTITY] == {"username": "alice", "first_name": "", "last_name": "", "email": "",
                                 "groups": [], "is_staff": False, "is_superuser": False}
