"""The operator's side of tenant plans: what admission cannot do.

The ValidatingAdmissionPolicy (:mod:`pmkeys.api.admission`) refuses keys that ask for more than
their plan, but CEL cannot count objects. So for each ``TenantPlan`` the operator keeps a
ResourceQuota, ``tenantplan-max-keys``, that lets the API server count TenantApiKeys and refuse
the one past ``maxKeys`` at admission (``exceeded quota: tenantplan-max-keys, requested: …,
used: …, limited: …``). It also writes the plan's status (the effective values, defaults filled
in from the tier table) for the UI, the plugin and ``kubectl get tplan``.

When a plan changes, every key of its namespace is reconciled again: its record and status get
the new effective tier and limit (a key that names no tier follows the plan's), with the same key
— nothing is re-issued. The verifiers do not wait for this: they watch plans themselves, so a
downgrade binds from their next request.
"""

from __future__ import annotations

from typing import Any

from pmkeys.api import vocabulary as v
from pmkeys.api.plan import EffectivePlan

QUOTA_NAME = "tenantplan-max-keys"
QUOTA_RESOURCE = f"count/{v.PLURAL}.{v.GROUP}"


def quota(namespace: str, plan: EffectivePlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": QUOTA_NAME,
            "namespace": namespace,
            "labels": {v.MANAGED_BY_LABEL: v.MANAGED_BY_VALUE},
            "annotations": {f"{v.GROUP}/plan": plan.source},
        },
        "spec": {"hard": {QUOTA_RESOURCE: str(plan.max_keys)}},
    }


def plan_status(plan: EffectivePlan, generation: int) -> dict[str, Any]:
    return {"observedGeneration": generation, **plan.as_status()}


def status_is_current(body: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the plan's status already says ``wanted`` (our own writes come back as events)."""
    status = body.get("status") or {}
    return all(status.get(k) == val for k, val in wanted.items())
