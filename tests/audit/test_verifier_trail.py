"""Failed verifications reach the audit trail aggregated per key per minute: a count, the
reason and the client addresses, for a known key with its tenant and for unknown keys."""

from __future__ import annotations

import json

import pytest

from pmkeys.audit import store
from pmkeys_dev.environment import LocalEnvironment
from tests import leakscan
from tests.audit.trail import wait_record
from tests.kube import Kube
from tests.verifier.conftest import Verifiers, issue, random_key

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator")]


def test_failed_verifications_are_recorded_per_key_per_minute(
    kube: Kube, env: LocalEnvironment, tenant: str, verifiers: Verifiers
) -> None:
    auditor = env.postgres.component_dsn("auditor")
    plaintext, status = issue(kube, tenant, "checkout", scopes=["send_email"])
    verifier = verifiers.start(PMKEYS_AUDIT__FAILURES_FLUSH_SECONDS="1")
    assert verifier.verify(plaintext, "send_email", client="198.51.100.1").status_code == 200
    for client in ("198.51.100.7", "198.51.100.7", "203.0.113.9"):
        assert verifier.verify(plaintext, "manage_contacts", client=client).status_code == 403
    unknown = random_key()
    before = {r.seq for r in store.AuditReader(auditor).query(store.Query(key_id="", actions=("verify_failed",)))}
    for _ in range(4):
        assert verifier.verify(unknown, client="192.0.2.44").status_code == 401
    verifiers.stop(verifier)  # a stopping verifier writes the minute it is in

    (scope,) = wait_record(auditor, tenant, "verify_failed")
    assert (scope["key_id"], scope["reason"], scope["outcome"]) == (status["keyId"], "scope_missing", "denied")
    assert scope["details"]["count"] == 3
    # Clients are named as the verifier limits them: the calling gateway's name, then the address.
    assert scope["details"]["clients"] == {"tests|198.51.100.7": 2, "tests|203.0.113.9": 1}
    assert (scope["tenant"], scope["object"]["name"], scope["component"]) == (tenant, "checkout", "verifier")

    found = store.AuditReader(auditor).query(store.Query(key_id="", actions=("verify_failed",)))
    (anonymous,) = [r.data for r in found if r.seq not in before and "tests|192.0.2.44" in r.data["details"]["clients"]]
    assert anonymous["details"]["count"] == 4 and anonymous["tenant"] == ""
    assert anonymous["reason"] == "unknown"
    # Neither the valid key nor the unknown one is in the records (findings name prefixes only).
    assert leakscan.scan([("records", json.dumps([scope, anonymous]))], [plaintext, unknown]) == []
