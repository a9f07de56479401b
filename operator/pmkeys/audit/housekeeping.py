"""The operator's periodic audit work: retry queued records, sweep, keep the checkpoint.

Retrying its own queued records is every operator's business (they record what it did while
it was the writer). The retention sweep and the checkpoint are the *active* operator's only,
like every other write (:mod:`pmkeys.reconcile.leadership`): a standby that swept would remove
records next to the active one — harmless to the chain, which the sweep's row lock keeps
consistent, but a second actor doing a destructive job nobody asked it to — and one that wrote
checkpoints would race the active one's check-and-set. So both ask the leadership ``fence``
first; a standby is refused and asks again at the next tick, so after a takeover the new
writer's first sweep and checkpoint come within one tick.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from pmkeys import metrics
from pmkeys.audit.chain import Finding
from pmkeys.audit.checkpoint import Checkpoint, UnreadableCheckpoint, VaultCheckpoint, findings, follow
from pmkeys.audit.lifecycle import OPERATOR
from pmkeys.audit.store import AuditLog
from pmkeys.config import OperatorSettings
from pmkeys.reconcile.leadership import Leadership, NotLeader
from pmkeys.vault.errors import VaultError
from pmkeys.vault.store import KeyStore

logger = logging.getLogger(__name__)
#: How often records queued while the store was down are retried (and the longest tick).
RETRY_SECONDS = 15.0
#: Records followed per checkpoint; a longer way to the head is walked over several ticks.
FOLLOW_LIMIT = 20_000


@dataclass
class CheckpointKeeper:
    """Moves the checkpoint in Vault forward along the same history, never back or sideways."""

    log: AuditLog
    vault: VaultCheckpoint
    #: Who writes (the operator's peering identity), named in the checkpoint.
    writer: str = ""
    #: What the trail disagreed with at the last look (empty: it agreed).
    mismatch: list[Finding] = field(default_factory=list)

    async def advance(self) -> Checkpoint | None:
        """Follow the records from the checkpoint to the newest, recomputing every link; if the
        trail agrees with the checkpoint and the links hold, checkpoint the newest record."""
        try:
            stored = await self.vault.read()
        except UnreadableCheckpoint as exc:  # never overwritten: a person must look
            self.mismatch = [Finding("checkpoint-unreadable", 0, str(exc))]
            logger.error("%s; it is kept as it is", exc)
            return None
        old = stored.checkpoint if stored else None
        head = await asyncio.to_thread(self.log.head)
        # From the checkpointed record (or the base, once it was swept), else the head row's.
        start = max(old.seq, head.base_seq) if old else head.seq
        rows = await asyncio.to_thread(self.log.records_since, start, limit=FOLLOW_LIMIT)
        followed = follow(old.seq if old else start, rows, base_hash=head.base_hash)
        last = followed.last
        now = dt.datetime.now(dt.UTC)
        seen = dataclasses.replace(head, seq=last.seq if last else head.seq, hash_of_asked=followed.hash_at_checkpoint)
        self.mismatch = (findings(old, seen, now=now) if old else []) + followed.breaks
        if self.mismatch:
            logger.error(
                "audit trail disagrees with its checkpoint in Vault, which is kept as it is: %s",
                "; ".join(map(str, self.mismatch)),
            )
            return old
        if last is None or (old is not None and old.seq == last.seq):
            return old
        # The retention only ratchets up here: a shorter one set in the database is not trusted.
        retention = max(head.retention_seconds, old.retention_seconds if old else 0.0)
        new = Checkpoint(last.seq, last.hash, last.at, retention, now, writer=self.writer)
        await self.vault.write(new, cas=stored.version if stored else 0)
        return new


def _allowed(fence: Callable[[str], None], what: str) -> bool:
    try:
        fence(what)
    except NotLeader:
        return False
    return True


@dataclass
class Housekeeping:
    log: AuditLog
    fence: Callable[[str], None]
    sweep_every: float
    keeper: CheckpointKeeper | None = None
    checkpoint_every: float = 60.0
    retry_every: float = RETRY_SECONDS
    sweeps: int = 0

    async def run(self) -> None:
        """Tick at the shortest of the three periods; the first sweep soon after start, so a
        long-stopped operator catches up, the first checkpoint at the first tick."""
        tick = min(self.retry_every, self.sweep_every, self.checkpoint_every)
        next_sweep = time.monotonic() + min(60.0, self.sweep_every)
        next_checkpoint = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            try:
                await asyncio.to_thread(self.log.flush_pending)
            except Exception:  # the store's own errors are handled there; anything else: next tick
                logger.exception("retrying queued audit records failed")
            if time.monotonic() >= next_sweep and _allowed(self.fence, "audit retention sweep"):
                next_sweep = time.monotonic() + self.sweep_every
                await self.sweep()
            if self.keeper and time.monotonic() >= next_checkpoint and _allowed(self.fence, "audit checkpoint"):
                next_checkpoint = time.monotonic() + self.checkpoint_every
                await self.checkpoint(self.keeper)

    async def sweep(self) -> None:
        try:
            removed, through, seq = await asyncio.to_thread(self.log.sweep, OPERATOR)
        except psycopg.Error as exc:
            logger.warning("audit retention sweep failed: %s", exc)
            return
        self.sweeps += 1
        logger.info("audit retention sweep removed %d record(s) through seq %d (seq %d)", removed, through, seq)

    @staticmethod
    async def checkpoint(keeper: CheckpointKeeper) -> None:
        try:
            await keeper.advance()
        except (psycopg.Error, VaultError, NotLeader) as exc:
            logger.warning("audit checkpoint not written: %s", exc)


def for_operator(log: AuditLog, store: KeyStore, leadership: Leadership, settings: OperatorSettings) -> Housekeeping:
    """The operator's audit housekeeping, its checkpoint in ``store`` (Vault), fenced by ``leadership``."""
    keeper = CheckpointKeeper(log, VaultCheckpoint(store, settings.audit.checkpoint_path), writer=leadership.identity)
    metrics.AUDIT_CHECKPOINT_MISMATCH.set_function(lambda: int(bool(keeper.mismatch)))
    return Housekeeping(
        log,
        fence=leadership.check,
        sweep_every=settings.retention_sweep_seconds,
        keeper=keeper,
        checkpoint_every=settings.audit.checkpoint_seconds,
    )
