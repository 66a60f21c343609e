"""Session cookies: round trip, key rotation, every kind of bad cookie refused, expiry, the memo."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from jose import jwe

from sidecar.errors import SessionTooLarge
from sidecar.identity import Identity
from sidecar.sessions import SESSION_ID, CookieSettings, Revocations, Session, SessionCodec

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
NOW = 1_700_000_000.0
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
LIFETIME = 8 * 3600.0
IDLE = 3600.0
ALICE = Identity(
    username="alice",
    first_name="Alice",
    last_name="Müller",
    email="alice@example.com",
    groups=("NetBox-Admins", "Staff"),
    rule_groups=frozenset({"netbox-admins", "staff", "vpn-users"}),
    is_staff=True,
    extra={"department": "Ops", "employeeNumber": "42"}, source="ldap"
)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codec(clock: Clock) -> SessionCodec:
    return make_codec(clock)


def make_codec(clock: Clock, keys: list[tuple[str, bytes]] | None = None, **options: Any) -> SessionCodec:
    settings: dict[str, Any] = {"lifetime": LIFETIME, "idle_timeout": IDLE, "clock": clock, **options}
    return SessionCodec(keys or [("a", KEY_A)], **settings)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seal(payload: bytes, *, key: bytes = KEY_A, kid: str = "a", **options: Any) -> str:
    """A cookie value made with the real key from any plaintext: only the payload checks stand in the way."""
    return jwe.encrypt(payload, key, algorithm="dir", encryption="A256GCM", kid=kid, **options).decode()


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def seal_json(data: object) -> str:
    return seal(b"\x01" + deflate(json.dumps(data).encode()))


def opened(value: str) -> dict[str, Any]:
    """The JSON payload of a cookie value, read with the test key."""
    plaintext = jwe.decrypt(value, KEY_A)
    assert plaintext is not None and plaintext[:1] == b"\x01"
    data: dict[str, Any] = json.loads(zlib.decompress(plaintext[1:], -zlib.MAX_WBITS))
    return data


def with_header(value: str, header: dict[str, Any]) -> str:
    return ".".join([b64(json.dumps(header).encode()), *value.split(".")[1:]])


@pytest.fixture
def decrypts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the cookies that reach jwe.decrypt."""
    calls: list[str] = []
    real: Callable[..., bytes | None] = jwe.decrypt

    def counting(value: str, key: bytes) -> bytes | None:
        calls.append(value)
        return real(value, key)

    monkeypatch.setattr(jwe, "decrypt", counting)
    return calls


# Round trip and format


def test_round_trip_keeps_every_field(codec: SessionCodec) -> None:
    session = Session(ALICE, issued_at=NOW - 100, last_seen=NOW - 10, checked_at=NOW - 50)
    decoded = codec.decode(codec.encode(session))
    assert decoded == session
    assert decoded is not None and decoded.identity.extra["department"] == "Ops"


def test_start_stamps_all_three_times_with_the_clock(codec: SessionCodec) -> None:
    started = codec.start(ALICE)
    assert started == Session(ALICE, issued_at=NOW, last_seen=NOW, checked_at=NOW, id=started.id)


def test_each_session_gets_its_own_random_id_which_refreshes_keep(codec: SessionCodec, clock: Clock) -> None:
    ids = {codec.start(ALICE).id for _ in range(100)}
    assert len(ids) == 100 and all(SESSION_ID.fullmatch(i) for i in ids)
    session = codec.start(ALICE)
    clock.now += 600
    refreshed = codec.decode(codec.encode(codec.touched(session)))
    assert refreshed is not None and refreshed.id == session.id and refreshed.last_seen == NOW + 600


def test_times_are_kept_to_the_whole_second(codec: SessionCodec) -> None:
    session = Session(ALICE, issued_at=NOW - 0.75, last_seen=NOW - 0.25, checked_at=NOW - 0.5)
    decoded = codec.decode(codec.encode(session))
    assert decoded is not None
    assert (decoded.issued_at, decoded.last_seen, decoded.checked_at) == (NOW - 1, NOW - 1, NOW - 1)


