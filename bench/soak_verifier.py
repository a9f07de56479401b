"""Soak: two verifier replicas sharing Redis under a fixed load for ten minutes.

Starts a local environment, the operator, Redis and two verifiers (as separate processes,
Vault through the Kubernetes auth method), issues K enterprise keys, then sends a fixed,
open-loop rate of gateway checks (``/v1/authz``, as nginx or Envoy would) to both replicas,
below every key's rate limit so that every answer should be 200. Reports errors (anything but
a 2xx), latency percentiles per replica (measured from when each request was due), and the
verifiers' RSS at minute 2 and at the end. The load generator is bench/verify.py's.

    python bench/soak_verifier.py [--seconds 600] [--rps 200] [--keys 20]

Last line: seconds=600 requests=120000 errors=0 p50_ms=0.1 p99_ms=2.0 rss_min2_mb=160 rss_end_mb=161 growth_pct=0.5
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.kubeclient import api_client
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import free_port
from pmkeys_dev.redis import RedisServer
from procstat import rss_mb, stop_servers_on_sigterm  # bench/procstat.py
from verify import ROUTES, gateway_request, run_load  # bench/verify.py, beside this script


def issue_keys(api: client.ApiClient, count: int) -> list[str]:
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    bootstrap.tenant_namespace(api, "soak", "soak")
    for i in range(count):
        body = {
            "apiVersion": v.API_VERSION,
            "kind": v.KIND,
            "metadata": {"name": f"soak-{i}", "namespace": "soak"},
            "spec": {"tenant": "soak", "tier": "enterprise", "scopes": ["send_email"]},
        }
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


def soak(ports: list[int], keys: list[str], rps: float, seconds: float) -> list[dict[str, float]]:
    """Open-loop load on every replica at once (the raw HTTP load generator of bench/verify.py,
    one process per replica), sampling the verifiers' RSS at minute 2 meanwhile."""
    requests = [gateway_request(k) for k in keys]
    with ThreadPoolExecutor(len(ports)) as pool:
        futures = [
            pool.submit(run_load, kind="open", port=port, requests=requests, rate=rps / len(ports), seconds=seconds)
            for port in ports
        ]
        return [f.result() for f in futures]


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
        verifiers, ports = [], []
        for name in ("verifier-a", "verifier-b"):
            port = free_port()
            ports.append(port)
            verifiers.append(
                env.start_component(
                    "verifier",
                    name=name,
                    ready_url=f"http://127.0.0.1:{port}/readyz",
                    PMKEYS_PORT=str(port),
                    PMKEYS_REDIS_URL=redis.url,
                    PMKEYS_LOG_LEVEL="WARNING",
                    PMKEYS_ROUTES=json.dumps(ROUTES),
                )
            )
        print(
            f"{args.keys} keys issued; two verifiers sharing Redis; {args.rps:.0f} req/s for {args.seconds:.0f}s",
            flush=True,
        )

        # Warm-up: each replica's first use of a key costs a Vault read and a bcrypt (cost 12);
        # the soak measures the steady state after it (bench/verify.py measures the cold path).
        for port in ports:
            for key in keys:
                httpx.get(
                    f"http://127.0.0.1:{port}/v1/authz/v1/messages",
                    timeout=30,
                    headers={"X-API-Key": key, "X-Original-Method": "POST"},
                ).raise_for_status()
        with ThreadPoolExecutor(1) as sampler:
            future = sampler.submit(soak, ports, keys, args.rps, args.seconds)
            time.sleep(min(120.0, args.seconds / 5))
            rss_at_2min = [rss_mb(p.pid or 0) for p in verifiers]
            results = future.result()
        rss_end = [rss_mb(p.pid or 0) for p in verifiers]
        requests = sum(int(r["achieved_rps"] * args.seconds) for r in results)
        errors = sum(int(r["errors"]) for r in results)
        for port, r in zip(ports, results, strict=True):
            print(
                f"  replica :{port}: {r['achieved_rps']:.0f} req/s achieved, p50 {r['p50_ms']:.2f} ms, "
                f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']:.0f}",
                flush=True,
            )
        start_mb, end_mb = sum(rss_at_2min), sum(rss_end)
        growth = (end_mb - start_mb) / start_mb * 100
        p50 = max(r["p50_ms"] for r in results)
        p99 = max(r["p99_ms"] for r in results)
        print(
            f"seconds={args.seconds:.0f} requests={requests} errors={errors} p50_ms={p50:.2f} p99_ms={p99:.2f} "
            f"rss_min2_mb={start_mb:.0f} rss_end_mb={end_mb:.0f} growth_pct={growth:.1f}"
        )
    finally:
        env.stop()
        redis.cleanup()
        env.cleanup()


if __name__ == "__main__":
    stop_servers_on_sigterm()
    main()
