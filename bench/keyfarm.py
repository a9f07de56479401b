"""Thousands of keys for the scale benchmarks, without waiting for the operator to issue them.

The benchmarks here measure the verifier and the usage path, not issuance (bench/issue_keys.py
does that), so the keys are made the way the operator records them, directly: a TenantApiKey
object per key (so its uid, watch events and status are real), a Vault record under
``HMAC(pepper, key)`` with the key's bcrypt hash at the cost asked for (12 by default: the at-rest
cost of production), and the plaintext kept in this process only. No operator runs, so nothing
else touches the objects.

bcrypt at cost 12 takes ≈ 0.3 s of CPU per key, so 10,000 keys cost ≈ 50 core-minutes to hash
once. The keys are therefore derived from a fixed seed (they are bench keys of a throwaway
environment, never real), and their hashes are cached on disk under
``$PMKEYS_CACHE_DIR/bench-hashes/`` (hashes only, never a plaintext): the first run pays, the
next ones reuse them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import bcrypt
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.api.vocabulary import Scope, Tier
from pmkeys.keys.digest import digest
from pmkeys.keys.material import display_prefix
from pmkeys.vault.records import KeyRecord
from pmkeys.vault.store import KeyStore
from pmkeys_dev import bootstrap
from pmkeys_dev.binaries import cache_dir

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
SEED = b"pmkeys bench keys (throwaway environments only)"


@dataclass(frozen=True, slots=True, repr=False)
class FarmKey:
    plaintext: str
    namespace: str
    name: str
    uid: str

    def __repr__(self) -> str:
        return f"FarmKey({self.namespace}/{self.name})"


def bench_key(index: int) -> str:
    """The ``index``-th bench key: ``pm_test_`` and 32 base62 characters derived from the seed."""
    stream = hmac.digest(SEED, index.to_bytes(8, "big"), hashlib.sha512)
    return "pm_test_" + "".join(ALPHABET[b % 62] for b in stream[:32])


def _hash(args: tuple[int, int]) -> str:
    index, cost = args
    return bcrypt.hashpw(bench_key(index).encode(), bcrypt.gensalt(cost)).decode()


def hashes(count: int, cost: int) -> list[str]:
    """bcrypt hashes of the first ``count`` bench keys at ``cost``, from the cache or computed
    (on every core) and cached."""
    path = cache_dir() / "bench-hashes" / f"cost-{cost}.json"
    cached: list[str] = json.loads(path.read_text()) if path.exists() else []
    if len(cached) < count:
        missing = range(len(cached), count)
        print(f"hashing {len(missing)} bench keys at bcrypt cost {cost} (cached for next time)", flush=True)
        with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
            cached += list(pool.map(_hash, [(i, cost) for i in missing], chunksize=16))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cached))
    return cached[:count]


def create_objects(api: client.ApiClient, count: int, namespaces: int) -> list[tuple[str, str, str]]:
    """``count`` TenantApiKeys spread over ``namespaces`` tenant namespaces: (namespace, name, uid)."""
    custom = client.CustomObjectsApi(api)
    names = [f"farm-{n:02d}" for n in range(namespaces)]
    for ns in names:
        bootstrap.tenant_namespace(api, ns, ns)

    def create(i: int) -> tuple[str, str, str]:
        ns = names[i % namespaces]
        body = {
            "apiVersion": v.API_VERSION,
            "kind": v.KIND,
            "metadata": {"name": f"key-{i:05d}", "namespace": ns},
            "spec": {"tenant": ns, "tier": "enterprise", "scopes": ["send_email"], "environment": "test"},
        }
        made = custom.create_namespaced_custom_object(v.GROUP, v.VERSION, ns, v.PLURAL, body)
        return ns, made["metadata"]["name"], made["metadata"]["uid"]

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(create, range(count)))


async def write_records(store: KeyStore, objects: list[tuple[str, str, str]], hashed: list[str]) -> list[FarmKey]:
    """One Vault record per object, as the operator writes them; returns the keys."""
    pepper = await store.current_pepper()
    limit = asyncio.Semaphore(16)
    now = dt.datetime.now(dt.UTC)

    async def one(index: int, obj: tuple[str, str, str]) -> FarmKey:
        namespace, name, uid = obj
        plaintext = bench_key(index)
        record = KeyRecord(
            key_id=f"kfarm{index:07d}",
            tenant=namespace,
            namespace=namespace,
            name=name,
            uid=uid,
            bcrypt=hashed[index],
            scopes=[Scope.SEND_EMAIL],
            tier=Tier.ENTERPRISE,
            rate_limit=1000,
            created_at=now,
            pepper_version=pepper.version,
            display_prefix=display_prefix(plaintext),
        )
        async with limit:
            await store.create_record(digest(pepper, plaintext), record)
        return FarmKey(plaintext, namespace, name, uid)

    return list(await asyncio.gather(*(one(i, obj) for i, obj in enumerate(objects))))


def farm(api: client.ApiClient, store: KeyStore, count: int, *, cost: int, namespaces: int = 20) -> list[FarmKey]:
    hashed = hashes(count, cost)
    objects = create_objects(api, count, namespaces)
    return asyncio.run(write_records(store, objects, hashed))