def test_payload_is_compact_json_with_short_names(codec: SessionCodec) -> None:
    session = codec.start(ALICE)
    value = codec.encode(session)
    payload_id = session.id
    assert json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "==")) == {
        "alg": "dir", "enc": "A256GCM", "kid": "a",
    }
    assert opened(value) == {
        "u": "alice",
        "n": ["Alice", "Müller", "alice@example.com"],
        "g": ["NetBox-Admins", "Staff"],
        "r": ["vpn-users"],  # the casefolded groups are implied by "R"
        "R": True,
        "f": 3,
        "x": {"department": "Ops", "employeeNumber": "42"},
        "s": "ldap",
        "t": [int(NOW)] * 3,
        "i": payload_id,
    }


@pytest.mark.parametrize("rule_groups", [frozenset(), frozenset({"other"}), frozenset({"staff"})])
def test_rule_groups_not_implied_by_the_groups_are_kept_whole(codec: SessionCodec, rule_groups: frozenset[str]) -> None:
    identity = dataclasses.replace(ALICE, rule_groups=rule_groups)
    decoded = codec.decode(codec.encode(codec.start(identity)))
    assert decoded is not None and decoded.identity.rule_groups == rule_groups


def test_decoded_identity_cannot_be_changed_through_extra(codec: SessionCodec) -> None:
    decoded = codec.decode(codec.encode(codec.start(ALICE)))
    assert decoded is not None
    with pytest.raises(TypeError):
        decoded.identity.extra["department"] = "Finance"  # type: ignore[index]


def test_each_cookie_is_encrypted_afresh(codec: SessionCodec) -> None:
    session = codec.start(ALICE)
    assert codec.encode(session) != codec.encode(session)


# Keys and rotation


def test_rotation_old_cookies_decode_until_their_key_is_removed(clock: Clock) -> None:
    old = make_codec(clock, [("k1", KEY_A)])
    value = old.encode(old.start(ALICE))
    rotated = make_codec(clock, [("k2", KEY_B), ("k1", KEY_A)])
    assert rotated.decode(value) is not None
    new_value = rotated.encode(rotated.start(ALICE))
    assert opened_header(new_value)["kid"] == "k2"
    assert old.decode(new_value) is None
    retired = make_codec(clock, [("k2", KEY_B)])
    assert retired.decode(value) is None
    assert retired.decode(new_value) is not None


