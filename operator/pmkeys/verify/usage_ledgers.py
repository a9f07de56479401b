"""Usage ledgers: the exact usage of every TenantApiKey, kept in a fixed number of ConfigMaps.

Why not ``status.usage`` of each object: a status write is one API request per object, and every
write wakes every watcher of TenantApiKeys (the operator and all verifiers). At 10,000 active keys
and a 10 s flush that was ~1,000 writes/s. Here the usage of all keys lives in ``shards``
ConfigMaps (``pmkeys-usage-00`` … in the verifier's namespace), a key's shard fixed by its uid;
a flush writes only the shards that changed, so the write rate is at most ``shards / interval``
whatever the number of keys and replicas (with Redis one replica writes per interval), and no
TenantApiKey watcher hears of it. ``status.usage``, which ``kubectl get tak``, the UI and the
plugin read, is a copy refreshed within a write budget (:mod:`~pmkeys.verify.usage_status`).

A ledger holds cumulative totals, not deltas: ``{uid: [namespace, name, requests, errors,
lastUsed]}`` as compact JSON under ``usage.json`` (≈ 120 bytes a key: 16 shards hold ~130,000
keys under the 1 MiB ConfigMap limit). Writes are read-modify-write guarded by
``resourceVersion``, so concurrent writers (replicas without Redis) sum without double-counting.
A uid seen for the first time starts from the object's current ``status.usage`` (counts from
before the ledgers existed are kept), or is dropped if the object is gone or was recreated.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys.verify.usage import Tally

T = TypeVar("T")
DATA_KEY = "usage.json"
SHARD_LABEL = "penguinmails.io/usage-shard"
CONFLICT_RETRIES = 8
GONE_MAX = 100_000


@dataclass(slots=True)
class Totals:
    """One object's cumulative usage."""

    namespace: str
    name: str
    requests: int = 0
    errors: int = 0
    #: Epoch seconds of the last request (0: never used).
    last_used: float = 0.0

    def add(self, tally: Tally) -> None:
        self.requests += tally.requests
        self.errors += tally.errors
        self.last_used = max(self.last_used, tally.last_used)

    def as_row(self) -> list[Any]:
        return [self.namespace, self.name, self.requests, self.errors, round(self.last_used, 3)]

    @classmethod
    def from_row(cls, row: list[Any]) -> Totals:
        return cls(str(row[0]), str(row[1]), int(row[2]), int(row[3]), float(row[4]))


Book = dict[str, Totals]
#: Where uids new to the ledgers start: their objects' usage so far (gone objects left out).
Seed = Callable[[dict[str, Tally]], Awaitable[dict[str, Totals]]]


def shard_of(uid: str, shards: int) -> int:
    return zlib.crc32(uid.encode()) % shards


def shard_name(shard: int) -> str:
    return f"pmkeys-usage-{shard:02d}"


def by_shard(tallies: dict[str, Tally], shards: int) -> dict[int, dict[str, Tally]]:
    grouped: dict[int, dict[str, Tally]] = {}
    for uid, tally in tallies.items():
        grouped.setdefault(shard_of(uid, shards), {})[uid] = tally
    return grouped


def decode(data: dict[str, str] | None) -> Book:
    rows = json.loads((data or {}).get(DATA_KEY) or "{}")
    return {uid: Totals.from_row(row) for uid, row in rows.items()}


def encode(book: Book) -> dict[str, str]:
    rows = {uid: totals.as_row() for uid, totals in book.items()}
    return {DATA_KEY: json.dumps(rows, separators=(",", ":"), sort_keys=True)}


class Ledgers:
    """The shard ConfigMaps of one namespace."""

    def __init__(self, api: client.ApiClient, *, namespace: str, shards: int, threads: int = 4) -> None:
        self.namespace = namespace
        self.shards = shards
        self._core = client.CoreV1Api(api)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ledger")
        #: The last version of each shard this process read or wrote.
        self.books: dict[int, Book] = {}
        #: uids whose object is gone (uids are never reused): their deltas are dropped without
        #: asking the API server again every interval.
        self.gone: set[str] = set()
        self.writes = 0

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def group(self, tallies: dict[str, Tally]) -> dict[int, dict[str, Tally]]:
        return by_shard(tallies, self.shards)

    async def add(self, shard: int, tallies: dict[str, Tally], seed: Seed) -> None:
        """Add ``tallies`` to the shard; raises ApiException/OSError when the API server fails."""
        for _ in range(CONFLICT_RETRIES):
            current = await self._read(shard)
            book = decode(current.data if current else None)
            for uid in self.gone.intersection(book):
                del book[uid]
            new = {uid: t for uid, t in tallies.items() if uid not in book and uid not in self.gone}
            seeded = await seed(new) if new else {}
            for uid, tally in tallies.items():
                if uid in self.gone:
                    continue
                totals = book.get(uid) or seeded.get(uid)
                if totals is None:  # the object is gone, or another object has its name now
                    self.forget(uid)
                    continue
                totals.add(tally)
                book[uid] = totals
            try:
                await self._write(shard, book, current)
            except ApiException as exc:
                if exc.status == 409:
                    continue
                raise
            self.books[shard] = book
            return
        raise ApiException(status=409, reason=f"usage ledger {shard_name(shard)} kept conflicting")

    def forget(self, uid: str) -> None:
        """The object of ``uid`` is gone: drop its entry at the shard's next write."""
        if len(self.gone) >= GONE_MAX:
            self.gone.clear()
        self.gone.add(uid)

    async def _read(self, shard: int) -> client.V1ConfigMap | None:
        try:
            return await self._call(lambda: self._core.read_namespaced_config_map(shard_name(shard), self.namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def _write(self, shard: int, book: Book, current: client.V1ConfigMap | None) -> None:
        name = shard_name(shard)
        if current is None:
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=name, labels={SHARD_LABEL: str(shard)}), data=encode(book)
            )
            await self._call(lambda: self._core.create_namespaced_config_map(self.namespace, body))
        else:
            current.data = encode(book)
            await self._call(lambda: self._core.replace_namespaced_config_map(name, self.namespace, current))
        self.writes += 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
