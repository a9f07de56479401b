"""A verifier replica replaced while N keys are in use: how long until every key is served again.

Starts a local environment, Redis, N keys (bench/keyfarm.py: TenantApiKey objects and Vault
records whose bcrypt hashes are at ``--cost``, 12 by default as in production) and two verifier
replicas A and B sharing Redis. Every key is used once through A (A proves it with bcrypt and
leaves a receipt) and once through B. Then traffic runs on all keys (``--workers`` clients,
cycling over every key, to the ready replicas in turn — what a Service does): first for
``--steady-seconds`` as fast as A and B answer (their capacity here, ``capacity_per_s``), then,
during the replacements, at ``--load`` (0.5) of that — a fleet that has headroom, as one sized
or autoscaled for its traffic has; ``--load 1`` keeps it as fast as they answer, so the new
replica starts on cores the others keep fully busy. B is replaced:
a new replica C starts, traffic goes to C as soon as its /readyz answers 200, and B gets SIGTERM
— and, as in a cluster, B stays in the rotation for ``--endpoint-lag`` seconds more (the time
endpoints, kube-proxy and gateways take to notice: they are told at the same moment as the pod),
then leaves it; then every key is sent to C once (``--concurrency`` at a time) until each has had
a 2xx answer. Every replica drains for ``--drain-seconds`` on SIGTERM (``PMKEYS_DRAIN_SECONDS``,
5 in the chart; 0 is the behaviour before the drain: stop accepting at once).

Figures:

* ``all_served_s``: from C's start until C has answered 2xx for every key (bar: < 10 s);
  ``ready_s`` of that is C's start-up (B gets SIGTERM when C is ready, as in a rolling update
  with ``maxUnavailable: 0``: until then B serves every key), ``served_after_ready_s`` the rest,
  from C's first request on; ``cached_at_ready``: the keys C had cached (handed over or read
  by the preload) when it first reported ready, each then a cache hit; ``sweep_per_s``: the
  rate of the sweep (bounded by what the machine's cores do beside the other replica, the
  traffic and this client), which ``served_after_ready_s`` is ``N`` divided by;
* ``non2xx`` / ``requests`` during the replacement, on both replicas (bar: < 0.1%);
* ``new_bcrypt``: bcrypt calls in C (bar: 0 for keys already proven), and the bcrypt CPU that
  cost (calls times the measured time of one check at ``--cost``), against what C would have spent
  without receipts (N checks);
* C's RSS with N keys cached, and C's CPU seconds during the replacement;
* ``startup_<phase>_s``: when each of C's readiness checks first held, in seconds since its
  process started (``/readyz``'s ``startup``: ``started`` after the imports, ``vault``, ``watch``,
  ``plans``, ``fetched``, ``seals``, ``preload``, ``ready``).

The hand-over (pmkeys.verify.handover): C opens the records A and B sealed in Redis instead of
reading them from Vault. To show what that changes in the same run, C is then replaced the same
way by D with ``PMKEYS_HANDOVER=false`` (its preload reads from Vault the record of every key
with a receipt, the behaviour before the hand-over); ``--no-compare`` skips D, ``--no-handover``
starts C without the hand-over too.

``--no-preload`` starts C without the preload (``PMKEYS_PRELOAD_SECONDS=0``): each key's first
request then waits for a Vault read. ``--baseline`` gives C a Redis prefix of its own (no
receipts, no shared limits): the old behaviour, one bcrypt per key per process; use it with
small N.

    python bench/verifier_restart.py [--keys 10000] [--cost 12] [--workers 16] [--concurrency 64]

Last two lines: D's figures (handover=0), then C's (handover=1) with
``all_served_ratio_without_to_with``; each ``keys=10000 … all_served_s=… non2xx=… new_bcrypt=0 …``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import time
from dataclasses import dataclass, field

import bcrypt
import httpx

from httpload import Pool  # bench/httpload.py
from keyfarm import FarmKey, farm, hashes  # bench/keyfarm.py, beside this script
from pmkeys.config import VaultSettings
from pmkeys.kubeclient import api_client
from pmkeys.vault.session import VaultSession
from pmkeys.vault.store import KeyStore
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.openbao import KV_MOUNT
from pmkeys_dev.processes import ServerProcess, free_port
from pmkeys_dev.redis import RedisServer
from procstat import cpu_seconds, rss_mb, stop_servers_on_sigterm  # bench/procstat.py

CALLER_TOKEN = secrets.token_urlsafe(32)
#: Keep-alive connections per replica (more than the sweep and the traffic use at once).
POOL_SIZE = 256


@dataclass
class Replica:
    name: str
    proc: ServerProcess
    port: int
    pool: Pool
    ready: bool = True
    #: Its start-up, as /readyz told when it first answered 200: phase → seconds of process age.
    startup: dict[str, float] = field(default_factory=dict)
    #: Keys cached (handed over or preloaded) when /readyz first answered 200.
    cached_at_ready: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, labels: str = "") -> float:
        wanted = f"{name}{{{labels}}} " if labels else name + " "
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(wanted))


@dataclass
class Tally:
    requests: int = 0
    non2xx: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    #: Seconds each sweep request took (the new replica's first answer per key).
    latencies: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0

    def count(self, status: int) -> None:
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if not 200 <= status < 300:
            self.non2xx += 1


def start_verifier(
    env: LocalEnvironment,
    redis: RedisServer,
    name: str,
    *,
    prefix: str,
    drain: float,
    preload: bool = True,
    handover: bool = True,
) -> Replica:
    port = free_port()
    proc = env.start_component(
        "verifier",
        name=name,
        ready_url=None,
        PMKEYS_PORT=str(port),
        PMKEYS_REDIS_URL=redis.url,
        PMKEYS_REDIS_PREFIX=prefix,
        PMKEYS_LOG_LEVEL="WARNING",
        PMKEYS_FAILED_ATTEMPTS_PER_MINUTE="100000",
        PMKEYS_CALLER_TOKENS=json.dumps({"bench": CALLER_TOKEN}),
        PMKEYS_DRAIN_SECONDS=str(drain),
        PMKEYS_HANDOVER=str(handover).lower(),
        **({} if preload else {"PMKEYS_PRELOAD_SECONDS": "0"}),
    )
    pool = Pool("127.0.0.1", port, size=POOL_SIZE, headers={"X-Pmkeys-Caller-Token": CALLER_TOKEN})
    return Replica(name, proc, port, pool, ready=False)


async def wait_ready(replica: Replica, http: httpx.AsyncClient) -> None:
    while True:
        try:
            answer = await http.get(f"{replica.url}/readyz", timeout=2)
            if answer.status_code == 200:
                body = answer.json()
                replica.startup, replica.cached_at_ready = body.get("startup") or {}, body["preload"]["loaded"]
                replica.ready = True
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.05)


async def verify(replica: Replica, key: FarmKey) -> int:
    return await replica.pool.post("/v1/verify", {"key": key.plaintext, "scope": "send_email"})


async def sweep(replica: Replica, keys: list[FarmKey], concurrency: int, tally: Tally) -> None:
    """Every key through ``replica`` until each has had a 2xx (503 busy is retried after 1 s)."""
    queue: asyncio.Queue[FarmKey] = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)

    async def worker() -> None:
        while not queue.empty():
            key = queue.get_nowait()
            while True:
                sent = time.perf_counter()
                status = await verify(replica, key)
                tally.latencies.append(time.perf_counter() - sent)
                tally.count(status)
                if 200 <= status < 300:
                    break
                await asyncio.sleep(1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def background(
    replicas: list[Replica],
    keys: list[FarmKey],
    workers: int,
    tally: Tally,
    stop: asyncio.Event,
    *,
    rate: float = 0,
) -> None:
    """Traffic on every key in turn, to the ready replicas in turn, from ``workers`` clients that
    each send their next request when the last is answered — as fast as the machine allows, or,
    with ``rate``, paced to that many requests per second in all (a client that falls behind
    its pace sends at once: the rate is kept unless the fleet cannot answer it)."""
    sent = 0
    began = time.perf_counter()

    async def worker(index: int) -> None:
        nonlocal sent
        due = began + index / rate if rate else 0.0
        while not stop.is_set():
            if rate:
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                due += workers / rate
            ready = [r for r in replicas if r.ready]
            key, replica = keys[sent % len(keys)], ready[sent % len(ready)]
            sent += 1
            tally.count(await verify(replica, key))

    await asyncio.gather(*(worker(i) for i in range(workers)))


async def terminate(replica: Replica, *, endpoint_lag: float) -> float:
    """SIGTERM to ``replica``; traffic keeps reaching it for ``endpoint_lag`` seconds, as from
    endpoints that have not caught up yet. Returns the seconds until the process exited."""
    sent = time.perf_counter()
    os.killpg(replica.proc.pid or 0, signal.SIGTERM)
    await asyncio.sleep(endpoint_lag)
    replica.ready = False
    while replica.proc.running():
        await asyncio.sleep(0.05)
    return time.perf_counter() - sent


def bcrypt_check_seconds(cost: int) -> float:
    hashed = hashes(1, cost)[0].encode()
    started = time.process_time()
    bcrypt.checkpw(b"not the key", hashed)
    return time.process_time() - started


@dataclass
class Fleet:
    """The replicas in the rotation, the clients, and the traffic the replacements run under."""

    env: LocalEnvironment
    redis: RedisServer
    keys: list[FarmKey]
    args: argparse.Namespace
    control: httpx.AsyncClient
    replicas: list[Replica]
    #: Requests per second of the traffic during a replacement (0: as fast as the machine allows).
    rate: float = 0
    #: What the two replicas answered per second, as fast as they could, before the replacements.
    capacity: float = 0


async def replace_one(fleet: Fleet, old: Replica, name: str, *, handover: bool) -> tuple[Replica, dict[str, float]]:
    """Replace ``old`` by a new replica ``name`` under traffic on every key; its figures."""
    args = fleet.args
    stop, during, first = asyncio.Event(), Tally(), Tally()  # first: the new replica's first answer per key
    traffic = asyncio.ensure_future(background(fleet.replicas, fleet.keys, args.workers, during, stop, rate=fleet.rate))
    # A rolling update with maxUnavailable 0 (two replicas): the new pod first; once it is
    # ready the old one gets SIGTERM and, at the same moment, starts leaving the endpoints,
    # which traffic notices only after the endpoint lag.
    started = time.perf_counter()
    print(f"replacing {old.name} by {name} (hand-over {'on' if handover else 'off'})", flush=True)
    new = start_verifier(
        fleet.env,
        fleet.redis,
        name,
        prefix="baseline" if args.baseline else "bench",
        drain=args.drain_seconds,
        preload=not args.no_preload,
        handover=handover,
    )
    cpu_start = cpu_seconds(new.proc.pid or 0)
    await wait_ready(new, fleet.control)
    ready_s = time.perf_counter() - started
    fleet.replicas.append(new)
    stopping = asyncio.ensure_future(terminate(old, endpoint_lag=args.endpoint_lag))
    phases = ", ".join(f"{phase} {at:.1f}s" for phase, at in sorted(new.startup.items(), key=lambda item: item[1]))
    print(
        f"{name} ready after {ready_s:.1f}s ({phases}); {old.name} got SIGTERM; sending every key to {name}", flush=True
    )
    await sweep(new, fleet.keys, args.concurrency, first)
    all_served = time.perf_counter() - started
    stop.set()
    await traffic
    old_exit_s = await stopping
    fleet.replicas.remove(old)
    vault_reads = new.metric("pmkeys_verifier_vault_request_duration_seconds_count")
    vault_seconds = new.metric("pmkeys_verifier_vault_request_duration_seconds_sum")
    return new, {
        "capacity_per_s": fleet.capacity,
        "traffic_per_s": during.requests / all_served,
        "ready_s": ready_s,
        "all_served_s": all_served,
        "served_after_ready_s": all_served - ready_s,
        "cached_at_ready": new.cached_at_ready,
        "sweep_per_s": len(fleet.keys) / max(0.001, all_served - ready_s),
        "requests": during.requests + first.requests,
        "non2xx": during.non2xx + first.non2xx,
        "statuses": json.dumps(  # type: ignore[dict-item]
            {"traffic": during.statuses, "sweep": first.statuses, "no_answer": {old.name: old.pool.failures}}
        ),
        "first_p50_ms": 1000 * first.percentile(0.5),
        "first_p99_ms": 1000 * first.percentile(0.99),
        "new_bcrypt": new.metric("pmkeys_verifier_bcrypt_checks_total"),
        "new_cpu_s": cpu_seconds(new.proc.pid or 0) - cpu_start,
        "new_rss_mb": rss_mb(new.proc.pid or 0),
        "vault_reads": vault_reads,
        "vault_mean_ms": 1000 * vault_seconds / max(1, vault_reads),
        "old_exit_s": old_exit_s,
        "misses": new.metric("pmkeys_verifier_cache_lookups_total", 'result="miss"'),
        "handed_over": new.metric("pmkeys_verifier_preload_keys_total", 'result="handed_over"'),
        "preloaded": new.metric("pmkeys_verifier_preload_keys_total", 'result="loaded"'),
        "preload_s": new.metric("pmkeys_verifier_preload_seconds"),
        "refreshed": new.metric("pmkeys_verifier_refreshes_total", 'result="refreshed"'),
        **{f"startup_{phase}_s": at for phase, at in new.startup.items()},
    }


async def replace(
    env: LocalEnvironment, redis: RedisServer, keys: list[FarmKey], args: argparse.Namespace
) -> list[dict[str, float]]:
    """Warm up two replicas, then replace one with the hand-over (C replaces B) and, unless
    ``--no-compare``, the new one without it (D replaces C), in the same run: what the
    hand-over changes, measured side by side."""
    async with httpx.AsyncClient() as control:
        a = start_verifier(env, redis, "verifier-a", prefix="bench", drain=args.drain_seconds)
        b = start_verifier(env, redis, "verifier-b", prefix="bench", drain=args.drain_seconds)
        await asyncio.gather(wait_ready(a, control), wait_ready(b, control))
        warm = Tally()
        started = time.perf_counter()
        await sweep(a, keys, min(args.concurrency, 16), warm)
        proved = time.perf_counter() - started
        await sweep(b, keys, args.concurrency, warm)
        a_bcrypt, b_bcrypt = (r.metric("pmkeys_verifier_bcrypt_checks_total") for r in (a, b))
        print(
            f"warm-up: A proved {len(keys)} keys in {proved:.1f}s ({a_bcrypt:.0f} bcrypt), "
            f"B served them with {b_bcrypt:.0f} bcrypt",
            flush=True,
        )
        fleet = Fleet(env, redis, keys, args, control, [a, b])
        steady, stop = Tally(), asyncio.Event()
        traffic = asyncio.ensure_future(background(fleet.replicas, keys, args.workers, steady, stop))
        await asyncio.sleep(args.steady_seconds)
        stop.set()
        await traffic
        capacity = steady.requests / args.steady_seconds
        fleet.rate = capacity * args.load if args.load < 1 else 0
        print(
            f"steady traffic as fast as the two replicas answer: {steady.requests} requests ({capacity:.0f}/s), "
            f"{steady.non2xx} non-2xx; the replacements run under "
            + (f"{fleet.rate:.0f} requests/s ({args.load:.0%} of that)" if fleet.rate else "traffic as fast as that"),
            flush=True,
        )
        fleet.capacity = capacity
        c, with_handover = await replace_one(fleet, b, "verifier-c", handover=not args.no_handover)
        results = [with_handover]
        if not args.no_compare:
            await asyncio.sleep(args.steady_seconds)  # the entries C read from Vault age like A's
            _, without = await replace_one(fleet, c, "verifier-d", handover=False)
            results.append(without)
        for replica in fleet.replicas:
            replica.proc.stop()
        return results


def report(result: dict[str, float], args: argparse.Namespace, per_check: float, label: str) -> str:
    """Prints what one replacement showed; returns its key=value figures."""
    pct = 100 * result["non2xx"] / max(1, result["requests"])
    print(
        f"{label}: new replica ready {result['ready_s']:.1f}s after its start with {result['cached_at_ready']:.0f} "
        f"of {args.keys} keys cached, every key served by it {result['all_served_s']:.1f}s after it (bar < 10 s), "
        f"{result['served_after_ready_s']:.1f}s after it took traffic (the sweep: {result['sweep_per_s']:.0f} "
        f"keys/s); {result['non2xx']:.0f} of "
        f"{result['requests']:.0f} answers not 2xx ({pct:.3f}%, bar < 0.1%) {result['statuses']}",
        flush=True,
    )
    print(
        f"{label}: {result['new_bcrypt']:.0f} bcrypt calls (bar 0) = {result['new_bcrypt'] * per_check:.1f} "
        f"CPU-s of bcrypt, against {args.keys * per_check:.0f} CPU-s without receipts "
        f"({per_check * 1000:.0f} ms per check at cost {args.cost}); {result['new_cpu_s']:.1f} CPU-s in all; "
        f"RSS {result['new_rss_mb']:.0f} MB with {args.keys} keys cached",
        flush=True,
    )
    print(
        f"{label}: {result['handed_over']:.0f} records handed over, {result['preloaded']:.0f} read from Vault by "
        f"the preload, in {result['preload_s']:.1f} s before it was ready; {result['vault_reads']:.0f} Vault "
        f"reads in all, {result['vault_mean_ms']:.0f} ms each on average; {result['misses']:.0f} cache misses on "
        f"requests, {result['refreshed']:.0f} re-reads behind them; its first answer for each key took "
        f"{result['first_p50_ms']:.0f} ms (p50), "
        f"{result['first_p99_ms']:.0f} ms (p99) as the bench saw it",
        flush=True,
    )
    return (
        f"ready_s={result['ready_s']:.1f} all_served_s={result['all_served_s']:.1f} "
        f"served_after_ready_s={result['served_after_ready_s']:.1f} cached_at_ready={result['cached_at_ready']:.0f} "
        f"sweep_per_s={result['sweep_per_s']:.0f} traffic_per_s={result['traffic_per_s']:.0f} "
        f"non2xx={result['non2xx']:.0f} "
        f"requests={result['requests']:.0f} non2xx_pct={pct:.3f} new_bcrypt={result['new_bcrypt']:.0f} "
        f"new_bcrypt_cpu_s={result['new_bcrypt'] * per_check:.1f} new_cpu_s={result['new_cpu_s']:.1f} "
        f"new_rss_mb={result['new_rss_mb']:.0f} handed_over={result['handed_over']:.0f} "
        f"preloaded={result['preloaded']:.0f} preload_s={result['preload_s']:.1f} "
        f"vault_reads={result['vault_reads']:.0f} vault_mean_ms={result['vault_mean_ms']:.0f} "
        f"request_misses={result['misses']:.0f} refreshed_behind={result['refreshed']:.0f} "
        f"old_exit_s={result['old_exit_s']:.1f} "
        f"first_answer_p50_ms={result['first_p50_ms']:.0f} first_answer_p99_ms={result['first_p99_ms']:.0f} "
        + " ".join(f"{name}={value:.2f}" for name, value in result.items() if name.startswith("startup_"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--cost", type=int, default=12, help="bcrypt cost of the records at rest")
    parser.add_argument("--workers", type=int, default=16, help="clients sending traffic on all keys")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--steady-seconds", type=float, default=10)
    parser.add_argument(
        "--load",
        type=float,
        default=0.5,
        help="traffic during the replacements as a fraction of what the two replicas answered as fast as they "
        "could (1: as fast as they can, leaving the new replica no spare CPU)",
    )
    parser.add_argument("--baseline", action="store_true", help="the new replica gets no receipts")
    parser.add_argument("--no-preload", action="store_true", help="PMKEYS_PRELOAD_SECONDS=0 for the new replica")
    parser.add_argument("--no-handover", action="store_true", help="PMKEYS_HANDOVER=false for the first new replica")
    parser.add_argument(
        "--no-compare", action="store_true", help="only one replacement (no second one without the hand-over)"
    )
    parser.add_argument(
        "--drain-seconds", type=float, default=5, help="PMKEYS_DRAIN_SECONDS of every replica (0: no drain)"
    )
    parser.add_argument(
        "--endpoint-lag", type=float, default=2, help="seconds the old replica still gets traffic after SIGTERM"
    )
    args = parser.parse_args()
    env = LocalEnvironment()
    redis = RedisServer()
    try:
        env.start()
        redis.start()
        store = KeyStore(
            VaultSession(
                VaultSettings(
                    addr=env.openbao.url, token=env.openbao.root_token, kv_mount=KV_MOUNT, prefix=bootstrap.VAULT_PREFIX
                )
            )
        )
        started = time.perf_counter()
        keys = farm(api_client(str(env.kubeconfig)), store, args.keys, cost=args.cost)
        print(f"{len(keys)} keys (bcrypt cost {args.cost} at rest) in {time.perf_counter() - started:.0f}s", flush=True)
        results = asyncio.run(replace(env, redis, keys, args))
        per_check = bcrypt_check_seconds(args.cost)
        common = (
            f"keys={args.keys} cost={args.cost} baseline={int(args.baseline)} preload={int(not args.no_preload)} "
            f"drain_s={args.drain_seconds:g} endpoint_lag_s={args.endpoint_lag:g} "
            f"bcrypt_cpu_without_receipts_s={args.keys * per_check:.0f} "
            f"capacity_per_s={results[0]['capacity_per_s']:.0f} load={args.load:g}"
        )
        figures = report(results[0], args, per_check, "with the hand-over" if not args.no_handover else "without")
        if len(results) == 1:
            print(f"{common} handover={int(not args.no_handover)} {figures}")
            return
        before = report(results[1], args, per_check, "without the hand-over (preload from Vault)")
        ratio = results[1]["all_served_s"] / max(0.001, results[0]["all_served_s"])
        print(f"{common} handover=0 {before}")
        print(f"{common} handover=1 {figures} all_served_ratio_without_to_with={ratio:.1f}")
    finally:
        redis.cleanup()
        env.stop()
        env.cleanup()


if __name__ == "__main__":
    stop_servers_on_sigterm()
    main()
