"""Attack: use a key's ``restartTargets`` to restart a workload that has nothing to do with it.

The operator holds a cluster-wide right to patch Deployments and StatefulSets (to restart them
after a rotation). A tenant admin who may create TenantApiKeys, but not touch the payments
team's Deployment, names that Deployment in ``spec.rotation.restartTargets`` and bumps the
rotation counter as often as they like: each bump restarts the victim's pods. A workload is
restarted only when it opted in, with an annotation naming the key.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from pmkeys.api import vocabulary as v
from tests.builders import key
from tests.kube import Kube, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator")]


def deployment(name: str, annotations: dict[str, str] | None = None) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations),
        spec=client.V1DeploymentSpec(
            replicas=0,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="example/app:1")]),
            ),
        ),
    )


def restarted_at(kube: Kube, namespace: str, name: str) -> str | None:
    template = kube.apps.read_namespaced_deployment(name, namespace).spec.template
    return (template.metadata.annotations or {}).get(v.RESTARTED_AT_ANNOTATION)


def test_operator_restarts_only_workloads_that_opted_in_for_this_key(kube: Kube, tenant: str) -> None:
    kube.apps.create_namespaced_deployment(tenant, deployment("payments"))
    kube.apps.create_namespaced_deployment(tenant, deployment("other", {v.RESTART_OPT_IN_ANNOTATION: "billing"}))
    kube.apps.create_namespaced_deployment(tenant, deployment("mailer", {v.RESTART_OPT_IN_ANNOTATION: "x, mail"}))
    targets = [{"kind": "Deployment", "name": n} for n in ("payments", "other", "mailer")]
    kube.create_key(key("mail", tenant, rotation={"restartTargets": targets}))
    first = kube.wait_phase(tenant, "mail", "Active")
    kube.patch_key(tenant, "mail", {"spec": {"rotation": {"counter": 1, "restartTargets": targets}}})
    kube.wait_status(tenant, "mail", lambda s: s.get("keyId") not in (None, first["keyId"]), what="rotated")

    # The targets are handled in order, so once the last one restarted the others were decided.
    wait_for(lambda: restarted_at(kube, tenant, "mailer"), what="the opted-in Deployment restarted")
    assert restarted_at(kube, tenant, "payments") is None, "a Deployment that never opted in was restarted"
    assert restarted_at(kube, tenant, "other") is None, "a Deployment that opted in for another key was restarted"
    reasons = wait_for(
        lambda: (r := kube.event_reasons(tenant, "mail")) and r.count("RestartRefused") == 2 and r,
        what="two RestartRefused Events",
    )
    assert reasons.count("RestartTriggered") == 1
    refused = [e.message for e in kube.events(tenant, "mail") if e.reason == "RestartRefused"]
    assert all(v.RESTART_OPT_IN_ANNOTATION in m and "mail" in m for m in refused), refused