def opened_header(value: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
    return header


def test_wrong_key_under_a_known_kid_is_refused(clock: Clock) -> None:
    value = make_codec(clock, [("a", KEY_B)]).encode(Session(ALICE, NOW, NOW, NOW))
    assert make_codec(clock, [("a", KEY_A)]).decode(value) is None


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([], "at least one"),
        ([("a", b"short")], "must be 32 bytes"),
        ([("a", "x" * 32)], "must be 32 bytes"),
        ([("a", KEY_A), ("a", KEY_B)], "'a' is used twice"),
        ([("", KEY_A)], "a kid is 1 to 32"),
        ([("k" * 33, KEY_A)], "a kid is 1 to 32"),
        ([("key 1", KEY_A)], "a kid is 1 to 32"),
        ([("kéy", KEY_A)], "a kid is 1 to 32"),
    ],
)
def test_bad_keys_are_refused_at_start(keys: list[tuple[str, bytes]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionCodec(keys, lifetime=LIFETIME, idle_timeout=IDLE)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as caught:
        SessionCodec([("bad kid", b"x"), ("bad kid", KEY_A)], lifetime=0, idle_timeout=-1, memo_entries=0)
    text = str(caught.value)
    for part in ("a kid is 1 to 32", "must be 32 bytes", "used twice", "lifetime", "idle_timeout", "memo_entries"):
        assert part in text


def test_no_key_material_in_repr_or_errors(codec: SessionCodec) -> None:
    shown = repr(codec) + str(codec)
    assert repr(codec) == "SessionCodec(kids=['a'], lifetime=28800, idle_timeout=3600)"
    for key in (KEY_A, KEY_B):
        for form in (repr(key), key.hex(), b64(key)):
            assert form not in shown
    with pytest.raises(ValueError) as caught:
        SessionCodec([("a", KEY_A[:31])], lifetime=LIFETIME, idle_timeout=IDLE)
    assert KEY_A[:31].hex() not in str(caught.value) and repr(KEY_A[:31]) not in str(caught.value)


# Refusing bad cookies: decode never raises


@pytest.fixture
def value(codec: SessionCodec) -> str:
    """A valid cookie, already decoded once so that it sits in the memo."""
    encoded = codec.encode(codec.start(ALICE))
    assert codec.decode(encoded) is not None
    return encoded


def flipped(text: str, i: int) -> str:
    """The text with character i replaced by another base64url character (or another dot)."""
    new = "A" if text[i] == "." else ALPHABET[(ALPHABET.index(text[i]) + 1) % 64]
    return text[:i] + new + text[i + 1:]


def test_flipping_any_character_is_refused(codec: SessionCodec, value: str) -> None:
    accepted = [i for i in range(len(value)) if codec.decode(flipped(value, i)) is not None]
    assert accepted == []


def test_changing_only_the_spare_bits_of_the_tag_is_refused(codec: SessionCodec, value: str) -> None:
    # 16 bytes are 22 characters: the last one carries 2 bits and 4 spare ones, which decoders ignore.
    tag = value.rsplit(".", 1)[1]
    spare = tag[:-1] + ALPHABET[ALPHABET.index(tag[-1]) ^ 1]
    assert base64.urlsafe_b64decode(spare + "==") == base64.urlsafe_b64decode(tag + "==")
    assert codec.decode(value.rsplit(".", 1)[0] + "." + spare) is None


def test_truncated_or_extended_cookies_are_refused(codec: SessionCodec, value: str) -> None:
    for cut in (1, 2, 3, 4, 5, 10, 22, 23, len(value) // 2, len(value) - 1):
        assert codec.decode(value[:-cut]) is None
        assert codec.decode(value[cut:]) is None
    for extra in ("A", "AA", "=", "==", ".", ".AAAA", " ", "\n", ";"):
        assert codec.decode(value + extra) is None
        assert codec.decode(extra + value) is None


def test_swapped_segments_are_refused(codec: SessionCodec, value: str) -> None:
    header, key, iv, ciphertext, tag = value.split(".")
    for parts in ([header, key, ciphertext, iv, tag], [header, key, iv, tag, ciphertext],
                  [header, key, tag, ciphertext, iv], [iv, key, header, ciphertext, tag],
                  [header, iv, key, ciphertext, tag]):
        assert codec.decode(".".join(parts)) is None


def test_segments_from_two_cookies_do_not_mix(codec: SessionCodec, value: str) -> None:
    other = codec.encode(codec.start(dataclasses.replace(ALICE, username="mallory")))
    mine, theirs = value.split("."), other.split(".")
    for i in range(5):
        mixed = ".".join(theirs[j] if j == i else mine[j] for j in range(5))
        if mixed != value:
            assert codec.decode(mixed) is None


@pytest.mark.parametrize(
    "garbage",
    ["", ".", "....", "a.b.c.d.e", "abc", "null", "{}", "eyJhbGciOiJub25lIn0.e30.", "é" * 10, "\x00" * 50,
     "\ud800", "A" * 100_000, "." * 5000, "a" * 3000 + ".." + "b" * 16 + "." + "c" * 100 + "." + "d" * 22],
)
def test_garbage_is_refused(codec: SessionCodec, garbage: str) -> None:
    assert codec.decode(garbage) is None


def test_random_mutations_never_raise_and_are_refused(codec: SessionCodec, value: str) -> None:
    rng = random.Random(7)
    characters = "AZaz09-_.=+/ \x00é\ud800"
    for _ in range(2000):
        chars = list(value)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(chars))
            action = rng.choice(("replace", "insert", "delete"))
            if action == "replace":
                chars[i] = rng.choice(characters)
            elif action == "insert":
                chars.insert(i, rng.choice(characters))
            else:
                del chars[i]
        mutated = "".join(chars)
        if mutated != value:
            assert codec.decode(mutated) is None


def test_oversized_value_is_refused_unread(codec: SessionCodec, decrypts: list[str]) -> None:
    big = make_codec(Clock(), max_bytes=20_000)
    identity = dataclasses.replace(ALICE, groups=tuple(f"{random.Random(i).getrandbits(64):x}" for i in range(300)))
    value = big.encode(big.start(identity))
    assert 3800 + 512 < len(value) < 20_000
    assert big.decode(value) is not None
    decrypts.clear()
    assert codec.decode(value) is None
    assert decrypts == []


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "enc": "A256GCM", "kid": "a"},
        {"alg": "none"},
        {"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "a"},
        {"alg": "RSA1_5", "enc": "A256GCM", "kid": "a"},
        {"alg": "A256KW", "enc": "A256GCM", "kid": "a"},
        {"alg": "dir", "enc": "A128GCM", "kid": "a"},
        {"alg": "dir", "enc": "A256CBC-HS512", "kid": "a"},
        {"alg": "HS256", "kid": "a"},
        {"alg": "dir", "enc": "A256GCM"},
        {"alg": "dir", "enc": "A256GCM", "kid": "b"},
        {"alg": "dir", "enc": "A256GCM", "kid": ["a"]},
        {"alg": "dir", "enc": "A256GCM", "kid": {"a": 1}},
        {"alg": "dir", "enc": "A256GCM", "kid": "a", "zip": "DEF"},
        {"alg": "dir", "enc": "A256GCM", "kid": "a", "crit": ["exp"], "exp": 1},
        {"alg": "dir", "enc": "A256GCM", "kid": "a", "cty": "JWT"},
    ],
)
def test_headers_other_than_ours_are_refused_before_decrypting(
    codec: SessionCodec, value: str, decrypts: list[str], header: dict[str, Any]
) -> None:
    assert codec.decode(with_header(value, header)) is None
    assert decrypts == []


