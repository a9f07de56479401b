"""The library in-process, against the real OpenBao (the verifier's own Kubernetes-auth role) and
the real API server: what the cache, single-flight, bcrypt-once, the negative cache and the
failed-attempt limit save, and how Vault trouble and a full bcrypt pool are answered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Callable

import bcrypt
import pytest
from tests.kube import Kube
from tests.vaultview import MOUNT, PREFIX, VaultView
from tests.verifier.conftest import issue, random_key, settings, vault_reads, vault_settings, wait_ready
from tests.verifier.relay import TcpRelay

from pmkeys.api.vocabulary import Scope, Tier
from pmkeys.config import VaultSettings
from pmkeys.keys.hashing import Hasher
from pmkeys.vault.records import KeyRecord
from pmkeys.vault.session import VaultSession
from pmkeys.vault.store import KeyStore
from pmkeys.verify import Outcome, Verifier
from pmkeys.verify.watching import ObjectFacts
from pmkeys_dev.environment import LocalEnvironment

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator"), pytest.mark.asyncio(loop_scope="session")]


def write_record(vault: VaultView, kube: Kube, namespace: str, *, cost: int, owner: str) -> str:
    """A key whose record is written straight to Vault (as the operator would, at any cost),
    for the existing TenantApiKey ``owner`` (the verifier refuses records of absent objects)."""
    plaintext = random_key()
    kube.issued.add(plaintext)
    record = KeyRecord(
        key_id="k" + secrets.token_hex(6)[:11],
        tenant=namespace,
        namespace=namespace,
        name=owner,
        uid=kube.get_key(namespace, owner)["metadata"]["uid"],
        bcrypt=bcrypt.hashpw(plaintext.encode(), bcrypt.gensalt(cost)).decode(),
        scopes=[Scope.SEND_EMAIL],
        tier=Tier.STARTER,
        rate_limit=60,
        created_at=dt.datetime.now(dt.UTC),
        pepper_version=max(p.version for p in vault.peppers()),
        display_prefix=plaintext[:12] + "…",
    )
    vault.client.secrets.kv.v2.create_or_update_secret(
        path=f"{PREFIX}/keys/{vault.digest_of(plaintext)}", secret=record.model_dump(mode="json"), mount_point=MOUNT
    )
    return plaintext


async def test_cached_verifications_read_vault_once_and_bcrypt_once(
    make_verifier: Callable[..., object], kube: Kube, tenant: str
) -> None:
    plaintext, status = issue(kube, tenant, "hot", tier="enterprise")
    verifier: Verifier = await make_verifier()  # type: ignore[misc]
    reads = vault_reads()
    decisions = [await verifier.verify(plaintext, "send_email") for _ in range(500)]
    assert all(d.allowed for d in decisions)
    assert decisions[0].key_id == status["keyId"] and decisions[0].tenant == tenant
    assert vault_reads() - reads == 1
    assert verifier.hasher.calls == 1
    assert verifier.stats.cache_hits == 499


async def test_concurrent_first_uses_share_one_read_and_one_bcrypt(
    make_verifier: Callable[..., object], kube: Kube, tenant: str
) -> None:
    plaintext, _ = issue(kube, tenant, "stampede", tier="enterprise")
    verifier: Verifier = await make_verifier()  # type: ignore[misc]
    reads = vault_reads()
    decisions = await asyncio.gather(*(verifier.verify(plaintext, "send_email") for _ in range(50)))
    assert all(d.allowed for d in decisions)
    assert vault_reads() - reads == 1, "single-flight: one Vault read for 50 concurrent first uses"
    assert verifier.hasher.calls == 1


async def test_invalidation_costs_a_read_but_never_a_second_bcrypt(
    make_verifier: Callable[..., object], kube: Kube, tenant: str
) -> None:
    plaintext, _ = issue(kube, tenant, "reread")
    verifier: Verifier = await make_verifier(watch=False)  # type: ignore[misc]
    assert (await verifier.verify(plaintext)).allowed
    facts = ObjectFacts.from_body(kube.get_key(tenant, "reread"))
    reads = vault_reads()
    verifier.object_changed(facts.uid, facts)  # what a watch event does
    # The entry stays (to answer from if Vault is down), marked for a re-read on its next use.
    assert verifier.describe()["staleEntries"] == 1
    assert (await verifier.verify(plaintext)).allowed
    assert vault_reads() - reads == 1
    assert verifier.hasher.calls == 1


async def test_unknown_keys_are_cached_as_negatives(make_verifier: Callable[..., object], kube: Kube) -> None:
    verifier: Verifier = await make_verifier(negative_ttl=0.5)  # type: ignore[misc]
    stranger = random_key()
    reads = vault_reads()
    for _ in range(20):
        assert (await verifier.verify(stranger)).reason is Outcome.UNKNOWN
    assert vault_reads() - reads == 1
    await asyncio.sleep(0.6)
    assert (await verifier.verify(stranger)).reason is Outcome.UNKNOWN
    assert vault_reads() - reads == 2, "negatives expire"


async def test_failed_attempts_are_limited_per_client(
    make_verifier: Callable[..., object], kube: Kube, tenant: str
) -> None:
    cached, _ = issue(kube, tenant, "known")
    fresh, _ = issue(kube, tenant, "fresh")
    verifier: Verifier = await make_verifier(failed_attempts_per_minute=3)  # type: ignore[misc]
    assert (await verifier.verify(cached, client="10.0.0.9")).allowed
    for _ in range(3):
        assert (await verifier.verify(random_key(), client="10.0.0.9")).reason is Outcome.UNKNOWN
    reads = vault_reads()
    blocked = await verifier.verify(random_key(), client="10.0.0.9")
    assert blocked.reason is Outcome.TOO_MANY_FAILURES and blocked.status == 429
    assert blocked.retry_after >= 1
    assert (await verifier.verify(fresh, client="10.0.0.9")).reason is Outcome.TOO_MANY_FAILURES
    assert vault_reads() == reads, "a blocked client costs no Vault read"
    assert (await verifier.verify(cached, client="10.0.0.9")).allowed, "keys already verified still pass"
    assert (await verifier.verify(fresh, client="10.0.0.10")).allowed, "other clients are not affected"
    assert (await verifier.verify("pm_live_nope", client="10.0.0.9")).reason is Outcome.MALFORMED


async def test_a_full_bcrypt_pool_answers_busy(
    make_verifier: Callable[..., object], kube: Kube, vault: VaultView, tenant: str
) -> None:
    issue(kube, tenant, "pepper-exists")
    slow = [write_record(vault, kube, tenant, cost=13, owner="pepper-exists") for _ in range(3)]
    hasher = Hasher(cost=12, workers=1, max_queue=1)
    verifier: Verifier = await make_verifier(hasher=hasher)  # type: ignore[misc]
    decisions = await asyncio.gather(*(verifier.verify(k, "send_email") for k in slow))
    reasons = sorted(d.reason.value for d in decisions)
    assert reasons.count("busy") >= 1, reasons
    assert reasons.count("allowed") >= 1, reasons
    busy = next(d for d in decisions if d.reason is Outcome.BUSY)
    assert busy.status == 503 and busy.retry_after == 1
    refused_key = next(k for k, d in zip(slow, decisions, strict=True) if d.reason is Outcome.BUSY)
    assert (await verifier.verify(refused_key, "send_email")).allowed, "once the pool has room"


async def test_vault_partition_keeps_cached_keys_and_refuses_new_ones_with_503(
    env: LocalEnvironment, kube: Kube, tenant: str
) -> None:
    cached, _ = issue(kube, tenant, "before-partition")
    new, _ = issue(kube, tenant, "during-partition")
    relay = TcpRelay(env.openbao.port)
    await relay.restore()
    verifier = Verifier.from_settings(settings(env, vault=vault_settings(env, addr=relay.url)))
    await verifier.start()
    try:
        await wait_ready(verifier)
        assert (await verifier.verify(cached)).allowed
        await relay.cut()
        assert (await verifier.verify(cached)).allowed, "cached keys keep working while Vault is away"
        refused = await verifier.verify(new)
        assert refused.reason is Outcome.VAULT_UNAVAILABLE and refused.status == 503
        assert refused.retry_after == 1
        await relay.restore()
        assert (await verifier.verify(new)).allowed
    finally:
        await verifier.close()
        await relay.cut()


async def test_a_verifier_that_cannot_reach_vault_is_not_ready(env: LocalEnvironment) -> None:
    relay = TcpRelay(env.openbao.port)  # never started: nothing listens there
    verifier = Verifier.from_settings(settings(env, vault=vault_settings(env, addr=relay.url), watch=False))
    await verifier.start()
    try:
        assert not verifier.ready
        assert verifier.readiness()["vault"] is False
        assert (await verifier.verify(random_key())).reason is Outcome.VAULT_UNAVAILABLE
    finally:
        await verifier.close()


async def test_a_store_without_a_pepper_means_no_key_exists(env: LocalEnvironment) -> None:
    """A fresh installation: the operator has issued nothing yet, so there is no pepper."""
    root = VaultSettings(addr=env.openbao.url, token=env.openbao.root_token, kv_mount=MOUNT, prefix="pmkeys-empty")
    store = KeyStore(VaultSession(root))
    verifier = Verifier(store)
    await verifier.start()
    try:
        assert verifier.ready
        assert (await verifier.verify(random_key())).reason is Outcome.UNKNOWN
    finally:
        await verifier.close()
