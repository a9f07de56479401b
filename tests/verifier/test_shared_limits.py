"""Rate limits shared through Redis by several replicas, and the Redis failure policies.

The limits are exact: with a limit of 10 per minute a burst of 120 concurrent requests spread
over three replicas admits exactly 10, and 6 s later none (at most 10 in any 60 seconds). When
Redis goes away, policy ``open`` falls back to each replica's own limit and policy ``closed``
answers 503; both recover when Redis is back, and nothing crashes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from tests.kube import Kube, wait_for
from tests.verifier.conftest import CALLER_HEADERS, VerifierProcess, Verifiers, issue

from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.redis import RedisServer

pytestmark = [pytest.mark.integration]


async def burst(replicas: list[VerifierProcess], plaintext: str, count: int, *, clients: int = 24) -> Counter[int]:
    """``count`` verifications from ``clients`` concurrent clients, round-robin over replicas."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    codes: Counter[int] = Counter()

    async def client() -> None:
        async with httpx.AsyncClient(timeout=20, headers=CALLER_HEADERS) as http:
            while not queue.empty():
                n = queue.get_nowait()
                target = replicas[n % len(replicas)]
                response = await http.post(f"{target.url}/v1/verify", json={"key": plaintext, "scope": "send_email"})
                codes[response.status_code] += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return codes


@pytest.fixture
def own_redis(env: LocalEnvironment) -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop and start without disturbing other tests."""
    server = RedisServer(workdir=env.workdir / f"redis-{time.monotonic_ns()}")
    server.start()
    yield server
    server.cleanup()


def test_replicas_sharing_redis_admit_exactly_the_limit(
    verifiers: Verifiers, redis_server: RedisServer, kube: Kube, tenant: str
) -> None:
    replicas = [verifiers.start(redis=redis_server) for _ in range(3)]
    plaintext, _ = issue(kube, tenant, "shared", rateLimit=10)
    codes = asyncio.run(burst(replicas, plaintext, 120))
    assert codes == Counter({200: 10, 429: 110}), codes
    time.sleep(6)
    again = asyncio.run(burst(replicas, plaintext, 30))
    assert again == Counter({429: 30}), f"10 per minute means no 11th within the minute, got {again}"


def test_without_redis_each_replica_limits_alone(verifiers: Verifiers, kube: Kube, tenant: str) -> None:
    """What Redis is for: two independent replicas admit the limit each."""
    replicas = [verifiers.start(), verifiers.start()]
    plaintext, _ = issue(kube, tenant, "apart", rateLimit=5)
    codes = asyncio.run(burst(replicas, plaintext, 40))
    assert codes == Counter({200: 10, 429: 30}), codes


def test_redis_down_with_policy_open_limits_locally_and_recovers(
    verifiers: Verifiers, own_redis: RedisServer, kube: Kube, tenant: str
) -> None:
    replicas = [verifiers.start(redis=own_redis), verifiers.start(redis=own_redis)]
    plaintext, _ = issue(kube, tenant, "open-policy", rateLimit=5)
    assert asyncio.run(burst(replicas, plaintext, 20))[200] == 5, "shared while Redis is up"
    own_redis.stop()
    during = asyncio.run(burst(replicas, plaintext, 40))
    assert during[200] == 10, f"each replica admits its own limit while Redis is down: {during}"
    assert set(during) <= {200, 429}, "no errors, no crash"
    metrics = replicas[0].metrics()
    assert "pmkeys_verifier_redis_up 0.0" in metrics
    assert replicas[0].http.get("/readyz").status_code == 200
    own_redis.start()
    time.sleep(1.2)  # past the one-second probe delay
    # Redis lost its state with the restart: the shared limit starts afresh and is shared again.
    codes = asyncio.run(burst(replicas, plaintext, 20))
    assert codes[200] == 5, codes
    assert "pmkeys_verifier_redis_up 1.0" in replicas[0].metrics()


def test_redis_down_with_policy_closed_is_503_and_recovers(
    verifiers: Verifiers, own_redis: RedisServer, kube: Kube, tenant: str
) -> None:
    replica = verifiers.start(redis=own_redis, PMKEYS_REDIS_FAILURE_POLICY="closed")
    plaintext, _ = issue(kube, tenant, "closed-policy")
    assert replica.verify(plaintext, "send_email").status_code == 200
    own_redis.kill()
    refused = replica.verify(plaintext, "send_email")
    assert refused.status_code == 503
    assert refused.json()["reason"] == "limiter_unavailable"
    assert refused.headers["Retry-After"] == "1"
    assert replica.verify(plaintext, "read_analytics").status_code == 403, "scope refusals need no limiter"
    assert replica.http.get("/healthz").status_code == 200, "the process is alive"
    own_redis.start()
    wait_for(lambda: replica.verify(plaintext, "send_email").status_code == 200, timeout=5, what="Redis back")
