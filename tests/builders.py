"""Test object builders: ``key("k1", ns, scopes=[...], tier="pro")`` instead of YAML blobs."""

from __future__ import annotations

import copy
from typing import Any

from pmkeys.api import vocabulary as v


def key(name: str, namespace: str, *, tenant: str | None = None, **spec: Any) -> dict[str, Any]:
    """A TenantApiKey manifest; ``tenant`` defaults to the namespace's name (tests' convention)."""
    body: dict[str, Any] = {
        "apiVersion": v.API_VERSION,
        "kind": v.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tenant": tenant or namespace, "scopes": ["send_email"]},
    }
    body["spec"].update(spec)
    return body


def with_spec(manifest: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(manifest)
    out["spec"].update(changes)
    return out
