"""What the operator remembers about each object between reconciles, in one place.

Like kopf's ``inventory.ResourceMemory``: one :class:`ObjectMemory` per object uid, created on
first sight and forgotten when the object is deleted, so nothing per object outlives it.
Nothing here is persisted: after a restart every object is reconciled once anyway (the
Secret, the owner index and the record are the truth), so a lost memory costs one reconcile.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from dataclasses import dataclass, field

#: Uids of deleted objects remembered (as tombstones only), so a reconcile that read an object
#: before its deletion does not act on it after. Bounded: uids are never reused.
TOMBSTONES = 10_000


@dataclass
class ObjectMemory:
    #: One reconcile (or finalize) of an object at a time.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Consecutive failed reconciles, for the backoff.
    failures: int = 0
    #: The phase last reported (for the keys-by-phase gauge).
    phase: str | None = None
    #: (namespace, name) of the object, so a namespace change finds the objects it concerns.
    ref: tuple[str, str] | None = None
    #: Whether the last reconcile refused the object (tenant mismatch, foreign Secret).
    refused: bool = False
    #: resourceVersion of the Secret this operator last wrote, to ignore its watch echo.
    written_secret: str | None = None
    #: (generation, rotate annotation) last reconciled: other changes are not worth a reconcile.
    essence: tuple[object, object] | None = None
    #: The object was finalized: whoever waited for the lock must not act on it any more.
    deleted: bool = False
    #: A manual rotation asked for waits until then (policies.MANUAL_ROTATIONS per window).
    rotation_held_until: dt.datetime | None = None


class Memories:
    def __init__(self) -> None:
        self._by_uid: dict[str, ObjectMemory] = {}
        self._gone: set[str] = set()
        self._gone_order: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._by_uid)

    def __contains__(self, uid: str) -> bool:
        return uid in self._by_uid

    def recall(self, uid: str) -> ObjectMemory:
        """The memory of an object, created empty on first sight."""
        memory = self._by_uid.get(uid)
        if memory is None:
            memory = self._by_uid[uid] = ObjectMemory()
        return memory

    def peek(self, uid: str) -> ObjectMemory | None:
        """The memory of an object, without creating one."""
        return self._by_uid.get(uid)

    def forget(self, uid: str) -> ObjectMemory | None:
        """Drop the memory of a deleted object, keeping only its tombstone."""
        if uid not in self._gone:
            self._gone.add(uid)
            self._gone_order.append(uid)
            if len(self._gone_order) > TOMBSTONES:
                self._gone.discard(self._gone_order.popleft())
        return self._by_uid.pop(uid, None)

    def gone(self, uid: str) -> bool:
        """Whether the object was deleted (as far as this process saw)."""
        return uid in self._gone

    def in_namespace(self, namespace: str, *, refused_only: bool = False) -> list[tuple[str, str, str]]:
        """(namespace, name, uid) of every object seen in ``namespace`` (or only those refused)."""
        return [
            (ns, name, uid)
            for uid, memory in self._by_uid.items()
            if memory.ref is not None and (memory.refused or not refused_only)
            for ns, name in [memory.ref]
            if ns == namespace
        ]

    def refused_in(self, namespace: str) -> list[tuple[str, str, str]]:
        """(namespace, name, uid) of every object refused in ``namespace``."""
        return self.in_namespace(namespace, refused_only=True)
