"""Retention: revoked records are the audit trail, and are deleted only when it has expired.

Once per ``retention_sweep_seconds`` the operator lists the key records and destroys those
revoked longer than ``retention_days`` ago (0 keeps them forever). This is housekeeping, not a
hot path: it is the only place that lists records, and it touches nothing that is not revoked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from pmkeys.vault.errors import VaultError
from pmkeys.vault.records import KeyState
from pmkeys.vault.store import KeyStore

logger = logging.getLogger(__name__)


async def sweep_once(store: KeyStore, *, retention: dt.timedelta, now: dt.datetime) -> int:
    destroyed = 0
    for digest in await store.list_records():
        found = await store.get_record(digest)
        if found is None:
            continue
        record, _ = found
        if record.state is KeyState.REVOKED and record.revoked_at and now - record.revoked_at > retention:
            await store.destroy_record(digest)
            destroyed += 1
    return destroyed


async def run(store: KeyStore, *, retention_days: float, every_seconds: float) -> None:
    if retention_days <= 0:
        return
    retention = dt.timedelta(days=retention_days)
    while True:
        await asyncio.sleep(every_seconds)
        try:
            destroyed = await sweep_once(store, retention=retention, now=dt.datetime.now(dt.UTC))
        except VaultError as exc:
            logger.warning("retention sweep skipped: %s", exc)
            continue
        if destroyed:
            logger.info("retention: destroyed %d records revoked more than %s ago", destroyed, retention)
