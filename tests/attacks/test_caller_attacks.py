"""Issue 12, the verifier's callers: any pod in the cluster tries the verifier's endpoints, and a
caller tries to hurt another tenant or to walk around the failed-attempt gate.

Against real verifier processes (Vault through their own role, the TenantApiKey watch on) and
keys issued by the real operator.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from tests.kube import Kube
from tests.verifier.conftest import Plaintext, VerifierProcess, Verifiers, issue, random_key

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def ns(kube: Kube) -> str:
    name = f"t-{secrets.token_hex(4)}"
    bootstrap.tenant_namespace(kube.api, name, name)
    return name


@pytest.fixture(scope="module")
def verifiers(env: LocalEnvironment, kube: Kube, operator: object) -> Iterator[Verifiers]:
    started = Verifiers(env, kube.issued)
    yield started
    started.stop_all()


@pytest.fixture(scope="module")
def verifier(verifiers: Verifiers) -> VerifierProcess:
    return verifiers.start(PMKEYS_GATEWAY="envoy")


@pytest.fixture(scope="module")
def victim(kube: Kube, ns: str) -> tuple[Plaintext, dict[str, Any]]:
    """Another tenant's key; its id is public (status, events, the UI)."""
    return issue(kube, ns, "victim", scopes=["send_email"])


def vault_reads(verifier: VerifierProcess) -> float:
    found = re.search(r"^pmkeys_verifier_cache_lookups_total\{result=\"miss\"\} (\S+)$", verifier.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def test_any_pod_gets_401_from_every_endpoint_but_health_and_metrics(
    verifier: VerifierProcess, victim: tuple[Plaintext, Any]
) -> None:
    plaintext, status = victim
    anonymous = verifier.anonymous
    assert anonymous.post("/v1/verify", json={"key": plaintext, "scope": "send_email"}).status_code == 401
    assert anonymous.get("/v1/authz/v1/messages", headers={"X-API-Key": plaintext}).status_code == 401
    assert anonymous.post(f"/v1/keys/{status['keyId']}/errors", json={"count": 1}).status_code == 401
    assert anonymous.get("/openapi.json").status_code == 401
    wrong = {"X-Pmkeys-Caller-Token": secrets.token_urlsafe(32)}
    assert anonymous.post("/v1/verify", json={"key": plaintext}, headers=wrong).status_code == 401
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/metrics").status_code == 200
    assert anonymous.get("/readyz").status_code == 200
    assert verifier.verify(plaintext, "send_email").status_code == 200, "an authenticated caller is served"


def test_no_one_inflates_another_tenants_errors_by_key_id(
    verifier: VerifierProcess, kube: Kube, ns: str, victim: tuple[Plaintext, Any]
) -> None:
    plaintext, status = victim
    key_id = status["keyId"]
    anonymous = verifier.anonymous.post(f"/v1/keys/{key_id}/errors", json={"count": 10_000})
    assert anonymous.status_code == 401
    caller_without_key = verifier.http.post(f"/v1/keys/{key_id}/errors", json={"count": 10_000})
    assert caller_without_key.status_code == 401
    other, _ = issue(kube, ns, "someone-else", scopes=["send_email"])
    with_other_key = verifier.http.post(
        f"/v1/keys/{key_id}/errors", json={"count": 10_000}, headers={"X-API-Key": other}
    )
    assert with_other_key.status_code == 403
    assert verifier.verify(plaintext, "send_email").status_code == 200  # one request, to have usage flushed
    counted = kube.wait_status(
        ns, "victim", lambda s: (s.get("usage") or {}).get("requests", 0) >= 1, what="usage flushed"
    )
    time.sleep(2.5)  # two more flush intervals (1 s each in these tests)
    assert (kube.status(ns, "victim").get("usage") or {}).get("errors", 0) == 0, counted


def test_random_client_names_do_not_walk_around_the_failed_attempt_gate(verifiers: Verifiers) -> None:
    gated = verifiers.start(
        PMKEYS_GATEWAY="direct", PMKEYS_FAILED_ATTEMPTS_PER_MINUTE="5", PMKEYS_CALLER_UNKNOWN_KEYS_PER_MINUTE="20"
    )
    before = vault_reads(gated)
    codes: Counter[int] = Counter()
    for _ in range(60):
        answer = gated.verify(
            random_key(), "send_email", client=f"198.51.100.{secrets.randbelow(250)}-{secrets.token_hex(4)}"
        )
        codes[answer.status_code] += 1
    reads = vault_reads(gated) - before
    assert codes[429] >= 35, f"random client names walked around the gate: {codes}"
    assert reads <= 25, f"{reads:.0f} Vault reads for 60 unknown keys from one caller"
