"""Failed verifications, aggregated per key per minute, off the hot path.

A failed verification is a security fact an auditor asks for (someone tried a revoked key,
a key without the scope, a guessed key), but writing one record per failure would put a
database round trip on the verifier's hot path and let an attacker flood the trail. So the
hot path only calls :meth:`FailureTally.add` — a dict update under no lock (the verifier's
event loop is single-threaded) — and a background task calls :meth:`FailureTally.drain` once a
minute and writes one record per (minute, key, reason) with the count and up to
:data:`MAX_CLIENTS` distinct client addresses. Unknown keys (no record matched) are tallied
under an empty key id, per minute and reason, with no tenant. Records whose minute has not ended
are written when the verifier stops; one still unwritten when it is killed is lost (at most a
minute of failure counts of one replica).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pmkeys.audit.lifecycle import audit_log
from pmkeys.audit.records import Action, Actor, AuditEvent, Outcome
from pmkeys.audit.store import AuditLog
from pmkeys.config import AuditSettings

logger = logging.getLogger(__name__)

MAX_CLIENTS = 20
MINUTE = 60


class KeyFacts(Protocol):
    """What the verifier's cache entry tells about a key (no key material)."""

    key_id: str
    tenant: str
    namespace: str
    name: str


@dataclass(slots=True)
class _Bucket:
    tenant: str
    namespace: str
    name: str
    count: int = 0
    clients: dict[str, int] = field(default_factory=dict)


#: (minute since the epoch, key id, reason): a plain tuple, the cheapest dict key there is.
_Slot = tuple[int, str, str]


class FailureTally:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._buckets: dict[_Slot, _Bucket] = {}

    def add(self, reason: str, client: str | None, key: KeyFacts | None = None) -> None:
        """One failure; ``key`` is the key's cached facts when the presented key was found.
        On the verifier's failure path: a clock read, one tuple, two dict updates."""
        slot = (int(self.clock() // MINUTE), key.key_id if key else "", reason)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = _Bucket(key.tenant, key.namespace, key.name) if key else _Bucket("", "", "")
        bucket.count += 1
        clients = bucket.clients
        client = client or ""
        seen = clients.get(client)
        if seen is not None:
            clients[client] = seen + 1
        elif len(clients) < MAX_CLIENTS:
            clients[client] = 1

    def drain(self, *, everything: bool = False) -> list[AuditEvent]:
        """Records for every finished minute (and the current one when ``everything``)."""
        current = int(self.clock() // MINUTE)
        done = [k for k in self._buckets if everything or k[0] < current]
        return [self._event(k, self._buckets.pop(k)) for k in done]

    @staticmethod
    def _event(slot: _Slot, bucket: _Bucket) -> AuditEvent:
        minute, key_id, reason = slot
        start = minute * MINUTE
        return AuditEvent(
            action=Action.VERIFY_FAILED,
            outcome=Outcome.DENIED,
            actor=Actor(username=""),
            tenant=bucket.tenant,
            namespace=bucket.namespace,
            name=bucket.name,
            key_id=key_id,
            reason=str(reason),
            source_address=",".join(sorted(bucket.clients)),
            details={
                "count": bucket.count,
                "minute_start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                "clients": dict(sorted(bucket.clients.items())),
                "clients_truncated": len(bucket.clients) >= MAX_CLIENTS,
            },
        )


class FailureRecorder:
    """The tally and the writer together: what the verifier holds."""

    def __init__(self, log: AuditLog, *, every_seconds: float = MINUTE) -> None:
        self.log = log
        self.tally = FailureTally()
        self.every_seconds = every_seconds

    def add(self, reason: str, client: str | None, key: KeyFacts | None = None) -> None:
        self.tally.add(reason, client, key)

    async def run(self) -> None:
        """Write finished minutes every ``every_seconds``; when cancelled (``Verifier.close``),
        write everything tallied, the current minute too, and close the connection."""
        try:
            while True:
                await asyncio.sleep(self.every_seconds)
                await self.flush()
        except asyncio.CancelledError:
            await self.close()
            raise

    async def flush(self, *, everything: bool = False) -> int:
        events = self.tally.drain(everything=everything)
        if events:
            await asyncio.to_thread(self._write, events)
        return len(events)

    async def close(self) -> None:
        """Write what is tallied, the current minute too, and close the connection."""
        try:
            await self.flush(everything=True)
        except Exception:  # shutting down: report, do not raise
            logger.exception("final audit flush of failed verifications failed")
        self.log.close()

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> FailureRecorder | None:
        log = audit_log(settings, component="verifier")
        return cls(log, every_seconds=settings.failures_flush_seconds) if log else None

    def _write(self, events: list[AuditEvent]) -> None:
        for event in events:
            self.log.record(event)


class _NoTally:
    """What the verifier tallies into when no audit store is configured: nothing."""

    def add(self, reason: str, client: str | None, key: KeyFacts | None = None) -> None:
        return None


NO_TALLY: FailureTally | _NoTally = _NoTally()
