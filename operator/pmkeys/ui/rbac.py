"""The Kubernetes RBAC rules the UI relies on, written once.

* :data:`UI_RULES` — the UI's own ServiceAccount (``pmkeys-ui``), cluster-wide: check tokens,
  ask authorization questions, find tenant namespaces. Nothing over tenants' objects.
* :data:`TENANT_ADMIN_RULES` — what a tenant user needs in their namespace to use every page:
  manage ``tenantapikeys``, read the namespace's plan (``get`` on ``tenantplans``, never a write:
  the plan is the platform's), reveal a key once (get + patch on ``secrets``: read it, mark it
  seen), read the audit trail (``events``).
* :data:`TENANT_VIEWER_RULES` — read-only: the list, the plan, the detail and the audit trail.

The Helm chart ships them as a ClusterRole for the UI and the ClusterRoles
``pmkeys-tenant-admin`` / ``pmkeys-tenant-viewer`` that administrators bind per namespace;
the UI tests build their roles from these lists, and :func:`cluster_role` renders one.
"""

from __future__ import annotations

from typing import Any

from pmkeys.api import vocabulary as v

Rule = dict[str, list[str]]

UI_RULES: list[Rule] = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]},
]

TENANT_ADMIN_RULES: list[Rule] = [
    {
        "apiGroups": [v.GROUP],
        "resources": [v.PLURAL],
        "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
    },
    {"apiGroups": [v.GROUP], "resources": [v.PLAN_PLURAL], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
]

TENANT_VIEWER_RULES: list[Rule] = [
    {"apiGroups": [v.GROUP], "resources": [v.PLURAL], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [v.GROUP], "resources": [v.PLAN_PLURAL], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
]


def cluster_role(name: str, rules: list[Rule]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {v.MANAGED_BY_LABEL: v.MANAGED_BY_VALUE}},
        "rules": rules,
    }
