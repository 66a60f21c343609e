"""sidecar.contrib.django in process: tests/django_project, requests as gunicorn would hand them over.

Header values reach Django the way gunicorn delivers them: in ``HTTP_*`` environ keys, UTF-8 bytes
decoded as latin-1. The database is SQLite in memory; each test runs in a transaction rolled back
afterwards.
"""

from __future__ import annotations

import ast
import importlib
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.django_project import need_module
from tests.testbed import ROOT

need_module("django")

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    from tests.django_project import settings as project

    settings.configure(**{name: getattr(project, name) for name in dir(project) if name.isupper()})
    django.setup()

# Imported once Django is set up: models need the app registry.
from django.contrib import auth  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import Client, RequestFactory, override_settings  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from sidecar.config import SessionConfig  # noqa: E402
from sidecar.contrib.django import (  # noqa: E402
    SidecarBackend,
    SidecarMiddleware,
    Utf8HeadersMiddleware,
    load_options,
)
from sidecar.contrib.headers import HeaderNames, environ_key  # noqa: E402
from sidecar.errors import AssertionRejected  # noqa: E402
from sidecar.identity import Identity  # noqa: E402

ALICE = {
    "Remote-User": "alice",
    "Remote-User-First-Name": "Alice",
    "Remote-User-Last-Name": "Liddell",
    "Remote-User-Email": "alice@example.com",
    "Remote-User-Group": "active|netbox-users|staff|superuser",
    "Remote-User-Staff": "true",
    "Remote-User-Superuser": "true",
}
ALICE_SEEN = {
    "authenticated": True,
    "username": "alice",
    "first_name": "Alice",
    "last_name": "Liddell",
    "email": "alice@example.com",
    "is_active": True,
    "is_staff": True,
    "is_superuser": True,
    "groups": ["active", "netbox-users", "staff", "superuser"],
}
ANONYMOUS = {"authenticated": False}
WRITES = ("INSERT", "UPDATE", "DELETE")


def wire(headers: Mapping[str, str]) -> dict[str, Any]:  # Any, or mypy matches values to get()'s own parameters
    """Environ entries as gunicorn makes them: HTTP_NAME, and UTF-8 bytes decoded as latin-1."""
    return {environ_key(name): value.encode("utf-8").decode("latin-1") for name, value in headers.items()}


