"""SessionCodec's memo of decoded cookies: the sessions of one person share one Identity (most of
an entry), the identities kept stay bounded, and a different identity is never shared."""

from __future__ import annotations

import dataclasses

from sidecar.identity import Identity
from sidecar.sessions import SessionCodec, new_session_id

NOW = 1_700_000_000.0


def codec(memo_entries: int = 10_000) -> SessionCodec:
    return SessionCodec([("k", bytes(range(32)))], lifetime=8 * 3600, idle_timeout=3600, clock=lambda: NOW,
                        memo_entries=memo_entries)


ALICE = Identity("alice", "Alice", "Liddell", "alice@example.com", groups=("staff", "users"),
                 rule_groups=frozenset({"staff", "users"}), is_staff=True, extra={"dept": "R&D"}, source="ldap")


def cookies(sessions: SessionCodec, identity: Identity, count: int) -> list[str]:
    session = sessions.start(identity)
    return [sessions.encode(dataclasses.replace(session, id=new_session_id())) for _ in range(count)]


def test_the_sessions_of_one_person_share_one_identity() -> None:
    sessions = codec()
    decoded = [sessions.decode(value) for value in cookies(sessions, ALICE, 5)]
    assert all(session is not None for session in decoded)
    assert len({session.id for session in decoded if session is not None}) == 5
    first = decoded[0]
    assert first is not None and first.identity == ALICE
    assert all(session is not None and session.identity is first.identity for session in decoded)


def test_an_identity_that_differs_in_anything_is_its_own() -> None:
    sessions = codec()
    variants = [ALICE, dataclasses.replace(ALICE, is_superuser=True), dataclasses.replace(ALICE, groups=("staff",)),
                dataclasses.replace(ALICE, extra={"dept": "Sales"}), dataclasses.replace(ALICE, source="local")]
    decoded = [sessions.decode(cookies(sessions, identity, 1)[0]) for identity in variants]
    for session, identity in zip(decoded, variants, strict=True):
        assert session is not None and session.identity == identity


def test_the_identities_kept_stay_bounded() -> None:
    sessions = codec(memo_entries=50)
    for i in range(500):
        value = cookies(sessions, dataclasses.replace(ALICE, username=f"user{i}"), 1)[0]
        session = sessions.decode(value)
        assert session is not None and session.identity.username == f"user{i}"
        assert len(sessions._identities) <= 50
