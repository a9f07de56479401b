"""The rate-limit step of the hot path: which limits apply to a key, where they are kept, and the
decision that reports them.

A request is held to two limits (DESIGN.md, "Verification"): its key's — the smaller of what
its record says and the per-key ceiling of the namespace's TenantPlan — and its tenant's, the
plan's tenant-wide limit that all the tenant's keys share. Both are sliding windows
(:mod:`pmkeys.verify.windows`), checked in one step, in memory for one replica or in Redis in
one round trip for several (:mod:`pmkeys.verify.ratelimit`). The key's window is kept per
TenantApiKey (its uid), so a rotated key and the one in its grace period share one budget.
The plan is looked up on every request (:mod:`pmkeys.verify.plans`), so a plan change applies
from the next request without touching anybody's window.
"""

from __future__ import annotations

import time

from pmkeys.verify.cache import Entry
from pmkeys.verify.decision import Decision, Outcome
from pmkeys.verify.plans import PlanBook
from pmkeys.verify.ratelimit import SharedWindows
from pmkeys.verify.windows import Verdict, WindowLimiter


class Limits:
    def __init__(self, *, local: WindowLimiter, shared: SharedWindows | None, plans: PlanBook) -> None:
        self.local = local
        self._shared = shared
        self._plans = plans.by_namespace
        #: namespace → tenant of the requests held to a tenant-wide limit since the last
        #: :meth:`take_active` (whose current use :mod:`pmkeys.verify.tenant_use` reports).
        self.active: dict[str, str] = {}

    async def check(self, entry: Entry, now: int) -> Verdict | None:
        """Both limits for one request of ``entry``; None when Redis is down and the policy is closed."""
        plan = self._plans.get(entry.namespace)
        if plan is None:
            key_limit, tenant_limit = entry.rate_limit, 0
        else:
            key_limit, tenant_limit = min(entry.rate_limit, plan.key_rate_limit), plan.tenant_rate_limit
            self.active[entry.namespace] = entry.tenant
        if self._shared is None:
            return self.local.hit(entry.uid, key_limit, now, tenant=entry.tenant, tenant_limit=tenant_limit)
        return await self._shared.hit(entry.uid, key_limit, now, tenant=entry.tenant, tenant_limit=tenant_limit)

    def take_active(self) -> dict[str, str]:
        taken, self.active = self.active, {}
        return taken

    def has_plan(self, namespace: str) -> bool:
        return namespace in self._plans

    def tenant_limit(self, namespace: str) -> int:
        plan = self._plans.get(namespace)
        return plan.tenant_rate_limit if plan is not None else 0

    async def tenant_use(self, tenant: str) -> int | None:
        """Admissions of ``tenant`` in the last 60 seconds, all its keys (None: not known now)."""
        now = time.monotonic_ns() // 1000
        if self._shared is None:
            return self.local.tenant_use(tenant, now)
        return await self._shared.tenant_use(tenant, now)


def admitted(entry: Entry, verdict: Verdict) -> Decision:
    key, tenant = verdict.key, verdict.tenant
    if tenant is None:
        return Decision(
            Outcome.ALLOWED, entry.tenant, entry.key_id, entry.scope_list, entry.tier,
            key.limit, key.remaining, key.reset,
        )  # fmt: skip
    return Decision(
        Outcome.ALLOWED, entry.tenant, entry.key_id, entry.scope_list, entry.tier,
        key.limit, key.remaining, key.reset, 0, tenant.limit, tenant.remaining, tenant.reset,
    )  # fmt: skip


def limited(entry: Entry, verdict: Verdict) -> Decision:
    """The 429 for a request over the key's limit or its tenant's, saying which."""
    key, tenant = verdict.key, verdict.tenant
    by = verdict.refused_by or "key"
    if by == "key" or tenant is None:
        detail = f"the key's limit is {key.limit} requests in any 60 seconds"
    else:
        detail = f"the tenant-wide limit, shared by all the tenant's keys, is {tenant.limit} requests in any 60 seconds"
    return Decision(
        Outcome.RATE_LIMITED, entry.tenant, entry.key_id, entry.scope_list, entry.tier,
        key.limit, key.remaining, key.reset, verdict.retry_after,
        tenant.limit if tenant else 0, tenant.remaining if tenant else 0, tenant.reset if tenant else 0,
        by, detail,
    )  # fmt: skip
