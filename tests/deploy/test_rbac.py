"""What each identity the chart creates may and may not do, asked of the real API server's RBAC
authorizer with ``kubectl auth can-i --as``. The chart's RBAC is applied by
:func:`pmkeys_dev.chart.apply_rbac`, the same helper other tests use."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pmkeys_dev import chart
from tests.kube import Kube

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    documents: list[dict[str, Any]]

    def account(self, component: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}-pmkeys-{component}"

    def role(self, component: str) -> str:
        return f"{self.name}-pmkeys-{component}"


def install_rbac(kube: Kube, values: dict[str, Any] | None = None) -> Release:
    name = f"rb{secrets.token_hex(2)}"
    namespace = f"pmk-{name}"
    documents = chart.apply_rbac(kube.kubeconfig, values, release=name, namespace=namespace)
    return Release(name, namespace, documents)


@pytest.fixture(scope="module")
def release(kube: Kube) -> Iterator[Release]:
    installed = install_rbac(kube)
    yield installed
    chart.delete_rbac(kube.kubeconfig, installed.documents)
    kube.core.delete_namespace(installed.namespace)


def can(kube: Kube, who: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    where = ["-n", namespace] if namespace else []
    resource, _, sub = resource.partition("/")  # "x/status" would mean the object named status
    subresource = [f"--subresource={sub}"] if sub else []
    result = kube.kubectl("auth", "can-i", verb, resource, *subresource, *where, "--as", who)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i: {result.stdout} {result.stderr}"
    return answer == "yes"


def check(kube: Kube, who: str, namespace: str | None, expected: dict[tuple[str, str], bool]) -> None:
    actual = {(verb, resource): can(kube, who, verb, resource, namespace) for verb, resource in expected}
    wrong = {k: actual[k] for k in expected if actual[k] != expected[k]}
    assert not wrong, f"{who} in {namespace or 'the cluster'}: unexpected answers (can?) {wrong}"


TAK = "tenantapikeys.penguinmails.io"


def test_operator_account(kube: Kube, release: Release, tenant: str) -> None:
    check(
        kube,
        release.account("operator"),
        tenant,
        {
            ("get", TAK): True,
            ("list", TAK): True,
            ("watch", TAK): True,
            ("patch", TAK): True,
            ("update", TAK): True,
            ("patch", f"{TAK}/status"): True,
            ("update", f"{TAK}/finalizers"): True,
            ("create", TAK): False,
            ("delete", TAK): False,
            ("get", "secrets"): True,
            ("list", "secrets"): True,
            ("watch", "secrets"): True,
            ("create", "secrets"): True,
            ("update", "secrets"): True,
            ("patch", "secrets"): True,
            ("delete", "secrets"): True,
            ("create", "events"): True,
            ("patch", "events"): True,
            ("get", "deployments.apps"): True,
            ("patch", "deployments.apps"): True,
            ("patch", "statefulsets.apps"): True,
            ("create", "deployments.apps"): False,
            ("delete", "deployments.apps"): False,
            ("get", "pods"): False,
            ("get", "configmaps"): False,
            ("create", "serviceaccounts/token"): False,
            ("create", "rolebindings.rbac.authorization.k8s.io"): False,
        },
    )
    check(
        kube,
        release.account("operator"),
        None,
        {
            ("get", "namespaces"): True,
            ("list", "namespaces"): True,
            ("watch", "namespaces"): True,
            ("list", "customresourcedefinitions.apiextensions.k8s.io"): True,
            ("create", "customresourcedefinitions.apiextensions.k8s.io"): False,
            ("create", "namespaces"): False,
            ("patch", "namespaces"): False,
            ("list", "clusterkopfpeerings.kopf.dev"): False,
            ("impersonate", "users"): False,
            ("create", "clusterrolebindings.rbac.authorization.k8s.io"): False,
        },
    )


def test_verifier_account_reads_keys_writes_usage_and_never_reads_secrets(
    kube: Kube, release: Release, tenant: str
) -> None:
    check(
        kube,
        release.account("verifier"),
        tenant,
        {
            ("get", TAK): True,
            ("list", TAK): True,
            ("watch", TAK): True,
            ("patch", f"{TAK}/status"): True,
            ("patch", TAK): False,
            ("update", TAK): False,
            ("create", TAK): False,
            ("delete", TAK): False,
            ("update", f"{TAK}/status"): False,
            ("get", "secrets"): False,
            ("list", "secrets"): False,
            ("watch", "secrets"): False,
            ("create", "events"): False,
        },
    )
    assert not can(kube, release.account("verifier"), "get", "secrets", release.namespace)
    # The usage ledgers: ConfigMaps in its own namespace only, never a tenant's.
    for verb in ("get", "create", "update"):
        assert can(kube, release.account("verifier"), verb, "configmaps", release.namespace)
        assert not can(kube, release.account("verifier"), verb, "configmaps", tenant)
    assert not can(kube, release.account("verifier"), "delete", "configmaps", release.namespace)


def test_ui_account_only_reviews_tokens_and_access(kube: Kube, release: Release, tenant: str) -> None:
    check(
        kube,
        release.account("ui"),
        None,
        {
            ("create", "tokenreviews.authentication.k8s.io"): True,
            ("create", "subjectaccessreviews.authorization.k8s.io"): True,
            ("list", "namespaces"): True,
            ("impersonate", "users"): False,
            ("impersonate", "serviceaccounts"): False,
            ("create", "serviceaccounts/token"): False,
        },
    )
    check(
        kube,
        release.account("ui"),
        tenant,
        {
            ("get", "secrets"): False,
            ("list", "secrets"): False,
            ("get", TAK): False,
            ("create", TAK): False,
            ("patch", TAK): False,
        },
    )


def test_tenant_roles_bound_in_one_namespace(kube: Kube, release: Release, namespace_factory: Any) -> None:
    mine, theirs = namespace_factory("acme"), namespace_factory("globex")
    for user, role in (("alice", "tenant-admin"), ("bob", "tenant-viewer")):
        result = kube.kubectl(
            "create", "rolebinding", f"{user}-keys", f"--clusterrole={release.role(role)}", f"--user={user}", "-n", mine
        )
        assert result.returncode == 0, result.stderr
    check(
        kube,
        "alice",
        mine,
        {
            ("create", TAK): True,
            ("patch", TAK): True,
            ("delete", TAK): True,
            ("list", TAK): True,
            ("get", "secrets"): True,
            ("patch", "secrets"): True,
            ("list", "events"): True,
            ("list", "secrets"): False,
            ("delete", "secrets"): False,
            ("patch", f"{TAK}/status"): False,
        },
    )
    check(
        kube,
        "bob",
        mine,
        {
            ("get", TAK): True,
            ("list", TAK): True,
            ("watch", TAK): True,
            ("list", "events"): True,
            ("create", TAK): False,
            ("patch", TAK): False,
            ("delete", TAK): False,
            ("get", "secrets"): False,
            ("patch", f"{TAK}/status"): False,
        },
    )
    for user in ("alice", "bob"):
        check(kube, user, theirs, {("get", TAK): False, ("get", "secrets"): False})


def test_watch_namespaces_limit_secret_access_to_those_namespaces(kube: Kube, namespace_factory: Any) -> None:
    watched, other = namespace_factory("acme"), namespace_factory("globex")
    scoped = install_rbac(kube, {"watchNamespaces": [watched]})
    try:
        for component in ("operator", "verifier"):
            assert can(kube, scoped.account(component), "list", TAK, watched)
            assert not can(kube, scoped.account(component), "list", TAK, other)
        assert can(kube, scoped.account("operator"), "create", "secrets", watched)
        assert not can(kube, scoped.account("operator"), "get", "secrets", other)
        assert can(kube, scoped.account("operator"), "get", "namespaces")
    finally:
        chart.delete_rbac(kube.kubeconfig, scoped.documents)
        kube.core.delete_namespace(scoped.namespace)
