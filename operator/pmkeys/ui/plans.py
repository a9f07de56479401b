"""The tenant's plan in the UI: read with the user's own token, shown as the plugin shows it, and
held against a new key before the API server sees it.

The plan is read with the signed-in user's client (the chart's tenant roles may ``get``
``tenantplans`` in their namespace and never write them), so the UI cannot show a plan its user
could not read with kubectl. The rows come from :func:`pmkeys.api.plan.describe`, the same
function ``kubectl pmkeys plan`` prints, and the create check is
:meth:`pmkeys.api.plan.EffectivePlan.refusals`, the operator's own: one rule, three front ends.
Admission stays the authority — the UI's check only says the same thing one round trip earlier,
and whatever it lets through the API server still judges (its message is shown as it is).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from pydantic import ValidationError

from pmkeys.api import vocabulary as v
from pmkeys.api.durations import format_duration, parse_duration
from pmkeys.api.model import TenantApiKeySpec
from pmkeys.api.plan import NO_PLAN, EffectivePlan, TenantUse, describe, plan_from_body, use_from_body
from pmkeys.api.vocabulary import TIER_RATE_LIMITS, Environment, Scope, Tier
from pmkeys.ui.errors import FieldError, UiError, field_name, kube_call
from pmkeys.ui.identity import REQUEST_TIMEOUT
from pmkeys.ui.schemas import GRACE_CHOICES, ROTATION_CHOICES, PlanRow, PlanView, TenantUseView


@dataclass(frozen=True)
class TenantPlanState:
    """What the namespace's TenantPlan says: the plan in force (None: no plan) and its use."""

    namespace: str
    plan: EffectivePlan | None
    use: TenantUse | None = None

    def view(self, keys: int, *, now: dt.datetime | None = None) -> PlanView:
        now = now or dt.datetime.now(dt.UTC)
        rows = [PlanRow(label=label, value=value) for label, value in describe(self.plan, keys, use=self.use, now=now)]
        plan = self.plan
        if plan is None:
            return PlanView(namespace=self.namespace, has_plan=False, message=NO_PLAN, keys=keys, rows=rows)
        use = self.use
        return PlanView(
            namespace=self.namespace,
            has_plan=True,
            source=plan.source,
            tier=plan.tier,
            keys=keys,
            max_keys=plan.max_keys,
            key_rate_limit=plan.key_rate_limit,
            tenant_rate_limit=plan.tenant_rate_limit,
            tenant_use=None
            if use is None
            else TenantUseView(
                requests=use.requests,
                limit=plan.tenant_rate_limit,
                window_seconds=use.window_seconds,
                as_of=use.as_of,
                age_seconds=max(0, int((now - use.as_of).total_seconds())),
            ),
            allowed_tiers=plan.allowed_tiers(),
            scopes=[s for s in Scope if s in plan.scopes],
            environments=[e for e in Environment if e in plan.environments],
            min_rotation_interval=format_duration(plan.min_rotation_interval),
            max_grace_period=format_duration(plan.max_grace_period),
            max_keys_in_grace=plan.max_keys_in_grace,
            rows=rows,
        )


def read_plan(api: client.ApiClient, namespace: str) -> TenantPlanState:
    """The namespace's plan, read as the user; 403 (UiError) when their role may not read it."""
    custom = client.CustomObjectsApi(api)
    what = f"the TenantPlan of namespace {namespace}"
    try:
        body: dict[str, Any] = kube_call(
            lambda: custom.get_namespaced_custom_object(
                v.GROUP, v.VERSION, namespace, v.PLAN_PLURAL, v.PLAN_NAME, _request_timeout=REQUEST_TIMEOUT
            ),
            what=what,
        )
    except UiError as err:
        if err.status == 404:
            return TenantPlanState(namespace, None)
        raise
    return TenantPlanState(namespace, plan_from_body(body), use_from_body(body))


