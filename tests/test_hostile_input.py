"""Bad input at /auth: a clear 401, one log line, never a 500, never a credential in a log."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator

import pytest

from sidecar.app import make_app
from sidecar.ldap import Directory
from sidecar.passwords import PasswordVerifier
from sidecar.routes import SIDECAR
from tests.conftest import StartSidecar, basic, config_for, identity_headers
from tests.test_ldap import ClosingServer
from tests.testbed.slapd import Slapd


@pytest.fixture
def broken() -> Iterator[ClosingServer]:
    server = ClosingServer()
    yield server
    server.close()


def raw(value: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(value).decode()}


async def test_empty_password_never_binds(sidecar: StartSidecar, slapd: Slapd) -> None:
    client = await sidecar()
    # With a DN and no password, LDAP's "unauthenticated bind" would succeed.
    assert (await client.get("/auth", headers=basic("alice", ""))).status == 401
    assert (await client.get("/auth", headers=basic("alice", ""))).headers["WWW-Authenticate"]
    directory = Directory(config_for(slapd).ldap)  # type: ignore[arg-type]
    try:
        with pytest.raises(Exception, match="empty password"):
            await directory.check_password("alice", "")
    finally:
        directory.close()


@pytest.mark.parametrize("username", ["*", ")(uid=*", "*)(|(uid=*", "\\", "alice)", "(uid=alice)",
                                      "al*", "alice,ou=people", "a+b*"])
async def test_filter_special_characters_match_nothing(sidecar: StartSidecar, username: str) -> None:
    client = await sidecar()
    for password in ("alice-pass", "ab-pass", "star-pass"):
        assert (await client.get("/auth", headers=basic(username, password))).status == 401


@pytest.mark.parametrize("template", [False, True])
async def test_special_characters_reach_only_their_own_user(sidecar: StartSidecar, template: bool) -> None:
    overrides = {"user_search": None, "user_dn_template": "uid=%(user)s,ou=people,dc=example,dc=com"}
    client = await sidecar(**(overrides if template else {}))
    for uid, password in [("a+b", "ab-pass"), ("x,y", "xy-pass"), ("o'brien", "obrien-pass"),
                          ("star*", "star-pass")]:
        response = await client.get("/auth", headers=basic(uid, password))
        assert response.status == 200 and response.headers["Remote-User"] == uid
    assert (await client.get("/auth", headers=basic("star*", "alice-pass"))).status == 401


@pytest.mark.parametrize("credentials", [
    b"alice\x00:alice-pass",          # NUL in the name
    b"alice:alice\x00pass",           # NUL in the password
    b"ali\nce:alice-pass",            # line break
    b"alice\x1b[31m:alice-pass",      # terminal escape
    b"ali\xe2\x80\x8bce:alice-pass",  # zero-width space
    b"\xff\xfe:alice-pass",           # not UTF-8
    b"alice-pass",                    # no colon
    b":alice-pass",                   # no name
    b"   :alice-pass",                # a blank name
    b"a" * 300 + b":alice-pass",      # over-long name
    b"alice:" + b"p" * 2000,          # over-long password
])
async def test_malformed_credentials_get_401_without_touching_ldap(
    sidecar: StartSidecar, broken: ClosingServer, credentials: bytes
) -> None:
    client = await sidecar(server_uri=broken.uri)
    response = await client.get("/auth", headers=raw(credentials))
    assert response.status == 401  # a 503 would mean the (broken) directory was asked
    assert broken.accepted == 0


@pytest.mark.parametrize("header", ["Basic", "Basic !!!!", "Basic " + "A" * 5000, "Basic YWxpY2U6",
                                    "basic", "Bearer x.y.z", "Negotiate abc", "   "])
async def test_garbage_authorization_headers(sidecar: StartSidecar, broken: ClosingServer,
                                             header: str) -> None:
    client = await sidecar(server_uri=broken.uri)
    response = await client.get("/auth", headers={"Authorization": header})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="auth-sidecar", charset="UTF-8"'
    assert broken.accepted == 0


@pytest.mark.parametrize("variant", ["alice", "ALICE", "Alice", " alice", "alice ", "\talice",
                                     "ａｌｉｃｅ"])  # the last is fullwidth: NFKC makes it "alice"
async def test_variants_of_a_name_are_one_identity_but_their_own_cache_entry(sidecar: StartSidecar,
                                                                             variant: str) -> None:
    client = await sidecar()
    first = await client.get("/auth", headers=basic("alice", "alice-pass"))
    again = await client.get("/auth", headers=basic(variant, "alice-pass"))
    assert again.status == 200
    assert identity_headers(again) == identity_headers(first)
    verifier: PasswordVerifier = client.app[SIDECAR].authenticators[0].verifier
    # Only the directory says which entry a spelling means: each spelling but SP/HTAB padding and
    # NFKC is a question of its own, so two entries can never share one cached verdict.
    assert len(verifier.cache) == (1 if variant.strip() in ("alice", "ａｌｉｃｅ") else 2)


@pytest.mark.parametrize("look_alike", ["аlice", "alicе", "alıce"])  # Cyrillic a, Cyrillic e, dotless i
async def test_look_alike_names_are_other_names(sidecar: StartSidecar, look_alike: str) -> None:
    client = await sidecar()
    assert (await client.get("/auth", headers=basic(look_alike, "alice-pass"))).status == 401


async def test_names_the_directory_folds_still_give_its_canonical_identity(sidecar: StartSidecar) -> None:
    # slapd's own case folding matches a dotted capital I to "i": the name in the headers is
    # always the directory's, so no spelling can become a second identity.
    client = await sidecar()
    response = await client.get("/auth", headers=basic("ALİCE", "alice-pass"))
    assert response.status == 200 and response.headers["Remote-User"] == "alice"


async def test_no_credential_reaches_any_log(sidecar: StartSidecar, slapd: Slapd,
                                             caplog: pytest.LogCaptureFixture) -> None:
    secrets = ["alice-pass", "wrong-Secret-1", "sidecar-pass", "bob-pass"]
    with caplog.at_level(logging.DEBUG):
        client = await sidecar(group_type="nested_group_of_names")
        await client.get("/auth", headers=basic("alice", "alice-pass"))
        await client.get("/auth", headers=basic("alice", "wrong-Secret-1"))
        await client.get("/auth", headers=basic("bob", "bob-pass"))
        await client.get("/auth", headers=raw(b"bob:bob-pass\x00"))
        await client.get("/readyz")
    text = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)
    for secret in secrets:
        assert secret not in text
    assert base64.b64encode(b"alice:alice-pass").decode() not in text


async def test_debug_log_shows_each_ldap_step(sidecar: StartSidecar,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="sidecar"):
        client = await sidecar(group_type="nested_group_of_names")
        assert (await client.get("/auth", headers=basic("carol", "carol-pass"))).status == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "sidecar.ldap"]
    assert any(m.startswith("connect to ldap://127.0.0.1:") for m in messages)
    assert any("bind as 'uid=carol,ou=people,dc=example,dc=com'" in m for m in messages)
    assert any("search base='ou=people,dc=example,dc=com'" in m and "(uid=carol)" in m for m in messages)
    assert any(m.startswith("search found 1 entries") for m in messages)
    assert any("level3" in m and "groups" in m for m in messages)


async def test_each_refusal_is_one_log_line_with_the_reason(sidecar: StartSidecar,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    client = await sidecar()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sidecar"):
        await client.get("/auth", headers={**basic("alice", "nope"), "X-Original-URL": "https://a.test/x"})
    lines = [r for r in caplog.records if r.name == "sidecar.auth"]
    assert len(lines) == 1
    assert "401" in lines[0].getMessage() and "uid=alice" in lines[0].getMessage()
    assert "a.test/x" in lines[0].getMessage()


async def test_unexpected_errors_are_503_not_500(slapd: Slapd, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    app = make_app(config_for(slapd))

    class Exploding:
        method = "basic"

        async def authenticate(self, request: object) -> None:
            raise RuntimeError("boom")

    app[SIDECAR].authenticators.insert(0, Exploding())
    client = await aiohttp_client(app)
    response = await client.get("/auth", headers=basic("alice", "alice-pass"))
    assert response.status == 503
    assert "boom" not in await response.text()


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-Host": "app.test?", "X-Forwarded-Uri": "/admin"},
    {"X-Forwarded-Host": "x@admin.app.test", "X-Forwarded-Uri": "/"},
    {"X-Forwarded-Host": "admin.app.test:80:80", "X-Forwarded-Uri": "/"},
    {"X-Forwarded-Host": "[app.test]", "X-Forwarded-Uri": "/"},
    {"X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/admin/../x"},
    {"X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/admin/%2e%2e/x"},
    {"X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/x/..%2Fadmin"},
    {"X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/admin%5C..%5Cx"},
    {"X-Original-URL": "http://app.test?/admin"},
    {"X-Original-URL": "http://app.test#/admin"},
    {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/"},
    {"X-Forwarded-Method": "GET /x", "X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/"},
    {"X-Original-Method": "GET\tX", "X-Original-URL": "https://app.test/"},
    {"Remote-User": "admin"}, {"remote_user": "admin"}, {"REMOTE-USER-GROUP": "staff"},
    {"Remote-User-Department": "finance"}, {"Remote-User-Assertion": "x"}, {"Remote_User_Superuser": "true"},
])
async def test_ambiguous_requests_are_400_before_any_directory(sidecar: StartSidecar, broken: ClosingServer,
                                                              headers: dict[str, str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    client = await sidecar(server_uri=broken.uri)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sidecar"):
        response = await client.get("/auth", headers={**basic("alice", "alice-pass"), **headers})
    assert response.status == 400
    assert broken.accepted == 0
    lines = [r for r in caplog.records if r.name == "sidecar.auth"]
    assert len(lines) == 1 and lines[0].exc_info is None and lines[0].getMessage().startswith("400 ")


async def test_two_authorization_headers_are_400(sidecar: StartSidecar, broken: ClosingServer) -> None:
    client = await sidecar(server_uri=broken.uri)
    two = [("Authorization", "Bearer x.y.z"), ("Authorization", basic("alice", "alice-pass")["Authorization"])]
    response = await client.get("/auth", headers=two)
    assert response.status == 400 and broken.accepted == 0


@pytest.mark.parametrize("prefix", ["\u00a0", "\u2003", "\u3000", "\u200b", "\ufeff", "x", "\u0130"])
async def test_only_basic_as_rfc_7235_spells_it_is_basic(sidecar: StartSidecar, broken: ClosingServer,
                                                        prefix: str) -> None:
    # Proxies remove "Basic ..." from what the application receives; a value they would let through
    # must never be accepted as Basic here, or the application receives the password of a valid login.
    client = await sidecar(server_uri=broken.uri)
    value = prefix + basic("alice", "alice-pass")["Authorization"]
    response = await client.get("/auth", headers={"Authorization": value.encode().decode("latin-1")})
    assert response.status == 401 and broken.accepted == 0


@pytest.mark.parametrize("value", ["basic YWxpY2U6YWxpY2UtcGFzcw==", "BASIC   YWxpY2U6YWxpY2UtcGFzcw==",
                                   "Basic YWxpY2U6YWxpY2UtcGFzcw== \t"])
async def test_basic_in_any_case_and_spacing_rfc_7235_allows(sidecar: StartSidecar, value: str) -> None:
    client = await sidecar()
    assert (await client.get("/auth", headers={"Authorization": value})).status == 200


@pytest.mark.parametrize("value", ["Basic\tYWxpY2U6YWxpY2UtcGFzcw==", "Basic YWxpY2U6YWxpY2UtcGFzcw== x",
                                   "Baſic YWxpY2U6YWxpY2UtcGFzcw=="])  # a long s folds to "s" in Unicode
async def test_basic_look_alikes_are_refused(sidecar: StartSidecar, broken: ClosingServer, value: str) -> None:
    client = await sidecar(server_uri=broken.uri)
    response = await client.get("/auth", headers={"Authorization": value.encode().decode("latin-1")})
    assert response.status == 401 and broken.accepted == 0


async def test_cached_refusals_keep_no_traceback(sidecar: StartSidecar) -> None:
    # A traceback's frames hold the arguments of every call on the way: the plaintext password.
    client = await sidecar()
    assert (await client.get("/auth", headers=basic("alice", "wrong-Secret-1"))).status == 401
    assert (await client.get("/auth", headers=basic("nobody", "wrong-Secret-2"))).status == 401
    verifier: PasswordVerifier = client.app[SIDECAR].authenticators[0].verifier
    stores = [store for store in (verifier.cache._ok, verifier.cache._failed) if store is not None]
    refusals = [v.refusal for store in stores for v in store.values() if v.refusal is not None]
    assert len(refusals) == 2
    for refusal in refusals:
        assert refusal.__traceback__ is None and refusal.__context__ is None and refusal.__cause__ is None
        assert "wrong-Secret" not in repr(refusal.args)


@pytest.mark.parametrize("path", ["/healthz", "/auth", "/readyz"])
async def test_a_body_that_lies_about_its_encoding_is_no_traceback(sidecar: StartSidecar, path: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    client = await sidecar()
    body = b"not gzip at all" * 10
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (path.encode(), len(body), body))
    with caplog.at_level(logging.INFO):
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await asyncio.sleep(0.1)  # aiohttp drains the unread body after answering
    assert answer.startswith(b"HTTP/1.1 4")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.records
