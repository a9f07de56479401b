"""Session lifetime, CSRF comparison and the TTL cache, with an injected clock. Pure."""

from __future__ import annotations

from pmkeys.ui.identity import TtlCache, User
from pmkeys.ui.sessions import SessionStore, cookie_name, same_token

ALICE = User("alice", groups=("tenants",))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_end_when_idle_and_at_their_lifetime() -> None:
    clock = Clock()
    store = SessionStore(idle_seconds=60, lifetime_seconds=150, clock=clock)
    session = store.create(ALICE, "token-a")
    assert len(session.id) >= 43 and session.id != session.csrf
    clock.now += 59
    assert store.get(session.id) is session, "activity restarts the idle timer"
    clock.now += 59
    assert store.get(session.id) is session
    clock.now += 40
    assert store.get(session.id) is None, "past the lifetime even though active"

    idle = store.create(ALICE, "token-b")
    clock.now += 61
    assert store.get(idle.id) is None and len(store) == 0


def test_unknown_and_deleted_sessions() -> None:
    store = SessionStore()
    session = store.create(ALICE, "t")
    assert store.get(None) is None and store.get("") is None and store.get("nope") is None
    store.delete(session.id)
    assert store.get(session.id) is None


def test_the_oldest_sessions_make_room() -> None:
    store = SessionStore(max_sessions=2)
    first, second, third = (store.create(ALICE, str(i)) for i in range(3))
    assert store.get(first.id) is None and store.get(second.id) and store.get(third.id)


def test_tokens_stay_out_of_reprs() -> None:
    session = SessionStore().create(ALICE, "very-secret-token")
    assert "very-secret-token" not in repr(session) and session.csrf not in repr(session)


def test_token_re_check_is_due_after_the_interval() -> None:
    clock = Clock()
    store = SessionStore(clock=clock)
    session = store.create(ALICE, "t")
    assert not store.needs_check(session, 30)
    clock.now += 31
    assert store.needs_check(session, 30)
    store.mark_checked(session)
    assert not store.needs_check(session, 30)


def test_csrf_comparison() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd") and not same_token("abc", None) and not same_token("abc", "")


def test_secure_cookies_use_the_host_prefix() -> None:
    assert cookie_name(secure=True) == "__Host-pmkeys_session" and cookie_name(secure=False) == "pmkeys_session"


def test_ttl_cache_expires_and_stays_bounded() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(10, max_entries=2, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get("a") is None and cache.get("c") == 3
    clock.now += 11
    assert cache.get("b") is None and cache.get("c") is None
    disabled: TtlCache[str, int] = TtlCache(0, clock=clock)
    disabled.put("x", 1)
    assert disabled.get("x") is None
