"""Revocation, deletion, rotation and spec changes reach running verifiers fast.

Verifiers run with the default 30 s cache TTL, so anything faster than that proves the watch
did it; one test turns the watch off to show that the TTL still bounds staleness.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from tests.kube import Kube, wait_for
from tests.verifier.conftest import Plaintext, VerifierProcess, Verifiers, issue

pytestmark = [pytest.mark.integration]


def status_of(verifier: VerifierProcess, plaintext: str, scope: str | None = "send_email") -> int:
    return verifier.verify(plaintext, scope).status_code


def seconds_until_refused(replicas: list[VerifierProcess], plaintext: str, *, limit: float) -> list[float]:
    """Poll every replica until each refuses the key; how long each took."""
    started = time.monotonic()
    took: dict[int, float] = {}
    while len(took) < len(replicas) and time.monotonic() - started < limit:
        for index, replica in enumerate(replicas):
            if index not in took and status_of(replica, plaintext) == 401:
                took[index] = time.monotonic() - started
        time.sleep(0.02)
    return [took.get(i, float("inf")) for i in range(len(replicas))]


def test_revoked_key_is_refused_by_two_replicas_within_one_second(
    verifiers: Verifiers, kube: Kube, tenant: str
) -> None:
    replicas = [verifiers.start(), verifiers.start()]
    plaintext, _ = issue(kube, tenant, "revoke-me")
    assert [status_of(r, plaintext) for r in replicas] == [200, 200], "cached as valid on both"
    kube.patch_key(tenant, "revoke-me", {"spec": {"revoked": True}})
    took = seconds_until_refused(replicas, plaintext, limit=10)
    assert max(took) < 1.0, f"revocation took {took} s on the two replicas"
    assert [r.verify(plaintext, "send_email").json()["reason"] for r in replicas] == ["revoked", "revoked"]


def test_deleted_key_is_refused_within_one_second(verifiers: Verifiers, kube: Kube, tenant: str) -> None:
    replica = verifiers.start()
    plaintext, _ = issue(kube, tenant, "delete-me")
    assert status_of(replica, plaintext) == 200
    kube.delete_key(tenant, "delete-me")
    took = seconds_until_refused([replica], plaintext, limit=10)
    assert took[0] < 1.0, f"deletion took {took[0]} s"


def test_without_the_watch_the_cache_ttl_bounds_staleness(verifiers: Verifiers, kube: Kube, tenant: str) -> None:
    replica = verifiers.start(PMKEYS_WATCH="false", PMKEYS_CACHE_TTL="2")
    plaintext, _ = issue(kube, tenant, "ttl-bound")
    assert status_of(replica, plaintext) == 200
    kube.patch_key(tenant, "ttl-bound", {"spec": {"revoked": True}})
    kube.wait_phase(tenant, "ttl-bound", "Revoked")
    revoked_at = time.monotonic()
    took = seconds_until_refused([replica], plaintext, limit=10)
    assert took[0] <= 2.5, f"with a 2 s TTL the revoked key was refused only after {took[0]} s"
    assert time.monotonic() - revoked_at <= 3.0


def test_rotated_key_works_in_grace_and_not_after(verifiers: Verifiers, kube: Kube, tenant: str) -> None:
    replicas = [verifiers.start(), verifiers.start()]
    old, first = issue(kube, tenant, "rotating", rotation={"gracePeriod": "3s"})
    assert [status_of(r, old) for r in replicas] == [200, 200]
    kube.patch_key(tenant, "rotating", {"spec": {"rotation": {"counter": 1}}})
    rotated = kube.wait_status(
        tenant, "rotating", lambda s: s.get("keyId") not in (None, first["keyId"]) and s.get("previousKeys"),
        what="rotation with a previous key in grace",
    )  # fmt: skip
    new = Plaintext(kube.plaintext(tenant, rotated["secretName"]))
    not_after = dt.datetime.fromisoformat(rotated["previousKeys"][0]["notAfter"].replace("Z", "+00:00"))
    assert [status_of(r, new) for r in replicas] == [200, 200], "the new key works at once"
    in_grace = 0
    while dt.datetime.now(dt.UTC) < not_after - dt.timedelta(seconds=0.3):
        assert [status_of(r, old) for r in replicas] == [200, 200], "the old key works until its grace ends"
        in_grace += 1
        time.sleep(0.1)
    assert in_grace >= 3, "the test saw the grace period"
    wait_for(
        lambda: [status_of(r, old) for r in replicas] == [401, 401],
        timeout=(not_after - dt.datetime.now(dt.UTC)).total_seconds() + 1.5,
        interval=0.05,
        what="old key refused once its grace ended",
    )
    assert [status_of(r, new) for r in replicas] == [200, 200]
    reasons = {r.verify(old, "send_email").json()["reason"] for r in replicas}
    assert reasons <= {"expired", "revoked"}


def test_zero_grace_rotation_refuses_the_old_key_at_once(verifiers: Verifiers, kube: Kube, tenant: str) -> None:
    replica = verifiers.start()
    old, first = issue(kube, tenant, "no-grace", rotation={"gracePeriod": "0"})
    assert status_of(replica, old) == 200
    kube.patch_key(tenant, "no-grace", {"spec": {"rotation": {"counter": 1}}})
    kube.wait_status(tenant, "no-grace", lambda s: s.get("keyId") not in (None, first["keyId"]), what="rotated")
    took = seconds_until_refused([replica], old, limit=10)
    assert took[0] < 1.0, f"old key still accepted {took[0]} s after the rotation was published"


def test_scope_change_reaches_the_verifier(verifiers: Verifiers, kube: Kube, tenant: str) -> None:
    replica = verifiers.start()
    plaintext, _ = issue(kube, tenant, "widen", scopes=["send_email"])
    assert status_of(replica, plaintext, "read_analytics") == 403
    kube.patch_key(tenant, "widen", {"spec": {"scopes": ["send_email", "read_analytics"]}})
    wait_for(lambda: status_of(replica, plaintext, "read_analytics") == 200, timeout=5, what="new scope accepted")
    kube.patch_key(tenant, "widen", {"spec": {"scopes": ["read_analytics"]}})
    wait_for(lambda: status_of(replica, plaintext, "send_email") == 403, timeout=5, what="dropped scope refused")
