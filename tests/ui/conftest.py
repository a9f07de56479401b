"""Fixtures for the UI: the ``pmkeys ui`` process running as its own least-privilege
ServiceAccount, and tenant users (ServiceAccounts bound to the tenant roles in one namespace).

The roles come from :mod:`pmkeys.ui.rbac` (what the Helm chart ships); here they get test-only
names so a chart installed into the same cluster by other tests cannot collide with them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.keys.material import ApiKey, parse
from pmkeys.ui import rbac
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess, free_port
from tests import leakscan
from tests.kube import Kube, wait_for

UI_ROLE = "pmkeys-ui-test"
ADMIN_ROLE = "pmkeys-ui-test-tenant-admin"
VIEWER_ROLE = "pmkeys-ui-test-tenant-viewer"


@dataclass
class UiServer:
    url: str
    process: ServerProcess

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


@dataclass
class TenantUser:
    """A tenant user: a ServiceAccount token and an HTTP client that sends it as a bearer."""

    namespace: str
    name: str
    token: str = field(repr=False)
    http: httpx.Client = field(repr=False)

    def keys_url(self, namespace: str | None = None, name: str = "", action: str = "") -> str:
        path = f"/api/v1/namespaces/{namespace or self.namespace}/keys"
        if name:
            path += f"/{name}"
        if action:
            path += f"/{action}"
        return path


def _apply(kube: Kube, documents: list[dict[str, Any]]) -> None:
    bootstrap.apply_manifests(kube.api, documents)


@pytest.fixture(scope="session")
def ui_rbac(kube: Kube) -> None:
    """The UI's ClusterRole (bound to pmkeys-ui) and the two tenant ClusterRoles."""
    _apply(
        kube,
        [
            rbac.cluster_role(UI_ROLE, rbac.UI_RULES),
            rbac.cluster_role(ADMIN_ROLE, rbac.TENANT_ADMIN_RULES),
            rbac.cluster_role(VIEWER_ROLE, rbac.TENANT_VIEWER_RULES),
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": UI_ROLE},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": UI_ROLE},
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": bootstrap.service_account("ui"),
                        "namespace": bootstrap.SYSTEM_NAMESPACE,
                    }
                ],
            },
        ],
    )


@pytest.fixture(scope="session")
def ui_server(
    env: LocalEnvironment, kube: Kube, ui_rbac: None, operator: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UiServer]:
    """``pmkeys ui`` as a process, authenticated to the API server as pmkeys-ui and nothing more.
    At the end its log is searched for every key the run revealed."""
    kubeconfig = env.kubeconfig_for_token(
        env.token_files["ui"].read_text(), tmp_path_factory.mktemp("ui") / "kubeconfig"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = env.start_component(
        "ui",
        name="ui",
        ready_url=f"{url}/healthz",
        PMKEYS_KUBECONFIG=str(kubeconfig),
        PMKEYS_BIND="127.0.0.1",
        PMKEYS_PORT=str(port),
        PMKEYS_AUTHZ_CACHE_SECONDS="2",
    )
    server = UiServer(url, process)
    yield server
    findings = leakscan.scan([("UI log", server.log())], kube.issued)
    assert not findings, "plaintext keys in the UI log: " + "; ".join(map(str, findings))


def _binding(namespace: str, sa: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{sa}-{role}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
    }


def _allowed(kube: Kube, namespace: str, sa: str) -> bool:
    """The API server's authorizer sees a new RoleBinding a moment after it is created."""
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:{sa}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb="list", group=v.GROUP, resource=v.PLURAL
            ),
        )
    )
    result = client.AuthorizationV1Api(kube.api).create_subject_access_review(review)
    return bool(result.status.allowed)


def new_user(kube: Kube, base_url: str, namespace: str, role: str | None = "admin") -> TenantUser:
    """A ServiceAccount in ``namespace`` bound to the tenant role (None: no binding at all) and
    an API client sending its token. Close ``user.http`` when done."""
    name = f"user-{secrets.token_hex(3)}"
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
    ]
    if role:
        docs.append(_binding(namespace, name, ADMIN_ROLE if role == "admin" else VIEWER_ROLE))
    _apply(kube, docs)
    if role:
        wait_for(lambda: _allowed(kube, namespace, name), what=f"RBAC for {namespace}/{name} in effect")
    token = bootstrap.token(kube.api, name, namespace=namespace, hours=1)
    http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return TenantUser(namespace, name, token, http)


@pytest.fixture
def make_user(kube: Kube, ui_server: UiServer, ui_rbac: None) -> Iterator[Callable[..., TenantUser]]:
    """``make_user(namespace, role="admin"|"viewer"|None)``: see :func:`new_user`."""
    users: list[TenantUser] = []

    def make(namespace: str, role: str | None = "admin") -> TenantUser:
        users.append(new_user(kube, ui_server.url, namespace, role))
        return users[-1]

    yield make
    for user in users:
        user.http.close()


@pytest.fixture
def admin(make_user: Callable[..., TenantUser], tenant: str) -> TenantUser:
    """A tenant admin of the test's own tenant namespace."""
    return make_user(tenant)


def wait_key(
    user: TenantUser, name: str, predicate: Callable[[dict[str, Any]], bool], *, what: str, timeout: float = 30
) -> dict[str, Any]:
    """Poll the key through the UI's API (as the user) until ``predicate`` holds."""

    def probe() -> dict[str, Any] | None:
        response = user.http.get(user.keys_url(name=name))
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 and predicate(body) else None

    return wait_for(probe, timeout=timeout, what=what)


def wait_issued(user: TenantUser, name: str, *, other_than: str | None = None) -> dict[str, Any]:
    return wait_key(
        user,
        name,
        lambda k: k["phase"] in ("Active", "Rotating") and k["keyId"] not in (None, other_than),
        what=f"key {name} issued",
    )


def reveal(kube: Kube, user: TenantUser, name: str) -> tuple[str, ApiKey]:
    """Reveal through the UI. The key comes back as an :class:`ApiKey`, whose repr shows only
    its prefix (so a failing assertion or traceback cannot print it), and is registered for the
    leak scan."""
    response = user.http.post(user.keys_url(name=name, action="reveal"))
    assert response.status_code == 200, f"reveal answered {response.status_code}: {response.json().get('error')}"
    body = response.json()
    kube.issued.add(body["apiKey"])
    return body["keyId"], parse(body["apiKey"])


def secret_annotations(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    secret: client.V1Secret | None = kube.secret(namespace, name)
    assert secret is not None, f"Secret {namespace}/{name} missing"
    return dict(secret.metadata.annotations or {})


__all__ = ["Path", "TenantUser", "UiServer", "reveal", "wait_issued", "wait_key"]
