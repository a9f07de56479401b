"""Verifier benchmark: in-process cached throughput, HTTP throughput against a trivial endpoint
on the same server stack, latency at half the maximum rate, and the cold path.

    .venv/bin/python bench/verify.py [--seconds 5] [--check]

It starts what it needs: a LocalEnvironment (API server + OpenBao), key records written straight
to Vault with bcrypt cost 12 (what the operator writes, without running it), and a verifier
process exactly as ``pmkeys verifier`` runs in a pod (Vault through its own Kubernetes-auth
role, the TenantApiKey watch on). The bench keys' limit is set so high that it never binds:
every measured decision takes the full path, GCRA step included, and is *allowed*.

On two cores: the in-process loop and the verifier process are pinned to core 0, the load
generator to core 1. The load generator is a raw HTTP/1.1 keep-alive client on uvloop (no HTTP
library in the way); it drives the server from one core several times faster than the server
answers, so the server is what is measured.

* throughput: closed loop, 64 connections, ``--seconds`` per endpoint; the gateway check
  ``GET /v1/authz/v1/messages`` (key in ``X-API-Key``, route from ``X-Original-*``, gateway mode
  nginx, with a caller token) against
  ``GET /healthz`` on the same FastAPI/uvicorn server.
* latency: open loop at half the measured gateway rate; each request's latency is counted from
  the moment it was *due*, so a stall cannot hide (no coordinated omission).
* cold path: the first request of three never-seen keys (a Vault read and one bcrypt at cost 12).

Bars (DESIGN.md): in-process >= 100,000/s on one core; HTTP >= 50% of the trivial endpoint;
p99 < 5 ms at half the maximum rate. ``--check`` exits 1 when one is missed. The last line is
machine-readable.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import time

import bcrypt
import httpx
from kubernetes import client

import limiter
from pmkeys.api.plan import MAX_PLAN_RATE, plan_from_body
from pmkeys.api.vocabulary import (
    API_VERSION,
    GROUP,
    KIND,
    PLAN_KIND,
    PLAN_NAME,
    PLAN_PLURAL,
    PLURAL,
    VERSION,
    Environment,
    Scope,
    Tier,
)  # fmt: skip
from pmkeys.config import VaultSettings
from pmkeys.keys import material
from pmkeys.keys.digest import digest
from pmkeys.keys.hashing import PRODUCTION_COST
from pmkeys.kubeclient import api_client
from pmkeys.vault.records import KeyRecord
from pmkeys.vault.session import VaultSession
from pmkeys.vault.store import KeyStore
from pmkeys.verify import Verifier
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.openbao import KV_MOUNT
from pmkeys_dev.processes import free_port

SERVER_CORE = 0
CLIENT_CORE = 1
CONNECTIONS = 64
BENCH_KEYS = 16
NEVER_BINDS = 10**9
#: The bench namespace's plan: both limits are checked on every request, neither binds.
BENCH_PLAN = {
    "apiVersion": API_VERSION,
    "kind": PLAN_KIND,
    "metadata": {"name": PLAN_NAME, "namespace": "bench"},
    "spec": {"tier": "enterprise", "keyRateLimit": MAX_PLAN_RATE, "tenantRateLimit": MAX_PLAN_RATE},
}
ROUTES = ["POST /v1/messages=send_email"]
CALLER_HEADER = "X-Pmkeys-Caller-Token"
CALLER_TOKEN = secrets.token_urlsafe(32)


# -- keys ----------------------------------------------------------------------------------------
def bench_object(env: LocalEnvironment) -> str:
    """The TenantApiKey the bench keys belong to (the verifier refuses records of absent
    objects); no operator runs, so it stays as created. Returns its uid."""
    api = api_client(str(env.kubeconfig))
    bootstrap.tenant_namespace(api, "bench", "bench")
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {"tenant": "bench", "scopes": ["send_email"], "tier": "enterprise"},
    }
    created = client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, manifest)
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, "bench", PLAN_PLURAL, BENCH_PLAN)
    return str(created["metadata"]["uid"])


async def write_keys(store: KeyStore, count: int, *, rate_limit: int, owner: str) -> list[str]:
    """Issue ``count`` keys the way the operator records them (cost 12), straight into Vault,
    for the TenantApiKey whose uid is ``owner``."""
    pepper = await store.current_pepper()
    keys = []
    for _ in range(count):
        key = material.generate(Environment.LIVE)
        hashed = bcrypt.hashpw(key.value.encode(), bcrypt.gensalt(PRODUCTION_COST)).decode()
        record = KeyRecord(
            key_id=material.new_key_id(),
            tenant="bench",
            namespace="bench",
            name="bench",
            uid=owner,
            bcrypt=hashed,
            scopes=[Scope.SEND_EMAIL],
            tier=Tier.ENTERPRISE,
            rate_limit=rate_limit,
            created_at=dt.datetime.now(dt.UTC),
            pepper_version=pepper.version,
            display_prefix=key.display_prefix,
        )
        await store.create_record(digest(pepper, key.value), record)
        keys.append(key.value)
    return keys


# -- in-process ---------------------------------------------------------------------------------
async def inprocess(store: KeyStore, keys: list[str], seconds: float) -> float:
    """Cached verifications per second on one core (the event loop of this process), each held
    to the key's limit and the tenant-wide limit of the bench plan (neither binds)."""
    verifier = Verifier(store)
    verifier.plans.set("bench", plan_from_body(BENCH_PLAN))
    await verifier.start()
    try:
        for key in keys:
            assert (await verifier.verify(key, "send_email")).allowed
        verify = verifier.verify
        done = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for key in keys:
                for _ in range(64):
                    await verify(key, "send_email")
            done += 64 * len(keys)
        rate = done / (time.perf_counter() - started)
        assert (await verify(keys[0], "send_email")).allowed
        return rate
    finally:
        await verifier.close()


