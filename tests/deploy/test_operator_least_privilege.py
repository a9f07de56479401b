"""The operator with nothing but the chart's RBAC: its main scenario (issue, update in place,
rotate with a restart target, revoke, delete), run with the ``pmkeys-operator`` ServiceAccount's
token instead of the admin kubeconfig.

This module starts its own local environment: the session's admin operator watches every
namespace of the session's cluster and would reconcile these keys too, hiding any permission
the ServiceAccount lacks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pmkeys.api import vocabulary as v
from pmkeys.kubeclient import api_client
from pmkeys.vault.records import KeyState
from pmkeys_dev import bootstrap, chart
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess, free_port
from tests import leakscan
from tests.builders import key
from tests.conftest import issued_keys
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView, bcrypt_matches

pytestmark = pytest.mark.integration
#: What kopf logs when RBAC denies it something it would otherwise use.
#: What the API server's refusals look like in the operator's log ("403" as a word: a log line's
#: timestamp can end in ",403").
PERMISSION_COMPLAINTS = re.compile(r"Forbidden|forbidden|Not enough permissions|(?<![\d,.:])403(?!\d)")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalEnvironment]:
    environment = LocalEnvironment()
    findings: list[leakscan.Finding] = []
    try:
        environment.start()
        yield environment
        vault_dump = VaultView(environment.openbao.client()).dump_everything()
        findings = leakscan.scan_environment(
            api_client(str(environment.kubeconfig)), environment.workdir, vault_dump, issued_keys()
        )
    finally:
        environment.stop()
        environment.cleanup()
    assert not findings, "plaintext keys leaked: " + "; ".join(map(str, findings))


@pytest.fixture(scope="module")
def admin(cluster: LocalEnvironment) -> Kube:
    """The admin view of this module's cluster (for assertions and setup only)."""
    return Kube(api_client(str(cluster.kubeconfig)), cluster.kubeconfig, issued_keys())


@pytest.fixture(scope="module")
def bao(cluster: LocalEnvironment) -> VaultView:
    return VaultView(cluster.openbao.client())


def start_operator(
    cluster: LocalEnvironment, admin: Kube, tmp_path: Path, values: dict[str, Any] | None = None, **settings: str
) -> tuple[ServerProcess, list[dict[str, Any]]]:
    """The chart's RBAC applied, then the operator run with its ServiceAccount's token."""
    documents = chart.apply_rbac(cluster.kubeconfig, values)
    token = bootstrap.token(admin.api, bootstrap.service_account("operator"), hours=1)
    kubeconfig = cluster.kubeconfig_for_token(token, tmp_path / "operator-sa.kubeconfig")
    port, health = free_port(), free_port()
    leakscan.METRICS_URLS.append(f"http://127.0.0.1:{port}/metrics")
    # Ready when kopf's liveness endpoint answers, as the chart's probes ask.
    process = cluster.start_component(
        "operator",
        name=f"operator-sa-{port}",
        ready_url=f"http://127.0.0.1:{health}/healthz",
        PMKEYS_KUBECONFIG=str(kubeconfig),
        PMKEYS_BCRYPT_COST="4",
        PMKEYS_METRICS_PORT=str(port),
        PMKEYS_HEALTH_PORT=str(health),
        **settings,
    )
    return process, documents


def stop_operator(cluster: LocalEnvironment, process: ServerProcess, documents: list[dict[str, Any]]) -> str:
    process.stop(grace=5)
    cluster.components.remove(process)
    chart.delete_rbac(cluster.kubeconfig, documents)
    return process.log_path.read_text(errors="replace")


def tenant_namespace(admin: Kube, name: str) -> str:
    bootstrap.tenant_namespace(admin.api, name, name)
    return name