# -- the create form ------------------------------------------------------------------------
def rotation_choices(plan: EffectivePlan | None) -> dict[str, str]:
    """The scheduled rotations the form offers: never, or at least the plan's shortest interval."""
    if plan is None:
        return ROTATION_CHOICES
    return {
        k: label for k, label in ROTATION_CHOICES.items() if k == "0" or parse_duration(k) >= plan.min_rotation_interval
    }


def grace_choices(plan: EffectivePlan | None) -> dict[str, str]:
    """The grace periods the forms offer: at most the plan's longest."""
    if plan is None:
        return GRACE_CHOICES
    return {k: label for k, label in GRACE_CHOICES.items() if parse_duration(k) <= plan.max_grace_period}


@dataclass(frozen=True)
class FormChoices:
    """What the create form offers under a plan (everything when the plan cannot be read), and
    what it selects first."""

    tiers: list[tuple[Tier, int]]
    scopes: list[Scope]
    environments: list[Environment]
    rotations: dict[str, str]
    graces: dict[str, str]
    defaults: dict[str, Any]


def form_choices(plan: EffectivePlan | None) -> FormChoices:
    tiers = plan.allowed_tiers() if plan is not None else list(Tier)
    scopes = [s for s in Scope if plan is None or s in plan.scopes]
    environments = [e for e in Environment if plan is None or e in plan.environments]
    rotations, graces = rotation_choices(plan), grace_choices(plan)
    defaults: dict[str, Any] = {
        "tier": (plan.tier if plan is not None else Tier.STARTER).value,
        "environment": (Environment.LIVE if Environment.LIVE in environments else next(iter(environments), None)),
        "scopes": [Scope.SEND_EMAIL.value] if Scope.SEND_EMAIL in scopes else [s.value for s in scopes[:1]],
        "rotationInterval": "90d" if "90d" in rotations else "0",
        "gracePeriod": "24h" if "24h" in graces else list(graces)[-1],
    }
    if defaults["environment"] is not None:
        defaults["environment"] = defaults["environment"].value
    return FormChoices(
        tiers=[(t, plan.key_limit(t, None) if plan is not None else TIER_RATE_LIMITS[t]) for t in tiers],
        scopes=scopes,
        environments=environments,
        rotations=rotations,
        graces=graces,
        defaults=defaults,
    )


def refuse_beyond(plan: EffectivePlan | None, manifest: dict[str, Any], *, keys: int) -> None:
    """422 naming each field the plan does not allow (with the plan and the allowed values), or
    the key count when the namespace holds as many keys as its plan allows. No plan: nothing
    to say here (admission decides)."""
    if plan is None:
        return
    fields: list[FieldError] = []
    if keys >= plan.max_keys:
        fields.append(
            FieldError(
                "name",
                f"this namespace holds {keys} of the {plan.max_keys} keys the {plan.tier.value} plan allows "
                f"(TenantPlan {plan.source}); delete a key you no longer need, or ask the platform team "
                "for a larger plan",
            )
        )
    try:
        spec = TenantApiKeySpec.model_validate(manifest["spec"])
    except ValidationError:
        spec = None  # the API server names what is malformed
    for refusal in plan.refusals(spec) if spec is not None else []:
        path, _, _ = refusal.partition(":")
        fields.append(FieldError(field_name(path), refusal))
    if fields:
        summary = "; ".join(f.message for f in fields)
        raise UiError(422, "plan_exceeded", f"the key asks for more than this tenant's plan allows: {summary}", fields)


def refuse_grace(plan: EffectivePlan | None, key: dict[str, Any], grace: str) -> None:
    """422 when a regeneration asks for a grace period longer than the plan allows (the rule
    admission applies to the changed field, worded as it words it)."""
    if plan is None:
        return
    try:
        spec = TenantApiKeySpec.model_validate(key.get("spec") or {})
    except ValidationError:
        return
    asked = spec.model_copy(update={"rotation": spec.rotation.model_copy(update={"grace_period": grace})})
    found = [r for r in plan.refusals(asked) if r.startswith("spec.rotation.gracePeriod:")]
    if found:
        raise UiError(422, "plan_exceeded", found[0], [FieldError("gracePeriod", found[0])])