@pytest.mark.parametrize("header", [b"[]", b"null", b'"dir"', b"{", b"\xff\xfe", b"[" * 190, b'{"alg":"dir",' * 20])
def test_headers_that_are_not_a_json_object_are_refused(
    codec: SessionCodec, value: str, decrypts: list[str], header: bytes
) -> None:
    assert codec.decode(".".join([b64(header), *value.split(".")[1:]])) is None
    assert decrypts == []


def test_jose_compressed_cookie_is_refused_before_decrypting(codec: SessionCodec, decrypts: list[str]) -> None:
    # A cookie made with the right key and jose's own "zip": "DEF", whose content would otherwise pass.
    payload = opened(codec.encode(codec.start(ALICE)))
    value = seal(b"\x01" + deflate(json.dumps(payload).encode()), zip="DEF")
    assert opened_header(value)["zip"] == "DEF"
    decrypts.clear()
    assert codec.decode(value) is None
    assert decrypts == []


def test_a_cookie_with_an_encrypted_key_segment_is_refused(codec: SessionCodec, value: str) -> None:
    header, _, iv, ciphertext, tag = value.split(".")
    assert codec.decode(".".join([header, b64(KEY_A), iv, ciphertext, tag])) is None


# Refusing bad payloads (made with the right key)


def test_decompression_is_capped_at_256_kib(codec: SessionCodec) -> None:
    payload = opened(codec.encode(codec.start(ALICE)))
    under = seal_json({**payload, "x": {"pad": " " * 200_000}})
    over = seal_json({**payload, "x": {"pad": " " * 300_000}})
    assert len(over) < 1000  # a small cookie that would inflate to 300 kB
    assert codec.decode(under) is not None
    assert codec.decode(over) is None


def test_a_zip_bomb_within_the_size_limit_is_refused(codec: SessionCodec) -> None:
    bomb = seal(b"\x01" + deflate(b"\0" * 3_000_000))
    assert len(bomb) <= 3800 + 512
    assert codec.decode(bomb) is None


@pytest.mark.parametrize(
    "plaintext",
    [
        b"",
        b"\x01",
        b"\x00" + deflate(b"{}"),
        b"\x02" + deflate(b"{}"),
        b"\x01not deflate at all",
        b"\x01" + deflate(b"not json"),
        b"\x01" + deflate(b"[]"),
        b"\x01" + deflate(b"[" * 5000),
        b"\x01" + deflate(b"\xff\xfe{}"),
        b"\x01" + zlib.compress(b"{}"),
        b"\x01" + deflate(b"{}")[:-1],
        b"\x01" + deflate(b"{}") + b"trailing",
        b"{}",
    ],
)
def test_payloads_that_are_not_deflated_json_are_refused(codec: SessionCodec, plaintext: bytes) -> None:
    assert codec.decode(seal(plaintext)) is None


