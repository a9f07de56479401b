"""Usage writes at scale, against the real API server, operator, OpenBao and Redis.

What a user (and the cluster's operator) notices: counts that match the requests sent, in the
ledgers within an interval and in ``status.usage`` (what ``kubectl get tak``, the UI and the
plugin show) within the status write budget; API-server writes bounded by the number of ledger
shards and that budget, not by the number of keys or replicas; and no reconcile caused by any of it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import threading
import time
from typing import Any

import httpx
import pytest
from kubernetes import client, watch

from pmkeys.api import vocabulary as v
from pmkeys.verify.usage_ledgers import SHARD_LABEL, decode
from pmkeys_dev.redis import RedisServer
from tests import leakscan
from tests.builders import key
from tests.kube import Kube, wait_for
from tests.verifier.conftest import CALLER_HEADERS, Plaintext, VerifierProcess, Verifiers

pytestmark = [pytest.mark.integration]
KEYS = 24
SHARDS = 4
STATUS_WRITES_PER_SECOND = 4


@pytest.fixture
def ledger_namespace(kube: Kube) -> str:
    name = f"ledgers-{secrets.token_hex(3)}"
    client.CoreV1Api(kube.api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def many_keys(kube: Kube, tenant: str) -> dict[str, Plaintext]:
    for n in range(KEYS):
        kube.create_key(key(f"k{n:02d}", tenant, tier="enterprise"))
    found: dict[str, Plaintext] = {}
    for n in range(KEYS):
        status = kube.wait_phase(tenant, f"k{n:02d}", "Active", timeout=60)
        found[f"k{n:02d}"] = Plaintext(kube.plaintext(tenant, status["secretName"]))
    return found


class EventCounter:
    """Counts watch events of one kind in one namespace, as any watcher (operator, verifier)
    receives them."""

    def __init__(self, api: client.ApiClient, namespace: str, *, ledgers: bool) -> None:
        self.events = 0
        self._stop = threading.Event()
        if ledgers:
            lister: Any = client.CoreV1Api(api).list_namespaced_config_map
            args: tuple[Any, ...] = (namespace,)
        else:
            lister = client.CustomObjectsApi(api).list_namespaced_custom_object
            args = (v.GROUP, v.VERSION, namespace, v.PLURAL)
        version = (
            lister(*args)["metadata"]["resourceVersion"] if not ledgers else lister(*args).metadata.resource_version
        )
        self._thread = threading.Thread(target=self._run, args=(lister, args, version), daemon=True)
        self._thread.start()

    def _run(self, lister: Any, args: tuple[Any, ...], version: str) -> None:
        stream = watch.Watch()
        while not self._stop.is_set():
            for event in stream.stream(lister, *args, resource_version=version, timeout_seconds=1):
                if event["type"] in ("ADDED", "MODIFIED"):
                    self.events += 1
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"] if isinstance(obj, dict) else obj.metadata.resource_version
                if self._stop.is_set():
                    break

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.events


def reconciles() -> float:
    text = httpx.get(leakscan.METRICS_URLS[0], timeout=5).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("pmkeys_operator_reconcile_duration_seconds_count")
    )


async def send(replicas: list[VerifierProcess], plans: dict[Plaintext, int]) -> None:
    """plans[key] allowed requests for each key, spread over the replicas, concurrently."""

    async def one_key(plaintext: Plaintext, count: int, http: list[httpx.AsyncClient]) -> None:
        for n in range(count):
            response = await http[n % len(http)].post("/v1/verify", json={"key": plaintext, "scope": "send_email"})
            assert response.status_code == 200, response.text

    clients = [httpx.AsyncClient(base_url=r.url, timeout=20, headers=CALLER_HEADERS) for r in replicas]
    try:
        await asyncio.gather(*(one_key(k, c, clients) for k, c in plans.items()))
    finally:
        for http in clients:
            await http.aclose()


def ledger_totals(kube: Kube, namespace: str) -> dict[str, tuple[int, int]]:
    maps = client.CoreV1Api(kube.api).list_namespaced_config_map(namespace, label_selector=SHARD_LABEL).items
    return {t.name: (t.requests, t.errors) for cm in maps for t in decode(cm.data).values()}


def test_usage_of_many_keys_is_exact_with_bounded_writes_and_no_reconcile(
    verifiers: Verifiers,
    redis_server: RedisServer,
    kube: Kube,
    tenant: str,
    ledger_namespace: str,
    many_keys: dict[str, Plaintext],
) -> None:
    settings = {
        "PMKEYS_USAGE_NAMESPACE": ledger_namespace,
        "PMKEYS_USAGE_SHARDS": str(SHARDS),
        "PMKEYS_USAGE_STATUS_WRITES_PER_SECOND": str(STATUS_WRITES_PER_SECOND),
        "PMKEYS_REDIS_PREFIX": f"t{secrets.token_hex(3)}",
    }
    replicas = [verifiers.start(redis=redis_server, **settings) for _ in range(2)]
    plans = {plaintext: 3 + n % 5 for n, plaintext in enumerate(many_keys.values())}
    sent = {name: 3 + n % 5 for n, name in enumerate(many_keys)}
    before = reconciles()
    assert before >= KEYS, "the operator's reconcile count is readable (it issued these keys)"
    key_events = EventCounter(kube.api, tenant, ledgers=False)
    ledger_events = EventCounter(kube.api, ledger_namespace, ledgers=True)
    started = time.monotonic()
    asyncio.run(send(replicas, plans))
    last_request = time.time()

    wait_for(
        lambda: ledger_totals(kube, ledger_namespace) == {n: (c, 0) for n, c in sent.items()},
        timeout=15,
        what="ledgers exact",
    )
    ledgers_done = time.monotonic() - started

    def status_exact() -> bool:
        usage = {n: (kube.status(tenant, n).get("usage") or {}) for n in many_keys}
        return all(u.get("requests") == sent[n] and u.get("errors") == 0 for n, u in usage.items())

    wait_for(status_exact, timeout=60, interval=0.5, what="status.usage exact")
    elapsed = time.monotonic() - started
    status_writes = key_events.stop()
    ledger_writes = ledger_events.stop()

    assert ledgers_done < 10, f"ledgers took {ledgers_done:.1f}s (flush interval 1s)"
    # Every object's copy was written, and never more than the budget per second.
    assert KEYS <= status_writes <= STATUS_WRITES_PER_SECOND * (elapsed + 1) + 1, (status_writes, elapsed)
    assert ledger_writes <= SHARDS * (elapsed + 2), (ledger_writes, elapsed)
    # The session's operator also reconciles other tests' objects meanwhile (their timers), so the
    # count is not frozen; a reconcile per usage write would add at least one per status copy.
    extra = reconciles() - before
    assert extra < min(KEYS, status_writes), f"usage writes made the operator reconcile ({extra} reconciles)"
    for name in many_keys:
        last = dt.datetime.fromisoformat(kube.status(tenant, name)["usage"]["lastUsedAt"].replace("Z", "+00:00"))
        assert 0 <= last_request - last.timestamp() < 60, (name, last)


def test_usage_counted_before_the_ledgers_is_kept(
    verifiers: Verifiers, kube: Kube, tenant: str, ledger_namespace: str
) -> None:
    """An object whose status.usage was written the old way (or restored) keeps its counts."""
    kube.create_key(key("upgraded", tenant))
    status = kube.wait_phase(tenant, "upgraded", "Active")
    plaintext = Plaintext(kube.plaintext(tenant, status["secretName"]))
    earlier = {"requests": 100, "errors": 7, "lastUsedAt": "2026-01-01T00:00:00Z"}
    client.CustomObjectsApi(kube.api).patch_namespaced_custom_object_status(
        v.GROUP, v.VERSION, tenant, v.PLURAL, "upgraded", {"status": {"usage": earlier}}
    )
    replica = verifiers.start(PMKEYS_USAGE_NAMESPACE=ledger_namespace)
    asyncio.run(send([replica], {plaintext: 3}))
    usage = kube.wait_status(
        tenant, "upgraded", lambda s: (s.get("usage") or {}).get("requests") == 103, timeout=20, what="103 requests"
    )["usage"]
    assert usage["errors"] == 7
    assert usage["lastUsedAt"] > "2026-01-01T00:00:00Z"
    assert ledger_totals(kube, ledger_namespace) == {"upgraded": (103, 7)}


def test_a_deleted_key_leaves_the_ledgers(verifiers: Verifiers, kube: Kube, tenant: str, ledger_namespace: str) -> None:
    """Deleting a TenantApiKey removes its usage from the ledgers (they do not grow with every
    key that ever existed); other keys' counts are untouched."""
    plaintexts = {}
    for name in ("kept", "deleted"):
        kube.create_key(key(name, tenant))
        status = kube.wait_phase(tenant, name, "Active")
        plaintexts[name] = Plaintext(kube.plaintext(tenant, status["secretName"]))
    replica = verifiers.start(PMKEYS_USAGE_NAMESPACE=ledger_namespace, PMKEYS_USAGE_SHARDS="1")
    asyncio.run(send([replica], {plaintexts["kept"]: 2, plaintexts["deleted"]: 3}))
    wait_for(lambda: ledger_totals(kube, ledger_namespace) == {"kept": (2, 0), "deleted": (3, 0)}, what="both counted")
    kube.delete_key(tenant, "deleted")
    wait_for(lambda: kube.key_gone(tenant, "deleted"), what="deleted")
    asyncio.run(send([replica], {plaintexts["kept"]: 1}))
    wait_for(lambda: ledger_totals(kube, ledger_namespace) == {"kept": (3, 0)}, timeout=20, what="deleted key gone")
