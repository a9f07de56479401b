"""Wire a fresh control plane and OpenBao together the way a real installation would be.

* the CRDs (TenantApiKey, TenantPlan), applied and Established, and the plan's admission
  policy with its binding (:mod:`pmkeys.api.admission`, what the chart installs). The local
  environment binds it with ``parameterNotFoundAction: Allow``: a namespace without a TenantPlan
  is not held to one (most tests need no plan); the chart's default is ``Deny``;
* ServiceAccounts for the operator, verifier and UI in ``pmkeys-system``, and one for OpenBao's
  TokenReview calls (bound to ``system:auth-delegator``);
* in OpenBao: the Kubernetes auth method pointed at our API server, the least-privilege
  policies of :mod:`pmkeys.vault.policies` and one role per component bound to its
  ServiceAccount.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

from pmkeys.api import admission, crd, finalizer_policy
from pmkeys.api import vocabulary as v
from pmkeys.audit import admission as audit_admission
from pmkeys.reconcile.plans import QUOTA_NAME
from pmkeys.vault.policies import POLICIES
from pmkeys_dev.controlplane import ControlPlane
from pmkeys_dev.openbao import KV_MOUNT, OpenBao

SYSTEM_NAMESPACE = "pmkeys-system"
COMPONENTS = ("operator", "verifier", "ui")
REVIEWER = "openbao-token-reviewer"
VAULT_PREFIX = "pmkeys"


def service_account(component: str) -> str:
    return f"pmkeys-{component}"


def audit_admission_policy(api: client.ApiClient, *, timeout: float = 60) -> None:
    """The MutatingAdmissionPolicy that stamps the actor of each change (served by 1.36 as is),
    and a wait until the API server applies it: a policy is loaded through an informer, and
    it needs the CRD's schema, so the first requests after creating it are not yet stamped."""
    for manifest in audit_admission.manifests():
        try:
            utils.create_from_dict(api, manifest)
        except utils.FailToCreateError as exc:
            if not all(isinstance(e, ApiException) and e.status == 409 for e in exc.api_exceptions):
                raise
    probe = {
        "apiVersion": v.API_VERSION,
        "kind": v.KIND,
        "metadata": {"name": "admission-probe", "namespace": "default"},
        "spec": {"tenant": "probe", "scopes": ["send_email"]},
    }
    custom = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    while True:
        try:
            made = custom.create_namespaced_custom_object(v.GROUP, v.VERSION, "default", v.PLURAL, probe, dry_run="All")
            if audit_admission.CHANGED_BY in (made["metadata"].get("annotations") or {}):
                return
        except ApiException as exc:
            # 404/503: the CRD not served yet; 422 "paramKind ... not yet synced": the plan
            # policies' parameter informer has not listed TenantPlans yet (a loaded machine).
            if exc.status not in (404, 503) and not (exc.status == 422 and "not yet synced" in str(exc.body)):
                raise
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API server did not apply {audit_admission.POLICY_NAME} within {timeout:.0f}s")
        time.sleep(0.2)


def apply_crd(api: client.ApiClient, *, without_plan: str = "Allow") -> None:
    for manifest in (crd.crd(), crd.plan_crd()):
        _apply_crd(api, manifest)
    apply_plan_admission(api, without_plan=without_plan)


def apply_plan_admission(api: client.ApiClient, *, without_plan: str = "Allow") -> None:
    """The TenantPlan admission policies and their bindings, created or replaced."""
    adm = client.AdmissionregistrationV1Api(api)
    policy = (adm.read_validating_admission_policy, adm.create_validating_admission_policy,
              adm.replace_validating_admission_policy)  # fmt: skip
    binding = (adm.read_validating_admission_policy_binding, adm.create_validating_admission_policy_binding,
               adm.replace_validating_admission_policy_binding)  # fmt: skip
    for manifest in admission.policies():
        _create_or_replace(manifest, *policy)
    for manifest in admission.bindings(without_plan=without_plan):
        _create_or_replace(manifest, *binding)
    if without_plan == "Allow":
        try:
            adm.delete_validating_admission_policy_binding(admission.REQUIRED_BINDING_NAME)
        except ApiException as exc:
            if exc.status != 404:
                raise


def _create_or_replace(manifest: dict[str, Any], read: Any, create: Any, replace: Any) -> None:
    try:
        create(manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise
        manifest["metadata"]["resourceVersion"] = read(manifest["metadata"]["name"]).metadata.resource_version
        replace(manifest["metadata"]["name"], manifest)


def _apply_crd(api: client.ApiClient, manifest: dict[str, Any]) -> None:
    ext = client.ApiextensionsV1Api(api)
    name = manifest["metadata"]["name"]
    try:
        ext.create_custom_resource_definition(manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = ext.read_custom_resource_definition(name)
        manifest["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, manifest)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.1)
    raise TimeoutError(f"CRD {name} not Established after 30s")


def apply_manifests(api: client.ApiClient, documents: list[dict[str, object]]) -> None:
    for doc in documents:
        try:
            utils.create_from_dict(api, doc)
        except utils.FailToCreateError as exc:
            if not all(getattr(e, "status", None) == 409 for e in exc.api_exceptions):
                raise


def service_accounts(api: client.ApiClient) -> None:
    docs: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": REVIEWER, "namespace": SYSTEM_NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{REVIEWER}-auth-delegator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": REVIEWER, "namespace": SYSTEM_NAMESPACE}],
        },
    ]
    docs += [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account(c), "namespace": SYSTEM_NAMESPACE},
        }
        for c in COMPONENTS
    ]
    apply_manifests(api, docs)
    apply_finalizer_policy(api)