def test_sealing_helper_makes_cookies_the_codec_accepts(codec: SessionCodec) -> None:
    assert codec.decode(seal_json(opened(codec.encode(codec.start(ALICE))))) is not None


BAD_FIELDS: list[tuple[str, object]] = [
    ("u", None), ("u", 1), ("n", ["Alice", "Müller"]), ("n", ["Alice", "Müller", 1]), ("n", "Alice"),
    ("g", "Staff"), ("g", ["Staff", 1]), ("g", [["Staff"]]), ("r", None), ("r", [None]), ("R", 1), ("R", "true"),
    ("f", "3"), ("f", 16), ("f", -1), ("f", 1.0), ("x", []), ("x", {"a": 1}), ("x", {"a": None}), ("s", None),
    ("t", [1, 2]), ("t", [1, 2, 3, 4]), ("t", [1.5, 2, 3]), ("t", ["1", 2, 3]), ("t", None), ("t", [1, 2, None]),
    ("t", [10**400, 1, 1]), ("t", [1, -1, 1]), ("t", [True, 1, 1]),
    ("i", None), ("i", 1), ("i", ""), ("i", "short"), ("i", "x" * 65), ("i", "a" * 20 + "\n"), ("i", "a b" * 8),
]


def test_a_refresh_token_travels_encrypted(codec: SessionCodec) -> None:
    with_token = Session(ALICE, issued_at=NOW, last_seen=NOW, checked_at=NOW, refresh_token="rt-Secret-123")
    value = codec.encode(with_token)
    assert "rt-Secret-123" not in value and "rt-Secret-123" not in repr(with_token)
    decoded = codec.decode(value)
    assert decoded is not None and decoded.refresh_token == "rt-Secret-123"


@pytest.mark.parametrize(("field", "bad"), BAD_FIELDS)
def test_mistyped_fields_are_refused(codec: SessionCodec, field: str, bad: object) -> None:
    payload = opened(codec.encode(codec.start(ALICE)))
    assert codec.decode(seal_json({**payload, field: bad})) is None


@pytest.mark.parametrize("field", ["u", "n", "g", "r", "R", "f", "x", "s", "t", "i"])
def test_missing_fields_are_refused(codec: SessionCodec, field: str) -> None:
    payload = opened(codec.encode(codec.start(ALICE)))
    del payload[field]
    assert codec.decode(seal_json(payload)) is None


# Time: lifetime, idle timeout, the future, refreshing


def test_lifetime_counts_from_issued_at(codec: SessionCodec, clock: Clock) -> None:
    value = codec.encode(Session(ALICE, issued_at=NOW - LIFETIME, last_seen=NOW, checked_at=NOW))
    assert codec.decode(value) is not None
    clock.now += 1
    assert codec.decode(value) is None


def test_idle_timeout_counts_from_last_seen(codec: SessionCodec, clock: Clock) -> None:
    value = codec.encode(Session(ALICE, issued_at=NOW - 10, last_seen=NOW - IDLE, checked_at=NOW - 10))
    assert codec.decode(value) is not None
    clock.now += 1
    assert codec.decode(value) is None


@pytest.mark.parametrize("field", ["issued_at", "last_seen", "checked_at"])
def test_times_in_the_future_beyond_a_minute_are_refused(codec: SessionCodec, field: str) -> None:
    times: dict[str, Any] = {"issued_at": NOW, "last_seen": NOW, "checked_at": NOW}
    assert codec.decode(codec.encode(Session(ALICE, **{**times, field: NOW + 60}))) is not None
    assert codec.decode(codec.encode(Session(ALICE, **{**times, field: NOW + 61}))) is None


def test_touched_slides_the_idle_window(codec: SessionCodec, clock: Clock) -> None:
    session = codec.start(ALICE)
    clock.now += IDLE - 1
    session = codec.touched(session)
    assert session.last_seen == clock.now and session.issued_at == NOW
    value = codec.encode(session)
    clock.now += IDLE - 1
    assert codec.decode(value) == session


def test_refresh_is_due_after_half_the_idle_timeout_or_five_minutes(clock: Clock) -> None:
    short = make_codec(clock, idle_timeout=120)
    long = make_codec(clock)
    session = short.start(ALICE)
    clock.now += 60
    assert not short.refresh_due(session)
    clock.now += 1
    assert short.refresh_due(session) and not long.refresh_due(session)
    clock.now = NOW + 301
    assert long.refresh_due(session)
    assert not long.refresh_due(long.touched(session))


