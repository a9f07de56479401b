"""Plan changes in the audit trail: who changed a tenant's TenantPlan, and from what to what.

Plans are set by the platform, never by the tenant (docs/plans.md); a change of tier or quota is
a fact an auditor asks about like any key operation. The admission policy stamps TenantPlans as
it stamps keys (:mod:`pmkeys.audit.admission`), and the operator watches them: a plan created,
changed (its spec, field by field, from → to) or deleted after the operator started is one
``plan_change`` record naming the stamped editor and every admitted edit since the last record.

The operator remembers the spec it last saw per plan, in memory: what the first listing after a
start shows is remembered, not recorded (it is no change), unless the plan was created after
the operator started. So a plan changed while no operator ran is not recorded as a change; the
next change is, from the spec the operator saw then.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from pmkeys.audit import actors
from pmkeys.audit.records import Action, AuditEvent, Outcome
from pmkeys.audit.store import AuditLog


class PlanTrail:
    def __init__(
        self,
        log: AuditLog,
        *,
        tenant_of: Callable[[str], str | None] = lambda _: None,
        started_at: dt.datetime | None = None,
    ) -> None:
        self.log = log
        #: namespace → tenant (the namespace's label, as the operator knows it).
        self.tenant_of = tenant_of
        #: Plans the first listing shows that were created after this were created while the
        #: watch was starting: recorded as created, not just remembered.
        self.started_at = (started_at or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        self._specs: dict[str, dict[str, Any]] = {}
        self._recorded_at: dict[str, int] = {}

    async def observe(self, event_type: str | None, body: Mapping[str, Any], *, record: bool = True) -> None:
        """One watch event of a TenantPlan (``None``: the listing at start). ``record`` is False
        on a standby operator replica: it follows the specs but only the active writer records."""
        meta = body["metadata"]
        uid = str(meta["uid"])
        spec = dict(body.get("spec") or {})
        before = self._specs.get(uid)
        if event_type == "DELETED":
            self._specs.pop(uid, None)
            if record:
                await self._write(body, "deleted", before or spec, {})
            self._recorded_at.pop(uid, None)
            return
        self._specs[uid] = spec
        if event_type is None and not self._created_since_start(meta):
            return
        if before == spec or not record:
            return
        what = "created" if before is None else "changed"
        await self._write(body, what, before or {}, spec)

    def _created_since_start(self, meta: Mapping[str, Any]) -> bool:
        try:
            created = dt.datetime.fromisoformat(str(meta.get("creationTimestamp", "")))
        except ValueError:
            return False
        return created >= self.started_at

    async def _write(self, body: Mapping[str, Any], what: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        meta = body["metadata"]
        annotations = meta.get("annotations") or {}
        uid = str(meta["uid"])
        changes = {
            field: {"from": before.get(field), "to": after.get(field)}
            for field in sorted(set(before) | set(after))
            if before.get(field) != after.get(field)
        }
        edits = actors.edits_since(annotations, self._recorded_at.get(uid))
        event = AuditEvent(
            action=Action.PLAN_CHANGE,
            outcome=Outcome.SUCCESS,
            actor=actors.last_editor(annotations),
            tenant=self.tenant_of(str(meta.get("namespace", ""))) or "",
            namespace=str(meta.get("namespace", "")),
            reason=f"TenantPlan {meta.get('name')} {what}",
            component="operator",
            details={"plan": meta.get("name"), "changes": changes, "edits": [e.to_json() for e in edits]},
        )
        await asyncio.to_thread(self.log.record, event)
        rv = str(meta.get("resourceVersion", ""))
        if rv.isdigit():
            self._recorded_at[uid] = int(rv)
