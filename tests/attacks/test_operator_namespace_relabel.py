"""Attack: keep using a key after its namespace was handed to another tenant.

Namespaces are recycled and reassigned by relabelling ``penguinmails.io/tenant``. A key issued
while the namespace belonged to tenant A must not keep working under A once the namespace
belongs to B (or to nobody): the operator revokes it and removes its Secret, reports the
mismatch, and issues a fresh key only if the namespace comes back to the key's tenant.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from pmkeys.api import vocabulary as v
from tests.builders import key
from tests.faults.conftest import OperatorControl
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView

pytestmark = pytest.mark.integration


def relabel(kube: Kube, namespace: str, tenant: str | None) -> None:
    body = {"metadata": {"labels": {v.TENANT_LABEL: tenant}}}
    client.CoreV1Api(kube.api).patch_namespace(namespace, body)


def ready_reason(kube: Kube, namespace: str, name: str) -> str | None:
    conditions = kube.status(namespace, name).get("conditions") or []
    return next((c["reason"] for c in conditions if c["type"] == "Ready"), None)


@pytest.mark.parametrize("new_owner", ["globex", None], ids=["another-tenant", "no-tenant"])
def test_operator_revokes_keys_of_a_namespace_relabelled_away_from_their_tenant(
    ops: OperatorControl, okube: Kube, ovault: VaultView, otenant: str, new_owner: str | None
) -> None:
    ops.start()
    okube.create_key(key("mail", otenant))
    okube.wait_phase(otenant, "mail", "Active")
    old = okube.plaintext(otenant, "mail")
    record = ovault.record_for(old)
    assert record is not None and record.state == "active" and record.tenant == otenant

    relabel(okube, otenant, new_owner)
    revoked = wait_for(
        lambda: (r := ovault.record_for(old)) is not None and r.state == "revoked" and r,
        timeout=15,
        what="the old tenant's key revoked after the namespace changed hands",
    )
    assert revoked.revoked_reason and otenant in revoked.revoked_reason
    wait_for(lambda: okube.secret(otenant, "mail") is None, timeout=10, what="its Secret removed")
    status = okube.wait_phase(otenant, "mail", "Failed")
    assert ready_reason(okube, otenant, "mail") in ("TenantMismatch", "NamespaceNotBound")
    assert status.get("keyId") is None, "status must not name a key that no longer works"

    relabel(okube, otenant, otenant)
    okube.wait_status(otenant, "mail", lambda s: s.get("phase") == "Active" and s.get("keyId"), what="new key")
    fresh = okube.plaintext(otenant, "mail")
    renewed = fresh != old
    assert renewed, "back with its tenant, the object gets a fresh key, not the revoked one"
    record = ovault.record_for(old)
    assert record is not None and record.state == "revoked", "revocation is not undone"