# The memo


def test_a_cookie_is_decrypted_once(codec: SessionCodec, clock: Clock, decrypts: list[str]) -> None:
    value = codec.encode(codec.start(ALICE))
    first = codec.decode(value)
    for _ in range(5):
        clock.now += 60
        assert codec.decode(value) is first
    assert decrypts == [value]


def test_a_memo_hit_still_expires_on_idle(codec: SessionCodec, clock: Clock, decrypts: list[str]) -> None:
    value = codec.encode(Session(ALICE, issued_at=NOW - 100, last_seen=NOW - IDLE + 10, checked_at=NOW - 100))
    assert codec.decode(value) is not None
    clock.now += 5
    assert codec.decode(value) is not None
    clock.now += 6
    assert codec.decode(value) is None
    assert decrypts == [value]


def test_a_memo_hit_still_expires_at_the_end_of_the_lifetime(
    codec: SessionCodec, clock: Clock, decrypts: list[str]
) -> None:
    value = codec.encode(Session(ALICE, issued_at=NOW - LIFETIME + 10, last_seen=NOW, checked_at=NOW))
    assert codec.decode(value) is not None
    clock.now += 5
    assert codec.decode(value) is not None
    clock.now += 6
    assert codec.decode(value) is None
    assert decrypts == [value]


def test_memo_is_bounded_and_refused_cookies_are_not_kept(clock: Clock, decrypts: list[str]) -> None:
    codec = make_codec(clock, memo_entries=2)
    values = [codec.encode(codec.start(ALICE)) for _ in range(3)]
    for value in values:
        assert codec.decode(value) is not None
    assert codec.decode(values[0]) is not None
    assert decrypts == [*values, values[0]]
    stale = codec.encode(Session(ALICE, issued_at=NOW - LIFETIME - 1, last_seen=NOW, checked_at=NOW))
    assert codec.decode(stale) is None and codec.decode(stale) is None
    assert decrypts[-2:] == [stale, stale]


def test_memo_is_private_to_each_codec(clock: Clock) -> None:
    value = make_codec(clock).encode(Session(ALICE, NOW, NOW, NOW))
    assert make_codec(clock, [("a", KEY_B)]).decode(value) is None


# Size: 500 groups


def netbox_groups() -> tuple[str, ...]:
    return tuple(f"GG_App_NetBox_Team_{i:04d}" for i in range(1, 501))


def ad_like_groups(count: int = 500) -> tuple[str, ...]:
    """Names like GG_FIN_SharePoint_ReadWrite or SG_OPS_VPN_Users_4821, drawn at random."""
    rng = random.Random(1)
    prefixes = ["GG", "SG", "DL", "GL", "UG"]
    units = ["FIN", "HR", "IT", "OPS", "SALES", "MKT", "LEGAL", "ENG", "RND", "SEC", "NET", "DC", "PROC", "QA",
             "SUP", "ADM", "CORP", "EU", "US", "APAC"]
    apps = ["NetBox", "SAP", "Jira", "Confluence", "GitLab", "Vault", "Grafana", "Kibana", "Oracle", "SharePoint",
            "Exchange", "VPN", "Citrix", "VMware", "Backup", "Firewall", "Printers", "FileShare", "Teams",
            "Salesforce", "ServiceNow", "Splunk", "Jenkins", "Nexus", "Ansible", "AWS", "Azure", "DNS", "DHCP", "PKI"]
    roles = ["Read", "ReadWrite", "Admin", "Owner", "Operators", "Users", "Approvers", "Auditors"]
    names: set[str] = set()
    while len(names) < count:
        suffix = f"_{rng.randrange(10_000):04d}" if rng.random() < 0.5 else ""
        names.add("_".join(rng.choice(words) for words in (prefixes, units, apps, roles)) + suffix)
    return tuple(sorted(names, key=str.casefold))


def with_groups(groups: tuple[str, ...]) -> Identity:
    # As find_group_perms makes them: every group name, casefolded, may be tested by access rules.
    return dataclasses.replace(ALICE, groups=groups, rule_groups=frozenset(g.casefold() for g in groups))


