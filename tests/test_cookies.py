"""Cookies: one format and one __Host- rule for every cookie the sidecar sets."""

from __future__ import annotations

import pytest

from sidecar.cookies import Cookie, cookie_value, problems


def test_the_format_of_a_host_only_cookie() -> None:
    csrf = Cookie("sidecar_csrf", same_site="Strict")
    assert csrf.cookie_name() == "__Host-sidecar_csrf"
    assert csrf.set_cookie_header("tok", 3600) == (
        "__Host-sidecar_csrf=tok; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Strict")
    assert csrf.clear_cookie_header() == "__Host-sidecar_csrf=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict"


def test_without_secure_there_is_no_prefix_and_no_secure() -> None:
    state = Cookie("sidecar_oidc", secure=False)
    assert state.set_cookie_header("a.b", 600) == "sidecar_oidc=a.b; Path=/; Max-Age=600; HttpOnly; SameSite=Lax"


@pytest.mark.parametrize(("cookie", "name"), [
    (Cookie("s"), "__Host-s"),
    (Cookie("s", domain="example.com"), "s"),
    (Cookie("s", secure=False), "s"),
    (Cookie("s", path="/app"), "s"),
])
def test_host_prefix_only_without_domain_with_secure_and_root_path(cookie: Cookie, name: str) -> None:
    assert cookie.cookie_name() == name


def test_read_finds_the_prefixed_name_only() -> None:
    cookie = Cookie("s")
    assert cookie.read("s=plain; __Host-s=right; other=x") == "right"
    assert cookie.read("s=plain") is None
    assert cookie.read(None) is None
    assert cookie_value("a=1;  b=2 ", "b=") == "2"


@pytest.mark.parametrize("value", ["a;b", "a b", "a\r\nSet-Cookie: x=y", "a,b", 'a"'])
def test_values_that_would_break_the_header_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        Cookie("s").set_cookie_header(value, 60)


def test_problems_name_their_setting_and_are_all_reported() -> None:
    assert problems("a b", domain="x; Secure", same_site="None", secure=False, path="app") == [
        "name: not a cookie name: 'a b'",
        "same_site: None requires secure (browsers drop the cookie otherwise)",
        "path: must start with / and hold printable characters but ';', got 'app'",
        "domain: not a domain name: 'x; Secure'",
    ]
    with pytest.raises(ValueError, match="same_site: must be one of Strict, Lax, None"):
        Cookie("s", same_site="lax")