def test_main_scenario_with_the_chart_service_account(
    cluster: LocalEnvironment, admin: Kube, bao: VaultView, tmp_path: Path
) -> None:
    ns = tenant_namespace(admin, "acme")
    process, documents = start_operator(cluster, admin, tmp_path)
    try:
        # create: Secret, Vault record, status Active
        admin.create_key(key("mailer", ns, tier="pro", scopes=["send_email"], secret={"name": "mailer-key"}))
        status = admin.wait_phase(ns, "mailer", "Active")
        plaintext = admin.plaintext(ns, "mailer-key")
        record = bao.record_for(plaintext)
        assert record is not None and bcrypt_matches(plaintext, record)
        assert record.key_id == status["keyId"] and record.state is KeyState.ACTIVE
        assert "KeyIssued" in admin.event_reasons(ns, "mailer"), "the ServiceAccount may post Events"

        # update scopes: the record changes in place, the key stays
        admin.patch_key(ns, "mailer", {"spec": {"scopes": ["send_email", "read_analytics"]}})
        wait_for(lambda: len(bao.record_for(plaintext).scopes) == 2, what="scopes updated in Vault")
        unchanged = admin.plaintext(ns, "mailer-key") == plaintext
        assert unchanged, "a scope change must not replace the key"
        admin.wait_status(ns, "mailer", lambda s: s.get("observedGeneration") == 2, what="generation 2 observed")

        # rotate with a restart target: the operator may patch the Deployment
        admin.apps.create_namespaced_deployment(ns, deployment("checkout", restarted_by="mailer"))
        admin.patch_key(
            ns,
            "mailer",
            {"spec": {"rotation": {"counter": 1, "restartTargets": [{"kind": "Deployment", "name": "checkout"}]}}},
        )
        admin.wait_status(ns, "mailer", lambda s: s.get("keyId") not in (None, status["keyId"]), what="rotated")
        wait_for(lambda: "RestartTriggered" in admin.event_reasons(ns, "mailer"), what="restart of checkout")
        template = admin.apps.read_namespaced_deployment("checkout", ns).spec.template.metadata
        assert "penguinmails.io/restartedAt" in (template.annotations or {})
        assert bao.record_for(plaintext).state is KeyState.RETIRING

        # revoke
        admin.patch_key(ns, "mailer", {"spec": {"revoked": True}})
        admin.wait_phase(ns, "mailer", "Revoked")
        assert bao.record_for(plaintext).state is KeyState.REVOKED
        wait_for(lambda: admin.secret(ns, "mailer-key") is None, what="Secret removed on revocation")

        # delete (the finalizer revokes; the Secret goes)
        admin.create_key(key("temp", ns))
        admin.wait_phase(ns, "temp", "Active")
        temp = admin.plaintext(ns, "temp")
        admin.delete_key(ns, "temp")
        wait_for(lambda: admin.key_gone(ns, "temp"), what="TenantApiKey deleted")
        assert admin.secret(ns, "temp") is None
        assert bao.record_for(temp).state is KeyState.REVOKED
    finally:
        log = stop_operator(cluster, process, documents)
    complaints = [line for line in log.splitlines() if PERMISSION_COMPLAINTS.search(line)]
    assert not complaints, "the operator hit RBAC limits:\n" + "\n".join(complaints[:10])


def test_watch_namespaces_mode_with_role_bindings_only(cluster: LocalEnvironment, admin: Kube, tmp_path: Path) -> None:
    watched, other = tenant_namespace(admin, "initech"), tenant_namespace(admin, "globex")
    process, documents = start_operator(
        cluster, admin, tmp_path, {"watchNamespaces": [watched]}, PMKEYS_NAMESPACES=f'["{watched}"]'
    )
    try:
        admin.create_key(key("k", watched))
        admin.wait_phase(watched, "k", "Active")
        assert admin.secret(watched, "k") is not None
        admin.create_key(key("k", other))
        # Nothing may happen outside the watched namespace; give the operator time to misbehave.
        admin.create_key(key("k2", watched))
        admin.wait_phase(watched, "k2", "Active")
        assert admin.status(other, "k") == {} and admin.secret(other, "k") is None
    finally:
        log = stop_operator(cluster, process, documents)
    complaints = [line for line in log.splitlines() if PERMISSION_COMPLAINTS.search(line)]
    assert not complaints, "the operator hit RBAC limits:\n" + "\n".join(complaints[:10])


def deployment(name: str, *, restarted_by: str) -> dict[str, Any]:
    """A Deployment that opts in to restarts on rotations of the TenantApiKey ``restarted_by``."""
    labels = {"app": name}
    return {
        "metadata": {"name": name, "annotations": {v.RESTART_OPT_IN_ANNOTATION: restarted_by}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/checkout:1"}]},
            },
        },
    }
