"""UI session records as Redis stores them, pure: only the session id opens its own record, and
nothing in a record or its name gives away the token, the CSRF token or the cookie value."""

from __future__ import annotations

import base64
import hashlib

from pmkeys.ui.identity import User
from pmkeys.ui.redis_sessions import record_name, seal, unseal
from pmkeys.ui.sessions import Session, new_token

TOKEN = "eyJhbGciOiJSUzI1NiJ9.the-users-kubernetes-token.signature"


def session() -> Session:
    user = User("system:serviceaccount:acme:alice", uid="u-1", groups=("system:authenticated",), extra=(("k", ("v",)),))
    return Session(new_token(), user, TOKEN, new_token(), created=100.0, last_seen=150.0, checked=120.0)


def test_a_record_opens_with_its_session_id_and_gives_the_same_session_back() -> None:
    original = session()
    name = record_name("pmkeys", original.id)
    opened = unseal(original.id, name, seal(original, name))
    assert opened == original


def test_nothing_readable_in_the_record_or_its_name() -> None:
    s = session()
    name = record_name("pmkeys", s.id)
    sealed = seal(s, name)
    for secret in (TOKEN, s.csrf, s.id):
        for form in (secret.encode(), base64.b64encode(secret.encode())):
            assert form not in sealed and form not in name.encode()
    assert name == f"pmkeys:ui:session:{hashlib.sha256(s.id.encode()).hexdigest()}"
    assert seal(s, name) != sealed, "a fresh nonce each time"


def test_another_id_or_another_name_does_not_open_it() -> None:
    s = session()
    name = record_name("pmkeys", s.id)
    sealed = seal(s, name)
    assert unseal(new_token(), name, sealed) is None
    other = session()
    assert unseal(s.id, record_name("pmkeys", other.id), sealed) is None, "moved under another name"
    assert unseal(s.id, name, sealed[:-1] + bytes([sealed[-1] ^ 1])) is None, "tampered"
    assert unseal(s.id, name, b"short") is None
