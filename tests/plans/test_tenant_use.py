"""The tenant-wide limit's current use, end to end: traffic through real verifier processes (two
replicas sharing Redis) on a tenant's keys shows up in the TenantPlan's ``status.tenantUse``, in
the UI's plan and in ``kubectl pmkeys plan``, each with its age; the plan writes stay within their
budget whatever the number of active tenants; a figure falls back to 0 when the window empties;
and no tenant can write (forge) its own figure."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import watch

from pmkeys.api import vocabulary as v
from pmkeys.api.plan import plan_from_body
from pmkeys.verify.limiting import Limits
from pmkeys.verify.plans import PlanBook
from pmkeys.verify.tenant_use import TenantUseStatus
from pmkeys.verify.windows import WindowLimiter
from pmkeys_dev.redis import RedisServer
from tests.kube import Kube, wait_for
from tests.plans.conftest import TenantAdmin, set_plan, tenant_admin
from tests.plans.test_front_ends import kubectl_pmkeys
from tests.ui.conftest import TenantUser, admin, make_user, ui_rbac, ui_server
from tests.verifier.conftest import Verifiers, issue, redis_server, verifiers

pytestmark = pytest.mark.integration
__all__ = ["admin", "make_user", "redis_server", "tenant_admin", "ui_rbac", "ui_server", "verifiers"]  # fixtures


def plan_body(kube: Kube, namespace: str) -> dict[str, Any]:
    body: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        v.GROUP, v.VERSION, namespace, v.PLAN_PLURAL, "plan"
    )
    return body


def tenant_use(kube: Kube, namespace: str) -> dict[str, Any]:
    body = plan_body(kube, namespace)
    return dict((body.get("status") or {}).get("tenantUse") or {})


def wait_use(kube: Kube, namespace: str, requests: int, *, timeout: float = 15) -> dict[str, Any]:
    return wait_for(
        lambda: (use := tenant_use(kube, namespace)) and use.get("requests") == requests and use,
        timeout=timeout,
        what=f"tenantUse.requests == {requests} in {namespace}/plan (now {tenant_use(kube, namespace)})",
    )


def test_traffic_through_two_verifiers_is_the_current_use_in_status_ui_and_plugin(
    verifiers: Verifiers,
    redis_server: RedisServer,
    kube: Kube,
    admin: TenantUser,
    tenant_admin: TenantAdmin,
) -> None:
    ns = admin.namespace
    set_plan(kube, ns, tier="pro", tenantRateLimit=100)
    replicas = [verifiers.start(redis=redis_server), verifiers.start(redis=redis_server)]
    first, _ = issue(kube, ns, "first")
    second, _ = issue(kube, ns, "second")
    for n in range(12):
        answer = replicas[n % 2].verify(first if n < 7 else second, "send_email")
        assert answer.status_code == 200, answer.text
    assert replicas[0].verify(first, "manage_contacts").status_code == 403, "refused: not admitted, not counted"
    sent = time.time()
    use = wait_use(kube, ns, 12)
    as_of = dt.datetime.fromisoformat(use["asOf"].replace("Z", "+00:00")).timestamp()
    assert use["windowSeconds"] == 60 and sent - 2 <= as_of <= time.time() + 1, use
    shown = admin.http.get(f"/api/v1/namespaces/{ns}/plan").json()
    assert shown["tenantUse"]["requests"] == 12 and shown["tenantUse"]["limit"] == 100
    assert 0 <= shown["tenantUse"]["ageSeconds"] < 30
    print(
        f"current use seen {time.time() - sent:.1f} s after the last request, {shown['tenantUse']['ageSeconds']} s old"
    )
    rows = {row["label"]: row["value"] for row in shown["rows"]}
    assert rows["Current use"].startswith("12 of 100 in the last 60 s, as of "), rows
    printed = kubectl_pmkeys(tenant_admin.kubeconfig, "plan", "-n", ns)
    assert printed.returncode == 0, printed.stderr
    line = next(line for line in printed.stdout.splitlines() if line.startswith("Current use:"))
    assert line.split()[2:12] == ["12", "of", "100", "in", "the", "last", "60", "s,", "as", "of"], line


def test_the_figure_follows_the_window_and_forgets_idle_tenants(kube: Kube, tenant: str) -> None:
    """The writer's own logic against the real API server, with a 2-second window."""
    body = set_plan(kube, tenant, tenantRateLimit=50)
    book = PlanBook()
    book.set(tenant, plan_from_body(body))
    limits = Limits(local=WindowLimiter(window_us=2_000_000), shared=None, plans=book)
    reporter = TenantUseStatus(kube.api, limits, budget=10, interval=1)

    async def run() -> None:
        for n in range(3):
            limits.local.hit(f"key-{n}", 60, time.monotonic_ns() // 1000, tenant=tenant, tenant_limit=50)
        limits.active[tenant] = tenant
        await reporter.share()
        await reporter.report()
        assert tenant_use(kube, tenant)["requests"] == 3
        writes = reporter.writes
        await reporter.report()
        assert reporter.writes == writes, "an unchanged figure is not written again"
        await asyncio.sleep(2.2)
        await reporter.report()
        assert tenant_use(kube, tenant)["requests"] == 0, "the window emptied"

    try:
        asyncio.run(run())
    finally:
        reporter.close()


def test_plan_writes_stay_within_their_budget_whatever_the_number_of_tenants(
    verifiers: Verifiers, kube: Kube, namespace_factory: Callable[..., str]
) -> None:
    """Six active tenants, a budget of 1 plan write per second (flush 1 s): the writes, counted
    from a watch of the plans, stay within it, and every tenant is still reached."""
    names = [f"busy-{secrets.token_hex(3)}" for _ in range(6)]
    tenants = {namespace_factory(name): name for name in names}
    for ns in tenants:
        set_plan(kube, ns, tenantRateLimit=1000)
    plaintexts = [issue(kube, ns, "busy", tenant=tenant)[0] for ns, tenant in tenants.items()]
    replica = verifiers.start(PMKEYS_TENANT_USE_WRITES_PER_SECOND="1")
    listing = kube.custom.list_cluster_custom_object(v.GROUP, v.VERSION, v.PLAN_PLURAL)
    started = time.monotonic()
    for text in plaintexts:
        for _ in range(3):
            assert replica.verify(text, "send_email").status_code == 200
    writes, seen = 0, set()
    stream = watch.Watch()
    for event in stream.stream(
        kube.custom.list_cluster_custom_object, v.GROUP, v.VERSION, v.PLAN_PLURAL,
        resource_version=listing["metadata"]["resourceVersion"], timeout_seconds=20,
    ):  # fmt: skip
        body = event["object"]
        if body["metadata"]["namespace"] in tenants and (body.get("status") or {}).get("tenantUse"):
            writes += 1
            seen.add(body["metadata"]["namespace"])
        if len(seen) == len(tenants):
            break
    took = time.monotonic() - started
    stream.stop()
    print(f"tenant-use writes: {writes} in {took:.1f} s for {len(tenants)} active tenants at a budget of 1/s")
    assert seen == set(tenants), f"every tenant reached within 20 s (reached {len(seen)})"
    assert writes <= took + 2, f"{writes} plan writes in {took:.1f}s with a budget of 1 a second"
    assert all(tenant_use(kube, ns)["requests"] == 3 for ns in tenants)


def test_a_tenant_cannot_forge_its_current_use(kube: Kube, tenant_admin: TenantAdmin) -> None:
    ns = tenant_admin.namespace
    set_plan(kube, ns)
    forged = '{"status":{"tenantUse":{"requests":0,"windowSeconds":60,"asOf":"2030-01-01T00:00:00Z"}}}'
    for args in (
        ("patch", "tenantplan", "plan", "--subresource=status", "--type=merge", "-p", forged),
        ("patch", "tenantplan", "plan", "--type=merge", "-p", forged),
    ):
        result = tenant_admin.kubectl(*args)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (args, result.stderr)
    assert tenant_use(kube, ns) == {}
