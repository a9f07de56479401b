"""The owner index of one object, read once per reconcile and written back check-and-set.

:meth:`Ledger.add` persists at once (the entry must exist before its key reaches the Secret);
other changes are collected and written by one :meth:`Ledger.flush`, so a reconcile costs one
index write however many keys it touches.
"""

from __future__ import annotations

from collections.abc import Iterable

from pmkeys.reconcile.interfaces import Store
from pmkeys.reconcile.objects import KeyObject
from pmkeys.vault.records import EntryState, OwnerEntry, OwnerIndex

#: Revoked entries kept in the index (the records themselves stay in Vault).
REVOKED_ENTRIES_KEPT = 20


class Ledger:
    def __init__(self, store: Store, obj: KeyObject, index: OwnerIndex, version: int) -> None:
        self._store = store
        self._uid = obj.uid
        self.index = index
        self._version = version
        self._dirty = False

    @classmethod
    async def load(cls, store: Store, obj: KeyObject) -> Ledger:
        found = await store.get_owner(obj.uid)
        if found is None:
            return cls(store, obj, OwnerIndex(namespace=obj.namespace, name=obj.name), 0)
        return cls(store, obj, *found)

    @property
    def entries(self) -> dict[str, OwnerEntry]:
        return self.index.keys

    def in_state(self, *states: EntryState) -> list[tuple[str, OwnerEntry]]:
        return [(kid, e) for kid, e in self.entries.items() if e.state in states]

    def find_digest(self, digests: Iterable[str]) -> tuple[str, OwnerEntry] | None:
        wanted = set(digests)
        return next(((k, e) for k, e in self.entries.items() if e.digest in wanted), None)

    def steady_on(self, digests: Iterable[str]) -> bool:
        """Whether a Secret holding the key of ``digests`` is the steady state the index
        describes: that key is the one active entry, and no entry is pending."""
        found = self.find_digest(digests)
        live = self.in_state(EntryState.ACTIVE, EntryState.PENDING)
        return found is not None and live == [found] and found[1].state is EntryState.ACTIVE

    async def add(self, key_id: str, entry: OwnerEntry) -> None:
        self._set(key_id, entry)
        await self.flush()

    def update(self, key_id: str, **changes: object) -> OwnerEntry:
        entry = self.entries[key_id].model_copy(update=changes)
        self._set(key_id, entry)
        return entry

    def _set(self, key_id: str, entry: OwnerEntry) -> None:
        keys = dict(self.entries)
        keys[key_id] = entry
        self.index = self.index.model_copy(update={"keys": _prune(keys)})
        self._dirty = True

    async def flush(self) -> None:
        if self._dirty:
            self._version = await self._store.put_owner(self._uid, self.index, version=self._version)
            self._dirty = False


def _prune(keys: dict[str, OwnerEntry]) -> dict[str, OwnerEntry]:
    revoked = [k for k, e in keys.items() if e.state is EntryState.REVOKED]
    drop = set(sorted(revoked, key=lambda k: keys[k].issued_at)[:-REVOKED_ENTRIES_KEPT])
    return {k: e for k, e in keys.items() if k not in drop}
