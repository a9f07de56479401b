"""Usage at scale: N keys with traffic on all of them, two verifier replicas sharing Redis.

Starts a local environment, Redis, N keys (bench/keyfarm.py; bcrypt cost 4 at rest by default:
this bench measures usage, not proof of possession) and two verifier replicas with the default
usage settings (flush every 10 s, 16 ledgers, 10 status copies per second). Traffic runs on every
key in turn through both replicas for ``--seconds``, from ``--workers`` clients. A watch on
TenantApiKeys counts the events every watcher of them (the operator, each verifier) receives.

Figures:

* API-server write requests per second caused by usage, from the API server's own
  ``apiserver_request_total`` (bar: ≤ 20/s at 10,000 active keys): ledger writes (ConfigMaps)
  and status copies (``tenantapikeys/status``);
* counts: each key's ledger totals against the 2xx answers it got (bar: exact), and how many
  ``status.usage`` copies are exact at the end (the copy budget bounds how fast they catch up);
* ``lastUsedAt`` lag: sampled during the run, how long the oldest answered request that a
  key's ledger (and its ``status.usage``) did not reflect yet had been waiting (bar: ≤ 60 s). Up
  to this change the bench reported the gap between a copy's ``lastUsedAt`` and the key's last
  request instead, which grows with how sparse each key's traffic is (≈ N / request rate: 22 s
  at 2,000 keys, ~300 s at 10,000 here) whether or not a flush is late;
* watch events on TenantApiKeys during the run (each is a wake-up of the operator and of every
  verifier; none of them a reconcile: tests/scale/test_usage_writes.py checks the operator's
  reconcile count).

    python bench/usage_at_scale.py [--keys 10000] [--seconds 300] [--workers 16]

Last line: keys=… writes_per_s=… ledger_writes_per_s=… status_writes_per_s=… ledger_exact=… …
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime as dt
import json
import re
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field

import httpx
from kubernetes import client, watch

from keyfarm import FarmKey, farm  # bench/keyfarm.py, beside this script
from pmkeys.api import vocabulary as v
from pmkeys.config import VaultSettings
from pmkeys.kubeclient import api_client
from pmkeys.vault.session import VaultSession
from pmkeys.vault.store import KeyStore
from pmkeys.verify.usage_ledgers import SHARD_LABEL, decode
from pmkeys_dev import binaries, bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.openbao import KV_MOUNT
from pmkeys_dev.processes import ServerProcess, free_port
from pmkeys_dev.redis import RedisServer
from procstat import machine_busy_seconds, rss_mb, stop_servers_on_sigterm  # bench/procstat.py

CALLER_TOKEN = secrets.token_urlsafe(32)
CALLER = {"X-Pmkeys-Caller-Token": CALLER_TOKEN}
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}
LEDGER_NAMESPACE = "pmkeys-system"


def api_writes(kubeconfig: str) -> dict[str, float]:
    """Write requests the API server has answered so far, by resource (its own metrics)."""
    text = subprocess.run(
        [str(binaries.built("kubectl")), "--kubeconfig", kubeconfig, "get", "--raw", "/metrics"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        name = labels.get("resource", "") + ("/" + labels["subresource"] if labels.get("subresource") else "")
        totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


@dataclass
class Truth:
    """What the clients saw: 2xx answers per key, and when each answered request was sent (the
    verifier stamps ``lastUsedAt`` after that moment, so a request is in a copy once the copy's
    ``lastUsedAt`` is at least its send time)."""

    answered: dict[str, int] = field(default_factory=dict)
    sent: dict[str, list[float]] = field(default_factory=dict)
    other: int = 0

    def count(self, key: FarmKey, status: int, sent: float) -> None:
        if status == 200:
            self.answered[key.uid] = self.answered.get(key.uid, 0) + 1
            bisect.insort(self.sent.setdefault(key.uid, []), sent)
        else:
            self.other += 1


class EventCounter:
    """Watch events on every TenantApiKey, as the operator's watch receives them."""

    def __init__(self, api: client.ApiClient) -> None:
        self.events = 0
        self._custom = client.CustomObjectsApi(api)
        self._stop = threading.Event()
        version = self._custom.list_cluster_custom_object(v.GROUP, v.VERSION, v.PLURAL, limit=1)["metadata"]
        self._thread = threading.Thread(target=self._run, args=(version["resourceVersion"],), daemon=True)
        self._thread.start()

    def _run(self, version: str) -> None:
        lister = self._custom.list_cluster_custom_object
        while not self._stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(
                lister, v.GROUP, v.VERSION, v.PLURAL, resource_version=version, timeout_seconds=5
            ):
                self.events += 1
                version = event["object"]["metadata"]["resourceVersion"]
                if self._stop.is_set():
                    break

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.events


