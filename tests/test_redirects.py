"""Return targets: only allowed absolute URLs come back (normalised); everything else is the default."""

from __future__ import annotations

import pytest

from sidecar.redirects import RedirectPolicy

POLICY = RedirectPolicy(
    hosts=["good.test", "App.Test:8443", "secure.test:443", "[::1]", "xn--bcher-kva.test"],
    domains=["example.com"],
    default="/",
)
LOOPBACK = RedirectPolicy(hosts=["127.0.0.1:8080"], schemes=["http", "https"], default="http://127.0.0.1:8080/")

REFUSED = {
    # Not absolute, or the authority is missing or smuggled.
    "empty": "",
    "relative-path": "/x?a=1",
    "relative-name": "good.test/x",
    "scheme-relative": "//evil.test",
    "slash-backslash": "/\\evil.test",
    "backslashes": "\\\\evil.test",
    "scheme-no-slashes": "https:evil.test",
    "scheme-one-slash": "https:/evil.test",
    "scheme-three-slashes": "https:///evil.test",
    "userinfo-host": "https://good.test@evil.test",
    "userinfo-password": "https://user:pw@good.test/",
    "userinfo-user": "https://user@good.test/",
    "userinfo-empty": "https://@good.test/",
    "userinfo-port": "https://good.test:443@evil.test",
    "fragment-at": "https://evil.test#@good.test",
    "query-at": "https://evil.test?@good.test",
    "backslash-at": "https://evil.test\\@good.test",
    # Hosts that only look allowed.
    "allowed-as-prefix": "https://good.test.evil.test",
    "allowed-as-suffix": "https://evilgood.test",
    "domain-as-suffix": "https://badexample.com/",
    "domain-as-prefix": "https://example.com.evil.test/",
    "domain-in-path": "https://evil.test/.example.com",
    "trailing-dot": "https://good.test./",
    "trailing-dot-subdomain": "https://a.example.com./",
    "empty-label": "https://good..test/",
    "leading-dot": "https://.good.test/",
    "percent-in-host": "https://%67ood.test/",
    # Schemes.
    "http-not-allowed": "http://good.test/",
    "ftp": "ftp://good.test/",
    "javascript": "javascript:alert(1)",
    "javascript-mixed-case": "JaVaScRiPt:alert(1)",
    "javascript-authority": "javascript://good.test/%0aalert(1)",
    "data": "data:text/html,<script>alert(1)</script>",
    "vbscript": "vbscript:msgbox(1)",
    "file": "file:///etc/passwd",
    # Line breaks, whitespace and controls, raw or encoded.
    "crlf-raw": "https://good.test/\r\nSet-Cookie: a=1",
    "lf-raw": "https://good.test/\nx",
    "crlf-encoded": "https://good.test/%0d%0aSet-Cookie:a=1",
    "crlf-encoded-upper": "https://good.test/%0D%0ASet-Cookie:a=1",
    "crlf-double-encoded": "https://good.test/%250d%250aSet-Cookie:a=1",
    "lf-triple-encoded": "https://good.test/?q=%25250A",
    "nul-encoded": "https://good.test/%00",
    "tab-in-scheme": "ht\ttps://evil.test",
    "tab-in-host": "https://evil\t.test",
    "tab-in-path": "https://good.test/\tx",
    "leading-space": " https://good.test/",
    "space-in-path": "https://good.test/a b",
    "nul": "https://good.test/\x00",
    "del": "https://good.test/\x7f",
    "nbsp-before": "\u00a0https://good.test/",
    "ideographic-space-in-path": "https://good.test/\u3000",
    "line-separator-in-path": "https://good.test/\u2028",
    "non-ascii-path": "https://good.test/caf\u00e9",
    "backslash-in-host": "https://good.test\\evil.test",
    "backslash-in-path": "https://good.test/\\evil.test",
    # Unicode look-alikes and their IDNA forms.
    "cyrillic-o": "https://g\u043e\u043ed.test/",
    "cyrillic-e": "https://good.t\u0435st/",
    "fullwidth": "https://\uff47\uff4f\uff4f\uff44.test/",
    "punycode-cyrillic-o": "https://xn--gd-fmca.test/",
    "punycode-cyrillic-e": "https://good.xn--tst-rdd/",
    "soft-hyphen": "https://goo\u00add.test/",
    "ideographic-dot": "https://good\u3002test/",
    "non-ascii-upper-case": "https://B\u00fccher.test/",
    # Ports and IP literals.
    "port-not-listed": "https://app.test:9443/",
    "port-default-not-listed": "https://app.test/",
    "port-zero": "https://good.test:0/",
    "port-too-large": "https://good.test:65536/",
    "port-empty": "https://good.test:/",
    "port-fullwidth-digits": "https://good.test:\uff18\uff14\uff14\uff13/",
    "ipv6-not-listed": "https://[::2]/",
    "ipv6-zone": "https://[::1%25eth0]/",
    "ipv6-unbalanced": "https://[::1/",
    "ipv4-not-listed": "https://127.0.0.1/",
    # Size.
    "too-long": "https://good.test/" + "a" * (2049 - len("https://good.test/")),
}

