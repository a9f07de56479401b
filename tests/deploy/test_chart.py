"""The Helm chart, rendered offline: lint, what it renders with defaults and with every feature,
its settings matching the components' configuration, and the values it refuses (with a message
that names the value)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import yaml

from pmkeys.api import finalizer_policy
from pmkeys.api.vocabulary import TIER_RATE_LIMITS
from pmkeys.config import OperatorSettings, UiSettings, VerifierSettings
from pmkeys_dev import binaries
from tests.deploy.conftest import ALL_FEATURES, CHART, KUBE_VERSION, Helm, by_kind, env_of, run

REPO = binaries.REPO_ROOT
SETTINGS = {"operator": OperatorSettings, "verifier": VerifierSettings, "ui": UiSettings}


def containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployment name -> its one container."""
    return {name: d["spec"]["template"]["spec"]["containers"][0] for name, d in by_kind(docs, "Deployment").items()}


# -- files that must agree with their source of truth ----------------------------------------
def test_chart_crd_is_the_generated_crd() -> None:
    crd = "tenantapikeys.penguinmails.io.yaml"
    assert (CHART / "crds" / crd).read_bytes() == (REPO / "crds" / crd).read_bytes(), (
        "charts/pmkeys/crds/ must equal crds/: cp crds/*.yaml charts/pmkeys/crds/"
    )
    plans = "tenantplans.penguinmails.io.yaml"
    assert (CHART / "crds" / plans).read_bytes() == (REPO / "crds" / plans).read_bytes()
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted([crd, plans, "kopf.dev-peerings.yaml"])
    policy = "tenantplans-admission-policy.yaml"
    assert (CHART / "files" / policy).read_bytes() == (REPO / "crds" / policy).read_bytes(), (
        "charts/pmkeys/files/ must hold the generated admission policy: cp crds/" + policy + " charts/pmkeys/files/"
    )
    finalizer = (CHART / "files" / "tenantapikeys-finalizer-policy.yaml").read_text()
    assert finalizer == finalizer_policy.render(), (
        "python -m pmkeys.api.finalizer_policy > charts/pmkeys/files/tenantapikeys-finalizer-policy.yaml"
    )


def test_tier_values_are_the_crd_tiers() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["tiers"] == {tier.value: limit for tier, limit in TIER_RATE_LIMITS.items()}
    rule = (CHART / "templates" / "validate.yaml").read_text()
    for tier, limit in TIER_RATE_LIMITS.items():
        assert f'"{tier.value}" {limit}' in rule


@pytest.mark.parametrize("component", ["operator", "verifier"])
def test_vault_policy_examples_are_the_cli_output(component: str) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "pmkeys", "vault-policy", component], capture_output=True, text=True, check=True
    ).stdout
    assert (REPO / "deploy" / "vault" / f"{component}-policy.hcl").read_text() == printed


def test_argocd_configmap_embeds_the_health_check() -> None:
    cm = yaml.safe_load((REPO / "deploy" / "argocd" / "argocd-cm.yaml").read_text())
    embedded = cm["data"]["resource.customizations.health.penguinmails.io_TenantApiKey"]
    assert embedded == (REPO / "deploy" / "argocd" / "health.lua").read_text(), (
        "deploy/argocd/argocd-cm.yaml must carry deploy/argocd/health.lua verbatim"
    )