def test_500_netbox_groups_fit_in_a_cookie(codec: SessionCodec) -> None:
    session = codec.start(with_groups(netbox_groups()))
    value = codec.encode(session)
    assert len(value) < 2000
    assert codec.decode(value) == session


def test_500_random_ad_like_groups_do_not_fit_but_300_do(codec: SessionCodec) -> None:
    with pytest.raises(SessionTooLarge) as caught:
        codec.encode(codec.start(with_groups(ad_like_groups())))
    assert caught.value.limit == 3800 and caught.value.size > 3800
    value = codec.encode(codec.start(with_groups(ad_like_groups(300))))
    assert len(value) <= 3800


def test_too_large_session_reports_its_size(clock: Clock) -> None:
    codec = make_codec(clock, max_bytes=500)
    with pytest.raises(SessionTooLarge, match=r"would be \d+ bytes, more than 500"):
        codec.encode(codec.start(with_groups(netbox_groups())))


# Cookie settings and headers


def test_host_prefix_only_without_domain_with_secure_and_root_path() -> None:
    assert CookieSettings().cookie_name() == "__Host-sidecar_session"
    assert CookieSettings(name="s").cookie_name() == "__Host-s"
    assert CookieSettings(domain="example.com").cookie_name() == "sidecar_session"
    assert CookieSettings(secure=False).cookie_name() == "sidecar_session"
    assert CookieSettings(path="/app").cookie_name() == "sidecar_session"


def test_set_cookie_header_values() -> None:
    assert CookieSettings().set_cookie_header("abc.def", 3600) == (
        "__Host-sidecar_session=abc.def; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"
    )
    settings = CookieSettings(name="sid", domain="example.com", secure=False, same_site="Strict", path="/app")
    assert settings.set_cookie_header("v", 60) == (
        "sid=v; Path=/app; Domain=example.com; Max-Age=60; HttpOnly; SameSite=Strict"
    )


def test_clear_cookie_header_values() -> None:
    assert CookieSettings().clear_cookie_header() == (
        "__Host-sidecar_session=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"
    )
    assert CookieSettings(domain="example.com", same_site="None").clear_cookie_header() == (
        "sidecar_session=; Path=/; Domain=example.com; Max-Age=0; Secure; HttpOnly; SameSite=None"
    )


def test_a_real_cookie_value_fits_a_set_cookie_header(codec: SessionCodec) -> None:
    value = codec.encode(codec.start(with_groups(netbox_groups())))
    header = CookieSettings().set_cookie_header(value, 3600)
    assert header.startswith(f"__Host-sidecar_session={value}; ") and len(header) < 4096


@pytest.mark.parametrize("value", ["a;b", "a b", "a\r\nSet-Cookie: x=y", "a,b", 'a"'])
def test_values_that_would_break_the_header_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        CookieSettings().set_cookie_header(value, 60)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "a b"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "a;b"}, "name"),
        ({"same_site": "lax"}, "same_site"),
        ({"same_site": "None", "secure": False}, "requires secure"),
        ({"path": "app"}, "path"),
        ({"path": "/a;Domain=evil"}, "path"),
        ({"domain": "evil.com; Secure"}, "domain"),
        ({"domain": ""}, "domain"),
    ],
)
def test_bad_cookie_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CookieSettings(**options)


# Revocations: signed-out sessions stay refused until they expire, within bounds, failing closed

BOB = dataclasses.replace(ALICE, username="bob")


def revocations(clock: Clock, **bounds: int) -> Revocations:
    return Revocations(lifetime=LIFETIME, clock=clock, **bounds)  # type: ignore[arg-type]


def test_a_revoked_session_and_its_refreshed_copies_are_refused(codec: SessionCodec, clock: Clock) -> None:
    revoked = revocations(clock)
    session, other = codec.start(ALICE), codec.start(ALICE)
    revoked.revoke(session)
    refreshed = codec.decode(codec.encode(codec.touched(session)))
    assert refreshed is not None and revoked.is_revoked(session) and revoked.is_revoked(refreshed)
    assert not revoked.is_revoked(other)  # the same user's other session stays


