"""The plan in the verifier, against the real stack (API server, OpenBao, operator, Redis, two
verifier processes): the tenant-wide limit binds across keys and replicas, the headers name both
limits, and a plan change reaches existing keys on both replicas within 5 s without resetting
anybody's counters and without re-issuing a key."""

from __future__ import annotations

import time

import httpx
import pytest

from pmkeys.api import vocabulary as v
from pmkeys_dev.redis import RedisServer
from tests.kube import Kube
from tests.plans.conftest import set_plan
from tests.verifier.conftest import VerifierProcess, Verifiers, issue, redis_server, verifiers

pytestmark = pytest.mark.integration
__all__ = ["redis_server", "verifiers"]  # fixtures


def tenant_policy(response: httpx.Response) -> str:
    return response.headers["RateLimit-Policy"].split(", ")[1]


def tenant_remaining(response: httpx.Response) -> int:
    tenant = response.headers["RateLimit"].split(", ")[1]
    return int(tenant.split(";r=")[1].split(";")[0])


def wait_for_plan(replica: VerifierProcess, plaintext: str, expected: str, *, timeout: float) -> httpx.Response:
    """Verify until the answer's tenant policy is ``expected`` (each attempt is a real request)."""
    deadline = time.monotonic() + timeout
    while True:
        response = replica.verify(plaintext, "send_email")
        if response.status_code == 200 and tenant_policy(response) == expected:
            return response
        assert time.monotonic() < deadline, f"{expected} not seen within {timeout}s: {response.headers}"
        time.sleep(0.05)


def test_the_tenant_wide_limit_binds_across_keys_and_replicas_and_the_headers_say_so(
    verifiers: Verifiers, redis_server: RedisServer, kube: Kube, tenant: str
) -> None:
    set_plan(kube, tenant, tenantRateLimit=5)
    replicas = [verifiers.start(redis=redis_server), verifiers.start(redis=redis_server)]
    first, _ = issue(kube, tenant, "first")
    second, _ = issue(kube, tenant, "second")
    answers = [replicas[n % 2].verify(first if n < 3 else second, "send_email") for n in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert answers[0].headers["RateLimit-Policy"] == '"starter";q=60;w=60, "tenant";q=5;w=60'
    assert answers[4].headers["RateLimit"].startswith('"starter";r=58;t=60, "tenant";r=0;t=')
    refused = answers[5].json()
    assert refused["reason"] == "rate_limited" and refused["rateLimit"]["limitedBy"] == "tenant"
    assert "tenant-wide limit" in refused["message"] and "5 requests in any 60 seconds" in refused["message"]
    assert refused["rateLimit"]["remaining"] == 58, "the refused request did not spend the key's quota"
    assert 55 <= int(answers[5].headers["Retry-After"]) <= 60


def test_a_plan_change_reaches_both_replicas_within_5s_with_counters_intact(
    verifiers: Verifiers, redis_server: RedisServer, kube: Kube, tenant: str
) -> None:
    set_plan(kube, tenant, tenantRateLimit=100)
    replicas = [verifiers.start(redis=redis_server), verifiers.start(redis=redis_server)]
    plaintext, before = issue(kube, tenant, "steady")
    for n in range(10):
        assert replicas[n % 2].verify(plaintext, "send_email").status_code == 200
    spent = 10
    set_plan(kube, tenant, tenantRateLimit=50)
    changed = time.monotonic()
    for replica in replicas:
        seen = wait_for_plan(replica, plaintext, '"tenant";q=50;w=60', timeout=5 - (time.monotonic() - changed))
        spent = 50 - tenant_remaining(seen)
    took = time.monotonic() - changed
    assert took < 5, f"the downgrade took {took:.1f}s to reach both replicas"
    assert spent >= 12, "the tenant's counter kept the 10 requests made before the change (no fresh bucket)"
    # A downgrade below what the key already used refuses at once, naming the key's limit.
    set_plan(kube, tenant, tenantRateLimit=50, keyRateLimit=5)
    deadline = time.monotonic() + 5
    while (answer := replicas[1].verify(plaintext, "send_email")).status_code == 200:
        assert time.monotonic() < deadline, "the per-key ceiling did not bind within 5 s"
    body = answer.json()
    assert body["rateLimit"]["limitedBy"] == "key" and body["rateLimit"]["limit"] == 5
    assert replicas[0].verify(plaintext, "send_email").status_code == 429, "both replicas share the window"
    # An upgrade gives the difference at once, still counting what was used.
    set_plan(kube, tenant, tier="pro", tenantRateLimit=1000)
    seen = wait_for_plan(replicas[0], plaintext, '"tenant";q=1000;w=60', timeout=5)
    assert tenant_remaining(seen) <= 1000 - spent - 1
    after = kube.status(tenant, "steady")
    assert after["keyId"] == before["keyId"], "no key was re-issued"
    assert kube.custom.get_namespaced_custom_object(v.GROUP, v.VERSION, tenant, v.PLAN_PLURAL, "plan")
