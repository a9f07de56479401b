"""Errors the API reports for the requests it served (``status.usage.errors``).

The API knows failures the verifier never sees (its own 4xx and 5xx), and reports them by key
id. A key id is public (status, Events, the UI), so over HTTP a report must present the key
itself: otherwise any caller could inflate another tenant's error count. The library keeps the
by-id form for code that embeds the verifier and is trusted as the API itself.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

from pmkeys.keys.material import MalformedKey, parse
from pmkeys.verify.cache import Entry, KeyCache
from pmkeys.verify.decision import Decision, Outcome
from pmkeys.verify.objects import ObjectIndex
from pmkeys.verify.peppers import Peppers
from pmkeys.verify.usage import UsageCounter

_monotonic_ns = time.monotonic_ns
_hmac = hmac.digest


class ErrorReports:
    """Counting reported errors on a :class:`~pmkeys.verify.verifier.Verifier`."""

    if TYPE_CHECKING:  # set by the Verifier
        _objects: ObjectIndex
        _cache: KeyCache
        _entries: dict[str, Entry]
        _usage: UsageCounter
        _peppers: Peppers

        async def _miss(
            self, key: str, primary: str, client: str | None, caller: str | None, now: int
        ) -> Entry | Decision: ...

        def _failure(self, outcome: Outcome, client: str | None, now: int, detail: str = "") -> Decision: ...

        def _refusal(self, outcome: Outcome, detail: str = "", *, retry_after: int = 0) -> Decision: ...

    def report_errors(self, key_id: str, count: int = 1) -> bool:
        """Count ``count`` errors the API had with requests made with key ``key_id``; False if
        this verifier does not know the key (neither cached nor seen by the watch)."""
        owner = self._objects.owner(key_id)
        if owner is not None:
            self._usage.tally(owner.uid, owner.namespace, owner.name).errors += count
            return True
        entry = self._cache.by_key_id(key_id)
        if entry is not None:
            self._usage.tally(entry.uid, entry.namespace, entry.name).errors += count
            return True
        return False

    async def report_errors_for(self, key: str, key_id: str, count: int = 1, *, caller: str | None = None) -> Decision:
        """Count ``count`` errors against ``key_id`` if ``key`` is that key and usable: whoever
        reports errors must hold the key (key ids are public, so an id alone would let anyone
        inflate another tenant's error count). Returns ALLOWED when counted, else the refusal
        (401 for a bad key, 403 ``scope_missing`` when ``key`` is another key)."""
        now = _monotonic_ns() // 1000
        try:
            parse(key)
        except MalformedKey as exc:
            return self._failure(Outcome.MALFORMED, None, now, str(exc))
        pepper = self._peppers.current
        if pepper is None:
            return self._refusal(Outcome.UNKNOWN)
        primary = _hmac(pepper, key.encode(), "sha256").hex()
        entry = self._entries.get(primary)
        if entry is None or entry.expires <= now:
            found = await self._miss(key, primary, None, caller, now)
            if isinstance(found, Decision):
                return found
            entry = found
        if entry.denial is not None:
            return self._refusal(entry.denial)
        if _monotonic_ns() // 1000 >= entry.not_after:
            return self._refusal(Outcome.EXPIRED)
        if entry.key_id != key_id:
            return Decision(Outcome.SCOPE_MISSING, detail=f"the key presented is not {key_id}")
        self._usage.tally(entry.uid, entry.namespace, entry.name).errors += count
        return Decision(Outcome.ALLOWED, entry.tenant, entry.key_id, entry.scope_list, entry.tier)