# -- lint and render -------------------------------------------------------------------------
@pytest.mark.parametrize("values", [[], ["-f", str(ALL_FEATURES)]], ids=["defaults", "all-features"])
def test_helm_lint(helm_offline: Helm, values: list[str]) -> None:
    result = run([helm_offline.binary, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *values])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_defaults_render_three_components_with_least_privilege(helm_offline: Helm) -> None:
    docs = helm_offline.template()
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    assert set(by_kind(docs, "Role")) == {"pmkeys-verifier-usage"}, "the usage ledgers, in the release namespace"
    assert set(by_kind(docs, "Secret")) == {"pmkeys-verifier-callers"}, "caller tokens, and nothing else"
    callers = by_kind(docs, "Secret")["pmkeys-verifier-callers"]["data"]
    assert sorted(callers) == ["api", "gateway"] and len(set(callers.values())) == 2
    assert set(by_kind(docs, "ValidatingAdmissionPolicy")) >= {"tenantapikeys-finalizer.penguinmails.io"}
    owner = by_kind(docs, "ConfigMap")["pmkeys-finalizer-owner"]["data"]["operators"]
    assert owner == f"system:serviceaccount:{docs[0]['metadata'].get('namespace', 'default')}:pmkeys-operator"
    assert set(by_kind(docs, "Deployment")) == {"pmkeys-operator", "pmkeys-verifier", "pmkeys-ui"}
    assert set(by_kind(docs, "ServiceAccount")) == {"pmkeys-operator", "pmkeys-verifier", "pmkeys-ui"}
    assert set(by_kind(docs, "ClusterRole")) == {
        "pmkeys-operator",
        "pmkeys-operator-cluster",
        "pmkeys-verifier",
        "pmkeys-ui",
        "pmkeys-tenant-admin",
        "pmkeys-tenant-viewer",
    }
    operator = by_kind(docs, "Deployment")["pmkeys-operator"]["spec"]
    assert operator["replicas"] == 1 and operator["strategy"]["type"] == "Recreate", (
        "a rolling update would run two operators at once"
    )
    for name, deployment in by_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        assert container["livenessProbe"]["httpGet"]["port"] in ("http", "health")
    probes = {n: (c.get("readinessProbe") or {}).get("httpGet", {}).get("path") for n, c in containers(docs).items()}
    assert probes == {"pmkeys-operator": None, "pmkeys-verifier": "/readyz", "pmkeys-ui": "/healthz"}
    liveness = {n: c["livenessProbe"]["httpGet"]["path"] for n, c in containers(docs).items()}
    assert set(liveness.values()) == {"/healthz"}
    assert env_of(containers(docs)["pmkeys-operator"])["PMKEYS_HEALTH_PORT"] == "8081"


def test_no_component_role_but_the_operator_touches_secrets(helm_offline: Helm) -> None:
    roles = by_kind(helm_offline.template(), "ClusterRole")

    def grants(role: str, resource: str) -> set[str]:
        return {verb for rule in roles[role]["rules"] if resource in rule["resources"] for verb in rule["verbs"]}

    assert grants("pmkeys-operator", "secrets") == {"get", "list", "watch", "create", "update", "patch", "delete"}
    for role in ("pmkeys-verifier", "pmkeys-ui", "pmkeys-operator-cluster", "pmkeys-tenant-viewer"):
        assert grants(role, "secrets") == set(), f"{role} must not read Secrets"
    assert grants("pmkeys-tenant-admin", "secrets") == {"get", "patch"}
    assert grants("pmkeys-verifier", "tenantapikeys/status") == {"patch"}
    assert grants("pmkeys-tenant-admin", "tenantapikeys/status") == set()