# -- the load generator (a separate process on its own core) ------------------------------------
class _Connection(asyncio.Protocol):
    def __init__(self, done: asyncio.Queue[tuple[_Connection, int]]) -> None:
        self.done = done
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ready.set_result(None)

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 : head.find(b"\r", at) if head.find(b"\r", at) > 0 else None]) if at >= 0 else 0
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            status = int(self.buffer[9:12])
            del self.buffer[:total]
            self.done.put_nowait((self, status))


async def _connect(port: int, count: int) -> tuple[list[_Connection], asyncio.Queue[tuple[_Connection, int]]]:
    loop = asyncio.get_running_loop()
    done: asyncio.Queue[tuple[_Connection, int]] = asyncio.Queue()
    conns = []
    for _ in range(count):
        _, conn = await loop.create_connection(lambda: _Connection(done), "127.0.0.1", port)
        await conn.ready
        conns.append(conn)
    return conns, done


async def _closed_loop(port: int, requests: list[bytes], seconds: float) -> dict[str, float]:
    conns, done = await _connect(port, CONNECTIONS)
    for i, conn in enumerate(conns):
        conn.send(requests[i % len(requests)])
    sent = len(conns)
    ok = errors = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        conn, status = await done.get()
        if 200 <= status < 300:
            ok += 1
        else:
            errors += 1
        if time.perf_counter() >= deadline:
            break
        conn.send(requests[sent % len(requests)])
        sent += 1
    elapsed = time.perf_counter() - started
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    return {"rps": ok / elapsed, "errors": errors}


async def _open_loop(port: int, requests: list[bytes], rate: float, seconds: float) -> dict[str, float]:
    conns, done = await _connect(port, CONNECTIONS)
    # FIFO, so every connection is used in turn: over a long run none sits idle long enough for
    # the server's keep-alive timeout to close it.
    idle = collections.deque(conns)
    backlog: list[float] = []
    in_flight: dict[int, float] = {}
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    started = time.perf_counter()
    issued = 0

    def dispatch(due: float) -> None:
        nonlocal issued
        conn = idle.popleft()
        in_flight[id(conn)] = due
        conn.send(requests[issued % len(requests)])
        issued += 1

    async def collect() -> None:
        nonlocal errors
        while len(latencies) + errors < total:
            conn, status = await done.get()
            due = in_flight.pop(id(conn))
            now = time.perf_counter()
            if 200 <= status < 300:
                latencies.append(now - due)
            else:
                errors += 1
            idle.append(conn)
            if backlog:
                dispatch(backlog.pop(0))

    collector = asyncio.ensure_future(collect())
    scheduled = 0
    while scheduled < total:
        now = time.perf_counter()
        due_count = min(total, int((now - started) * rate) + 1)
        while scheduled < due_count:
            due = started + scheduled / rate
            if idle:
                dispatch(due)
            else:
                backlog.append(due)
            scheduled += 1
        await asyncio.sleep(0.0005)
    await asyncio.wait_for(collector, timeout=30)
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "achieved_rps": len(latencies) / (time.perf_counter() - started),
        "errors": errors,
    }


def _loadgen(job: dict[str, object], results: mp.Queue) -> None:  # type: ignore[type-arg]
    os.sched_setaffinity(0, {CLIENT_CORE})
    import uvloop

    port, requests, seconds = job["port"], job["requests"], job["seconds"]
    if job["kind"] == "closed":
        coro = _closed_loop(port, requests, seconds)  # type: ignore[arg-type]
    else:
        coro = _open_loop(port, requests, job["rate"], seconds)  # type: ignore[arg-type]
    results.put(uvloop.run(coro))


def run_load(**job: object) -> dict[str, float]:
    results: mp.Queue = mp.get_context("spawn").Queue()  # type: ignore[type-arg]
    proc = mp.get_context("spawn").Process(target=_loadgen, args=(job, results))
    proc.start()
    result = results.get(timeout=float(job["seconds"]) + 90)  # type: ignore[arg-type]
    proc.join(timeout=10)
    return result  # type: ignore[no-any-return]


