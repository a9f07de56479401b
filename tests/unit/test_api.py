"""The resource model and its CRD: durations, effective limits, structural schema."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pmkeys.api import crd
from pmkeys.api.durations import format_duration, parse_duration
from pmkeys.api.model import TenantApiKeySpec
from pmkeys.api.vocabulary import TIER_RATE_LIMITS, Tier


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("90d", timedelta(days=90)),
        ("720h", timedelta(hours=720)),
        ("1h30m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("1d2h3m4s", timedelta(seconds=93784)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "3 months", "90", "-1h", "1y", "1.5h", "h"])
def test_bad_durations_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="units d, h, m, s"):
        parse_duration(text)


@pytest.mark.parametrize("tier", list(Tier))
def test_effective_rate_limit_is_the_tier_unless_lowered(tier: Tier) -> None:
    spec = TenantApiKeySpec.model_validate({"tenant": "a", "scopes": ["send_email"], "tier": tier})
    assert spec.effective_rate_limit == TIER_RATE_LIMITS[tier]
    lowered = spec.model_copy(update={"rate_limit": 10})
    assert lowered.effective_rate_limit == 10


def _walk(node: object) -> list[dict]:  # type: ignore[type-arg]
    out = []
    if isinstance(node, dict):
        out.append(node)
        for value in node.values():
            out += _walk(value)
    elif isinstance(node, list):
        for value in node:
            out += _walk(value)
    return out


def test_generated_schema_is_structural() -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node
        assert node.get("default", 0) is not None


def test_every_spec_field_has_a_description_or_is_an_object() -> None:
    spec = crd.spec_schema()
    for name, prop in spec["properties"].items():
        assert "description" in prop or prop.get("type") == "object", name


def test_tier_ceilings_in_cel_come_from_the_vocabulary() -> None:
    rule = crd.spec_schema()["x-kubernetes-validations"][0]
    for tier, limit in TIER_RATE_LIMITS.items():
        assert f"'{tier.value}': {limit}" in rule["rule"]
