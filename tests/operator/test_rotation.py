"""Rotation, grace periods and expiry against the real stack, with intervals of seconds."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.vault.records import KeyState
from tests.builders import key
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView, bcrypt_matches

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator")]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def works(vault: VaultView, plaintext: str) -> bool:
    """What a verifier would decide from Vault alone: the record exists, matches, is usable now."""
    record = vault.record_for(plaintext)
    return record is not None and bcrypt_matches(plaintext, record) and record.usable_at(now())


def new_key(kube: Kube, ns: str, name: str, old_id: str) -> dict:
    return kube.wait_status(ns, name, lambda s: s.get("keyId") not in (None, old_id), timeout=30, what="a rotated key")


def bump(kube: Kube, ns: str, name: str, counter: int, **rotation: object) -> None:
    kube.patch_key(ns, name, {"spec": {"rotation": {"counter": counter, **rotation}}})


def test_scheduled_rotation_happens_and_reschedules(kube: Kube, vault: VaultView, tenant: str) -> None:
    kube.create_key(key("sched", tenant, rotation={"interval": "4s", "gracePeriod": "2s"}))
    first = kube.wait_phase(tenant, "sched", "Active")
    first_key = kube.plaintext(tenant, "sched")
    assert first["nextRotationAt"] is not None
    second = new_key(kube, tenant, "sched", first["keyId"])
    assert second["nextRotationAt"] > first["nextRotationAt"], "the next rotation is rescheduled"
    assert second["lastRotatedAt"] is not None
    third = new_key(kube, tenant, "sched", second["keyId"])
    assert third["keyId"] not in (first["keyId"], second["keyId"])
    wait_for(lambda: not works(vault, first_key), timeout=10, what="first key revoked after its grace")
    assert "KeyRotated" in kube.event_reasons(tenant, "sched")


def test_manual_rotation_once_per_bump_with_grace(kube: Kube, vault: VaultView, tenant: str) -> None:
    kube.create_key(key("manual", tenant, rotation={"gracePeriod": "4s"}))
    first = kube.wait_phase(tenant, "manual", "Active")
    old = kube.plaintext(tenant, "manual")
    bump(kube, tenant, "manual", 1)
    rotated = new_key(kube, tenant, "manual", first["keyId"])
    new = kube.plaintext(tenant, "manual")
    assert rotated["phase"] == "Rotating"
    assert [p["keyId"] for p in rotated["previousKeys"]] == [first["keyId"]]
    assert rotated["rotation"]["observedCounter"] == 1
    assert works(vault, old) and works(vault, new), "both keys work during the grace period"
    assert vault.record_for(old).state is KeyState.RETIRING

    wait_for(lambda: not works(vault, old), timeout=15, what="old key stops after grace")
    settled = kube.wait_phase(tenant, "manual", "Active")
    assert settled["keyId"] == rotated["keyId"], "one bump, one rotation"
    assert settled["previousKeys"] == []
    assert works(vault, new)
    assert vault.record_for(old).state is KeyState.REVOKED
    wait_for(lambda: "GraceExpired" in kube.event_reasons(tenant, "manual"), what="GraceExpired event")

    bump(kube, tenant, "manual", 2)
    again = new_key(kube, tenant, "manual", settled["keyId"])
    time.sleep(2)
    assert kube.status(tenant, "manual")["keyId"] == again["keyId"]
    index = vault.owner(kube.get_key(tenant, "manual")["metadata"]["uid"])
    assert len(index.keys) == 3, "exactly three keys for creation + two bumps"


def test_several_rotations_keep_their_own_deadlines(kube: Kube, tenant: str) -> None:
    kube.create_key(key("multi", tenant, rotation={"gracePeriod": "1h"}))
    first = kube.wait_phase(tenant, "multi", "Active")
    bump(kube, tenant, "multi", 1)
    second = new_key(kube, tenant, "multi", first["keyId"])
    time.sleep(1.1)
    bump(kube, tenant, "multi", 2)
    third = new_key(kube, tenant, "multi", second["keyId"])
    deadlines = {p["keyId"]: p["notAfter"] for p in third["previousKeys"]}
    assert set(deadlines) == {first["keyId"], second["keyId"]}
    assert deadlines[first["keyId"]] < deadlines[second["keyId"]]


def test_zero_grace_revokes_previous_key_at_once(kube: Kube, vault: VaultView, tenant: str) -> None:
    kube.create_key(key("hard", tenant, rotation={"gracePeriod": "0"}))
    first = kube.wait_phase(tenant, "hard", "Active")
    old = kube.plaintext(tenant, "hard")
    bump(kube, tenant, "hard", 1)
    rotated = new_key(kube, tenant, "hard", first["keyId"])
    assert vault.record_for(old).state is KeyState.REVOKED
    assert rotated["previousKeys"] == [] and rotated["phase"] == "Active"


def test_annotation_triggers_rotation(kube: Kube, tenant: str) -> None:
    kube.create_key(key("annot", tenant))
    first = kube.wait_phase(tenant, "annot", "Active")
    kube.patch_key(tenant, "annot", {"metadata": {"annotations": {v.ROTATE_ANNOTATION: "2026-11-28"}}})
    second = new_key(kube, tenant, "annot", first["keyId"])
    assert second["rotation"]["observedAnnotation"] == "2026-11-28"


def test_grace_never_outlives_expiry(kube: Kube, tenant: str) -> None:
    expires = rfc3339(now() + dt.timedelta(minutes=10))
    kube.create_key(key("capped", tenant, expiresAt=expires, rotation={"gracePeriod": "7d"}))
    first = kube.wait_phase(tenant, "capped", "Active")
    bump(kube, tenant, "capped", 1)
    rotated = new_key(kube, tenant, "capped", first["keyId"])
    assert rotated["previousKeys"][0]["notAfter"] == expires


def test_expiry_stops_the_key(kube: Kube, vault: VaultView, tenant: str) -> None:
    kube.create_key(key("shortlived", tenant, expiresAt=rfc3339(now() + dt.timedelta(seconds=5))))
    kube.wait_phase(tenant, "shortlived", "Active")
    plaintext = kube.plaintext(tenant, "shortlived")
    assert works(vault, plaintext)
    expired = kube.wait_phase(tenant, "shortlived", "Expired", timeout=20)
    assert not works(vault, plaintext)
    assert vault.record_for(plaintext).state is KeyState.REVOKED
    assert expired.get("keyId") is None and kube.secret(tenant, "shortlived") is None
    assert "KeyExpired" in kube.event_reasons(tenant, "shortlived")


def test_extending_expiry_keeps_the_key(kube: Kube, vault: VaultView, tenant: str) -> None:
    kube.create_key(key("extended", tenant, expiresAt=rfc3339(now() + dt.timedelta(seconds=6))))
    first = kube.wait_phase(tenant, "extended", "Active")
    plaintext = kube.plaintext(tenant, "extended")
    later = now() + dt.timedelta(hours=1)
    kube.patch_key(tenant, "extended", {"spec": {"expiresAt": rfc3339(later)}})
    wait_for(
        lambda: vault.record_for(plaintext).not_after.replace(microsecond=0) == later.replace(microsecond=0),
        what="record deadline moved",
    )
    time.sleep(7)
    status = kube.status(tenant, "extended")
    assert status["phase"] == "Active" and status["keyId"] == first["keyId"]
    assert works(vault, plaintext)


def deployment(name: str) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="example/app:1")]),
            ),
        ),
    )


def test_restart_targets_get_annotated(kube: Kube, tenant: str) -> None:
    checkout = deployment("checkout")
    checkout.metadata.annotations = {v.RESTART_OPT_IN_ANNOTATION: "restarts"}  # the workload's opt-in
    kube.apps.create_namespaced_deployment(tenant, checkout)
    targets = [{"kind": "Deployment", "name": "checkout"}, {"kind": "StatefulSet", "name": "missing"}]
    kube.create_key(key("restarts", tenant, rotation={"restartTargets": targets}))
    first = kube.wait_phase(tenant, "restarts", "Active")
    template = kube.apps.read_namespaced_deployment("checkout", tenant).spec.template
    assert v.RESTARTED_AT_ANNOTATION not in (template.metadata.annotations or {}), "no restart on first issue"
    bump(kube, tenant, "restarts", 1)
    new_key(kube, tenant, "restarts", first["keyId"])
    annotated = wait_for(
        lambda: (kube.apps.read_namespaced_deployment("checkout", tenant).spec.template.metadata.annotations or {}).get(
            v.RESTARTED_AT_ANNOTATION
        ),
        what="restart annotation",
    )
    assert annotated.endswith("Z")
    reasons = wait_for(
        lambda: (r := kube.event_reasons(tenant, "restarts")) and "RestartFailed" in r and r, what="restart events"
    )
    assert "RestartTriggered" in reasons
