"""Usage in ``status.usage`` matches the requests sent, whatever the number of replicas.

Verifiers flush every second here (``PMKEYS_USAGE_FLUSH_SECONDS=1``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from tests.kube import Kube
from tests.verifier.conftest import CALLER_HEADERS, Plaintext, VerifierProcess, Verifiers, issue

from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.redis import RedisServer

pytestmark = [pytest.mark.integration]


def usage(kube: Kube, ns: str, name: str) -> dict:
    return kube.status(ns, name).get("usage") or {}


def wait_usage(kube: Kube, ns: str, name: str, requests: int, errors: int, *, timeout: float = 15) -> dict:
    return kube.wait_status(
        ns,
        name,
        lambda s: (s.get("usage") or {}).get("requests") == requests and s["usage"].get("errors") == errors,
        timeout=timeout,
        what=f"usage requests={requests} errors={errors}",
    )["usage"]


async def spread(replicas: list[VerifierProcess], plaintext: str, counts: list[int]) -> None:
    """Send counts[i] allowed requests to replica i, concurrently."""

    async def send(replica: VerifierProcess, count: int) -> None:
        async with httpx.AsyncClient(base_url=replica.url, timeout=20, headers=CALLER_HEADERS) as http:
            for _ in range(count):
                response = await http.post("/v1/verify", json={"key": plaintext, "scope": "send_email"})
                assert response.status_code == 200

    await asyncio.gather(*(send(r, n) for r, n in zip(replicas, counts, strict=True)))


def test_usage_matches_requests_on_one_replica(verifiers: Verifiers, kube: Kube, tenant: str) -> None:
    replica = verifiers.start()
    plaintext, status = issue(kube, tenant, "counted", tier="pro")
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    asyncio.run(spread([replica], plaintext, [7]))
    for _ in range(2):
        assert replica.verify(plaintext, "manage_contacts").status_code == 403
    report = replica.http.post(
        f"/v1/keys/{status['keyId']}/errors", json={"count": 3}, headers={"X-API-Key": plaintext}
    )
    assert report.status_code == 202
    counted = wait_usage(kube, tenant, "counted", requests=9, errors=5)
    last_used = dt.datetime.fromisoformat(counted["lastUsedAt"].replace("Z", "+00:00"))
    assert before <= last_used <= dt.datetime.now(dt.UTC)


def test_keys_without_traffic_are_not_written(verifiers: Verifiers, kube: Kube, tenant: str) -> None:
    replica = verifiers.start()
    busy, _ = issue(kube, tenant, "busy")
    issue(kube, tenant, "idle")
    assert replica.verify(busy, "send_email").status_code == 200
    wait_usage(kube, tenant, "busy", requests=1, errors=0)
    assert usage(kube, tenant, "idle").get("requests", 0) == 0
    assert usage(kube, tenant, "idle").get("lastUsedAt") is None


def test_usage_is_summed_across_replicas_through_redis(
    verifiers: Verifiers, redis_server: RedisServer, kube: Kube, tenant: str
) -> None:
    replicas = [verifiers.start(redis=redis_server) for _ in range(3)]
    plaintext, _ = issue(kube, tenant, "summed", tier="enterprise")
    asyncio.run(spread(replicas, plaintext, [40, 25, 15]))
    wait_usage(kube, tenant, "summed", requests=80, errors=0)
    asyncio.run(spread(replicas, plaintext, [1, 2, 3]))
    wait_usage(kube, tenant, "summed", requests=86, errors=0)


def test_usage_is_summed_across_replicas_without_redis(verifiers: Verifiers, kube: Kube, tenant: str) -> None:
    replicas = [verifiers.start(), verifiers.start()]
    plaintext, _ = issue(kube, tenant, "summed-apart", tier="enterprise")
    asyncio.run(spread(replicas, plaintext, [30, 20]))
    wait_usage(kube, tenant, "summed-apart", requests=50, errors=0)


def test_usage_of_a_stopped_replica_is_flushed_on_the_way_out(verifiers: Verifiers, kube: Kube, tenant: str) -> None:
    replica = verifiers.start(PMKEYS_USAGE_FLUSH_SECONDS="3600")
    plaintext, _ = issue(kube, tenant, "last-words")
    asyncio.run(spread([replica], plaintext, [4]))
    assert usage(kube, tenant, "last-words").get("requests", 0) == 0, "nothing flushed yet"
    verifiers.stop(replica)
    wait_usage(kube, tenant, "last-words", requests=4, errors=0, timeout=5)


def test_usage_survives_rotation_and_operator_status_writes(verifiers: Verifiers, kube: Kube, tenant: str) -> None:
    replica = verifiers.start()
    old, first = issue(kube, tenant, "rotated-usage", rotation={"gracePeriod": "30s"})
    asyncio.run(spread([replica], old, [5]))
    wait_usage(kube, tenant, "rotated-usage", requests=5, errors=0)
    kube.patch_key(tenant, "rotated-usage", {"spec": {"rotation": {"counter": 1}}})
    rotated = kube.wait_status(
        tenant, "rotated-usage", lambda s: s.get("keyId") not in (None, first["keyId"]), what="rotated"
    )
    assert rotated["usage"]["requests"] == 5, "the operator's status writes keep usage"
    new = Plaintext(kube.plaintext(tenant, rotated["secretName"]))
    asyncio.run(spread([replica], new, [3]))
    asyncio.run(spread([replica], old, [2]))
    wait_usage(kube, tenant, "rotated-usage", requests=10, errors=0)


VERIFIER_RULES = [
    {
        "apiGroups": ["penguinmails.io"],
        "resources": ["tenantapikeys", "tenantplans"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["penguinmails.io"], "resources": ["tenantapikeys/status"], "verbs": ["patch"]},
]
#: The usage ledgers, in the verifier's own namespace (a Role there in the chart).
LEDGER_RULES = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]}]


def verifier_kubeconfig(env: LocalEnvironment, kube: Kube, *, rules: list[dict]) -> Path:
    """A kubeconfig for the pmkeys-verifier ServiceAccount, bound to exactly ``rules``."""
    name = f"pmkeys-verifier-{secrets.token_hex(3)}"
    rbac = client.RbacAuthorizationV1Api(kube.api)
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "pmkeys-verifier", "namespace": "pmkeys-system"}],
        }
    )
    token = bootstrap.token(kube.api, "pmkeys-verifier")
    return env.kubeconfig_for_token(token, env.workdir / f"{name}.kubeconfig")


def test_the_documented_rbac_is_enough(verifiers: Verifiers, env: LocalEnvironment, kube: Kube, tenant: str) -> None:
    """get/list/watch tenantapikeys and tenantplans, patch their status, and the ledger
    ConfigMaps: watch and usage both work."""
    kubeconfig = verifier_kubeconfig(env, kube, rules=VERIFIER_RULES + LEDGER_RULES)
    replica = verifiers.start(PMKEYS_KUBECONFIG=str(kubeconfig))
    plaintext, _ = issue(kube, tenant, "least-privilege")
    asyncio.run(spread([replica], plaintext, [3]))
    wait_usage(kube, tenant, "least-privilege", requests=3, errors=0)
    kube.patch_key(tenant, "least-privilege", {"spec": {"revoked": True}})
    kube.wait_status(tenant, "least-privilege", lambda s: s.get("phase") == "Revoked", what="revoked")
    assert replica.verify(plaintext, "send_email").status_code == 401


def test_usage_a_replica_cannot_write_reaches_status_through_redis(
    verifiers: Verifiers, redis_server: RedisServer, env: LocalEnvironment, kube: Kube, tenant: str
) -> None:
    """A replica whose status writes fail puts its counts back into Redis; another writes them."""
    read_only = verifier_kubeconfig(env, kube, rules=VERIFIER_RULES[:1])
    crippled = verifiers.start(redis=redis_server, PMKEYS_KUBECONFIG=str(read_only))
    healthy = verifiers.start(redis=redis_server)
    plaintext, _ = issue(kube, tenant, "handed-over", tier="pro")
    asyncio.run(spread([crippled, healthy], plaintext, [12, 3]))
    wait_usage(kube, tenant, "handed-over", requests=15, errors=0, timeout=20)
    crippled.proc.kill()
    asyncio.run(spread([healthy], plaintext, [2]))
    wait_usage(kube, tenant, "handed-over", requests=17, errors=0)
