"""How fast the operator issues keys, against the bound bcrypt sets.

Starts a local environment and the operator (bcrypt cost 12, the production value), applies N
TenantApiKeys at once and waits until every one is Active. Issuance is dominated by bcrypt,
so the figure that matters is the ratio of keys/s to the bcrypt bound (cores / seconds per
hash), both measured in this run on this machine. Also reports the operator's peak RSS.

    python bench/issue_keys.py [--keys 200] [--cost 12]

The last line is machine-readable:
    keys=200 keys_per_s=5.1 bound_per_s=6.2 ratio=0.82 peak_rss_mb=140
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt
from kubernetes import client, watch

from pmkeys.api import vocabulary as v
from pmkeys.kubeclient import api_client
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from procstat import cpu_seconds, machine_busy_seconds, peak_rss_mb, stop_servers_on_sigterm  # bench/procstat.py


def seconds_per_hash(cost: int, rounds: int = 4) -> float:
    salt = bcrypt.gensalt(cost)
    started = time.perf_counter()
    for i in range(rounds):
        bcrypt.hashpw(f"pm_live_{i:032d}".encode(), salt)
    return (time.perf_counter() - started) / rounds


def manifest(i: int, namespace: str) -> dict[str, object]:
    return {
        "apiVersion": v.API_VERSION,
        "kind": v.KIND,
        "metadata": {"name": f"bench-{i:04d}", "namespace": namespace},
        "spec": {"tenant": namespace, "scopes": ["send_email"], "tier": "pro"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--cost", type=int, default=12)
    args = parser.parse_args()
    cores = os.cpu_count() or 1

    env = LocalEnvironment()
    try:
        env.start()
        api = api_client(str(env.kubeconfig))
        bootstrap.tenant_namespace(api, "bench", "bench")
        operator = env.start_component("operator", PMKEYS_BCRYPT_COST=str(args.cost), PMKEYS_LOG_LEVEL="WARNING")
        custom = client.CustomObjectsApi(api)
        time.sleep(2)  # let the operator finish its start-up before the clock starts
        per_hash = seconds_per_hash(args.cost)
        bound = cores / per_hash
        print(
            f"bcrypt cost {args.cost}: {per_hash * 1000:.0f} ms per hash on one core; bound {bound:.2f} keys/s "
            f"on {cores} cores",
            flush=True,
        )

        processes = {p.name: p.pid for p in [*env.controlplane.processes, env.openbao.process, operator] if p and p.pid}
        cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        busy_before = machine_busy_seconds()
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: custom.create_namespaced_custom_object(
                        v.GROUP, v.VERSION, "bench", v.PLURAL, manifest(i, "bench")
                    ),
                    range(args.keys),
                )
            )
        applied = time.perf_counter() - started
        # A watch, not polling: listing 200 objects a few times a second would load the API
        # server (and this process) with work the operator is not responsible for.
        active: set[str] = set()
        deadline = args.keys * per_hash * 4 + 60
        stream = watch.Watch().stream(
            custom.list_namespaced_custom_object, v.GROUP, v.VERSION, "bench", v.PLURAL, timeout_seconds=int(deadline)
        )
        for event in stream:
            obj = event["object"]
            if (obj.get("status") or {}).get("phase") == "Active":
                active.add(obj["metadata"]["name"])
            if len(active) == args.keys:
                break
        if len(active) < args.keys:
            raise SystemExit(f"only {len(active)}/{args.keys} keys Active in time")
        elapsed = time.perf_counter() - started
        rate = args.keys / elapsed
        # Measure the bound again and use the mean, so that a change of load during the run
        # shows up in both figures rather than only in one.
        per_hash = (per_hash + seconds_per_hash(args.cost)) / 2
        bound = cores / per_hash
        rss = peak_rss_mb(operator.pid or 0)
        used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in processes.items()}
        busy = machine_busy_seconds() - busy_before
        others = busy - sum(used.values())
        print(
            "CPU seconds during the run: "
            + ", ".join(f"{k} {val:.1f}" for k, val in used.items())
            + f", everything else on the machine {others:.1f} (of {cores * elapsed:.0f} available)",
            flush=True,
        )
        print(f"applied {args.keys} TenantApiKeys in {applied:.1f}s; all Active after {elapsed:.1f}s", flush=True)
        print(
            f"keys={args.keys} keys_per_s={rate:.2f} bound_per_s={bound:.2f} ratio={rate / bound:.2f} "
            f"peak_rss_mb={rss:.0f}"
        )
    finally:
        env.stop()
        env.cleanup()


if __name__ == "__main__":
    stop_servers_on_sigterm()
    main()
