"""A typed view of one ``TenantApiKey`` body, as handlers receive it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pmkeys.api import vocabulary as v
from pmkeys.api.model import TenantApiKeySpec, TenantApiKeyStatus
from pmkeys.api.plan import EffectivePlan


@dataclass(frozen=True)
class KeyObject:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: TenantApiKeySpec
    status: TenantApiKeyStatus
    annotations: dict[str, str]
    body: dict[str, Any]
    #: The version the reconcile read (the audit trail orders admitted edits by it).
    resource_version: str = ""
    #: The namespace's TenantPlan (None: the namespace has none).
    plan: EffectivePlan | None = None

    @classmethod
    def from_body(cls, body: Any) -> KeyObject:
        meta = body["metadata"]
        raw = {
            "apiVersion": body.get("apiVersion", v.API_VERSION),
            "kind": body.get("kind", v.KIND),
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
        }
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            spec=TenantApiKeySpec.model_validate(dict(body.get("spec") or {})),
            status=TenantApiKeyStatus.model_validate(dict(body.get("status") or {})),
            annotations=dict(meta.get("annotations") or {}),
            body=raw,
            resource_version=str(meta.get("resourceVersion") or ""),
        )

    def with_plan(self, plan: EffectivePlan | None) -> KeyObject:
        return dataclasses.replace(self, plan=plan)

    @property
    def tier(self) -> v.Tier:
        """The key's tier: its own, else its plan's, else starter."""
        return self.spec.tier or (self.plan.tier if self.plan else v.Tier.STARTER)

    @property
    def rate_limit(self) -> int:
        """Requests per minute: the key's own ask within its tier, never above the plan's ceiling."""
        if self.plan is None:
            return self.spec.effective_rate_limit
        return self.plan.key_limit(self.spec.tier, self.spec.rate_limit)

    @property
    def secret_name(self) -> str:
        return self.spec.secret.name or self.name

    @property
    def rotate_annotation(self) -> str:
        return self.annotations.get(v.ROTATE_ANNOTATION, "")

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"
