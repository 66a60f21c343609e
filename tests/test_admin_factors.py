"""``auth-sidecar admin reset-factors USER`` against a real sidecar process: a lost phone's factors
are forgotten (the next sign-in enrols again), and a sidecar without second factors says so."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from sidecar.local import hash_password
from tests.test_admin import CSRF, SESSION, AdminSidecar, admin_json, cookie, request, run_admin, socket_of
from tests.testbed import free_port

PUBLIC = "https://app.test/_sidecar"
pytestmark = pytest.mark.server  # real sidecar processes


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminSidecar]:
    workdir = tmp_path_factory.mktemp("admin-factors")
    socket_dir = Path(tempfile.mkdtemp(prefix="admf", dir="/tmp"))
    users = workdir / "users.yaml"
    users.write_text(f"users:\n  lena:\n    password: '{hash_password('lena-pass')}'\n")
    config = {
        "server": {"listen": f"127.0.0.1:{free_port()}", "public_url": PUBLIC},
        "local_users": {"file": str(users)},
        "sessions": {"keys": [{"id": "k1", "secret": "s" * 40}], "default_redirect": "https://app.test/"},
        "second_factor": {"key": "f" * 40, "store": str(workdir / "factors.sqlite3")},
        "access": {"second_factor": "required"},
        "admin": {"socket": str(socket_dir / "admin.sock")},
    }
    try:
        with AdminSidecar(workdir, config) as process:
            yield process
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def sign_in(port: int) -> tuple[str, str]:
    """(where the sign-in sends the browser, the session cookie)."""
    status, headers, _ = request(port, "GET", "/login")
    token = cookie(headers, CSRF)
    status, headers, text = request(port, "POST", "/login", {
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"{CSRF}={token}"},
        f"csrf={token}&username=lena&password=lena-pass")
    assert status == 303, text
    return headers["Location"], cookie(headers, SESSION)


def enrol(port: int, session: str) -> None:
    status, headers, html = request(port, "GET", "/factor/enrol", {"Cookie": f"{SESSION}={session}"})
    assert status == 200, html
    token = cookie(headers, CSRF)
    secret = re.search(r'<code id="secret">([A-Z2-7 ]+)</code>', html)
    offer = re.search(r'name="enrolment" value="([^"]+)"', html)
    assert secret is not None and offer is not None
    code = pyotp.TOTP(secret.group(1).replace(" ", "")).now()
    status, _, text = request(port, "POST", "/factor/enrol", {
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"{SESSION}={session}; {CSRF}={token}"},
        f"csrf={token}&enrolment={offer.group(1)}&code={code}&rd=/")
    assert status == 200, text


def test_reset_factors_makes_the_next_sign_in_enrol_again(running: AdminSidecar) -> None:
    port = running.port
    where, session = sign_in(port)
    assert where == "https://app.test/"  # no factor yet
    enrol(port, session)
    where, _ = sign_in(port)
    assert where.startswith("/_sidecar/factor?rd=")  # now every sign-in asks for it

    status, body = admin_json(running, "reset-factors", "lena")
    assert status == 0 and body["factors_removed"] == 1 and body["sources"] == ["local"]
    where, _ = sign_in(port)
    assert where == "https://app.test/"  # half-signed-in no more: the required paths send lena to enrol

    status, out, err = run_admin("--socket", socket_of(running), "reset-factors", "lena")
    assert status == 0 and "0 removed" in out and "Traceback" not in out + err
    assert running.port == port


def test_reset_factors_without_second_factors_is_refused(tmp_path: Path) -> None:
    socket_dir = Path(tempfile.mkdtemp(prefix="admg", dir="/tmp"))
    users = tmp_path / "users.yaml"
    users.write_text(f"users:\n  lena:\n    password: '{hash_password('lena-pass')}'\n")
    config = {
        "server": {"listen": f"127.0.0.1:{free_port()}", "public_url": PUBLIC},
        "local_users": {"file": str(users)},
        "sessions": {"keys": [{"id": "k1", "secret": "s" * 40}], "default_redirect": "https://app.test/"},
        "admin": {"socket": str(socket_dir / "admin.sock")},
    }
    try:
        with AdminSidecar(tmp_path, config) as process:
            status, body = admin_json(process, "reset-factors", "lena")
            assert status == 1 and "second factors are not configured" in body["error"]
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