def test_sign_out_everywhere_ends_every_earlier_session_of_that_user_only(codec: SessionCodec, clock: Clock) -> None:
    revoked = revocations(clock)
    laptop, phone, bob = codec.start(ALICE), codec.start(ALICE), codec.start(BOB)
    elsewhere = codec.start(dataclasses.replace(ALICE, source="local"))
    clock.now += 1.5
    revoked.revoke_user("ldap", "alice")
    assert revoked.is_revoked(laptop) and revoked.is_revoked(phone)
    assert not revoked.is_revoked(bob) and not revoked.is_revoked(elsewhere)  # another source's alice
    clock.now += 1
    again = codec.decode(codec.encode(codec.start(ALICE)))
    assert again is not None and not revoked.is_revoked(again)  # signing in again works


def test_a_mark_covers_sessions_whose_cookie_rounds_their_time_down(codec: SessionCodec, clock: Clock) -> None:
    revoked = revocations(clock)
    clock.now = NOW + 0.4
    revoked.revoke_user("ldap", "alice")
    clock.now = NOW + 0.9  # issued after the mark, but its cookie says NOW: refused (fail closed)
    later = codec.decode(codec.encode(codec.start(ALICE)))
    assert later is not None and later.issued_at == NOW and revoked.is_revoked(later)


def test_revocations_are_forgotten_only_once_their_sessions_expired(codec: SessionCodec, clock: Clock) -> None:
    revoked = revocations(clock, max_sessions=4)
    kept = codec.start(ALICE)
    revoked.revoke(kept)
    clock.now += LIFETIME
    for _ in range(3):
        revoked.revoke(codec.start(BOB))
    revoked.revoke(codec.start(BOB))  # full: the expired one goes first
    assert revoked.is_revoked(kept)  # expired at this very second, not before: still refused
    clock.now += 1
    for _ in range(4):
        revoked.revoke(codec.start(dataclasses.replace(BOB, username="carol")))
    assert len(revoked) <= 4 + 1


def test_a_flood_of_sign_outs_stays_bounded_and_fails_closed(codec: SessionCodec, clock: Clock) -> None:
    revoked = revocations(clock, max_sessions=100, max_users=10)
    victim_before = codec.start(ALICE)
    flood = [codec.start(BOB) for _ in range(10_000)]
    for session in flood:
        revoked.revoke(session)
        assert len(revoked) <= 100 + 10
    # Every one of the flood stays refused (the flooder's own sessions became one user mark).
    assert all(revoked.is_revoked(session) for session in flood)
    assert not revoked.is_revoked(victim_before)  # other users are not touched by one user's flood
    signed_out = []
    for number in range(50):  # many users sign out once: user marks, then one global mark
        user = codec.start(dataclasses.replace(ALICE, username=f"user{number}"))
        signed_out.append(user)
        revoked.revoke(user)
        revoked.revoke_user("ldap", f"other{number}")
        assert len(revoked) <= 100 + 10
    assert all(revoked.is_revoked(session) for session in [*flood, *signed_out])
    assert revoked.is_revoked(victim_before)  # the last resort signed everyone out
    clock.now += 1
    assert not revoked.is_revoked(codec.start(ALICE))  # ...until now: new sign-ins work


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        Revocations(lifetime=LIFETIME, max_sessions=0)


# Compatibility: a cookie made before sealing and cookies were modules of their own still decodes


def test_a_cookie_made_before_the_sealing_module_still_decodes() -> None:
    from sidecar.sealing import derive_key
    from tests.test_sealing import OLD_SESSION, SECRET

    old_clock = Clock()
    old_clock.now = 1_800_000_000.0
    codec = SessionCodec([("k1", derive_key(SECRET, "session key"))], lifetime=3600, idle_timeout=1800,
                         clock=old_clock)
    session = codec.decode(OLD_SESSION)
    assert session is not None
    assert (session.id, session.refresh_token, session.issued_at) == ("AAAAAAAAAAAAAAAAAAAAAA", "rt-1", 1_800_000_000.0)
    who = session.identity
    assert (who.username, who.first_name, who.last_name, who.email, who.groups, who.rule_groups, who.is_staff,
            dict(who.extra), who.source) == (
        "alice", "Alice", "Liddell", "alice@example.com", ("Staff", "netbox-users"),
        frozenset({"staff", "netbox-users"}), True, {"department": "R&D"}, "ldap")
