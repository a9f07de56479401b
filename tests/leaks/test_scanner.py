"""The leak scanner can fail: a key planted where keys must never be is found."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client

from pmkeys.api.vocabulary import Environment
from pmkeys.keys.material import generate
from tests import leakscan
from tests.kube import Kube


def test_scan_finds_plain_base64_and_partial_forms_without_echoing_the_key() -> None:
    key = generate(Environment.LIVE).value
    sources = [
        ("log a", f"token={key}"),
        ("log b", base64.b64encode(key.encode()).decode()),
        ("log c", f"suffix {key[8:]}"),
        ("clean", "nothing here"),
    ]
    findings = leakscan.scan(sources, {key})
    assert {f.source for f in findings} == {"log a", "log b", "log c"}
    assert all(key not in str(f) and key[8:] not in str(f) for f in findings)


@pytest.mark.integration
def test_planted_leak_in_an_event_is_found(kube: Kube, tenant: str) -> None:
    planted = generate(Environment.TEST).value
    event = kube.core.create_namespaced_event(
        tenant,
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="planted."),
            involved_object=client.V1ObjectReference(kind="Namespace", name=tenant, namespace=tenant),
            reason="Planted",
            message=f"oops {planted}",
            type="Warning",
        ),
    )
    try:
        findings = leakscan.scan(leakscan.cluster_texts(kube.api), {planted})
        assert [f.source for f in findings] == [f"Event {tenant}/{event.metadata.name}"]
    finally:
        kube.core.delete_namespaced_event(event.metadata.name, tenant)
    assert leakscan.scan(leakscan.cluster_texts(kube.api), {planted}) == []
