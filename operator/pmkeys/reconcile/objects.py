"""A typed view of one ``TenantApiKey`` body, as handlers receive it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pmkeys.api import vocabulary as v
from pmkeys.api.model import TenantApiKeySpec, TenantApiKeyStatus


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

    @property
    def secret_name(self) -> str:
        return self.spec.secret.name or self.name

    @property
    def rotate_annotation(self) -> str:
        return self.annotations.get(v.ROTATE_ANNOTATION, "")

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"