ACCEPTED = {
    "path-query-fragment": ("https://good.test/x?a=1&b=2#frag", "https://good.test/x?a=1&b=2#frag"),
    "percent-encoded": ("https://good.test/a%20b?q=%C3%A9", "https://good.test/a%20b?q=%C3%A9"),
    "no-path": ("https://good.test", "https://good.test"),
    "empty-query-kept": ("https://good.test/x?", "https://good.test/x?"),
    "empty-fragment-kept": ("https://good.test/x#", "https://good.test/x#"),
    "url-in-query": ("https://good.test/?next=https://evil.test", "https://good.test/?next=https://evil.test"),
    "host-case": ("https://GOOD.Test/X", "https://good.test/X"),
    "scheme-case": ("HTTPS://good.test/", "https://good.test/"),
    "bare-host-any-port": ("https://good.test:8443/x", "https://good.test:8443/x"),
    "host-port": ("https://app.test:8443/", "https://app.test:8443/"),
    "host-port-leading-zero": ("https://APP.test:08443/", "https://app.test:8443/"),
    "host-default-port-implied": ("https://secure.test/", "https://secure.test/"),
    "host-default-port-dropped": ("https://secure.test:443/", "https://secure.test/"),
    "domain-itself": ("https://example.com/", "https://example.com/"),
    "subdomain": ("https://a.example.com/", "https://a.example.com/"),
    "deep-subdomain": ("https://a.b.Example.COM:444/x", "https://a.b.example.com:444/x"),
    "ipv6-listed": ("https://[::1]/x", "https://[::1]/x"),
    "ipv6-normalised": ("https://[0:0::1]:9443/", "https://[::1]:9443/"),
    "idna-listed": ("https://b\u00fccher.test/x", "https://xn--bcher-kva.test/x"),
    "punycode-listed": ("https://xn--bcher-kva.test/x", "https://xn--bcher-kva.test/x"),
    "longest": ("https://good.test/" + "a" * 2030, "https://good.test/" + "a" * 2030),
}


@pytest.mark.parametrize("target", REFUSED.values(), ids=REFUSED.keys())
def test_refused_targets_give_the_default(target: str) -> None:
    assert POLICY.safe(target) == "/"


def test_none_gives_the_default() -> None:
    assert POLICY.safe(None) == "/"


@pytest.mark.parametrize(("target", "expected"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_allowed_targets_come_back_normalised(target: str, expected: str) -> None:
    assert POLICY.safe(target) == expected


def test_the_longest_accepted_target_is_2048_characters() -> None:
    assert len(ACCEPTED["longest"][0]) == 2048


def test_http_only_where_listed() -> None:
    assert LOOPBACK.safe("http://127.0.0.1:8080/x?a=1") == "http://127.0.0.1:8080/x?a=1"
    assert LOOPBACK.safe("http://127.0.0.1:8081/x") == "http://127.0.0.1:8080/"


def test_unicode_entries_are_compared_in_idna_form() -> None:
    policy = RedirectPolicy(hosts=["b\u00fccher.test"], domains=["\u00e9cole.test"], default="/")
    assert policy.safe("https://xn--bcher-kva.test/") == "https://xn--bcher-kva.test/"
    assert policy.safe("https://a.\u00e9cole.test/") == "https://a.xn--cole-9oa.test/"


def test_a_host_idna_encodes_but_cannot_decode_is_refused() -> None:
    # A label already in xn-- form beside a non-ASCII dot: encoding passes it through, decoding raised.
    assert POLICY.safe("https://xn--pp-8ka.test\u3002") == POLICY.default
    assert RedirectPolicy.problems(hosts=["xn--pp-8ka.test\u3002"]) != []


@pytest.mark.parametrize("default", ["/", "/login?next=%2F", "https://good.test/", "http://127.0.0.1:8080/"])
def test_valid_defaults_are_kept(default: str) -> None:
    policy = RedirectPolicy(default=default)
    assert policy.default == default
    assert policy.safe("https://evil.test/") == default


@pytest.mark.parametrize("default", [
    "", "x", "login", "//evil.test", "/\\evil.test", "\\\\evil.test", "javascript:alert(1)", "https:evil.test",
    "https:/evil.test", "https://user@good.test/", "ftp://good.test/", "https://good.test/\r\nX: 1",
    "https://good.test/%0d%0a", "https://[::1/", "https://good.test/caf\u00e9",
])
def test_invalid_defaults_are_refused_at_start_up(default: str) -> None:
    with pytest.raises(ValueError, match="redirect default"):
        RedirectPolicy(default=default)


@pytest.mark.parametrize("host", [
    "", "good.test/", "https://good.test", "user@good.test", "good.test:0", "good.test:", "[::1", ".good.test",
    "good.test.", "*.good.test", "good test",
])
def test_invalid_hosts_are_refused_at_start_up(host: str) -> None:
    with pytest.raises(ValueError, match="redirect host"):
        RedirectPolicy(hosts=[host], default="/")


@pytest.mark.parametrize("domain", ["", ".example.com", "example.com:443", "[::1]", "*.example.com", "example.com."])
def test_invalid_domains_are_refused_at_start_up(domain: str) -> None:
    with pytest.raises(ValueError, match="redirect domain"):
        RedirectPolicy(domains=[domain], default="/")


@pytest.mark.parametrize("scheme", ["javascript", "ftp", "data", ""])
def test_only_http_schemes_can_be_allowed(scheme: str) -> None:
    with pytest.raises(ValueError, match="redirect schemes"):
        RedirectPolicy(schemes=[scheme], default="/")


def test_schemes_are_case_insensitive() -> None:
    policy = RedirectPolicy(hosts=["good.test"], schemes=["HTTPS"], default="/")
    assert policy.safe("https://good.test/") == "https://good.test/"
