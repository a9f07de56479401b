"""Refresh behind (pmkeys.verify.refreshing), in-process against the real OpenBao and API server.

What a user notices: a key in use never waits for Vault because its cache entry's TTL passed —
while the watch is live the entry answers and its record is re-read in the background — and
nothing that should stop or narrow a key waits for that re-read: a watch event (revocation, a
scope change) takes effect at once, and without a live watch the TTL bounds staleness as before.
What only Vault knows (a record edited or removed there by hand) reaches the verifier within
one TTL plus the re-read's pace.

Who could abuse an entry answered past its TTL: a tenant admin whose key was narrowed or revoked
(the watch event must win over the old entry), and whoever counts on a record removed from Vault
to stop a leaked key (the re-read must not keep it alive).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from tests.kube import Kube
from tests.vaultview import MOUNT, PREFIX, VaultView
from tests.verifier.conftest import issue, vault_reads

from pmkeys.api.vocabulary import Scope
from pmkeys.verify import Outcome, Verifier

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator"), pytest.mark.asyncio(loop_scope="session")]
TTL = 0.5


def rewrite_scopes(vault: VaultView, plaintext: str, scopes: list[Scope]) -> None:
    """Change the key's record in Vault only (a hand edit: no TenantApiKey changes)."""
    digest = vault.digest_of(plaintext)
    record = vault.record(digest)
    assert record is not None
    record = record.model_copy(update={"scopes": scopes})
    vault.client.secrets.kv.v2.create_or_update_secret(
        path=f"{PREFIX}/keys/{digest}", secret=record.model_dump(mode="json"), mount_point=MOUNT
    )


async def until(probe: Callable[[], object], *, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not probe():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_an_entry_past_its_ttl_answers_at_once_and_takes_a_vault_edit_behind(
    make_verifier: Callable[..., object], kube: Kube, tenant: str, vault: VaultView
) -> None:
    plaintext, _ = issue(kube, tenant, "behind", scopes=["send_email"])
    verifier: Verifier = await make_verifier(cache_ttl=TTL)  # type: ignore[misc]
    assert (await verifier.verify(plaintext, "send_email")).allowed
    rewrite_scopes(vault, plaintext, [Scope.READ_ANALYTICS])
    await asyncio.sleep(TTL + 0.1)
    misses, reads = verifier.stats.cache_misses, vault_reads()
    assert (await verifier.verify(plaintext, "send_email")).allowed, "answered from the entry past its TTL"
    assert verifier.stats.cache_misses == misses, "the request did not take the miss path"
    took = await until(lambda: verifier.refresher.refreshed >= 1, timeout=5, what="the re-read behind")
    assert vault_reads() - reads == 1, "one read, behind the request"
    refused = await verifier.verify(plaintext, "send_email")
    assert refused.reason is Outcome.SCOPE_MISSING, "the hand edit in Vault took effect"
    assert (await verifier.verify(plaintext, "read_analytics")).allowed
    assert took < 1.0, f"the re-read came {took:.2f} s after the request (pace: 50/s, one entry)"
    assert verifier.hasher.calls == 1, "a re-read does not prove the key again"


async def test_a_scope_narrowed_on_the_object_is_not_answered_behind(
    make_verifier: Callable[..., object], kube: Kube, tenant: str
) -> None:
    plaintext, _ = issue(kube, tenant, "narrow-behind", scopes=["send_email", "manage_contacts"])
    verifier: Verifier = await make_verifier(cache_ttl=TTL)  # type: ignore[misc]
    assert (await verifier.verify(plaintext, "manage_contacts")).allowed
    await asyncio.sleep(TTL + 0.1)  # past its TTL: it would answer behind if nothing changed
    seen, misses = verifier.stats.invalidations, verifier.stats.cache_misses
    generation = kube.patch_key(tenant, "narrow-behind", {"spec": {"scopes": ["send_email"]}})["metadata"]["generation"]
    kube.wait_status(
        tenant, "narrow-behind", lambda s: s.get("observedGeneration") == generation, what="the operator narrowed it"
    )
    await until(lambda: verifier.stats.invalidations > seen, timeout=5, what="the watch event applied")
    decision = await verifier.verify(plaintext, "manage_contacts")
    assert decision.reason is Outcome.SCOPE_MISSING, "the watch event sent the entry to the miss path"
    assert verifier.stats.cache_misses == misses + 1, "read on the request, not answered behind"


async def test_without_a_live_watch_an_entry_past_its_ttl_waits_for_vault(
    make_verifier: Callable[..., object], kube: Kube, tenant: str, vault: VaultView
) -> None:
    plaintext, _ = issue(kube, tenant, "unwatched", scopes=["send_email"])
    verifier: Verifier = await make_verifier(cache_ttl=TTL, watch=False)  # type: ignore[misc]
    assert (await verifier.verify(plaintext, "send_email")).allowed
    rewrite_scopes(vault, plaintext, [Scope.READ_ANALYTICS])
    await asyncio.sleep(TTL + 0.1)
    assert (await verifier.verify(plaintext, "send_email")).reason is Outcome.SCOPE_MISSING, "read on the request"
    assert verifier.refresher.started == 0


async def test_a_record_removed_from_vault_stops_the_key_within_ttl_and_pace(
    make_verifier: Callable[..., object], kube: Kube, tenant: str, vault: VaultView
) -> None:
    plaintext, _ = issue(kube, tenant, "pulled", scopes=["send_email"])
    verifier: Verifier = await make_verifier(cache_ttl=TTL)  # type: ignore[misc]
    assert (await verifier.verify(plaintext, "send_email")).allowed
    vault.client.secrets.kv.v2.delete_metadata_and_all_versions(
        path=f"{PREFIX}/keys/{vault.digest_of(plaintext)}", mount_point=MOUNT
    )
    removed = time.monotonic()
    while (await verifier.verify(plaintext, "send_email")).allowed:
        assert time.monotonic() - removed < TTL + 2, "the key outlived its record by more than TTL + 2 s"
        await asyncio.sleep(0.02)
    assert verifier.refresher.dropped == 1, "the re-read found no record and sent the key to the miss path"
    assert (await verifier.verify(plaintext, "send_email")).reason is Outcome.UNKNOWN