def apply_finalizer_policy(api: client.ApiClient) -> None:
    """Only the operator may remove the TenantApiKey finalizer (the chart's policy, the same
    text). The local operator runs as its ServiceAccount (demo) or with this environment's own
    kubeconfig (tests), so both identities are bound."""
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    name = "pmkeys-finalizer-owner"
    apply_manifests(
        api,
        [
            finalizer_policy.parameter(
                name=name,
                namespace=SYSTEM_NAMESPACE,
                operators=[
                    f"system:serviceaccount:{SYSTEM_NAMESPACE}:{service_account('operator')}",
                    review.status.user_info.username,
                ],
            ),
            finalizer_policy.policy(),
            finalizer_policy.binding(param_name=name, param_namespace=SYSTEM_NAMESPACE),
        ],
    )


def token(api: client.ApiClient, name: str, *, namespace: str = SYSTEM_NAMESPACE, hours: int = 24) -> str:
    """A ServiceAccount token from the TokenRequest API (what a pod's projected volume holds)."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=hours * 3600)
    )
    response = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
    return str(response.status.token)


def configure_openbao(bao: OpenBao, cp: ControlPlane, api: client.ApiClient) -> None:
    bao.enable_kubernetes_auth(kubernetes_host=cp.url, ca_cert=cp.ca_cert, reviewer_jwt=token(api, REVIEWER))
    root = bao.client()
    for component, policy in POLICIES.items():
        name = service_account(component)
        root.sys.create_or_update_policy(name, policy(mount=KV_MOUNT, prefix=VAULT_PREFIX))
        root.auth.kubernetes.create_role(
            name,
            bound_service_account_names=[name],
            bound_service_account_namespaces=[SYSTEM_NAMESPACE],
            policies=[name],
            ttl="1h",
            max_ttl="24h",
        )


def write_token_files(api: client.ApiClient, directory: Path) -> dict[str, Path]:
    """One token file per component, as a pod would have mounted."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for component in COMPONENTS:
        path = directory / f"{component}.token"
        path.write_text(token(api, service_account(component)))
        path.chmod(0o600)
        files[component] = path
    return files


def wait_until_keys_admitted(api: client.ApiClient, *, timeout: float = 120) -> float:
    """Wait until the API server admits a TenantApiKey again (a server-side dry run), and return
    how long that took.

    After a restart kube-apiserver answers /readyz before it serves custom resources (503 "Resource
    kind ... not found") and before its admission policies have loaded their parameter kinds (422):
    seen here for about 30 s. Clients retry through that; the fault tests wait for it once, so
    they measure the operator's recovery rather than the API server's start.
    """
    custom = client.CustomObjectsApi(api)
    probe = {
        "apiVersion": f"{v.GROUP}/{v.VERSION}",
        "kind": v.KIND,
        "metadata": {"name": "admission-probe", "namespace": "default"},
        "spec": {"tenant": "admission-probe", "scopes": ["send_email"]},
    }
    started = time.monotonic()
    while True:
        try:
            custom.create_namespaced_custom_object(v.GROUP, v.VERSION, "default", v.PLURAL, probe, dry_run="All")
            return time.monotonic() - started
        except ApiException as exc:
            if exc.status not in (422, 503) or time.monotonic() - started > timeout:
                raise
        time.sleep(0.5)


def tenant_namespace(api: client.ApiClient, name: str, tenant: str) -> None:
    body = {"metadata": {"name": name, "labels": {"penguinmails.io/tenant": tenant}}}
    try:
        client.CoreV1Api(api).create_namespace(body)
    except ApiException as exc:
        if exc.status != 409:
            raise


def load_yaml_documents(path: Path) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def plan_quota_counted(api: client.ApiClient, namespace: str) -> bool:
    """Whether the quota controller has counted the plan's key quota (which the operator creates
    when the plan appears) once: until it has, the API server refuses every key in the namespace
    ("status unknown for quota"), for a second or two after the plan was applied."""
    try:
        quota = client.CoreV1Api(api).read_namespaced_resource_quota(QUOTA_NAME, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return bool(quota.status and quota.status.hard and quota.status.used is not None)


def wait_plan_in_force(api: client.ApiClient, namespace: str, *, timeout: float = 90) -> None:
    """Until keys can be created under the namespace's plan (its quota counted)."""
    deadline = time.monotonic() + timeout
    while not plan_quota_counted(api, namespace):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the plan of {namespace} was not in force after {timeout}s (is the operator running?)")
        time.sleep(0.25)