@pytest.mark.parametrize("values", [[], ["-f", str(ALL_FEATURES)]], ids=["defaults", "all-features"])
def test_every_pmkeys_variable_is_a_real_setting(
    helm_offline: Helm, values: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``extra="ignore"`` would silently drop a misspelt variable: check each one maps to a field
    of the component's settings and parses there."""
    for name, container in containers(helm_offline.template(*values)).items():
        component = container["args"][0]
        settings_cls = SETTINGS[component]
        variables = {k: val for k, val in env_of(container).items() if k.startswith("PMKEYS_")}
        assert variables, f"{name} has no PMKEYS_ settings"
        for var in variables:
            assert _field_exists(settings_cls, var), f"{name}: {var} is not a setting of {settings_cls.__name__}"
        for key in list(os.environ):
            if key.startswith("PMKEYS_"):
                monkeypatch.delenv(key)
        for var, value in variables.items():
            monkeypatch.setenv(var, value if isinstance(value, str) else "from-a-secret")
        settings = settings_cls()
        if component != "ui":
            assert settings.vault.auth == "kubernetes"
            assert settings.vault.role == f"pmkeys-{component}"


def _field_exists(model: Any, variable: str) -> bool:
    path = variable.removeprefix("PMKEYS_").lower().split("__")
    for part in path:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_all_features_render(helm_offline: Helm) -> None:
    docs = helm_offline.template("-f", str(ALL_FEATURES))
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"pmkeys-operator-0", "pmkeys-operator-1", "pmkeys-verifier", "pmkeys-ui"}
    priorities = [env_of(containers(docs)[f"pmkeys-operator-{i}"])["PMKEYS_PRIORITY"] for i in (0, 1)]
    assert priorities == ["100", "99"], "kopf pauses every operator when two share a priority"
    assert env_of(containers(docs)["pmkeys-operator-0"])["PMKEYS_PEERING"] == "pmkeys"
    assert {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "KopfPeering"} == {
        ("pmk-tenant-a", "pmkeys"),
        ("pmk-tenant-b", "pmkeys"),
    }
    # watchNamespaces: namespaced permissions only in those namespaces.
    bindings = {(d["metadata"]["namespace"], d["roleRef"]["name"]) for d in docs if d["kind"] == "RoleBinding"}
    assert bindings == {
        (ns, role) for ns in ("pmk-tenant-a", "pmk-tenant-b") for role in ("pmkeys-operator", "pmkeys-verifier")
    } | {("pmkeys-system", "pmkeys-verifier-usage")}
    assert set(by_kind(docs, "ClusterRoleBinding")) == {"pmkeys-operator-cluster", "pmkeys-ui"}
    assert "spec" in by_kind(docs, "HorizontalPodAutoscaler")["pmkeys-verifier"]
    assert "replicas" not in deployments["pmkeys-verifier"]["spec"], "the HPA owns the replica count"
    assert set(by_kind(docs, "PodDisruptionBudget")) == {"pmkeys-operator", "pmkeys-verifier", "pmkeys-ui"}
    assert set(by_kind(docs, "ServiceMonitor")) == {"pmkeys-operator", "pmkeys-verifier"}
    verifier_env = env_of(containers(docs)["pmkeys-verifier"])
    assert verifier_env["PMKEYS_REDIS_URL"] == {"secretKeyRef": {"name": "pmkeys-redis", "key": "url"}}
    assert verifier_env["PMKEYS_NAMESPACES"] == '["pmk-tenant-a","pmk-tenant-b"]'
    assert verifier_env["PMKEYS_VAULT__CA_CERT"] == "/etc/pmkeys/vault-ca/ca.crt"
    assert "Secret" not in {d["kind"] for d in docs}, "the chart generates no Secret: every one is named"
    assert verifier_env["PMKEYS_GATEWAY"] == "envoy"
    volumes = deployments["pmkeys-verifier"]["spec"]["template"]["spec"]["volumes"]
    mounted = {"secretName": "pmkeys-verifier-callers-from-vault", "defaultMode": 0o440}
    assert {"name": "callers", "secret": mounted} in volumes
    policies = by_kind(docs, "NetworkPolicy")
    assert all("Egress" in p["spec"]["policyTypes"] for p in policies.values())
    ui_egress_ports = {port["port"] for rule in policies["pmkeys-ui"]["spec"]["egress"] for port in rule["ports"]}
    assert 8200 not in ui_egress_ports, "the UI never talks to Vault"
    image = containers(docs)["pmkeys-ui"]["image"]
    assert image.startswith("registry.example.com/pmkeys@sha256:")


