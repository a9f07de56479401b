"""Attacks on the hand-over between verifier replicas (pmkeys.verify.handover), end to end:
real verifier processes, OpenBao, the API server, the operator and Redis.

Who: anyone who can read or write the verifiers' Redis (a pod the NetworkPolicy lets in, a
leaked Redis password, an operator of a shared Redis) — but who has neither a key nor the
pepper. What they want: a key from Redis, or a replica that grants a key more than its object
says (scopes it no longer has, another key's scopes). How: read the seals; replay a seal from
before the key's scopes were narrowed; move another key's seal under this key's digest; plant
a seal of their own. Each test fails on a hand-over without the defence it names.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from pmkeys_dev.redis import RedisServer
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView
from tests.verifier.conftest import (
    Plaintext,
    VerifierProcess,
    Verifiers,
    issue,
    metric,
    redis_server,
    verifiers,
)

__all__ = ["redis_server", "verifiers"]
pytestmark = [pytest.mark.integration]


@dataclass
class Fleet:
    """Verifier replicas sharing one Redis key space, and the attacker's hold on that Redis."""

    verifiers: Verifiers
    server: RedisServer
    prefix: str
    store: redis.Redis
    vault: VaultView

    def start(self) -> VerifierProcess:
        return self.verifiers.start(redis=self.server, PMKEYS_REDIS_PREFIX=self.prefix)

    def sealing(self, keys: list[Plaintext]) -> VerifierProcess:
        """A replica that verified every key once (reading each record from Vault) and wrote
        the seals."""
        replica = self.start()
        for api_key in keys:
            assert replica.verify(api_key, "send_email").status_code == 200
        sealed = "pmkeys_verifier_handover_seals_total"
        wait_for(lambda: metric(replica, sealed) >= len(keys), timeout=10, what="sealed")
        return replica

    def seal_name(self, api_key: str) -> str:
        return f"{self.prefix}:seal:{self.vault.digest_of(api_key)}"

    def seal_of(self, api_key: str) -> str:
        text = self.store.get(self.seal_name(api_key))
        assert isinstance(text, str), "no seal for a key the replica just read from Vault"
        return text

    def plant(self, api_key: str, text: str) -> None:
        self.store.set(self.seal_name(api_key), text, px=30_000)


@pytest.fixture
def fleet(verifiers: Verifiers, redis_server: RedisServer, vault: VaultView) -> Iterator[Fleet]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield Fleet(verifiers, redis_server, f"h{secrets.token_hex(4)}", client, vault)
    client.close()


def preloaded(verifier: VerifierProcess, result: str) -> float:
    return metric(verifier, "pmkeys_verifier_preload_keys_total", f'result="{result}"')


def test_a_reader_of_redis_learns_no_key_and_no_record(fleet: Fleet, kube: Kube, tenant: str) -> None:
    """Defence: seals are AES-GCM ciphertext; what Redis holds of a key is HMAC outputs."""
    keys = [issue(kube, tenant, f"read{n}", scopes=["send_email", "manage_contacts"])[0] for n in range(2)]
    fleet.sealing(keys)
    store = fleet.store
    names = [name for name in store.scan_iter(match=f"{fleet.prefix}:*") if store.type(name) == "string"]
    everything = {name: str(store.get(name)) for name in names}
    seals = {name: text for name, text in everything.items() if name.startswith(f"{fleet.prefix}:seal:")}
    assert len(seals) == len(keys)
    for api_key in keys:
        record = fleet.vault.record_for(api_key)
        assert record is not None
        parts = [api_key, record.bcrypt, record.key_id, record.tenant, record.name, record.uid, "manage_contacts"]
        for name, text in seals.items():
            raw = base64.urlsafe_b64decode(text)
            for part in parts:
                assert part not in name and part not in text and part.encode() not in raw, "readable in a seal"
        for name, text in everything.items():
            assert api_key not in name and api_key not in text, "a plaintext key in Redis"


def test_a_seal_replayed_after_the_scopes_were_narrowed_is_refused(fleet: Fleet, kube: Kube, tenant: str) -> None:
    """Defence: a seal opens only while its object's fingerprint is the one the sealer saw."""
    api_key, _ = issue(kube, tenant, "narrowed", scopes=["send_email", "manage_contacts"])
    first = fleet.sealing([api_key])
    old_seal = fleet.seal_of(api_key)
    kube.patch_key(tenant, "narrowed", {"spec": {"scopes": ["send_email"]}})
    wait_for(lambda: first.verify(api_key, "manage_contacts").status_code == 403, timeout=10, what="narrowed")
    wait_for(lambda: fleet.seal_of(api_key) != old_seal, timeout=10, what="sealed again")
    fleet.plant(api_key, old_seal)  # the replay
    second = fleet.start()
    assert second.verify(api_key, "manage_contacts").status_code == 403, "the dropped scope came back"
    assert second.verify(api_key, "send_email").status_code == 200
    assert (preloaded(second, "seal_refused"), preloaded(second, "handed_over")) == (1, 0)


def test_a_seal_moved_to_another_key_or_planted_is_refused(fleet: Fleet, kube: Kube, tenant: str) -> None:
    """Defence: the digest and the pepper version are the seal's associated data, and its key
    is derived from the pepper."""
    narrow, _ = issue(kube, tenant, "narrow", scopes=["send_email"])
    wide, _ = issue(kube, tenant, "wide", scopes=["send_email", "manage_contacts"])
    planted, _ = issue(kube, tenant, "planted", scopes=["send_email"])
    fleet.sealing([narrow, wide, planted])
    fleet.plant(narrow, fleet.seal_of(wide))
    fleet.plant(planted, base64.urlsafe_b64encode(secrets.token_bytes(400)).decode())
    second = fleet.start()
    assert second.verify(narrow, "manage_contacts").status_code == 403, "the moved seal's scopes were granted"
    assert second.verify(wide, "manage_contacts").status_code == 200
    for api_key in (narrow, planted):
        assert second.verify(api_key, "send_email").status_code == 200, "a refused seal costs a Vault read, not the key"
    assert (preloaded(second, "seal_refused"), preloaded(second, "handed_over")) == (2, 1)
