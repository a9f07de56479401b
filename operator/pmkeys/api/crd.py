"""Generate the CustomResourceDefinitions (``TenantApiKey``, ``TenantPlan``) and the plan's
admission policy from the pydantic models.

pydantic emits JSON Schema (``$ref``, ``anyOf`` with ``null``, titles); the API server wants a
*structural* OpenAPI v3 schema. :func:`structural` rewrites one into the other, keeping the
``x-kubernetes-*`` extensions the models carry. ``python -m pmkeys.api.crd`` prints the key's
CRD; ``python -m pmkeys.api.crd --write crds`` writes every file that lives in ``crds/`` (a test
keeps them equal).
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from pmkeys.api import admission
from pmkeys.api import vocabulary as v
from pmkeys.api.model import SPEC_VALIDATIONS, TenantApiKeySpec, TenantApiKeyStatus
from pmkeys.api.plan import TenantPlanSpec, TenantPlanStatus

_DROP = {"title"}


def structural(model: type[BaseModel], *, with_defaults: bool = True) -> dict[str, Any]:
    """The structural OpenAPI schema of ``model`` (``$ref`` inlined, nullables flattened)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    converted: dict[str, Any] = _convert(schema, defs, with_defaults=with_defaults)
    return converted


def _convert(node: Any, defs: dict[str, Any], *, with_defaults: bool) -> Any:
    if isinstance(node, list):
        return [_convert(item, defs, with_defaults=with_defaults) for item in node]
    if not isinstance(node, dict):
        return node
    node = _flatten(dict(node), defs, with_defaults=with_defaults)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _convert(prop, defs, with_defaults=with_defaults) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, defs, with_defaults=with_defaults)
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out and with_defaults:
        _default_nested_objects(out)
    return out


def _flatten(node: dict[str, Any], defs: dict[str, Any], *, with_defaults: bool) -> dict[str, Any]:
    """One schema node without what structural schemas cannot say: an ``anyOf`` with null
    reduced to its one other branch, ``$ref`` inlined, ``const`` as a one-value enum."""
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express union {branches} in a structural schema")
        node = {**branches[0], **node}
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if node.get("default", ...) is None:
        node.pop("default")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if not with_defaults:
        node.pop("default", None)
    return node


def _default_nested_objects(node: dict[str, Any]) -> None:
    """Give object/array properties that have defaults inside an explicit empty default,
    so the API server fills in their nested defaults when the user omits them."""
    required = set(node.get("required", ()))
    for name, prop in node["properties"].items():
        if name in required or "default" in prop:
            continue
        if prop.get("type") == "object":
            prop["default"] = {}
        elif prop.get("type") == "array":
            prop["default"] = []


def spec_schema() -> dict[str, Any]:
    schema = structural(TenantApiKeySpec)
    schema["x-kubernetes-validations"] = SPEC_VALIDATIONS
    schema["description"] = "Desired state of a tenant's API key."
    return schema


def status_schema() -> dict[str, Any]:
    schema = structural(TenantApiKeyStatus, with_defaults=False)
    schema["description"] = "Observed state, written by the operator (usage by the verifier)."
    return schema


def printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Tenant", "type": "string", "jsonPath": ".spec.tenant"},
        {"name": "Tier", "type": "string", "jsonPath": ".status.tier"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Prefix", "type": "string", "jsonPath": ".status.displayPrefix"},
        {"name": "Last-Used", "type": "date", "jsonPath": ".status.usage.lastUsedAt"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{v.PLURAL}.{v.GROUP}"},
        "spec": {
            "group": v.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": v.KIND,
                "listKind": f"{v.KIND}List",
                "plural": v.PLURAL,
                "singular": v.SINGULAR,
                "shortNames": list(v.SHORT_NAMES),
                "categories": ["penguinmails"],
            },
            "versions": [
                {
                    "name": v.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "An API key of a PenguinMails tenant. The operator issues it "
                                "into a Secret (plaintext) and Vault (bcrypt hash)."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def plan_printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Tier", "type": "string", "jsonPath": ".spec.tier"},
        {"name": "Max-Keys", "type": "integer", "jsonPath": ".status.maxKeys"},
        {"name": "Key-Limit", "type": "integer", "jsonPath": ".status.keyRateLimit"},
        {"name": "Tenant-Limit", "type": "integer", "jsonPath": ".status.tenantRateLimit"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def plan_crd() -> dict[str, Any]:
    spec = structural(TenantPlanSpec)
    for unset_means_the_tier in ("scopes", "environments"):  # [] would mean "none allowed"
        spec["properties"][unset_means_the_tier].pop("default", None)
    spec["description"] = "What the tenant may have; unset fields take the tier's defaults. Set by the platform."
    status = structural(TenantPlanStatus, with_defaults=False)
    status["description"] = "The plan in force (written by the operator) and its current use (by the verifiers)."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{v.PLAN_PLURAL}.{v.GROUP}"},
        "spec": {
            "group": v.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": v.PLAN_KIND,
                "listKind": f"{v.PLAN_KIND}List",
                "plural": v.PLAN_PLURAL,
                "singular": v.PLAN_SINGULAR,
                "shortNames": list(v.PLAN_SHORT_NAMES),
                "categories": ["penguinmails"],
            },
            "versions": [
                {
                    "name": v.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": plan_printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                f"A tenant's plan: tier, quotas and limits of the TenantApiKeys in this "
                                f"namespace. One per tenant namespace, named {v.PLAN_NAME!r}; only the "
                                "platform writes it."
                            ),
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {
                                    "rule": f"self.metadata.name == '{v.PLAN_NAME}'",
                                    "message": f"a TenantPlan must be named {v.PLAN_NAME!r} (one per namespace)",
                                }
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


_HEADER = "# Generated by `python -m pmkeys.api.crd --write crds` from pmkeys/api/; do not edit.\n"


def render() -> str:
    header = "# Generated by `python -m pmkeys.api.crd` from pmkeys/api/model.py; do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def render_plan_crd() -> str:
    return _HEADER + yaml.safe_dump(plan_crd(), sort_keys=False, width=100)


def render_plan_policy() -> str:
    return _HEADER + yaml.safe_dump_all(admission.policies(), sort_keys=False, width=100)


#: File name in crds/ → its rendering.
FILES = {
    "tenantapikeys.penguinmails.io.yaml": render,
    "tenantplans.penguinmails.io.yaml": render_plan_crd,
    "tenantplans-admission-policy.yaml": render_plan_policy,
}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        from pathlib import Path

        for name, rendering in FILES.items():
            (Path(sys.argv[2]) / name).write_text(rendering())
    else:
        sys.stdout.write(render())
