"""Attack: delete a key the moment it works, before it carries the finalizer.

kopf adds the operator's finalizer after the object's first event has been handled, and that
first handling is what issues the key. An object deleted in between has no finalizer: it
vanishes at once, nothing revokes its record, and the key keeps passing wherever the
verifier does not know the object is gone. The operator now puts the finalizer on the object
before it issues a key. The race is a few milliseconds wide; twenty tries hit it on the code
before the fix (seven of twenty outlived their object in one run on that code).
"""

from __future__ import annotations

import pytest

from pmkeys.api import vocabulary as v
from pmkeys.vault.records import KeyState
from tests.builders import key
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator")]


def test_operator_key_deleted_as_soon_as_it_is_active_is_revoked(kube: Kube, vault: VaultView, tenant: str) -> None:
    outlived = []
    for attempt in range(20):
        name = f"brief-{attempt}"
        kube.create_key(key(name, tenant))
        status = kube.wait_phase(tenant, name, "Active")
        finalizers = kube.get_key(tenant, name)["metadata"].get("finalizers") or []
        plaintext = kube.plaintext(tenant, name)
        kube.delete_key(tenant, name)
        wait_for(lambda n=name: kube.key_gone(tenant, n), what=f"{name} deleted")
        record = wait_for(lambda p=plaintext: vault.record_for(p), what=f"record of {name}")
        if record.state is not KeyState.REVOKED:
            outlived.append((status["keyId"], v.FINALIZER in finalizers))
    assert outlived == [], f"keys (id, had the finalizer when Active) still usable after deletion: {outlived}"
