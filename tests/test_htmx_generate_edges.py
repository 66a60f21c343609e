"""htmx's way back after sign-in when there is no request or the page's URL cannot be parsed; and
hash-password, in this process, refusing what it cannot hash and two different passwords."""

from __future__ import annotations

import io

import pytest
from aiohttp.test_utils import make_mocked_request

from sidecar import generate, htmx
from sidecar.forwarded import Original

TARGET = Original("GET", "https", "app.test", "app.test", "/tables?page=2", "/tables")


def test_no_original_request_is_no_page_to_return_to() -> None:
    assert htmx.page_url(make_mocked_request("GET", "/auth", headers={"HX-Request": "true"}), None) is None


@pytest.mark.parametrize(("current", "expected"), [
    ("https://[::1/broken", TARGET.url),  # urlsplit cannot parse it: the request's own URL
    ("https://evil.test/x", TARGET.url),  # another site
    ("https://app.test/devices/?q=1", "https://app.test/devices/?q=1"),
])
def test_the_page_url_is_the_browsers_only_when_it_parses_and_is_this_site(current: str, expected: str) -> None:
    request = make_mocked_request("GET", "/auth", headers={"HX-Request": "true", "HX-Current-URL": current})
    assert htmx.page_url(request, TARGET) == expected


@pytest.mark.parametrize(("password", "scheme", "message"), [
    ("\n", "argon2id", "the password is empty"),
    ("x" * 80 + "\n", "bcrypt", "bcrypt uses at most 72 bytes of a password; use argon2id"),
])
def test_hash_password_refuses_what_it_cannot_hash(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], password: str, scheme: str,
                                                   message: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(password))
    assert generate.hash_password(scheme) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"auth-sidecar: {message}\n")


def test_hash_password_at_a_terminal_refuses_two_different_passwords(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    typed = iter(["first-pass", "second-pass"])
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(typed))
    assert generate.hash_password("argon2id") == 2
    assert capsys.readouterr() == ("", "auth-sidecar: the passwords differ\n")
