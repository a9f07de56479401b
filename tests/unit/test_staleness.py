"""Stale while unavailable, pure: what a watch event does to cached entries, how long an entry
may answer after its Vault read, and the Vault health the verifier reports."""

from __future__ import annotations

import datetime as dt

from pmkeys.verify.cache import NEVER, Entry, KeyCache
from pmkeys.verify.decision import Outcome
from pmkeys.verify.staleness import VaultHealth
from pmkeys.verify.watching import ObjectFacts

S = 1_000_000  # µs


def entry(key_id: str = "kaaaaaaaaaaa", *, uid: str = "u1", verified_at: int = 0, ttl: int = 30 * S) -> Entry:
    scopes = ("send_email",)
    return Entry(
        key_id=key_id, tenant="acme", uid=uid, namespace="acme", name="k", tier="pro", rate_limit=300,
        scopes=frozenset(scopes), scope_list=scopes, not_after=NEVER, expires=verified_at + ttl,
        verified_at=verified_at,
    )  # fmt: skip


def body(*, key_id: str = "kaaaaaaaaaaa", revoked: bool = False, **status: object) -> dict[str, object]:
    return {
        "metadata": {"uid": "u1", "namespace": "acme", "name": "k"},
        "spec": {"revoked": revoked, "tier": "pro"},
        "status": {"keyId": key_id, **status},
    }


def cache_with(*entries: tuple[str, Entry]) -> KeyCache:
    cache = KeyCache(ttl=30, negative_ttl=5, stale_for=900)
    for digest, e in entries:
        cache.put(digest, e)
    return cache


def test_an_entry_answers_stale_only_within_stale_for_of_its_vault_read() -> None:
    cache = cache_with(("d1", entry(verified_at=0)))
    assert cache.stale("d1", 899 * S) is not None
    assert cache.stale("d1", 901 * S) is None
    assert cache.stale("unknown", 1) is None


def test_sweep_keeps_entries_for_the_stale_window_then_forgets_them() -> None:
    cache = cache_with(("d1", entry(verified_at=0)))
    assert cache.sweep(60 * S) == 0 and len(cache) == 1, "past its TTL, kept for an outage"
    assert cache.stale_count(60 * S) == 1
    assert cache.sweep(901 * S) == 1 and len(cache) == 0 and cache.by_key_id("kaaaaaaaaaaa") is None


def test_without_stale_for_entries_go_at_their_ttl() -> None:
    cache = KeyCache(ttl=30, negative_ttl=5, stale_for=0)
    cache.put("d1", entry(verified_at=0))
    assert cache.stale("d1", 31 * S) is None
    assert cache.sweep(31 * S) == 1


def test_revocation_and_deletion_refuse_the_cached_keys_at_once() -> None:
    cache = cache_with(("d1", entry()), ("d2", entry("kbbbbbbbbbbb")))
    assert cache.invalidate("u1", ObjectFacts.from_body(body(revoked=True)), 1 * S) == 2
    assert all(cache.stale(d, 2 * S).denial is Outcome.REVOKED for d in ("d1", "d2"))  # type: ignore[union-attr]
    assert cache.entries["d1"].expires == 0, "re-read from Vault on next use"

    deleted = cache_with(("d1", entry()))
    deleted.invalidate("u1", None, 1 * S)
    assert deleted.entries["d1"].denial is Outcome.REVOKED


def test_rotation_keeps_the_old_key_until_its_grace_deadline_and_refuses_one_without_grace() -> None:
    cache = cache_with(("old", entry("kaaaaaaaaaaa")), ("older", entry("kccccccccccc")))
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    rotated = body(
        key_id="kbbbbbbbbbbb",
        previousKeys=[{"keyId": "kaaaaaaaaaaa", "notAfter": deadline.isoformat().replace("+00:00", "Z")}],
    )
    cache.invalidate("u1", ObjectFacts.from_body(rotated), 10 * S)
    old = cache.entries["old"]
    assert old.denial is None and 69 * S <= old.not_after <= 71 * S
    assert cache.entries["older"].denial is Outcome.REVOKED, "no longer listed: superseded"


def test_plan_change_and_shorter_expiry_apply_to_cached_keys() -> None:
    cache = cache_with(("d1", entry()))
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)).isoformat()
    changed = body(effectiveRateLimit=60)
    changed["spec"] = {"tier": "starter", "expiresAt": soon}
    cache.invalidate("u1", ObjectFacts.from_body(changed), 0)
    e = cache.entries["d1"]
    assert (e.rate_limit, e.tier, e.denial) == (60, "starter", None)
    assert 4 * S <= e.not_after <= 6 * S


def test_a_miss_started_before_an_invalidation_does_not_store_its_result() -> None:
    cache = cache_with()
    epoch = cache.epoch
    cache.invalidate("u1", None, 0)
    assert not cache.unchanged_since("u1", epoch)
    assert cache.unchanged_since("u2", epoch)


def test_vault_health_backs_off_after_a_failure_and_reports_the_outage() -> None:
    now = [100.0]
    vault = VaultHealth(retry_seconds=1.0, clock=lambda: now[0])
    assert vault.worth_asking() and not vault.down
    vault.failed()
    assert vault.down and not vault.worth_asking()
    now[0] += 1.0
    assert vault.worth_asking(), "one read per interval finds out when Vault is back"
    vault.failed()
    now[0] += 0.5
    assert vault.outage_seconds() == 1.5
    vault.answered()
    assert not vault.down and vault.outage_seconds() == 0.0


def test_facts_ignore_malformed_status_fields() -> None:
    facts = ObjectFacts.from_body(
        body(previousKeys=[{"keyId": "kx", "notAfter": "soon"}, "junk"], effectiveRateLimit=True)
    )
    assert facts.deadlines == {} and facts.rate_limit is None and facts.key_ids == {"kaaaaaaaaaaa", "kx"}


def test_past_its_ttl_an_entry_answers_behind_only_if_rereadable_not_invalidated_and_within_stale_for() -> None:
    cache = KeyCache(ttl=30, negative_ttl=5, stale_for=900, behind=True)
    rereadable = entry(verified_at=0)
    rereadable.behind = True
    assert cache.answers_behind(rereadable, 31 * S)
    assert cache.answers_behind(rereadable, 900 * S)
    assert not cache.answers_behind(rereadable, 900 * S + 1), "older than stale_for: the request path reads"
    assert not cache.answers_behind(entry(verified_at=0), 31 * S), "found under an older pepper's digest"
    rereadable.apply(ObjectFacts.from_body(body()), 31 * S)
    assert not cache.answers_behind(rereadable, 31 * S), "the watch invalidated it: read on the request path"
    assert cache.trusted_seconds == 900


def test_without_refresh_behind_entries_answer_for_one_ttl() -> None:
    cache = KeyCache(ttl=30, negative_ttl=5, stale_for=900)
    rereadable = entry(verified_at=0)
    rereadable.behind = True
    assert not cache.answers_behind(rereadable, 31 * S)
    assert cache.trusted_seconds == 30
