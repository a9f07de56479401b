"""The operator with tens of thousands of keys: idle CPU, memory, restart-to-settled; and the
verifier's memory with all of them cached.

Creates N TenantApiKeys (default 20,000; rotation every 90 days, so every key has a timer
pending), waits until all are Active, then measures:

* idle CPU — the operator's CPU use over a quiet window while nothing is due (one heap and one
  sleeping task for all timers, no per-object polling);
* peak RSS of the operator;
* restart-to-settled — the operator is restarted and every object reconciled again; keys that
  are consistent must cost no bcrypt at all, which the operator's own bcrypt counter shows;
* the verifier's RSS once it has verified (and so cached) every one of the N keys.

Bars (issue 16): restart-to-settled < 60 s with 0 bcrypt calls, peak RSS < 600 MB, idle CPU < 1%
of a core; verifier RSS with 20,000 keys cached < 300 MB.

Issuance speed is not measured here (see issue_keys.py), so bcrypt runs at cost 4 to create
the keys quickly; resume cost does not depend on it, since consistent keys are never hashed.

    python bench/operator_scale.py [--keys 20000] [--idle-seconds 60]

Last line: keys=20000 idle_cpu_pct=… peak_rss_mb=… restart_settled_s=… resume_bcrypt=0 verifier_rss_mb=…
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.kubeclient import api_client
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess, free_port
from procstat import cpu_seconds, peak_rss_mb, rss_mb, stop_servers_on_sigterm  # bench/procstat.py

NAMESPACES = 10


def metric(url: str, name: str) -> float:
    text = httpx.get(url, timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"{name}(\{{.*\}})? ", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_operator(env: LocalEnvironment, name: str) -> tuple[ServerProcess, str]:
    port = free_port()
    proc = env.start_component(
        "operator", name=name, PMKEYS_BCRYPT_COST="4", PMKEYS_LOG_LEVEL="WARNING", PMKEYS_METRICS_PORT=str(port)
    )
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    return proc, url


def wait_reconciled(url: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while metric(url, "pmkeys_operator_reconcile_duration_seconds_count") < count:
        if time.monotonic() > deadline:
            raise SystemExit("the operator did not reconcile every key in time")
        time.sleep(0.2)


def verifier_with_all_cached(env: LocalEnvironment, api: client.ApiClient, count: int) -> float:
    """Start a verifier, send it every key once (each is then cached), return its RSS in MB."""
    managed = (
        client.CoreV1Api(api)
        .list_secret_for_all_namespaces(label_selector=f"{v.MANAGED_BY_LABEL}={v.MANAGED_BY_VALUE}")
        .items
    )
    keys = [base64.b64decode(s.data[v.SECRET_DATA_KEY]).decode() for s in managed if s.data]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = secrets.token_urlsafe(32)
    proc = env.start_component(
        "verifier",
        name="verifier",
        ready_url=f"{url}/readyz",
        PMKEYS_PORT=str(port),
        PMKEYS_LOG_LEVEL="WARNING",
        PMKEYS_CACHE_TTL="86400",  # every key stays cached while the others are sent
        PMKEYS_CALLER_TOKENS=json.dumps({"bench": token}),
    )

    async def send_all() -> int:
        sem = asyncio.Semaphore(32)
        headers = {"X-Pmkeys-Caller-Token": token}
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as http:

            async def one(key: str) -> int:
                async with sem:
                    while True:
                        status = (await http.post("/v1/verify", json={"key": key, "scope": "send_email"})).status_code
                        if status != 503:  # busy: the bcrypt queue is full, come back
                            return status
                        await asyncio.sleep(0.5)

            return sum(1 for s in await asyncio.gather(*(one(k) for k in keys)) if s == 200)

    try:
        allowed = asyncio.run(send_all())
        if allowed < count:
            print(f"note: only {allowed} of {count} keys were verified", flush=True)
        cached = metric(f"{url}/metrics", "pmkeys_verifier_cache_entries")
        print(f"verifier: {allowed} keys allowed, {cached:.0f} cached", flush=True)
        return rss_mb(proc.pid or 0)
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--idle-seconds", type=float, default=60)
    args = parser.parse_args()
    env = LocalEnvironment()
    try:
        env.start()
        api = api_client(str(env.kubeconfig))
        custom = client.CustomObjectsApi(api)
        namespaces = [f"scale-{i}" for i in range(NAMESPACES)]
        for ns in namespaces:
            bootstrap.tenant_namespace(api, ns, ns)
        operator, url = start_operator(env, "operator-1")

        def create(i: int) -> None:
            ns = namespaces[i % NAMESPACES]
            body = {
                "apiVersion": v.API_VERSION,
                "kind": v.KIND,
                "metadata": {"name": f"key-{i:05d}", "namespace": ns},
                "spec": {"tenant": ns, "scopes": ["send_email"], "rotation": {"interval": "90d"}},
            }
            custom.create_namespaced_custom_object(v.GROUP, v.VERSION, ns, v.PLURAL, body)

        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(args.keys)))
        wait_reconciled(url, args.keys, timeout=args.keys)
        while True:
            items = custom.list_cluster_custom_object(v.GROUP, v.VERSION, v.PLURAL)["items"]
            if sum((o.get("status") or {}).get("phase") == "Active" for o in items) >= args.keys:
                break
            time.sleep(1)
        print(f"{args.keys} keys Active after {time.perf_counter() - started:.1f}s", flush=True)

        time.sleep(5)  # let the last status patches and Events drain
        pid = operator.pid or 0
        before = cpu_seconds(pid)
        time.sleep(args.idle_seconds)
        idle_pct = (cpu_seconds(pid) - before) / args.idle_seconds * 100
        rss = peak_rss_mb(pid)
        print(
            f"idle: operator used {idle_pct:.2f}% of one core over {args.idle_seconds:.0f}s; peak RSS {rss:.0f} MB",
            flush=True,
        )

        operator.stop()
        restarted = time.perf_counter()
        operator, url = start_operator(env, "operator-2")
        wait_reconciled(url, args.keys, timeout=300)
        settled = time.perf_counter() - restarted
        bcrypt_calls = metric(url, "pmkeys_operator_bcrypt_operations")
        rss2 = peak_rss_mb(operator.pid or 0)
        print(
            f"restart: every key reconciled {settled:.1f}s after the restart, with {bcrypt_calls:.0f} bcrypt "
            f"calls; peak RSS {rss2:.0f} MB",
            flush=True,
        )
        verifier_rss = verifier_with_all_cached(env, api, args.keys)
        print(f"verifier: RSS {verifier_rss:.0f} MB with {args.keys} keys cached (bar < 300 MB)", flush=True)
        print(
            f"keys={args.keys} idle_cpu_pct={idle_pct:.2f} peak_rss_mb={max(rss, rss2):.0f} "
            f"restart_settled_s={settled:.1f} resume_bcrypt={bcrypt_calls:.0f} verifier_rss_mb={verifier_rss:.0f}"
        )
    finally:
        env.stop()
        env.cleanup()


if __name__ == "__main__":
    stop_servers_on_sigterm()
    main()
