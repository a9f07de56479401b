"""What the two-limit check costs: time per check and bytes per active key, in memory and in
Redis, beside the GCRA it replaced (kept here, and in the failed-attempt gate, as the baseline).

    .venv/bin/python bench/limiter.py [--keys 2000] [--fleet 20000]

``bench/verify.py`` runs this first and prints its figures with the verifier's. Each figure is
measured in the same run as its baseline, so a loaded machine shifts both alike:

* in-process: ``WindowLimiter.hit`` with a key and a tenant limit, over ``--keys`` keys in 100
  tenants, against ``gcra.LocalLimiter.hit`` (one limit), ns per check;
* Redis: one ``windows.lua`` call (both limits, one round trip) against a ``PING`` on the same
  connection, µs per call;
* bytes per active key: a key whose window is full (60 and 1000 admissions) — Python object
  sizes in memory, ``MEMORY USAGE`` in Redis — against the GCRA's one integer (in memory: the
  int and its dict slot; in Redis: the TAT string key).

``--fleet N`` adds what a whole fleet costs Redis: N enterprise keys (1000/min) in N/100 tenants,
every key's window full (1000 admissions in the last minute) — Redis's ``used_memory`` before
and after, per key and in all. Filling N·1000 admissions through the script would take hours
here, so the logs are written as the script writes them (LPUSH of the same µs stamps, the same
PEXPIRE), and one key filled through ``windows.lua`` checks that both give the same
``MEMORY USAGE``. Tenant logs are not filled (a tenant-wide limit is a plan option; with one,
add a tenant's log per tenant: at most its limit's entries).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import redis as sync_redis

from pmkeys.verify.gcra import LocalLimiter
from pmkeys.verify.ratelimit import RedisHealth, SharedWindows, connect, window_keys
from pmkeys.verify.windows import WINDOW_US, WindowLimiter
from pmkeys_dev.redis import RedisServer

NEVER_BINDS = 10**6


def inprocess_ns(keys: int, rounds: int = 20) -> tuple[float, float]:
    names = [(f"k{n}", f"t{n % 100}") for n in range(keys)]
    windows, gcra = WindowLimiter(), LocalLimiter()
    now = 0
    started = time.perf_counter_ns()
    for _ in range(rounds):
        for key, tenant in names:
            now += 50
            windows.hit(key, NEVER_BINDS, now, tenant=tenant, tenant_limit=NEVER_BINDS)
    window_ns = (time.perf_counter_ns() - started) / (rounds * keys)
    now = 0
    started = time.perf_counter_ns()
    for _ in range(rounds):
        for key, _tenant in names:
            now += 50
            gcra.hit(key, NEVER_BINDS, now)
    return window_ns, (time.perf_counter_ns() - started) / (rounds * keys)


def memory_bytes(admissions: int) -> tuple[int, int]:
    """Bytes of one key with ``admissions`` in its window (sliding log), and of one GCRA key."""
    windows = WindowLimiter()
    for n in range(admissions):
        windows.hit("k", admissions, n)
    log_bytes = windows.nbytes() + sys.getsizeof("k") + 104 // 3  # the dict slot, amortised
    gcra = LocalLimiter()
    gcra.hit("k", 60, 0)
    return log_bytes, sys.getsizeof(2**50) + sys.getsizeof("k") + 104 // 3


async def redis_figures(server: RedisServer, calls: int) -> dict[str, float]:
    client = connect(server.url, timeout=2)
    shared = SharedWindows(client, prefix="bench", policy="closed", local=WindowLimiter(), health=RedisHealth())
    await shared.hit("warm", 10, 0, tenant="warm", tenant_limit=10)
    started = time.perf_counter()
    for n in range(calls):
        await shared.hit(f"k{n % 500}", NEVER_BINDS, 0, tenant=f"t{n % 50}", tenant_limit=NEVER_BINDS)
    check_us = (time.perf_counter() - started) / calls * 1e6
    started = time.perf_counter()
    for _ in range(calls):
        await client.ping()
    ping_us = (time.perf_counter() - started) / calls * 1e6
    # Stamps of the real clock's size (microseconds since 1970, 16 digits): Redis stores small
    # integers in fewer bytes, so seven-digit stamps would understate a log by half.
    base = time.time_ns() // 1000
    for admissions in (60, 1000):
        for n in range(admissions):
            await shared.hit(f"full{admissions}", admissions, 0, tenant=f"m{admissions}", at=base + n)
    await client.aclose()
    plain = sync_redis.Redis.from_url(server.url)
    plain.set("bench:gcra", str(1_760_000_000_000_000), px=WINDOW_US // 1000)
    sizes = {
        f"redis_bytes_per_key_{n}": float(plain.memory_usage(window_keys("bench", f"m{n}", f"full{n}")[0]) or 0)
        for n in (60, 1000)
    }
    sizes["redis_bytes_per_key_gcra"] = float(plain.memory_usage("bench:gcra") or 0)
    plain.close()
    return {"redis_check_us": check_us, "redis_ping_us": ping_us, **sizes}


async def fleet_figures(server: RedisServer, keys: int, admissions: int = 1000) -> dict[str, float]:
    """Redis memory with ``keys`` full enterprise windows (see the module docstring)."""
    client = connect(server.url, timeout=30)
    shared = SharedWindows(client, prefix="fleet", policy="closed", local=WindowLimiter(), health=RedisHealth())
    start_us = 1_760_000_000_000_000
    for n in range(admissions):  # one key through the script, as the verifier fills it
        await shared.hit("probe", admissions, 0, tenant="probe", at=start_us + n * 50_000)
    await client.aclose()
    plain = sync_redis.Redis.from_url(server.url)
    scripted = int(plain.memory_usage(window_keys("fleet", "probe", "probe")[0]) or 0)
    plain.flushall()
    before = int(plain.info("memory")["used_memory"])
    stamps = [str(start_us + n * 50_000) for n in range(admissions)]  # LPUSHed oldest first: newest at the head
    started = time.perf_counter()
    pipe = plain.pipeline(transaction=False)
    for n in range(keys):
        name = window_keys("fleet", f"tenant{n % max(1, keys // 100)}", f"k{n:011d}")[0]
        pipe.lpush(name, *stamps)
        pipe.pexpire(name, 3_600_000)
        if n % 200 == 199:
            pipe.execute()
    pipe.execute()
    fill_s = time.perf_counter() - started
    after = int(plain.info("memory")["used_memory"])
    written = int(plain.memory_usage(window_keys("fleet", "tenant0", f"k{0:011d}")[0]) or 0)
    plain.close()
    return {
        "fleet_keys": keys,
        "fleet_redis_mb": (after - before) / 2**20,
        "fleet_bytes_per_key": (after - before) / keys,
        "fleet_memory_usage_scripted": scripted,
        "fleet_memory_usage_written": written,
        "fleet_fill_s": fill_s,
    }


def measure_fleet(keys: int) -> dict[str, float]:
    server = RedisServer(workdir=Path(tempfile.mkdtemp(prefix="pmkeys-bench-redis-")))
    server.start()
    try:
        return asyncio.run(fleet_figures(server, keys))
    finally:
        server.cleanup()


def measure(keys: int) -> dict[str, float]:
    window_ns, gcra_ns = inprocess_ns(keys)
    figures: dict[str, float] = {"inproc_two_limit_ns": window_ns, "inproc_gcra_ns": gcra_ns}
    for n in (60, 1000):
        figures[f"mem_bytes_per_key_{n}"], figures["mem_bytes_per_key_gcra"] = memory_bytes(n)
    server = RedisServer(workdir=Path(tempfile.mkdtemp(prefix="pmkeys-bench-redis-")))
    server.start()
    try:
        figures.update(asyncio.run(redis_figures(server, 5000)))
    finally:
        server.cleanup()
    return figures


def report(figures: dict[str, float]) -> None:
    f = figures
    print(
        f"limiter in-process: two limits {f['inproc_two_limit_ns']:.0f} ns/check, "
        f"GCRA (one limit) {f['inproc_gcra_ns']:.0f} ns/check"
    )
    print(
        f"limiter in Redis: one windows.lua call {f['redis_check_us']:.0f} µs, PING {f['redis_ping_us']:.0f} µs "
        f"(ratio {f['redis_check_us'] / f['redis_ping_us']:.2f})"
    )
    print(
        f"bytes per active key, window full: memory {f['mem_bytes_per_key_60']:.0f} (60/min), "
        f"{f['mem_bytes_per_key_1000']:.0f} (1000/min), GCRA {f['mem_bytes_per_key_gcra']:.0f}; "
        f"Redis {f['redis_bytes_per_key_60']:.0f} (60/min), {f['redis_bytes_per_key_1000']:.0f} (1000/min), "
        f"GCRA {f['redis_bytes_per_key_gcra']:.0f}"
    )
    print(" ".join(f"{k}={v:.0f}" for k, v in figures.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--fleet", type=int, default=0, help="also: Redis memory of this many full enterprise keys")
    args = parser.parse_args()
    report(measure(args.keys))
    if args.fleet:
        f = measure_fleet(args.fleet)
        print(
            f"Redis with {args.fleet} enterprise keys, each window full (1000 admissions): "
            f"{f['fleet_redis_mb']:.0f} MB used_memory, {f['fleet_bytes_per_key']:.0f} bytes per key "
            f"(MEMORY USAGE of one key: {f['fleet_memory_usage_written']:.0f} written as the script writes, "
            f"{f['fleet_memory_usage_scripted']:.0f} filled through windows.lua); filled in {f['fleet_fill_s']:.0f} s"
        )
        print(" ".join(f"{k}={v:.0f}" for k, v in f.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
