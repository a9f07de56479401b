"""Plan changes are in the audit trail: who created or changed a tenant's TenantPlan, and what
changed, with the author stamped at admission like key changes."""

from __future__ import annotations

import json

import pytest
import yaml

from pmkeys.api import vocabulary as v
from pmkeys.audit import admission
from pmkeys_dev.environment import LocalEnvironment
from tests.audit.trail import as_person, wait_record
from tests.builders import key
from tests.kube import Kube

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator")]


def test_plan_created_and_changed_by_the_platform_are_recorded_with_the_author(
    kube: Kube, env: LocalEnvironment, tenant: str
) -> None:
    auditor = env.postgres.component_dsn("auditor")
    kube.create_key(key("first", tenant))
    kube.wait_phase(tenant, "first", "Active")  # the operator is watching
    plan = {
        "apiVersion": v.API_VERSION,
        "kind": v.PLAN_KIND,
        "metadata": {"name": v.PLAN_NAME, "namespace": tenant, "annotations": {admission.CHANGED_BY: "someone-else"}},
        "spec": {"tier": "starter"},
    }
    platform = ("--as-group=system:masters",)
    as_person(kube, "ann@platform", *platform, "apply", "-f", "-", input=yaml.safe_dump(plan))
    (created,) = wait_record(auditor, tenant, "plan_change")
    assert created["actor"]["username"] == "ann@platform" and created["actor"]["source"] == "admission"
    assert created["details"]["changes"] == {"tier": {"from": None, "to": "starter"}}
    assert created["tenant"] == tenant and created["reason"] == "TenantPlan plan created"

    patch = json.dumps({"spec": {"tier": "pro", "maxKeys": 5}})
    as_person(
        kube, "ben@platform", *platform, "-n", tenant, "patch", v.PLAN_PLURAL, v.PLAN_NAME, "--type=merge", "-p", patch
    )
    changed = wait_record(auditor, tenant, "plan_change", count=2)[1]
    assert changed["actor"]["username"] == "ben@platform"
    assert changed["details"]["changes"] == {
        "tier": {"from": "starter", "to": "pro"},
        "maxKeys": {"from": None, "to": 5},
    }
    assert [(e["username"], e["fields"]) for e in changed["details"]["edits"]] == [
        ("ben@platform", ["tier", "maxKeys"])
    ]