def start_verifier(env: LocalEnvironment, redis: RedisServer, name: str) -> tuple[ServerProcess, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = env.start_component(
        "verifier",
        name=name,
        ready_url=f"{url}/readyz",
        PMKEYS_PORT=str(port),
        PMKEYS_REDIS_URL=redis.url,
        PMKEYS_LOG_LEVEL="WARNING",
        PMKEYS_FAILED_ATTEMPTS_PER_MINUTE="100000",
        PMKEYS_CALLER_TOKENS=json.dumps({"bench": CALLER_TOKEN}),
    )
    return proc, url


async def traffic(urls: list[str], keys: list[FarmKey], workers: int, seconds: float, truth: Truth) -> None:
    """Every key in turn, through the replicas in turn, until ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    sent = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while time.monotonic() < deadline:
            key, url = keys[sent % len(keys)], urls[sent % len(urls)]
            sent += 1
            try:
                at = time.time()
                response = await http.post(f"{url}/v1/verify", json={"key": key.plaintext, "scope": "send_email"})
                truth.count(key, response.status_code, at)
            except httpx.HTTPError:
                truth.other += 1

    async with httpx.AsyncClient(timeout=30, headers=CALLER) as http:
        await asyncio.gather(*(worker(http) for _ in range(workers)))


def ledger_view(core: client.CoreV1Api) -> dict[str, tuple[int, float]]:
    maps = core.list_namespaced_config_map(LEDGER_NAMESPACE, label_selector=SHARD_LABEL).items
    return {uid: (t.requests, t.last_used) for cm in maps for uid, t in decode(cm.data).items()}


def status_view(custom: client.CustomObjectsApi) -> dict[str, tuple[int, float]]:
    items = custom.list_cluster_custom_object(v.GROUP, v.VERSION, v.PLURAL)["items"]
    view = {}
    for obj in items:
        usage = (obj.get("status") or {}).get("usage") or {}
        last = usage.get("lastUsedAt")
        stamp = dt.datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp() if last else 0.0
        view[obj["metadata"]["uid"]] = (int(usage.get("requests") or 0), stamp)
    return view


def max_lag(truth: dict[str, list[float]], seen: dict[str, tuple[int, float]], now: float) -> float:
    """How long the oldest answered request not yet in a copy has been waiting, over all keys:
    ``now`` minus the send time of the first request after the copy's ``lastUsedAt`` (the age of
    the staleness, which the flush bounds; not the gap to the request before, which only says how
    sparse a key's traffic is). Keys with no copy at all yet count from their first request."""
    lags = []
    for uid, times in truth.items():
        first_missing = bisect.bisect_right(times, seen.get(uid, (0, 0.0))[1])
        if first_missing < len(times):
            lags.append(now - times[first_missing])
    return max(lags, default=0.0)


def uncopied(truth: dict[str, list[float]], seen: dict[str, tuple[int, float]]) -> int:
    return sum(1 for uid in truth if not seen.get(uid, (0, 0.0))[1])


def sample(api: client.ApiClient, truth: Truth, lags: dict[str, float]) -> None:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    now = time.time()
    snapshot = {uid: list(times) for uid, times in list(truth.sent.items())}
    ledger, status = ledger_view(core), status_view(custom)
    lags["ledger_last"] = max_lag(snapshot, ledger, now)
    lags["ledger"] = max(lags.get("ledger", 0.0), lags["ledger_last"])
    lags["status_last"] = max_lag(snapshot, status, now)
    lags["status"] = max(lags.get("status", 0.0), lags["status_last"])
    lags["ledger_missing"], lags["status_uncopied"] = uncopied(snapshot, ledger), uncopied(snapshot, status)


async def run(env: LocalEnvironment, api: client.ApiClient, keys: list[FarmKey], args: argparse.Namespace) -> None:
    redis = args.redis
    a, a_url = start_verifier(env, redis, "verifier-a")
    b, b_url = start_verifier(env, redis, "verifier-b")
    kubeconfig = str(env.kubeconfig)
    truth = Truth()
    lags: dict[str, float] = {}
    print("warm-up: every key once, through the replicas in turn", flush=True)
    warm = Truth()
    sem = asyncio.Semaphore(args.workers)
    async with httpx.AsyncClient(timeout=60, headers=CALLER) as http:

        async def once(n: int, key: FarmKey) -> None:
            async with sem:
                url = (a_url, b_url)[n % 2]
                at = time.time()
                response = await http.post(f"{url}/v1/verify", json={"key": key.plaintext, "scope": "send_email"})
                warm.count(key, response.status_code, at)
                truth.count(key, response.status_code, at)

        await asyncio.gather(*(once(n, k) for n, k in enumerate(keys)))
    print(f"warm-up answered {sum(warm.answered.values())} (non-2xx {warm.other})", flush=True)
    await asyncio.sleep(12)  # the warm-up's own flush

    before = api_writes(kubeconfig)
    events = EventCounter(api)
    busy_before = machine_busy_seconds()
    started = time.monotonic()
    load = asyncio.ensure_future(traffic([a_url, b_url], keys, args.workers, args.seconds, truth))
    while not load.done():
        await asyncio.sleep(args.sample_seconds)
        if not load.done():
            await asyncio.get_running_loop().run_in_executor(None, sample, api, truth, lags)
            shown = ", ".join(f"{k}={val:.0f}" for k, val in lags.items())
            print(f"  t={time.monotonic() - started:.0f}s lag (s) and keys not yet written: {shown}", flush=True)
    await load
    ran = time.monotonic() - started
    await asyncio.sleep(15)  # the last flush of both replicas
    elapsed = time.monotonic() - started
    after = api_writes(kubeconfig)
    watch_events = events.stop()
    busy = (machine_busy_seconds() - busy_before) / elapsed

    ledger = ledger_view(client.CoreV1Api(api))
    status = status_view(client.CustomObjectsApi(api))
    exact_ledger = sum(1 for uid, n in truth.answered.items() if ledger.get(uid, (0, 0.0))[0] == n)
    exact_status = sum(1 for uid, n in truth.answered.items() if status.get(uid, (0, 0.0))[0] == n)
    ledger_writes = after.get("configmaps", 0) - before.get("configmaps", 0)
    status_writes = after.get("tenantapikeys/status", 0) - before.get("tenantapikeys/status", 0)
    usage_writes = ledger_writes + status_writes
    all_writes = sum(after.values()) - sum(before.values())
    requests = sum(truth.answered.values())
    rss = [rss_mb(p.pid or 0) for p in (a, b)]
    a.stop()
    b.stop()
    print(
        f"traffic: {requests} answered 2xx over {ran:.0f}s ({requests / ran:.0f}/s) on {len(truth.answered)} keys, "
        f"{truth.other} not 2xx; machine busy {busy:.2f} of 2 cores meanwhile",
        flush=True,
    )
    print(
        f"API-server writes from usage: {usage_writes:.0f} in {elapsed:.0f}s = {usage_writes / elapsed:.2f}/s "
        f"(bar ≤ 20/s): ledgers {ledger_writes:.0f}, status copies {status_writes:.0f}; all writes "
        f"{all_writes:.0f} ({after})",
        flush=True,
    )
    print(
        f"counts: ledger exact for {exact_ledger} of {len(truth.answered)} keys (bar: all); status.usage exact for "
        f"{exact_status} (copies catch up at 10/s: {len(truth.answered) / 10:.0f}s for all)",
        flush=True,
    )
    print(
        f"lastUsedAt lag (max over samples and keys): ledger {lags.get('ledger', 0):.0f}s (bar ≤ 60 s), "
        f"status {lags.get('status', 0):.0f}s; TenantApiKey watch events {watch_events}; verifier RSS {rss}",
        flush=True,
    )
    print(
        f"keys={len(keys)} seconds={ran:.0f} requests={requests} non2xx={truth.other} "
        f"writes_per_s={usage_writes / elapsed:.2f} ledger_writes_per_s={ledger_writes / elapsed:.2f} "
        f"status_writes_per_s={status_writes / elapsed:.2f} ledger_exact={exact_ledger} "
        f"status_exact={exact_status} ledger_lag_s={lags.get('ledger', 0):.0f} "
        f"status_lag_s={lags.get('status', 0):.0f} watch_events={watch_events} "
        f"verifier_rss_mb={max(rss):.0f} machine_busy_cores={busy:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--cost", type=int, default=4, help="bcrypt cost of the records at rest")
    parser.add_argument("--sample-seconds", type=float, default=30)
    args = parser.parse_args()
    env = LocalEnvironment()
    args.redis = RedisServer()
    try:
        env.start()
        args.redis.start()
        store = KeyStore(
            VaultSession(
                VaultSettings(
                    addr=env.openbao.url, token=env.openbao.root_token, kv_mount=KV_MOUNT, prefix=bootstrap.VAULT_PREFIX
                )
            )
        )
        api = api_client(str(env.kubeconfig))
        started = time.perf_counter()
        keys = farm(api, store, args.keys, cost=args.cost)
        print(f"{len(keys)} keys in {time.perf_counter() - started:.0f}s", flush=True)
        asyncio.run(run(env, api, keys, args))
    finally:
        args.redis.cleanup()
        env.stop()
        env.cleanup()


if __name__ == "__main__":
    stop_servers_on_sigterm()
    main()
