"""Housekeeping over all key records: retention of the audit trail, and orphans.

When the operator starts and then once per ``retention_sweep_seconds`` the operator lists the
key records (the only place that lists them; never a hot path) and:

* destroys records revoked longer than ``retention_days`` ago (0 keeps them forever);
* revokes *orphans*: records still usable whose TenantApiKey no longer exists (its uid is
  gone), which happens when a cluster is rebuilt from a backup and the objects come back with
  new uids. Only records in namespaces this operator watches are considered, and only records
  older than ``orphan_min_age_seconds`` (default 10 minutes), so a key being issued right now
  is never mistaken for an orphan.

The first sweep runs at start: objects deleted while the operator was down (their finalizer
stripped, or a restore from backup) must not keep working for a whole interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from pmkeys.vault.errors import VaultError
from pmkeys.vault.records import KeyState
from pmkeys.vault.store import KeyStore

logger = logging.getLogger(__name__)

LiveUids = Callable[[], Awaitable[set[str]]]
#: How soon a sweep that failed is tried again.
RETRY_SECONDS = 60.0


async def sweep_once(
    store: KeyStore,
    *,
    retention: dt.timedelta | None,
    live_uids: set[str] | None,
    namespaces: set[str] | None,
    orphan_min_age: dt.timedelta,
    now: dt.datetime,
) -> tuple[int, int]:
    """Return (destroyed, orphans revoked). ``live_uids`` None skips the orphan check;
    ``namespaces`` None means this operator owns every namespace."""
    destroyed = revoked = 0
    for digest in await store.list_records():
        found = await store.get_record(digest)
        if found is None:
            continue
        record, version = found
        if record.state is KeyState.REVOKED:
            if retention is not None and record.revoked_at and now - record.revoked_at > retention:
                await store.destroy_record(digest)
                destroyed += 1
        elif (
            live_uids is not None
            and record.uid not in live_uids
            and (namespaces is None or record.namespace in namespaces)
            and now - record.created_at > orphan_min_age
        ):
            reason = "its TenantApiKey no longer exists"
            orphan = record.model_copy(update={"state": KeyState.REVOKED, "revoked_at": now, "revoked_reason": reason})
            await store.update_record(digest, orphan, version=version)
            logger.warning("revoked orphan key %s of %s/%s (object gone)", record.key_id, record.namespace, record.name)
            revoked += 1
    return destroyed, revoked


async def run(
    store: KeyStore,
    live_uids: LiveUids,
    *,
    namespaces: list[str],
    retention_days: float,
    orphan_min_age: float,
    every_seconds: float,
) -> None:
    retention = dt.timedelta(days=retention_days) if retention_days > 0 else None
    # With namespace globs we cannot tell which records are ours: leave orphans alone.
    globbed = any(ch in ns for ns in namespaces for ch in "*?[!")
    owned = set(namespaces) if namespaces else None
    while True:
        swept = await _sweep(
            store, live_uids, retention=retention, globbed=globbed, owned=owned, orphan_min_age=orphan_min_age
        )
        # A failed sweep (Vault not reachable yet at start, say) is retried within a minute.
        await asyncio.sleep(every_seconds if swept else min(every_seconds, RETRY_SECONDS))


async def _sweep(
    store: KeyStore,
    live_uids: LiveUids,
    *,
    retention: dt.timedelta | None,
    globbed: bool,
    owned: set[str] | None,
    orphan_min_age: float,
) -> bool:
    try:
        now = dt.datetime.now(dt.UTC)
        uids = None if globbed else await live_uids()
        destroyed, revoked = await sweep_once(
            store,
            retention=retention,
            live_uids=uids,
            namespaces=owned,
            orphan_min_age=dt.timedelta(seconds=orphan_min_age),
            now=now,
        )
    except Exception as exc:
        level = logging.WARNING if isinstance(exc, VaultError) else logging.ERROR
        logger.log(level, "housekeeping sweep skipped: %s", exc)
        return False
    if destroyed or revoked:
        logger.info("housekeeping: %d records past retention destroyed, %d orphans revoked", destroyed, revoked)
    return True
