"""The ``TenantPlan`` resource: what a tenant bought, set by the platform and never by the tenant.

Why a namespaced object named ``plan`` in the tenant's namespace, and not a cluster-scoped one:
a ValidatingAdmissionPolicy binding can read a namespaced parameter object *from the request's
own namespace* (``paramRef`` without a namespace), so one binding enforces every tenant's own
plan at admission, with no per-tenant binding to create and no webhook to run. A cluster-scoped
parameter would need one binding per tenant (``paramRef.name`` is fixed). The namespace is the
tenancy boundary already (``penguinmails.io/tenant`` label); tenant roles may read their plan
(the UI and the plugin show it) and nothing in the chart lets them write it — RBAC's
escalation check stops a namespace admin from granting themselves a permission they lack.

Every field but ``tier`` is optional: unset means the tier's default from
:data:`pmkeys.api.vocabulary.TIER_PLANS`, so a plan is usually two lines and a change of the
tier table reaches every plan that did not override the field. :class:`EffectivePlan` is the
plan with the defaults filled in; the admission policy (:mod:`pmkeys.api.admission`) does the
same resolution in CEL, from the same table.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import Field, ValidationError

from pmkeys.api import vocabulary as v
from pmkeys.api.durations import DURATION_PATTERN, format_duration, parse_duration
from pmkeys.api.model import TenantApiKeySpec, _Model
from pmkeys.api.vocabulary import TIER_PLANS, Environment, Scope, Tier

logger = logging.getLogger(__name__)
MAX_PLAN_RATE = 1_000_000
MAX_PLAN_KEYS = 10_000


class TenantPlanSpec(_Model):
    tier: Tier = Field(description="The tenant's subscription; every unset field below takes this tier's default.")
    scopes: list[Scope] | None = Field(
        default=None,
        max_length=len(Scope),
        description="Scopes the tenant's keys may carry. Unset: the tier's.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    environments: list[Environment] | None = Field(
        default=None,
        max_length=len(Environment),
        description="Environments (live, test) the tenant's keys may use. Unset: the tier's.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    max_keys: int | None = Field(
        default=None, ge=0, le=MAX_PLAN_KEYS, description="TenantApiKey objects the namespace may hold."
    )
    key_rate_limit: int | None = Field(
        default=None, ge=1, le=MAX_PLAN_RATE, description="Ceiling of one key, in requests per minute."
    )
    tenant_rate_limit: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PLAN_RATE,
        description="Requests per minute of all the tenant's keys together (any 60-second window).",
    )
    min_rotation_interval: str | None = Field(
        default=None,
        max_length=32,
        pattern=DURATION_PATTERN,
        description="The shortest spec.rotation.interval a key may ask for (d, h, m, s).",
    )
    max_grace_period: str | None = Field(
        default=None,
        max_length=32,
        pattern=DURATION_PATTERN,
        description="The longest spec.rotation.gracePeriod a key may ask for (d, h, m, s).",
    )
    max_keys_in_grace: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Previous keys valid at once per TenantApiKey; a rotation beyond it ends the oldest grace.",
    )


class TenantUse(_Model):
    """The tenant-wide limit's current use, measured by the verifiers: requests admitted for the
    tenant, all its keys together, in the ``windowSeconds`` before ``asOf``."""

    requests: int = Field(ge=0, description="Requests admitted in the window, all the tenant's keys together.")
    window_seconds: int = Field(default=60, ge=1, description="The window, in seconds (the limit's own).")
    as_of: dt.datetime = Field(description="When the verifiers measured it (RFC 3339).")


class TenantPlanStatus(_Model):
    """Written by the operator (the plan in force) and the verifiers (``tenantUse``)."""

    observed_generation: int | None = None
    tier: Tier | None = None
    max_keys: int | None = None
    key_rate_limit: int | None = None
    tenant_rate_limit: int | None = None
    tenant_use: TenantUse | None = Field(
        default=None, description="The tenant-wide limit's current use, written by the verifiers (docs/plans.md)."
    )


@dataclass(frozen=True, slots=True)
class EffectivePlan:
    """A plan with every default filled in from the tier table."""

    tier: Tier
    scopes: frozenset[Scope]
    environments: frozenset[Environment]
    max_keys: int
    key_rate_limit: int
    tenant_rate_limit: int
    min_rotation_interval: timedelta
    max_grace_period: timedelta
    max_keys_in_grace: int
    #: The plan object's name (``<namespace>/plan``), or "" for the default plan.
    source: str = ""

    def key_limit(self, tier: Tier | None, rate_limit: int | None) -> int:
        """A key's requests per minute: its tier's ceiling (the plan's tier when it names none),
        lowered by its own ``rateLimit``, never above the plan's per-key ceiling."""
        ceiling = TIER_PLANS[tier or self.tier].key_rate_limit
        wanted = min(rate_limit, ceiling) if rate_limit else ceiling
        return min(wanted, self.key_rate_limit)

    def allowed_tiers(self) -> list[Tier]:
        """The tiers a key may name: the plan's and the cheaper ones."""
        order = list(Tier)
        return order[: order.index(self.tier) + 1]

    def refusals(self, spec: TenantApiKeySpec) -> list[str]:
        """What in ``spec`` asks for more than this plan allows, each naming the field, the plan
        and the allowed values (the admission policy's checks, for what reached the operator
        without them: keys older than the plan, or a namespace the policy does not bind), worded
        as the policy words them."""
        name = f"the {self.tier.value} plan"
        ref = f"(TenantPlan {self.source})" if self.source else "(default plan)"
        plan = f"{name} {ref}"
        found = []
        if spec.tier is not None and spec.tier not in self.allowed_tiers():
            allowed = ", ".join(t.value for t in self.allowed_tiers())
            found.append(f"spec.tier: {spec.tier.value} is above {name} of this tenant {ref}; allowed: {allowed}")
        if spec.rate_limit is not None and spec.rate_limit > self.key_rate_limit:
            found.append(
                f"spec.rateLimit: {spec.rate_limit} exceeds the per-key ceiling of {plan}; "
                f"allowed: 1 to {self.key_rate_limit} requests per minute"
            )
        extra = [s.value for s in spec.scopes if s not in self.scopes]
        if extra:
            allowed = ", ".join(s.value for s in Scope if s in self.scopes)
            found.append(f"spec.scopes: {', '.join(extra)} not in {plan}; allowed: {allowed}")
        if spec.environment not in self.environments:
            allowed = ", ".join(e.value for e in Environment if e in self.environments)
            found.append(f"spec.environment: {spec.environment.value} not in {plan}; allowed: {allowed}")
        interval = parse_duration(spec.rotation.interval)
        if interval and interval < self.min_rotation_interval:
            found.append(
                f"spec.rotation.interval: {spec.rotation.interval} is shorter than {name} allows {ref}; "
                f"allowed: 0 (no scheduled rotation) or at least {format_duration(self.min_rotation_interval)}"
            )
        if parse_duration(spec.rotation.grace_period) > self.max_grace_period:
            found.append(
                f"spec.rotation.gracePeriod: {spec.rotation.grace_period} is longer than {name} allows {ref}; "
                f"allowed: 0 to {format_duration(self.max_grace_period)}"
            )
        return found

    def as_status(self) -> dict[str, Any]:
        return {
            "tier": self.tier.value,
            "maxKeys": self.max_keys,
            "keyRateLimit": self.key_rate_limit,
            "tenantRateLimit": self.tenant_rate_limit,
        }


def effective(spec: TenantPlanSpec, *, source: str = "") -> EffectivePlan:
    tier = TIER_PLANS[spec.tier]
    return EffectivePlan(
        tier=spec.tier,
        scopes=frozenset(spec.scopes if spec.scopes is not None else tier.scopes),
        environments=frozenset(spec.environments if spec.environments is not None else tier.environments),
        max_keys=spec.max_keys if spec.max_keys is not None else tier.max_keys,
        key_rate_limit=spec.key_rate_limit or tier.key_rate_limit,
        tenant_rate_limit=spec.tenant_rate_limit or tier.tenant_rate_limit,
        min_rotation_interval=parse_duration(spec.min_rotation_interval or tier.min_rotation_interval),
        max_grace_period=parse_duration(spec.max_grace_period or tier.max_grace_period),
        max_keys_in_grace=spec.max_keys_in_grace if spec.max_keys_in_grace is not None else tier.max_keys_in_grace,
        source=source,
    )


#: What a tenant reads where its plan would be (the UI, the plugin).
NO_PLAN = (
    "This namespace has no TenantPlan: it is held to no plan, and where the platform requires one "
    f"(the default) no key can be created here. Ask the platform team for a TenantPlan named "
    f"'{v.PLAN_NAME}' in this namespace."
)


def describe(
    plan: EffectivePlan | None, keys: int, *, use: TenantUse | None = None, now: dt.datetime | None = None
) -> list[tuple[str, str]]:
    """What a tenant sees of its plan (the UI and the plugin show these rows)."""
    if plan is None:
        return [("Plan", f"none. {NO_PLAN}"), ("Keys", f"{keys}")]
    return [
        ("Plan", f"{plan.tier.value} ({plan.source})"),
        ("Keys", f"{keys} of {plan.max_keys}"),
        ("Per key", f"at most {plan.key_rate_limit} requests in any 60 seconds"),
        ("Tenant-wide", f"at most {plan.tenant_rate_limit} requests in any 60 seconds, all keys together"),
        ("Current use", use_text(use, plan.tenant_rate_limit, now=now)),
        ("Tiers", ", ".join(t.value for t in plan.allowed_tiers())),
        ("Scopes", ", ".join(s.value for s in Scope if s in plan.scopes)),
        ("Environments", ", ".join(e.value for e in Environment if e in plan.environments)),
        (
            "Rotation",
            f"interval 0 or at least {format_duration(plan.min_rotation_interval)}; "
            f"grace at most {format_duration(plan.max_grace_period)}",
        ),
    ]


def use_text(use: TenantUse | None, limit: int, *, now: dt.datetime | None = None) -> str:
    """ "42 of 300 in the last 60 s, as of 12 s ago": the figure, and how old it is."""
    if use is None:
        return f"not measured yet (0 of {limit} as far as the verifiers have reported)"
    age = max(0, int(((now or dt.datetime.now(dt.UTC)) - use.as_of).total_seconds()))
    return f"{use.requests} of {limit} in the last {use.window_seconds} s, as of {_age(age)} ago"


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def use_from_body(body: dict[str, Any]) -> TenantUse | None:
    """The tenant-wide limit's current use as the verifiers last wrote it, if they did."""
    raw = (body.get("status") or {}).get("tenantUse")
    if not raw:
        return None
    try:
        return TenantUse.model_validate(raw)
    except ValidationError:
        return None


def default_plan(tier: Tier = Tier.STARTER) -> EffectivePlan:
    """The plan of a namespace that has none (the platform's default tier)."""
    return effective(TenantPlanSpec(tier=tier))


def plan_from_body(body: dict[str, Any]) -> EffectivePlan | None:
    """The effective plan of a TenantPlan object; None if it is not ours (wrong name) or invalid."""
    meta = body.get("metadata") or {}
    if meta.get("name") != v.PLAN_NAME:
        return None
    try:
        spec = TenantPlanSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        logger.warning("TenantPlan %s/plan is invalid, ignored: %s", meta.get("namespace"), exc.errors()[:1])
        return None
    return effective(spec, source=f"{meta.get('namespace')}/{v.PLAN_NAME}")
