"""The plan model without servers: generated files are current, defaults come from the tier
table, and a key's limit never exceeds its plan."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pmkeys.api import crd
from pmkeys.api.plan import TenantPlanSpec, default_plan, effective
from pmkeys.api.vocabulary import TIER_PLANS, TIER_RATE_LIMITS, Tier

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(crd.FILES))
def test_generated_files_are_current(name: str) -> None:
    assert (REPO / "crds" / name).read_text() == crd.FILES[name](), "run `python -m pmkeys.api.crd --write crds`"


def test_an_unset_field_is_the_tiers_default() -> None:
    plan = effective(TenantPlanSpec(tier=Tier.PRO))
    table = TIER_PLANS[Tier.PRO]
    assert (plan.key_rate_limit, plan.tenant_rate_limit, plan.max_keys) == (
        table.key_rate_limit,
        table.tenant_rate_limit,
        table.max_keys,
    )
    assert plan.max_grace_period == timedelta(days=7) and plan.min_rotation_interval == timedelta(hours=1)
    assert TIER_RATE_LIMITS[Tier.PRO] == table.key_rate_limit


def test_overrides_win_and_zero_keys_is_a_real_quota() -> None:
    plan = effective(TenantPlanSpec.model_validate({"tier": "starter", "maxKeys": 0, "keyRateLimit": 30}))
    assert plan.max_keys == 0 and plan.key_rate_limit == 30


@pytest.mark.parametrize(
    ("tier", "rate_limit", "expected"),
    [(None, None, 300), (Tier.STARTER, None, 60), (Tier.ENTERPRISE, None, 300), (None, 100, 100), (None, 900, 300)],
)
def test_a_keys_limit_is_its_own_within_the_plans_ceiling(
    tier: Tier | None, rate_limit: int | None, expected: int
) -> None:
    assert effective(TenantPlanSpec(tier=Tier.PRO)).key_limit(tier, rate_limit) == expected


def test_the_default_plan_is_starter() -> None:
    assert default_plan().tier is Tier.STARTER and default_plan().key_rate_limit == 60
