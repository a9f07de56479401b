"""The verifier under faults: Redis stopped under load, a replica SIGKILLed under load.

Load is a steady stream of verifications alternating between two replicas that share Redis.
The invariants: no 5xx and no transport error from a live replica, nothing crashes, decisions
stay right (a revoked key is refused afterwards), and usage is never over-counted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.redis import RedisServer
from tests import report
from tests.kube import Kube, wait_for
from tests.verifier.conftest import CALLER_HEADERS, VerifierProcess, Verifiers, issue

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.usefixtures("operator")]


class Load:
    """A background stream of verifications, round-robin over the replicas still targeted."""

    def __init__(self, targets: list[VerifierProcess], key: str, *, rps: float = 10) -> None:
        self.targets = list(targets)
        self.key = key
        self.interval = 1 / rps
        self.codes: dict[int, Counter[str]] = {t.port: Counter() for t in targets}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5, headers=CALLER_HEADERS) as http:
            n = 0
            while not self._stop.is_set():
                target = self.targets[n % len(self.targets)]
                n += 1
                try:
                    response = http.post(f"{target.url}/v1/verify", json={"key": self.key, "scope": "send_email"})
                    self.codes[target.port][str(response.status_code)] += 1
                except httpx.HTTPError as exc:
                    self.codes[target.port][type(exc).__name__] += 1
                time.sleep(self.interval)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def total(self, port: int, code: str = "200") -> int:
        return self.codes[port][code]


@pytest.fixture
def redis(env: LocalEnvironment) -> Iterator[RedisServer]:
    server = RedisServer(workdir=env.workdir / f"fault-redis-{time.monotonic_ns()}")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def replicas(env: LocalEnvironment, kube: Kube) -> Iterator[Verifiers]:
    started = Verifiers(env, kube.issued)
    yield started
    started.stop_all()


def bad_answers(load: Load, port: int) -> Counter[str]:
    return Counter({code: n for code, n in load.codes[port].items() if code != "200"})


def test_redis_stopped_under_load(replicas: Verifiers, redis: RedisServer, kube: Kube, tenant: str) -> None:
    a, b = replicas.start(redis=redis), replicas.start(redis=redis)
    plaintext, _ = issue(kube, tenant, "busy", tier="enterprise")
    with Load([a, b], plaintext) as load:
        time.sleep(3)
        redis.kill()
        time.sleep(5)
        redis.start()
        time.sleep(3)
    violations = [f"replica {p}: {dict(bad_answers(load, p))}" for p in (a.port, b.port) if bad_answers(load, p)]
    violations += [f"replica {v.port} died" for v in (a, b) if not v.proc.running()]
    kube.patch_key(tenant, "busy", {"spec": {"revoked": True}})
    for v in (a, b):
        try:
            wait_for(
                lambda v=v: v.verify(plaintext, "send_email").status_code == 401,
                timeout=5,
                what="revoked key refused after the outage",
            )
        except AssertionError as exc:
            violations.append(str(exc))
    answered = load.total(a.port) + load.total(b.port)
    report.record(
        "Redis killed for 5 s under verifier load (policy open)",
        violations,
        f"{answered} requests answered 200, none failed; revocation still reaches both replicas",
    )
    assert not violations, violations


def test_verifier_replica_killed_under_load(replicas: Verifiers, redis: RedisServer, kube: Kube, tenant: str) -> None:
    a, b = replicas.start(redis=redis), replicas.start(redis=redis)
    plaintext, _ = issue(kube, tenant, "steady", tier="enterprise")
    with Load([a, b], plaintext) as load:
        time.sleep(3)
        a.proc.kill()
        replicas.running.remove(a)
        load.targets = [b]  # as a Service would, once the endpoint is gone
        time.sleep(4)
    violations = [f"surviving replica: {dict(bad_answers(load, b.port))}"] if bad_answers(load, b.port) else []
    answered = load.total(a.port) + load.total(b.port)
    status = wait_for(
        lambda: (s := kube.status(tenant, "steady")).get("usage", {}).get("requests", 0) >= load.total(b.port) and s,
        timeout=20,
        what="usage flushed",
    )
    counted = status["usage"]["requests"]
    if counted > answered:
        violations.append(f"usage over-counted: {counted} > {answered} answered")
    replacement = replicas.start(redis=redis)
    if replacement.verify(plaintext, "send_email").status_code != 200:
        violations.append("a new replica does not serve the key")
    report.record(
        "verifier replica SIGKILLed under load",
        violations,
        f"survivor answered all; usage {counted} of {answered} answered (loss bounded by one flush)",
    )
    assert not violations, violations
