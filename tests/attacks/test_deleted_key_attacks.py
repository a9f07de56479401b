"""Issue 12, keys outliving their object: a tenant admin strips the finalizer and deletes a
TenantApiKey while the operator is down, so its Vault record stays active. Every verifier
replica, a fresh one included, must refuse the key within 5 s; and only the operator may remove
the finalizer in the first place (the admission policy, installed by the local environment from
the chart's own text).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v
from pmkeys.kubeclient import api_client
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess
from tests.kube import Kube
from tests.verifier.conftest import VerifierProcess, Verifiers, issue

pytestmark = [pytest.mark.integration]
REFUSED_WITHIN = 5.0


@pytest.fixture
def ns(kube: Kube) -> str:
    name = f"t-{secrets.token_hex(4)}"
    bootstrap.tenant_namespace(kube.api, name, name)
    return name


@pytest.fixture
def verifiers(env: LocalEnvironment, kube: Kube, operator: object) -> Iterator[Verifiers]:
    started = Verifiers(env, kube.issued)
    yield started
    started.stop_all()


def refused_within(verifier: VerifierProcess, plaintext: str, seconds: float) -> float | None:
    """Seconds until the verifier refuses the key (None if it never did in ``seconds``)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if verifier.verify(plaintext, "send_email").status_code == 401:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def delete_and_strip_finalizer(kube: Kube, ns: str, name: str) -> None:
    """Delete, then remove the finalizer (a running operator would put it back otherwise)."""
    kube.delete_key(ns, name)
    try:
        kube.patch_key(ns, name, {"metadata": {"finalizers": None}})
    except ApiException as exc:
        if exc.status != 404:  # a running operator may have finished the deletion already
            raise
    deadline = time.monotonic() + 10
    while not kube.key_gone(ns, name):
        assert time.monotonic() < deadline, f"{ns}/{name} is still there"
        time.sleep(0.05)


@pytest.mark.parametrize("operator_running", [False, True], ids=["operator-down", "operator-up"])
def test_a_deleted_key_is_refused_by_every_replica_fresh_ones_included(
    verifiers: Verifiers, kube: Kube, ns: str, operator: ServerProcess, operator_running: bool
) -> None:
    plaintext, _ = issue(kube, ns, "outlives")
    running = verifiers.start()
    assert running.verify(plaintext, "send_email").status_code == 200, "cached and working before"
    if not operator_running:
        operator.stop(grace=10)
    try:
        delete_and_strip_finalizer(kube, ns, "outlives")
        took = refused_within(running, plaintext, REFUSED_WITHIN)
        assert took is not None, f"a replica still accepts the key {REFUSED_WITHIN} s after its object was deleted"
        fresh = verifiers.start()  # started after the deletion: it never saw the object
        answer = fresh.verify(plaintext, "send_email")
        assert answer.status_code == 401, f"a fresh replica accepts a deleted object's key: {answer.text}"
        assert answer.json()["reason"] == "revoked"
    finally:
        if not operator.running():
            operator.start()


def tenant_admin_api(env: LocalEnvironment, kube: Kube, ns: str) -> client.ApiClient:
    """A tenant admin of ``ns``: every verb on TenantApiKeys there, nothing else."""
    rbac = client.RbacAuthorizationV1Api(kube.api)
    client.CoreV1Api(kube.api).create_namespaced_service_account(ns, {"metadata": {"name": "tenant-admin"}})
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "tenant-admin"},
            "rules": [{"apiGroups": [v.GROUP], "resources": [v.PLURAL], "verbs": ["*"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "tenant-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "tenant-admin", "namespace": ns}],
        },
    )
    token = bootstrap.token(kube.api, "tenant-admin", namespace=ns, hours=1)
    return api_client(str(env.kubeconfig_for_token(token, env.workdir / f"tenant-admin-{ns}.kubeconfig")))


def test_only_the_operator_may_remove_the_finalizer(
    env: LocalEnvironment, kube: Kube, ns: str, operator: object
) -> None:
    issue(kube, ns, "guarded")
    custom = client.CustomObjectsApi(tenant_admin_api(env, kube, ns))
    body: dict[str, Any] = custom.get_namespaced_custom_object(v.GROUP, v.VERSION, ns, v.PLURAL, "guarded")
    assert v.FINALIZER in body["metadata"]["finalizers"]
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(
            v.GROUP, v.VERSION, ns, v.PLURAL, "guarded", {"metadata": {"finalizers": None}}
        )
    assert caught.value.status == 403, caught.value.reason
    assert "only the pmkeys operator may remove" in str(caught.value.body)
    # The tenant admin may still delete the key: the operator then revokes and removes the finalizer.
    custom.delete_namespaced_custom_object(v.GROUP, v.VERSION, ns, v.PLURAL, "guarded")
    deadline = time.monotonic() + 30
    while not kube.key_gone(ns, "guarded"):
        assert time.monotonic() < deadline, "the operator did not finish the deletion"
        time.sleep(0.2)
