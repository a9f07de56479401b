"""Soak: two verifier replicas sharing Redis under a fixed load for ten minutes.

Starts a local environment, the operator, Redis and two verifiers (as separate processes,
Vault through the Kubernetes auth method), issues K enterprise keys, then sends a fixed,
open-loop request rate to ``POST /v1/verify`` alternating between the replicas, below every
key's rate limit so that every answer should be 200/allowed. Reports errors (anything but an
allowed 200, including transport errors), latency percentiles per minute and overall, and the
verifiers' RSS at minute 2 and at the end.

    python bench/soak_verifier.py [--seconds 600] [--rps 200] [--keys 20]

Last line: seconds=600 requests=120000 errors=0 p50_ms=1.1 p99_ms=4.0 rss_min2_mb=80 rss_end_mb=81 growth_pct=1.2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import time
from pathlib import Path

import httpx
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.devenv import bootstrap
from pmkeys.devenv.environment import LocalEnvironment
from pmkeys.devenv.processes import free_port
from pmkeys.devenv.redis import RedisServer
from pmkeys.kubeclient import api_client


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def issue_keys(api: client.ApiClient, count: int) -> list[str]:
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    bootstrap.tenant_namespace(api, "soak", "soak")
    for i in range(count):
        body = {"apiVersion": v.API_VERSION, "kind": v.KIND, "metadata": {"name": f"soak-{i}", "namespace": "soak"},
                "spec": {"tenant": "soak", "tier": "enterprise", "scopes": ["send_email"]}}
        custom.create_namespaced_custom_object(v.GROUP, v.VERSION, "soak", v.PLURAL, body)
    keys = []
    for i in range(count):
        while True:
            try:
                secret = core.read_namespaced_secret(f"soak-{i}", "soak")
            except client.ApiException:
                time.sleep(0.2)
                continue
            keys.append(base64.b64decode(secret.data[v.SECRET_DATA_KEY]).decode())
            break
    return keys


async def load(urls: list[str], keys: list[str], rps: float, seconds: float) -> list[tuple[float, float, bool]]:
    """Open-loop load: request i is sent at start + i/rps whatever happened before."""
    results: list[tuple[float, float, bool]] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        start = time.perf_counter()
        tasks = []

        async def one(i: int) -> None:
            sent = time.perf_counter()
            ok = False
            try:
                response = await http.post(f"{urls[i % len(urls)]}/v1/verify",
                                           json={"key": keys[i % len(keys)], "scope": "send_email"})
                ok = response.status_code == 200 and response.json().get("allowed") is True
            except httpx.HTTPError:
                ok = False
            results.append((sent - start, time.perf_counter() - sent, ok))

        total = int(rps * seconds)
        for i in range(total):
            delay = start + i / rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
            if len(tasks) > 2000:
                tasks = [t for t in tasks if not t.done()]
        await asyncio.gather(*tasks)
    return results


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rps", type=float, default=200)
    parser.add_argument("--keys", type=int, default=20)
    args = parser.parse_args()
    env = LocalEnvironment()
    redis = RedisServer()
    try:
        env.start()
        redis.start()
        api = api_client(str(env.kubeconfig))
        env.start_component("operator", PMKEYS_BCRYPT_COST="12", PMKEYS_LOG_LEVEL="WARNING")
        keys = issue_keys(api, args.keys)
        verifiers, urls = [], []
        for name in ("verifier-a", "verifier-b"):
            port = free_port()
            urls.append(f"http://127.0.0.1:{port}")
            verifiers.append(env.start_component(
                "verifier", name=name, ready_url=f"{urls[-1]}/readyz", PMKEYS_PORT=str(port),
                PMKEYS_REDIS_URL=redis.url, PMKEYS_LOG_LEVEL="WARNING"))
        print(f"{args.keys} keys issued; two verifiers sharing Redis; {args.rps:.0f} req/s for {args.seconds:.0f}s",
              flush=True)

        rss_at_2min: list[float] = []

        async def sample_rss() -> None:
            await asyncio.sleep(min(120.0, args.seconds / 5))
            rss_at_2min.extend(rss_mb(p.pid or 0) for p in verifiers)

        async def run() -> list[tuple[float, float, bool]]:
            sampler = asyncio.create_task(sample_rss())
            results = await load(urls, keys, args.rps, args.seconds)
            await sampler
            return results

        results = asyncio.run(run())
        rss_end = [rss_mb(p.pid or 0) for p in verifiers]
        latencies = [r[1] * 1000 for r in results]
        errors = sum(1 for r in results if not r[2])
        for minute in range(int(args.seconds // 60) or 1):
            window = [r[1] * 1000 for r in results if minute * 60 <= r[0] < (minute + 1) * 60]
            if window:
                print(f"  minute {minute + 1}: {len(window)} requests, p50 {percentile(window, 0.5):.1f} ms, "
                      f"p99 {percentile(window, 0.99):.1f} ms", flush=True)
        start_mb, end_mb = sum(rss_at_2min), sum(rss_end)
        growth = (end_mb - start_mb) / start_mb * 100
        print(f"seconds={args.seconds:.0f} requests={len(results)} errors={errors} "
              f"p50_ms={percentile(latencies, 0.5):.2f} p99_ms={percentile(latencies, 0.99):.2f} "
              f"rss_min2_mb={start_mb:.0f} rss_end_mb={end_mb:.0f} growth_pct={growth:.1f}")
    finally:
        env.stop()
        redis.cleanup()
        env.cleanup()


if __name__ == "__main__":
    main()
