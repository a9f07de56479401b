"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua interpreter: against
sample statuses for every phase, and against what the operator really writes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from pmkeys_dev import binaries
from tests.builders import key
from tests.kube import Kube

HERE = Path(__file__).parent
HEALTH = binaries.REPO_ROOT / "deploy" / "argocd" / "health.lua"
HARNESS = HERE / "health_harness.lua"


def lua_literal(value: Any) -> str:
    """A JSON-like value as a Lua table constructor (Argo CD hands the script such a table)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "".join(['"', *(_lua_char(c) for c in value.encode()), '"'])
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(item) for item in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(val)}" for k, val in value.items()) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def _lua_char(byte: int) -> str:
    return chr(byte) if 32 <= byte < 127 and byte not in (34, 92) else f"\\{byte:03d}"


def health(obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    object_file = tmp_path / "object.lua"
    object_file.write_text("return " + lua_literal(obj) + "\n")
    lua = binaries.on_path("lua5.4", hint="install Debian's lua5.4 (make system-packages)")
    result = subprocess.run(
        [str(lua), str(HARNESS), str(HEALTH), str(object_file)], capture_output=True, text=True, timeout=10, check=False
    )
    assert result.returncode == 0, f"Lua error: {result.stderr}"
    status, message = result.stdout.split("\n", 1)
    return status, message.rstrip("\n")


def tak(
    phase: str | None = None,
    *,
    generation: int = 1,
    observed: int | None = 1,
    ready: str | None = "True",
    reason: str = "Active",
    message: str = "",
    status_message: str = "",
    **status: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "penguinmails.io/v1alpha1",
        "kind": "TenantApiKey",
        "metadata": {"name": "k", "namespace": "acme", "generation": generation},
    }
    if phase is None:
        return obj
    conditions = []
    if ready is not None:
        conditions.append(
            {"type": "Ready", "status": ready, "reason": reason, "message": message, "observedGeneration": observed}
        )
    obj["status"] = {
        "phase": phase,
        "observedGeneration": observed,
        "conditions": conditions,
        "message": status_message,
        "keyId": "k1abc",
        "displayPrefix": "pm_live_4fQx…",
        **status,
    }
    return obj


CASES = [
    ("no status yet", tak(None), "Progressing", "Waiting for the pmkeys operator"),
    ("pending", tak("Pending", ready="False", reason="Issuing", message="issuing"), "Progressing", "issuing"),
    ("active", tak("Active"), "Healthy", "Key k1abc (pm_live_4fQx…) is active"),
    ("rotating", tak("Rotating"), "Healthy", "previous key still works"),
    ("spec not observed yet", tak("Active", generation=3, observed=2), "Progressing", "generation 3"),
    ("never observed", tak("Active", observed=None), "Progressing", "generation 1"),
    (
        "vault down",
        tak("Active", ready="False", reason="VaultUnavailable", message="Vault unreachable; retrying"),
        "Degraded",
        "Vault unreachable; retrying",
    ),
    (
        "vault down during an update",
        tak("Active", generation=2, observed=1, ready="False", message="Vault unreachable; retrying"),
        "Progressing",
        "generation 2: Vault unreachable; retrying",
    ),
    (
        "refused",
        tak("Failed", ready="False", reason="TenantMismatch", message="spec.tenant 'x' does not match"),
        "Degraded",
        "spec.tenant 'x' does not match",
    ),
    (
        "refused, then the spec was fixed",
        tak("Failed", generation=2, observed=1, ready="False"),
        "Progressing",
        "generation 2",
    ),
    (
        "revoked",
        tak("Revoked", ready="False", reason="KeyRevoked", message="revoked: revocation is final"),
        "Healthy",
        "revoked: revocation is final",
    ),
    (
        "expired",
        tak("Expired", ready="False", reason="KeyExpired", message="expired: move spec.expiresAt"),
        "Degraded",
        "expired: move spec.expiresAt",
    ),
    (
        "failed without conditions",
        tak("Failed", ready=None, status_message="namespace unbound"),
        "Degraded",
        "namespace unbound",
    ),
    ("unknown phase", tak("Paused"), "Unknown", "Unknown phase Paused"),
    # gopher-lua numbers are floats: 2.0 must equal generation 2.
    ("float generations", tak("Active", generation=2, observed=2.0), "Healthy", "is active"),
]


@pytest.mark.parametrize(("obj", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_health_of_sample_statuses(obj: dict[str, Any], status: str, message: str, tmp_path: Path) -> None:
    got_status, got_message = health(obj, tmp_path)
    assert (got_status, message in got_message) == (status, True), f"{got_status}: {got_message}"


def test_lua_literal_round_trips_text_lua_must_escape(tmp_path: Path) -> None:
    tricky = 'quote " backslash \\ newline \n unicode … end'
    obj = tak("Failed", ready="False", message=tricky)
    assert health(obj, tmp_path) == ("Degraded", tricky.rstrip("\n"))


@pytest.mark.integration
@pytest.mark.usefixtures("operator")
def test_health_of_what_the_operator_writes(kube: Kube, tenant: str, tmp_path: Path) -> None:
    kube.create_key(key("healthy", tenant))
    kube.wait_phase(tenant, "healthy", "Active")
    assert health(kube.get_key(tenant, "healthy"), tmp_path)[0] == "Healthy"

    kube.patch_key(tenant, "healthy", {"spec": {"revoked": True}})
    kube.wait_phase(tenant, "healthy", "Revoked")
    status, message = health(kube.get_key(tenant, "healthy"), tmp_path)
    assert (status, "revoked" in message) == ("Healthy", True), message

    kube.create_key(key("intruder", tenant, tenant="someone-else"))
    kube.wait_phase(tenant, "intruder", "Failed")
    status, message = health(kube.get_key(tenant, "intruder"), tmp_path)
    assert (status, "someone-else" in message) == ("Degraded", True), message
