"""Proof of possession across replicas, against the real OpenBao, API server and Redis.

What a user notices: a verifier that starts while keys are in use serves every key another
verifier already proved without spending bcrypt on it (so a rolling deploy is no outage), and
none of that lets anyone in who could not get in before — a near-miss key, a record planted
without the pepper, a receipt forged or replayed in Redis, a record swapped under a receipt.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import bcrypt
import hvac
import pytest
import redis

from pmkeys.keys.digest import Pepper, digest, new_pepper
from pmkeys.verify import Outcome, Verifier
from pmkeys.verify.possession import receipt, receipt_key
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import free_port
from pmkeys_dev.redis import RedisServer
from tests import leakscan
from tests.kube import Kube
from tests.vaultview import MOUNT, PREFIX, VaultView
from tests.verifier.conftest import Plaintext, issue, random_key, settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator"), pytest.mark.asyncio(loop_scope="session")]
MakeVerifier = Callable[..., Coroutine[Any, Any, Verifier]]


@pytest.fixture
async def make_verifier(env: LocalEnvironment) -> AsyncIterator[MakeVerifier]:
    """Verifiers that share nothing but Vault, the API server and (if given) Redis: each is what
    a new replica process holds."""
    started: list[Verifier] = []

    async def make(**overrides: object) -> Verifier:
        verifier = Verifier.from_settings(settings(env, watch=False, **overrides))
        await verifier.start()
        started.append(verifier)
        for _ in range(100):
            if verifier.ready:
                break
            await asyncio.sleep(0.05)
        return verifier

    yield make
    for verifier in started:
        await verifier.close()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, decode_responses=True)


@pytest.fixture
def key_of(kube: Kube, tenant: str) -> Callable[[str], Plaintext]:
    def make(name: str) -> Plaintext:
        plaintext, _ = issue(kube, tenant, name, tenant=tenant)
        return plaintext

    return make


def near_miss(key: str) -> str:
    """The key with its last character changed: still well-formed, one character off."""
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


async def test_a_new_replica_serves_a_proven_key_without_bcrypt(
    make_verifier: MakeVerifier, key_of: Callable[[str], Plaintext], redis_server: RedisServer, prefix: str
) -> None:
    key = key_of("proven")
    first = await make_verifier(redis_url=redis_server.url, redis_prefix=prefix)
    assert (await first.verify(key, "send_email")).allowed
    assert first.hasher.calls == 1
    replacement = await make_verifier(redis_url=redis_server.url, redis_prefix=prefix)
    decision = await replacement.verify(key, "send_email")
    assert decision.allowed, decision.reason
    assert replacement.hasher.calls == 0
    assert replacement.possession.receipts_accepted == 1


async def test_without_redis_every_process_proves_by_bcrypt(
    make_verifier: MakeVerifier, key_of: Callable[[str], Plaintext]
) -> None:
    key = key_of("alone")
    for _ in range(2):
        verifier = await make_verifier()
        assert (await verifier.verify(key, "send_email")).allowed
        assert verifier.hasher.calls == 1


async def test_redis_down_falls_back_to_bcrypt(make_verifier: MakeVerifier, key_of: Callable[[str], Plaintext]) -> None:
    key = key_of("redisdown")
    verifier = await make_verifier(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_prefix="down")
    decision = await verifier.verify(key, "send_email")
    assert decision.allowed, decision.reason
    assert verifier.hasher.calls == 1


async def test_a_near_miss_of_a_proven_key_is_refused(
    make_verifier: MakeVerifier, key_of: Callable[[str], Plaintext], redis_server: RedisServer, prefix: str
) -> None:
    key = key_of("nearmiss")
    first = await make_verifier(redis_url=redis_server.url, redis_prefix=prefix)
    assert (await first.verify(key, "send_email")).allowed
    replacement = await make_verifier(redis_url=redis_server.url, redis_prefix=prefix)
    for forged in (near_miss(key), key[:-1], key + "A", key.replace("pm_live_", "pm_test_"), random_key()):
        decision = await replacement.verify(forged, "send_email")
        assert not decision.allowed
        assert decision.reason in (Outcome.UNKNOWN, Outcome.MALFORMED)
    assert replacement.hasher.calls == 0


async def test_a_receipt_forged_without_the_pepper_does_not_skip_bcrypt(
    make_verifier: MakeVerifier,
    key_of: Callable[[str], Plaintext],
    vault: VaultView,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    """Someone who can write Redis and read Vault records, but not the pepper, plants receipts."""
    key = key_of("forged")
    record_digest = vault.digest_of(key)
    record = vault.record(record_digest)
    assert record is not None
    guessed = receipt(receipt_key(new_pepper().secret), record_digest, record)
    redis_client.set(f"{prefix}:proof:{record_digest}", guessed)
    verifier = await make_verifier(redis_url=redis_server.url, redis_prefix=prefix)
    assert (await verifier.verify(key, "send_email")).allowed
    assert verifier.hasher.calls == 1, "a receipt made without the pepper was trusted"
    assert verifier.possession.receipts_refused == 2  # by the start-up preload, then by the request
    assert verifier.preload.refused == 1 and verifier.preload.loaded == 0
    # The verifier replaced the forgery with a real receipt: the next replica skips bcrypt.
    replacement = await make_verifier(redis_url=redis_server.url, redis_prefix=prefix)
    assert (await replacement.verify(key, "send_email")).allowed
    assert replacement.hasher.calls == 0


async def test_a_record_swapped_under_a_receipt_is_refused(
    make_verifier: MakeVerifier,
    key_of: Callable[[str], Plaintext],
    vault: VaultView,
    redis_server: RedisServer,
    prefix: str,
) -> None:
    """The record at a proven key's digest is replaced by one made from another key (a Vault
    writer copying a hash, or a bug): the old receipt must not vouch for the new record."""
    key = key_of("swapped")
    first = await make_verifier(redis_url=redis_server.url, redis_prefix=prefix)
    assert (await first.verify(key, "send_email")).allowed
    record_digest = vault.digest_of(key)
    original = vault.record(record_digest)
    assert original is not None
    other = bcrypt.hashpw(random_key().encode(), bcrypt.gensalt(4)).decode()
    _write_record(vault.client, record_digest, original.model_dump(mode="json") | {"bcrypt": other})
    try:
        replacement = await make_verifier(redis_url=redis_server.url, redis_prefix=prefix)
        decision = await replacement.verify(key, "send_email")
        assert decision.reason == Outcome.UNKNOWN
        assert replacement.hasher.calls == 1
    finally:
        _write_record(vault.client, record_digest, original.model_dump(mode="json"))


async def test_a_record_planted_without_the_pepper_admits_nothing(
    make_verifier: MakeVerifier,
    key_of: Callable[[str], Plaintext],
    vault: VaultView,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    """A Vault writer without the pepper makes a key of its own, a record for it under a digest
    of a guessed pepper, and a receipt to match: the key is still unknown."""
    template = vault.record(vault.digest_of(key_of("template")))
    assert template is not None
    planted_key = random_key()
    guessed = Pepper(1, secrets.token_bytes(32))
    planted_digest = digest(guessed, planted_key)
    planted = template.model_dump(mode="json") | {
        "bcrypt": bcrypt.hashpw(planted_key.encode(), bcrypt.gensalt(4)).decode(),
        "key_id": "kplanted0000",
    }
    _write_record(vault.client, planted_digest, planted)
    try:
        forged_receipt = receipt(receipt_key(guessed.secret), planted_digest, vault.record(planted_digest))  # type: ignore[arg-type]
        redis_client.set(f"{prefix}:proof:{planted_digest}", forged_receipt)
        verifier = await make_verifier(redis_url=redis_server.url, redis_prefix=prefix)
        decision = await verifier.verify(planted_key, "send_email")
        assert decision.reason == Outcome.UNKNOWN
        assert verifier.hasher.calls == 0
    finally:
        vault.client.secrets.kv.v2.delete_metadata_and_all_versions(
            path=f"{PREFIX}/keys/{planted_digest}", mount_point=MOUNT
        )


async def test_what_redis_holds_does_not_contain_the_keys(
    make_verifier: MakeVerifier,
    key_of: Callable[[str], Plaintext],
    kube: Kube,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    keys = [key_of(f"scan{n}") for n in range(3)]
    verifier = await make_verifier(redis_url=redis_server.url, redis_prefix=prefix)
    for key in keys:
        assert (await verifier.verify(key, "send_email")).allowed
    names = list(redis_client.scan_iter(f"{prefix}:*"))
    assert sum(1 for n in names if n.startswith(f"{prefix}:proof:")) == 3
    texts = [
        (
            f"redis {n}",
            f"{n} {redis_client.dump(n)!r} {redis_client.get(n) if redis_client.type(n) == 'string' else ''}",
        )
        for n in names
    ]
    assert not leakscan.scan(texts, set(keys) | kube.issued)


def _write_record(client: hvac.Client, record_digest: str, data: dict[str, Any]) -> None:
    client.secrets.kv.v2.create_or_update_secret(path=f"{PREFIX}/keys/{record_digest}", secret=data, mount_point=MOUNT)
