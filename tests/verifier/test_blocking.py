"""The synchronous wrapper, from plain (non-async) code, against the real stack."""

from __future__ import annotations

import pytest
from tests.kube import Kube
from tests.verifier.conftest import issue, settings

from pmkeys.verify import BlockingVerifier
from pmkeys_dev.environment import LocalEnvironment

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator")]


def test_the_blocking_wrapper(env: LocalEnvironment, kube: Kube, tenant: str) -> None:
    plaintext, status = issue(kube, tenant, "sync-user")
    with BlockingVerifier(settings(env)) as verifier:
        decision = verifier.verify(plaintext, "send_email", client="10.1.1.1")
        assert decision.allowed and decision.key_id == status["keyId"]
        assert verifier.verify(plaintext, "manage_contacts").status == 403
        assert verifier.report_errors(status["keyId"], 2)
        assert not verifier.report_errors("kzzzzzzzzzzz")
    kube.wait_status(
        tenant, "sync-user", lambda s: (s.get("usage") or {}).get("errors") == 3, what="usage flushed on close"
    )