def whoami(client: Client, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    response = client.get("/whoami", **wire(headers or {}))
    assert response.status_code == 200
    seen: dict[str, Any] = response.json()
    return seen


def writes(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(WRITES)]


@pytest.fixture(scope="module", autouse=True)
def database() -> None:
    call_command("migrate", verbosity=0)


@pytest.fixture(autouse=True)
def rollback(database: None) -> Iterator[None]:
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


# What every current browser sends: SidecarMiddleware keeps a session (and the CSRF check) for these.
BROWSER = {"Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def client() -> Client:
    return Client(headers=BROWSER)


CSRF_MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.csrf.CsrfViewMiddleware"]


def test_an_api_client_gets_no_session_and_no_csrf_check() -> None:
    api = Client(enforce_csrf_checks=True)  # a script: neither Origin nor Sec-Fetch-Site
    with override_settings(MIDDLEWARE=CSRF_MIDDLEWARE):
        response = api.post("/whoami", **wire(ALICE))
        assert response.status_code == 200 and response.json() == ALICE_SEEN
        assert "sessionid" not in api.cookies  # nothing for a script to keep, or to be checked for
        assert api.post("/whoami", **wire(ALICE)).json() == ALICE_SEEN


@pytest.mark.parametrize("browser", [BROWSER, {"Origin": "https://evil.test"},
                                     {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.test"}])
def test_a_browser_keeps_its_session_and_the_csrf_check(browser: dict[str, str]) -> None:
    client = Client(enforce_csrf_checks=True, headers=browser)
    with override_settings(MIDDLEWARE=CSRF_MIDDLEWARE):
        assert client.get("/whoami", **wire(ALICE)).json() == ALICE_SEEN
        assert "sessionid" in client.cookies
        assert client.post("/whoami", **wire(ALICE)).status_code == 403  # no CSRF token: refused


def test_an_api_client_is_checked_for_csrf_without_an_identity() -> None:
    api = Client(enforce_csrf_checks=True)
    with override_settings(MIDDLEWARE=CSRF_MIDDLEWARE):
        assert api.post("/whoami").status_code == 403


def test_the_first_request_creates_the_user_with_everything(client: Client) -> None:
    assert whoami(client, ALICE) == ALICE_SEEN
    user = User.objects.get(username="alice")
    assert (user.first_name, user.email, user.is_staff, user.is_superuser) == \
        ("Alice", "alice@example.com", True, True)
    assert sorted(Group.objects.values_list("name", flat=True)) == ALICE_SEEN["groups"]


def test_an_unchanged_request_writes_nothing(client: Client) -> None:
    whoami(client, ALICE)
    with CaptureQueriesContext(connection) as queries:
        assert whoami(client, ALICE) == ALICE_SEEN
    assert writes(queries) == []
    # The session, its user, the user's groups (for the sync) and the view's own groups query.
    assert len(queries.captured_queries) <= 4, [q["sql"] for q in queries.captured_queries]


@pytest.mark.parametrize(("header", "value", "field", "expected"), [
    ("Remote-User-First-Name", "Alicia", "first_name", "Alicia"),
    ("Remote-User-Last-Name", "Smith", "last_name", "Smith"),
    ("Remote-User-Email", "alice@new.example", "email", "alice@new.example"),
    ("Remote-User-Email", "", "email", ""),
    ("Remote-User-Staff", "false", "is_staff", False),
    ("Remote-User-Superuser", "false", "is_superuser", False),
    ("Remote-User-Group", "active|auditors", "groups", ["active", "auditors"]),
])
def test_every_change_shows_on_the_next_request(client: Client, header: str, value: str, field: str,
                                                expected: object) -> None:
    whoami(client, ALICE)
    session = client.cookies["sessionid"].value
    with CaptureQueriesContext(connection) as queries:
        seen = whoami(client, {**ALICE, header: value})
    assert seen == {**ALICE_SEEN, field: expected}
    assert writes(queries), "the change must reach the database"
    assert client.cookies["sessionid"].value == session  # updated in place, not a new login
    assert whoami(client, {**ALICE, header: value}) == seen  # and it stays


@pytest.mark.parametrize(("header", "field", "expected"), [
    ("Remote-User-First-Name", "first_name", ""),
    ("Remote-User-Last-Name", "last_name", ""),
    ("Remote-User-Email", "email", ""),
    ("Remote-User-Staff", "is_staff", False),
    ("Remote-User-Superuser", "is_superuser", False),
    ("Remote-User-Group", "groups", []),
])
def test_a_header_missing_from_a_signed_in_request_means_no(client: Client, header: str, field: str,
                                                            expected: object) -> None:
    # A proxy that lets a client name identity headers in Connection drops them after the sidecar
    # set them: the application must read that as "no", never as "as before".
    whoami(client, ALICE)
    session = client.cookies["sessionid"].value
    without = {name: value for name, value in ALICE.items() if name != header}
    assert whoami(client, without) == {**ALICE_SEEN, field: expected}
    assert client.cookies["sessionid"].value == session  # the same session, brought in line
    user = User.objects.get(username="alice")
    stored = sorted(user.groups.values_list("name", flat=True)) if field == "groups" else getattr(user, field)
    assert stored == expected


def test_a_superuser_whose_next_request_lacks_every_flag_and_group_is_demoted(client: Client) -> None:
    assert whoami(client, ALICE)["is_superuser"] is True
    seen = whoami(client, {"Remote-User": "alice"})
    assert seen == {**ANONYMOUS, "authenticated": True, "username": "alice", "first_name": "", "last_name": "",
                    "email": "", "is_active": True, "is_staff": False, "is_superuser": False, "groups": []}
    user = User.objects.get(username="alice")
    assert (user.is_staff, user.is_superuser, user.groups.count()) == (False, False, 0)


def test_missing_headers_mean_no_under_netbox_s_middleware_call_too() -> None:
    User.objects.create(username="alice", is_staff=True, is_superuser=True, email="old@example.com")
    request = RequestFactory().get("/", **wire({"Remote-User": "alice"}))
    user = auth.authenticate(request, remote_user="alice", remote_groups=["superuser"])
    assert user is not None and (user.is_staff, user.is_superuser, user.email) == (False, False, "")


def test_staff_groups_with_the_group_header_missing_mean_no_staff(client: Client) -> None:
    with override_settings(SIDECAR={"STAFF_GROUPS": ["staff"], "SUPERUSER_GROUPS": ["superuser"]}):
        assert whoami(client, ALICE)["is_superuser"] is True
        without = {name: value for name, value in ALICE.items() if name != "Remote-User-Group"}
        seen = whoami(client, without)
    assert (seen["is_staff"], seen["is_superuser"], seen["groups"]) == (False, False, [])


def test_a_flag_can_come_back(client: Client) -> None:
    whoami(client, {**ALICE, "Remote-User-Superuser": "false"})
    assert whoami(client, ALICE)["is_superuser"] is True


def test_groups_are_added_and_removed(client: Client) -> None:
    assert whoami(client, {**ALICE, "Remote-User-Group": "a|b"})["groups"] == ["a", "b"]
    assert whoami(client, {**ALICE, "Remote-User-Group": "b|c"})["groups"] == ["b", "c"]
    assert whoami(client, {**ALICE, "Remote-User-Group": ""})["groups"] == []
    assert Group.objects.filter(name="a").exists()  # left for other members


def test_without_create_groups_only_existing_groups_are_joined(client: Client) -> None:
    Group.objects.create(name="existing")
    with override_settings(SIDECAR={"CREATE_GROUPS": False}):
        assert whoami(client, {**ALICE, "Remote-User-Group": "existing|ghost"})["groups"] == ["existing"]
    assert not Group.objects.filter(name="ghost").exists()


def test_without_sync_groups_other_groups_are_kept(client: Client) -> None:
    whoami(client, {**ALICE, "Remote-User-Group": "a"})
    User.objects.get(username="alice").groups.add(Group.objects.create(name="local"))
    with override_settings(SIDECAR={"SYNC_GROUPS": False}):
        assert whoami(client, {**ALICE, "Remote-User-Group": "b"})["groups"] == ["a", "b", "local"]
    assert whoami(Client(), {**ALICE, "Remote-User-Group": "b"})["groups"] == ["b"]


def test_staff_and_superuser_groups_replace_the_flag_headers(client: Client) -> None:
    with override_settings(SIDECAR={"STAFF_GROUPS": ["staff"], "SUPERUSER_GROUPS": ["admins"]}):
        seen = whoami(client, ALICE)
        assert (seen["is_staff"], seen["is_superuser"]) == (True, False)
        seen = whoami(client, {**ALICE, "Remote-User-Group": "admins", "Remote-User-Staff": "false"})
        assert (seen["is_staff"], seen["is_superuser"]) == (False, True)


@pytest.mark.parametrize(("first", "last"), [("José", "山田"), ("Zoë 🦊", "Ærøskøbing-Łódź")])
def test_non_ascii_values_arrive_as_sent(client: Client, first: str, last: str) -> None:
    seen = whoami(client, {**ALICE, "Remote-User-First-Name": first, "Remote-User-Last-Name": last,
                           "Remote-User-Group": f"{last}|ops"})
    assert (seen["first_name"], seen["last_name"], seen["groups"]) == (first, last, sorted([last, "ops"]))
    user = User.objects.get(username="alice")
    assert (user.first_name, user.last_name) == (first, last)


def test_values_that_are_not_utf8_stay_as_they_are(client: Client) -> None:
    # A proxy that sent the latin-1 byte E9 alone: gunicorn gives "é", which is no UTF-8 read as latin-1.
    meta = {**wire(ALICE), "HTTP_REMOTE_USER_FIRST_NAME": "Jos\xe9", "HTTP_REMOTE_USER_LAST_NAME": "\xc3("}
    seen = client.get("/whoami", **meta).json()
    assert (seen["first_name"], seen["last_name"]) == ("Jos\xe9", "\xc3(")


def test_a_non_ascii_username_keeps_its_session(client: Client) -> None:
    assert whoami(client, {**ALICE, "Remote-User": "josé"})["username"] == "josé"
    session = client.cookies["sessionid"].value
    with CaptureQueriesContext(connection) as queries:
        assert whoami(client, {**ALICE, "Remote-User": "josé"})["username"] == "josé"
    assert writes(queries) == [] and client.cookies["sessionid"].value == session


def test_no_header_is_anonymous_and_ends_the_session(client: Client) -> None:
    assert whoami(client) == ANONYMOUS
    assert whoami(client, ALICE)["authenticated"] is True
    assert whoami(client) == ANONYMOUS
    assert whoami(client) == ANONYMOUS
    assert auth.SESSION_KEY not in client.session


@pytest.mark.parametrize("spoof", [
    {"Remote-User": ""},
    {"Remote-User-Email": "admin@evil.test", "Remote-User-Superuser": "true"},
])
def test_no_user_in_the_headers_is_anonymous(client: Client, spoof: dict[str, str]) -> None:
    assert whoami(client, spoof) == ANONYMOUS
    assert not User.objects.exists()


def test_another_user_in_the_header_replaces_the_session(client: Client) -> None:
    whoami(client, ALICE)
    session = client.cookies["sessionid"].value
    seen = whoami(client, {**ALICE, "Remote-User": "bob", "Remote-User-First-Name": "Bob"})
    assert (seen["username"], seen["first_name"]) == ("bob", "Bob")
    assert client.cookies["sessionid"].value != session


def test_a_password_session_survives_a_request_without_headers(client: Client) -> None:
    # As with Django's RemoteUserMiddleware: only sessions the headers opened end without them.
    User.objects.create_user("local-admin", password="x")
    with override_settings(AUTHENTICATION_BACKENDS=["sidecar.contrib.django.SidecarBackend",
                                                    "django.contrib.auth.backends.ModelBackend"]):
        assert client.login(username="local-admin", password="x")
        assert whoami(client)["username"] == "local-admin"


def test_header_names_and_separator_are_configurable(client: Client) -> None:
    names = {"user": "X-Auth-Request-User", "groups": "X-Auth-Request-Groups"}
    with override_settings(SIDECAR={"HEADERS": names, "GROUP_SEPARATOR": ","}):
        assert whoami(client, ALICE) == ANONYMOUS  # Remote-User means nothing now
        seen = whoami(client, {"X-Auth-Request-User": "carol", "X-Auth-Request-Groups": "a,b"})
    assert (seen["username"], seen["groups"]) == ("carol", ["a", "b"])


def test_a_username_too_long_for_the_model_is_refused(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    assert whoami(client, {**ALICE, "Remote-User": "x" * 151}) == ANONYMOUS
    assert "longer than the 150 characters" in caplog.text


def test_long_names_are_cut_to_the_columns(client: Client) -> None:
    seen = whoami(client, {**ALICE, "Remote-User-First-Name": "A" * 200, "Remote-User-Group": "g" * 200})
    assert seen["first_name"] == "A" * 150 and seen["groups"] == []


def test_bad_settings_are_reported_all_at_once() -> None:
    with pytest.raises(ImproperlyConfigured) as error:
        load_options({"CREATE_GROUP": True, "SYNC_GROUPS": "yes", "STAFF_GROUPS": "staff", "GROUP_SEPARATOR": 5,
                      "HEADERS": {"user": "Remote_User", "mail": "X"}})
    message = str(error.value)
    for part in ("'CREATE_GROUP'", "SYNC_GROUPS", "STAFF_GROUPS", "GROUP_SEPARATOR", "Remote_User", "'mail'"):
        assert part in message
    with pytest.raises(ImproperlyConfigured, match="jwks"):
        load_options({"ASSERTION": {"issuer": "i", "audience": "a"}})
    with pytest.raises(ImproperlyConfigured, match="HEADERS: expected a dict"):
        load_options({"HEADERS": "Remote-User"})
    with pytest.raises(ImproperlyConfigured, match="SIDECAR must be a dict"):
        load_options(["HEADERS"])


def test_utf8_headers_middleware_decodes_once_before_the_next_one() -> None:
    seen: dict[str, str] = {}

    def view(request: HttpRequest) -> HttpResponse:
        seen.update({k: v for k, v in request.META.items() if k.startswith("HTTP_REMOTE_USER")})
        return HttpResponse()

    request = RequestFactory().get("/", **wire({**ALICE, "Remote-User-First-Name": "José",
                                                "Remote-User-Last-Name": "山田"}))
    middleware = Utf8HeadersMiddleware(view)
    middleware(request)
    middleware(request)  # a second pass must not decode again
    assert (seen["HTTP_REMOTE_USER_FIRST_NAME"], seen["HTTP_REMOTE_USER_LAST_NAME"]) == ("José", "山田")


def test_the_backend_under_netbox_s_middleware_call() -> None:
    # NetBox's RemoteUserMiddleware calls authenticate(request, remote_user=<raw META value>,
    # remote_groups=[...]) and then copies the name and email META values onto the user.
    request = RequestFactory().get("/", **wire({**ALICE, "Remote-User": "josé", "Remote-User-First-Name": "José"}))
    user = auth.authenticate(request, remote_user=request.META["HTTP_REMOTE_USER"], remote_groups=["ignored"])
    assert user is not None and user.get_username() == "josé"
    assert request.META["HTTP_REMOTE_USER_FIRST_NAME"] == "José"  # what NetBox copies next
    assert sorted(user.groups.values_list("name", flat=True)) == ALICE_SEEN["groups"]
    assert auth.authenticate(request, remote_user="someone-else") is None
    assert SidecarBackend().authenticate(None, remote_user="alice") is None


class FakeVerifier:
    """Accepts the token "good" when the headers say what ``claims`` say (the real one's contract)."""

    def __init__(self, claims: Mapping[str, str]) -> None:
        self.claims = dict(claims)
        self.calls = 0

    def verify(self, token: str, headers: Mapping[str, str]) -> object:
        self.calls += 1
        if token != "good":
            raise AssertionRejected("the signature is not valid")
        if dict(headers) != self.claims:
            raise AssertionRejected("the claims do not match the headers")
        return self.claims


ALICE_CLAIMS = {"user": "alice", "first_name": "Alice", "last_name": "Liddell", "email": "alice@example.com",
                "groups": "active|netbox-users|staff|superuser", "is_staff": "true", "is_superuser": "true"}
GOOD = {**ALICE, "Remote-User-Assertion": "good"}


@pytest.mark.parametrize(("headers", "reason"), [
    (ALICE, "no Remote-User-Assertion"),
    ({**ALICE, "Remote-User-Assertion": "forged.token.value"}, "the signature is not valid"),
    ({**GOOD, "Remote-User-Email": "admin@evil.test"}, "the claims do not match"),
    ({**GOOD, "Remote-User-Superuser": "TRUE"}, "the claims do not match"),
    ({"Remote-User-Assertion": "good"}, "without Remote-User"),
])
def test_with_an_assertion_required_anything_but_a_match_is_anonymous(
    client: Client, caplog: pytest.LogCaptureFixture, headers: dict[str, str], reason: str,
) -> None:
    verifier = FakeVerifier(ALICE_CLAIMS)
    with override_settings(SIDECAR={"ASSERTION": verifier}):
        assert whoami(client, headers) == ANONYMOUS
        assert client.get("/meta", **wire(headers)).json() == {}  # nothing left to read by mistake
    assert not User.objects.exists()
    warnings = [r for r in caplog.records if r.name == "sidecar.contrib" and r.levelno == logging.WARNING]
    assert len(warnings) == 2 and reason in warnings[0].getMessage()  # one per request
    assert "forged.token.value" not in caplog.text


def test_with_an_assertion_a_match_logs_in_and_a_later_mismatch_logs_out(client: Client) -> None:
    verifier = FakeVerifier(ALICE_CLAIMS)
    with override_settings(SIDECAR={"ASSERTION": verifier}):
        assert whoami(client, GOOD) == ALICE_SEEN
        assert verifier.calls == 1  # middleware and backend share one check
        assert whoami(client, {**GOOD, "Remote-User-Assertion": "stale"}) == ANONYMOUS
        assert auth.SESSION_KEY not in client.session


def test_the_real_assertion_verifier_with_the_sidecar_s_signer(client: Client) -> None:
    import sidecar.assertion as signing
    signer = signing.AssertionSigner([("k1", signing.generate_key())], issuer="https://sso.test", audience="app")
    other = signing.AssertionSigner([("k1", signing.generate_key())], issuer="https://sso.test", audience="app")
    jose = Identity("jose", first_name="José", last_name="山田", email="jose@example.com",
                    groups=("active", "netbox-users"), source="ldap")
    headers = {"Remote-User": "jose", "Remote-User-First-Name": "José", "Remote-User-Last-Name": "山田",
               "Remote-User-Email": "jose@example.com", "Remote-User-Group": "active|netbox-users",
               "Remote-User-Staff": "false", "Remote-User-Superuser": "false"}
    sidecar = {"ASSERTION": {"issuer": "https://sso.test", "audience": "app", "jwks": signer.jwks()}}
    with override_settings(SIDECAR=sidecar):
        seen = whoami(client, {**headers, "Remote-User-Assertion": signer.sign(jose)})
        assert (seen["username"], seen["first_name"], seen["last_name"]) == ("jose", "José", "山田")
        tampered = {**headers, "Remote-User-Group": "active|netbox-users|superuser"}
        assert whoami(Client(), {**tampered, "Remote-User-Assertion": signer.sign(jose)}) == ANONYMOUS
        assert whoami(Client(), {**headers, "Remote-User-Assertion": other.sign(jose)}) == ANONYMOUS


# NetBox: its own models in a separate process, and the example files against NetBox's names.

NETBOX_DIR = ROOT / "examples" / "netbox"
# Every REMOTE_AUTH_* setting NetBox's settings.py reads (STAFF_* only before NetBox 4.5), and the
# session settings the examples set (tests/test_netbox.py checks them against NetBox's own settings.py).
NETBOX_SETTINGS = {
    "LOGIN_TIMEOUT", "LOGOUT_REDIRECT_URL",
    "REMOTE_AUTH_ENABLED", "REMOTE_AUTH_BACKEND", "REMOTE_AUTH_HEADER", "REMOTE_AUTH_USER_FIRST_NAME",
    "REMOTE_AUTH_USER_LAST_NAME", "REMOTE_AUTH_USER_EMAIL", "REMOTE_AUTH_AUTO_CREATE_USER",
    "REMOTE_AUTH_AUTO_CREATE_GROUPS", "REMOTE_AUTH_DEFAULT_GROUPS", "REMOTE_AUTH_DEFAULT_PERMISSIONS",
    "REMOTE_AUTH_GROUP_SYNC_ENABLED", "REMOTE_AUTH_GROUP_HEADER", "REMOTE_AUTH_GROUP_SEPARATOR",
    "REMOTE_AUTH_SUPERUSER_GROUPS", "REMOTE_AUTH_SUPERUSERS", "REMOTE_AUTH_STAFF_GROUPS", "REMOTE_AUTH_STAFF_USERS",
}


def assigned(path: Path) -> dict[str, Any]:
    """The module-level names a Python file assigns, with their literal values."""
    values = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    values[target.id] = ast.literal_eval(node.value)
    return values


def test_a_netbox_shaped_user_model_without_is_staff_and_with_its_own_groups() -> None:
    sent = [wire({**ALICE, "Remote-User-First-Name": "José"}),
            wire({**ALICE, "Remote-User-Group": "active|auditors", "Remote-User-Superuser": "false"})]
    run = subprocess.run([sys.executable, "-W", "error", "-m", "tests.django_project.netboxlike"], cwd=ROOT,
                         input=json.dumps(sent), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    first, later = json.loads(run.stdout)
    assert first["anonymous"] is False and later["anonymous"] is False
    assert first["stored"] == {"username": "alice", "first_name": "José", "last_name": "Liddell",
                               "email": "alice@example.com", "is_superuser": True, "has_is_staff": False,
                               "groups": ALICE_SEEN["groups"], "group_model": "netboxlike.Group"}
    assert (later["stored"]["groups"], later["stored"]["is_superuser"]) == (["active", "auditors"], False)


def test_the_netbox_examples_set_only_settings_netbox_reads() -> None:
    stock = assigned(NETBOX_DIR / "configuration_stock.py")
    ours = assigned(NETBOX_DIR / "configuration_sidecar.py")
    assert set(stock) <= NETBOX_SETTINGS and set(ours) <= NETBOX_SETTINGS
    assert NETBOX_SETTINGS - set(stock) == {"REMOTE_AUTH_STAFF_GROUPS", "REMOTE_AUTH_STAFF_USERS"}  # all the rest
    names = HeaderNames()
    for setting, header in [("REMOTE_AUTH_HEADER", names.user), ("REMOTE_AUTH_USER_FIRST_NAME", names.first_name),
                            ("REMOTE_AUTH_USER_LAST_NAME", names.last_name), ("REMOTE_AUTH_USER_EMAIL", names.email)]:
        assert stock[setting] == ours[setting] == environ_key(header)
    assert stock["REMOTE_AUTH_GROUP_HEADER"] == environ_key(names.groups)
    assert import_string(ours["REMOTE_AUTH_BACKEND"]) is SidecarBackend
    # NetBox's session never outlives the sidecar's: a directory change reaches it within that.
    assert stock["LOGIN_TIMEOUT"] == ours["LOGIN_TIMEOUT"] <= SessionConfig(keys=()).lifetime
    assert stock["LOGOUT_REDIRECT_URL"] == ours["LOGOUT_REDIRECT_URL"] == "/_sidecar/logout"


def test_local_settings_puts_sidecar_middleware_where_netbox_s_was(tmp_path: Path) -> None:
    package = tmp_path / "netbox_under_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    netbox_middleware = ["corsheaders.middleware.CorsMiddleware",
                         "django.contrib.sessions.middleware.SessionMiddleware",
                         "django.contrib.auth.middleware.AuthenticationMiddleware",
                         "netbox.middleware.RemoteUserMiddleware", "netbox.middleware.CoreMiddleware"]
    (package / "settings.py").write_text(f"MIDDLEWARE = {netbox_middleware!r}\n")
    shutil.copy(NETBOX_DIR / "local_settings.py", package / "local_settings.py")
    sys.path.insert(0, str(tmp_path))
    try:
        local = importlib.import_module("netbox_under_test.local_settings")
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m.startswith("netbox_under_test")]:
            del sys.modules[module]
    assert local.MIDDLEWARE == [*netbox_middleware[:3], "sidecar.contrib.django.SidecarMiddleware",
                                netbox_middleware[4]]
    assert load_options(local.SIDECAR).reader.names == HeaderNames()  # the defaults, spelled out
    assert import_string(local.MIDDLEWARE[3]) is SidecarMiddleware
