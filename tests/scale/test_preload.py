"""A new verifier replica joins the rotation with every proven key cached (real processes,
OpenBao, API server, operator, Redis).

What a user notices in a rolling deploy: the new replica answers its first request for each key
as fast as the old one did — no Vault read, no bcrypt — because before it said it was ready it
opened the records the first replica handed over (sealed in Redis), or with
``PMKEYS_HANDOVER=false`` read from Vault the records of the keys that have receipts. The control
(``PMKEYS_PRELOAD_SECONDS=0``) shows the same replica reading Vault once per key without either.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from pmkeys.verify import Verifier
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import free_port
from pmkeys_dev.redis import RedisServer
from tests.kube import Kube, wait_for
from tests.verifier.conftest import CALLER_TOKENS, Plaintext, VerifierProcess, Verifiers, issue, metric, settings

pytestmark = [pytest.mark.integration]
KEYS = 12


@pytest.fixture
def proven(verifiers: Verifiers, kube: Kube, tenant: str, redis_server: RedisServer, prefix: str) -> list[Plaintext]:
    """``KEYS`` keys, each proven once (bcrypt, receipt left in Redis) by a first replica, which
    also sealed their records in Redis for the next one."""
    keys = [issue(kube, tenant, f"pre{n:02d}", tenant=tenant)[0] for n in range(KEYS)]
    first = verifiers.start(redis=redis_server, PMKEYS_REDIS_PREFIX=prefix)
    for api_key in keys:
        assert first.verify(api_key, "send_email").status_code == 200
    assert metric(first, "pmkeys_verifier_bcrypt_checks_total") == KEYS
    wait_for(lambda: metric(first, "pmkeys_verifier_handover_seals_total") >= KEYS, timeout=10, what="sealed")
    return keys


def start_unwaited(verifiers: Verifiers, redis: RedisServer, prefix: str, **settings: str) -> VerifierProcess:
    """A verifier process whose readiness the test watches itself from its first moment."""
    port = free_port()
    proc = verifiers.env.start_component(
        "verifier",
        name=f"verifier-{port}",
        PMKEYS_PORT=str(port),
        PMKEYS_REDIS_URL=redis.url,
        PMKEYS_REDIS_PREFIX=prefix,
        PMKEYS_CALLER_TOKENS=json.dumps(CALLER_TOKENS),
        PMKEYS_LOG_LEVEL="INFO",
        **settings,
    )
    started = VerifierProcess(proc, port)
    verifiers.running.append(started)
    return started


def first_ready_answer(verifier: VerifierProcess, *, timeout: float = 60) -> dict[str, Any]:
    """/readyz polled every 20 ms from the start; the body of its first 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert verifier.proc.running(), "the verifier exited while starting"
        try:
            answer = verifier.anonymous.get("/readyz")
        except httpx.HTTPError:
            time.sleep(0.02)
            continue
        if answer.status_code == 200:
            return dict(answer.json())
        time.sleep(0.02)
    raise AssertionError("the verifier did not become ready")


@pytest.mark.parametrize("handover", [True, False], ids=["handed-over", "read-from-vault"])
def test_a_new_replica_is_ready_only_with_every_proven_key_cached(
    verifiers: Verifiers, proven: list[Plaintext], redis_server: RedisServer, prefix: str, handover: bool
) -> None:
    replacement = start_unwaited(verifiers, redis_server, prefix, PMKEYS_HANDOVER=str(handover).lower())
    ready = first_ready_answer(replacement)
    assert ready["checks"]["preload"] is True
    assert ready["preload"]["state"] == "done", ready["preload"]
    assert ready["preload"]["loaded"] == KEYS, "ready before the proven keys' records were cached"
    assert ready["cacheEntries"] >= KEYS
    for api_key in proven:
        assert replacement.verify(api_key, "send_email").status_code == 200
    assert metric(replacement, "pmkeys_verifier_cache_lookups_total", 'result="miss"') == 0, "a Vault read per key"
    assert metric(replacement, "pmkeys_verifier_bcrypt_checks_total") == 0
    handed_over = metric(replacement, "pmkeys_verifier_preload_keys_total", 'result="handed_over"')
    loaded = metric(replacement, "pmkeys_verifier_preload_keys_total", 'result="loaded"')
    assert (handed_over, loaded) == ((KEYS, 0) if handover else (0, KEYS))
    assert ready["preload"]["handedOver"] == handed_over
    assert metric(replacement, "pmkeys_verifier_preload_finished") == 1


def test_without_the_preload_each_key_costs_a_vault_read(
    verifiers: Verifiers, proven: list[Plaintext], redis_server: RedisServer, prefix: str
) -> None:
    """The control: the same replica with ``PMKEYS_PRELOAD_SECONDS=0``."""
    replacement = start_unwaited(verifiers, redis_server, prefix, PMKEYS_PRELOAD_SECONDS="0")
    ready = first_ready_answer(replacement)
    assert ready["preload"]["state"] == "off"
    for api_key in proven:
        assert replacement.verify(api_key, "send_email").status_code == 200
    assert metric(replacement, "pmkeys_verifier_cache_lookups_total", 'result="miss"') == KEYS
    assert metric(replacement, "pmkeys_verifier_bcrypt_checks_total") == 0, "receipts still spare bcrypt"


@pytest.mark.asyncio(loop_scope="session")
async def test_readiness_waits_for_a_slow_preload_and_no_longer_than_its_bound(
    env: LocalEnvironment, proven: list[Plaintext], redis_server: RedisServer, prefix: str
) -> None:
    """Vault answering the preload slowly (1 s a record, one at a time; no hand-over, so every
    record is read from Vault): the replica is held
    out of readiness while every other check passes, and joins once its bound passes (the
    preload going on behind it) — or once the records are in, whichever comes first."""

    async def ready_moment(deadline: float) -> tuple[Verifier, float, int, bool]:
        verifier = Verifier.from_settings(
            settings(
                env,
                redis_url=redis_server.url,
                redis_prefix=prefix,
                preload_concurrency=1,
                preload_seconds=deadline,
                handover=False,
            )
        )
        real = verifier.store.get_record

        async def slow(record_digest: str) -> Any:
            await asyncio.sleep(1.0)
            return await real(record_digest)

        verifier.store.get_record = slow  # type: ignore[method-assign]
        await verifier.start()
        held_back = False
        started = time.monotonic()
        while not verifier.ready:
            assert time.monotonic() - started < 60, verifier.readiness()
            others = {k: v for k, v in verifier.readiness().items() if k != "preload"}
            held_back = held_back or all(others.values())
            await asyncio.sleep(0.01)
        return verifier, time.monotonic() - started, verifier.preload.loaded, held_back

    verifier, _, loaded, held_back = await ready_moment(deadline=60)
    try:
        assert held_back, "every other check passed while the preload ran: readiness must wait for it"
        assert loaded == KEYS
    finally:
        await verifier.close()
    verifier, waited, loaded, _ = await ready_moment(deadline=1.0)
    try:
        assert loaded < KEYS, "the bound passed with 12 s of reads to do: ready before they were all in"
        assert waited < 30
        for _ in range(600):
            if verifier.preload.state == "done":
                break
            await asyncio.sleep(0.05)
        assert verifier.preload.loaded == KEYS, "the preload goes on behind traffic"
    finally:
        await verifier.close()