# -- refusals --------------------------------------------------------------------------------
SCHEMA_REFUSALS = [
    (["--set", "operator.bcryptCost=3"], "/operator/bcryptCost"),
    (["--set", "vault.auth.method=ldap"], "/vault/auth/method"),
    (["--set", "vault.addr=vault:8200"], "/vault/addr"),
    (["--set", "vault.prefix=/pmkeys/"], "/vault/prefix"),
    (["--set", "logLevel=LOUD"], "/logLevel"),
    (["--set", "verifier.port=70000"], "/verifier/port"),
    (["--set", "verifier.cacheTTL=0"], "/verifier/cacheTTL"),
    (["--set", "redis.failurePolicy=maybe"], "/redis/failurePolicy"),
    (["--set-json", 'watchNamespaces=["Tenant_A"]'], "/watchNamespaces/0"),
    (["--set-json", 'verifier.routes=["POST /v1/send=send"]'], "/verifier/routes/0"),
    (["--set", "image.digest=sha256:abc"], "/image/digest"),
    (["--set", "operator.bcrypt_cost=12"], "'bcrypt_cost' not allowed"),
    (["--set", "ui.replicas=zero"], "/ui/replicas"),
]


@pytest.mark.parametrize(("args", "named"), SCHEMA_REFUSALS, ids=[a[-1] for a, _ in SCHEMA_REFUSALS])
def test_schema_refuses_bad_values(helm_offline: Helm, args: list[str], named: str) -> None:
    message = helm_offline.refused(*args)
    assert "don't meet the specifications of the schema" in message
    assert named in message, message


RULE_REFUSALS = [
    (["--set", "tiers.pro=500"], "tiers.pro=500: tier limits are fixed in the TenantApiKey CRD"),
    (["--set", "operator.bcryptCost=10"], "operator.bcryptCost=10 is below 12"),
    (["--set", "operator.replicas=2"], "operator.replicas=2 needs operator.peering.enabled=true"),
    (["--set", "verifier.replicas=3"], "verifier.replicas > 1 or verifier.autoscaling.enabled=true needs redis.url"),
    (["--set", "verifier.autoscaling.enabled=true"], "needs redis.url or redis.existingSecret.name"),
    (["--set", "ui.replicas=2"], "ui.replicas > 1 needs redis.url or redis.existingSecret.name"),
    (
        ["--set", "vault.caCert.secretName=a", "--set", "vault.caCert.configMapName=b"],
        "vault.caCert.secretName and vault.caCert.configMapName are both set",
    ),
    (["--set", "vault.auth.method=token"], "vault.auth.method=token needs vault.auth.tokenSecret.name"),
    (["--set", "networkPolicy.egress.enabled=true"], "networkPolicy.egress.enabled=true needs networkPolicy.egress"),
]


@pytest.mark.parametrize(("args", "named"), RULE_REFUSALS, ids=[a[1] for a, _ in RULE_REFUSALS])
def test_cross_value_rules_refuse_with_the_value_named(helm_offline: Helm, args: list[str], named: str) -> None:
    assert named in helm_offline.refused(*args)


def test_low_bcrypt_cost_is_accepted_only_when_asked_for(helm_offline: Helm) -> None:
    docs = helm_offline.template("--set", "operator.bcryptCost=4", "--set", "operator.allowLowBcryptCost=true")
    assert env_of(containers(docs)["pmkeys-operator"])["PMKEYS_BCRYPT_COST"] == "4"


def test_release_name_prefixes_every_cluster_scoped_name(helm_offline: Helm) -> None:
    """Two releases in one cluster must not fight over ClusterRoles."""
    docs = helm_offline.template(release="blue", namespace="blue-system")
    cluster_scoped = [d["metadata"]["name"] for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert cluster_scoped and all(name.startswith("blue-pmkeys-") for name in cluster_scoped)
    subjects = [s for d in docs if d["kind"] == "ClusterRoleBinding" for s in d["subjects"]]
    assert {(s["namespace"], s["name"]) for s in subjects} == {
        ("blue-system", f"blue-pmkeys-{c}") for c in ("operator", "verifier", "ui")
    }