def gateway_request(key: str) -> bytes:
    """An nginx-shaped check (gateway mode nginx), with the caller token nginx sends."""
    return (
        "GET /v1/authz/v1/messages HTTP/1.1\r\nHost: verifier\r\n"
        f"X-API-Key: {key}\r\nX-Original-Method: POST\r\nX-Original-URI: /v1/messages\r\n"
        f"{CALLER_HEADER}: {CALLER_TOKEN}\r\n\r\n"
    ).encode()


TRIVIAL = [b"GET /healthz HTTP/1.1\r\nHost: verifier\r\n\r\n"]


# -- the run --------------------------------------------------------------------------------------
def cold_path(url: str, keys: list[str]) -> float:
    took = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for key in keys:
            started = time.perf_counter()
            headers = {"X-API-Key": key, "X-Original-Method": "POST", "X-Original-URI": "/v1/messages"}
            response = http.get("/v1/authz", headers={**headers, CALLER_HEADER: CALLER_TOKEN})
            took.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
    return statistics.median(took) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--check", action="store_true", help="exit 1 if a bar is missed")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        print("note: fewer than two cores available; the load generator shares the server's core")

    limits = limiter.measure(2000)  # before the environment: nothing else on the machine of ours
    limiter.report(limits)
    env = LocalEnvironment()
    env.start()
    try:
        store = KeyStore(
            VaultSession(
                VaultSettings(
                    addr=env.openbao.url, token=env.openbao.root_token, kv_mount=KV_MOUNT, prefix=bootstrap.VAULT_PREFIX
                )
            )
        )

        owner = bench_object(env)

        async def prepare() -> tuple[list[str], list[str]]:
            return await write_keys(store, BENCH_KEYS, rate_limit=NEVER_BINDS, owner=owner), await write_keys(
                store, 3, rate_limit=NEVER_BINDS, owner=owner
            )

        hot, cold = asyncio.run(prepare())

        os.sched_setaffinity(0, {SERVER_CORE})
        inproc = asyncio.run(inprocess(KeyStore(store.session), hot, args.seconds))
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        print(f"in-process cached verifications: {inproc:,.0f}/s on one core ({BENCH_KEYS} keys)")

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        verifier = env.start_component(
            "verifier",
            name="bench-verifier",
            ready_url=f"{url}/readyz",
            PMKEYS_PORT=str(port),
            PMKEYS_LOG_LEVEL="WARNING",
            PMKEYS_ROUTES=json.dumps(ROUTES),
            PMKEYS_GATEWAY="nginx",
            PMKEYS_CALLER_TOKENS=json.dumps({"bench": CALLER_TOKEN}),
        )
        assert verifier.pid is not None
        os.sched_setaffinity(verifier.pid, {SERVER_CORE})
        cold_ms = cold_path(url, cold)
        print(f"cold path (first use: Vault read + bcrypt cost {PRODUCTION_COST}): {cold_ms:.0f} ms median of 3 keys")
        requests = [gateway_request(k) for k in hot]
        cold_path(url, hot)  # warm the hot keys
        run_load(kind="closed", port=port, requests=TRIVIAL, seconds=1)  # warm up the server
        trivial = run_load(kind="closed", port=port, requests=TRIVIAL, seconds=args.seconds)
        gateway = run_load(kind="closed", port=port, requests=requests, seconds=args.seconds)
        ratio = gateway["rps"] / trivial["rps"]
        print(
            f"HTTP: gateway check {gateway['rps']:,.0f} req/s, trivial /healthz {trivial['rps']:,.0f} req/s "
            f"({CONNECTIONS} connections, one server core): ratio {ratio:.2f}; errors {gateway['errors']:.0f}"
        )
        half = gateway["rps"] / 2
        latency = run_load(kind="open", port=port, requests=requests, rate=half, seconds=args.seconds)
        print(
            f"latency at {half:,.0f} req/s (half the max), {args.seconds:.0f} s open loop: "
            f"p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms "
            f"(achieved {latency['achieved_rps']:,.0f} req/s, errors {latency['errors']:.0f})"
        )
        bars = {
            "inproc>=100000/s": inproc >= 100_000,
            "http>=50%trivial": ratio >= 0.5,
            "p99<5ms@half": latency["p99_ms"] < 5,
        }
        print("bars: " + ", ".join(f"{name} {'ok' if met else 'MISSED'}" for name, met in bars.items()))
        print(
            f"inproc_per_s={inproc:.0f} http_rps={gateway['rps']:.0f} trivial_rps={trivial['rps']:.0f} "
            f"http_ratio={ratio:.2f} p50_ms={latency['p50_ms']:.2f} p99_ms={latency['p99_ms']:.2f} "
            f"cold_ms={cold_ms:.0f}"
        )
        return 1 if args.check and not all(bars.values()) else 0
    finally:
        env.stop()
        env.cleanup()


if __name__ == "__main__":
    sys.exit(main())
