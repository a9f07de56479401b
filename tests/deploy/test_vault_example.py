"""deploy/vault/setup.sh against the real OpenBao and API server: it configures the Kubernetes
auth method, the policies and the roles so that the chart's ServiceAccounts log in and get
exactly the capabilities the components need."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest

from pmkeys_dev import binaries, bootstrap, chart
from pmkeys_dev.environment import LocalEnvironment
from tests.kube import Kube

pytestmark = pytest.mark.integration
SETUP = binaries.REPO_ROOT / "deploy" / "vault" / "setup.sh"


@dataclass(frozen=True)
class Example:
    mount: str
    release: str
    namespace: str

    @property
    def fullname(self) -> str:
        return f"{self.release}-pmkeys"

    def role(self, component: str) -> str:
        return f"{self.release}-{component}"


@pytest.fixture
def example(env: LocalEnvironment, kube: Kube) -> Iterator[Example]:
    """The chart's ServiceAccounts in a fresh namespace and setup.sh run for them."""
    suffix = secrets.token_hex(2)
    ex = Example(mount=f"k8s-{suffix}", release=f"vx{suffix}", namespace=f"pmk-vx{suffix}")
    documents = chart.apply_rbac(kube.kubeconfig, release=ex.release, namespace=ex.namespace)
    bao = str(Path(sys.executable).parent / "bao")
    settings = {
        "VAULT": bao,
        "VAULT_ADDR": env.openbao.url,
        "VAULT_TOKEN": env.openbao.root_token,
        "AUTH_MOUNT": ex.mount,
        "RELEASE_NAMESPACE": ex.namespace,
        "FULLNAME": ex.fullname,
        "OPERATOR_ROLE": ex.role("operator"),
        "VERIFIER_ROLE": ex.role("verifier"),
        "KUBERNETES_HOST": env.controlplane.url,
        "KUBERNETES_CA_CERT": str(env.controlplane.ca_cert),
        "TOKEN_REVIEWER_JWT": bootstrap.token(kube.api, bootstrap.REVIEWER, hours=1),
        # Without the pmkeys CLI on PATH the script uses the committed .hcl files.
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    result = subprocess.run(["bash", str(SETUP)], env=settings, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert f"role {ex.role('operator')}: ServiceAccount {ex.namespace}/{ex.fullname}-operator" in result.stdout
    yield ex
    root = env.openbao.client()
    root.sys.disable_auth_method(ex.mount)
    for component in ("operator", "verifier"):
        root.sys.delete_policy(ex.role(component))
    chart.delete_rbac(kube.kubeconfig, documents)
    kube.core.delete_namespace(ex.namespace)


def login(env: LocalEnvironment, kube: Kube, ex: Example, *, role: str, account: str) -> hvac.Client:
    client = hvac.Client(url=env.openbao.url, timeout=10)
    jwt = bootstrap.token(kube.api, account, namespace=ex.namespace, hours=1)
    client.auth.kubernetes.login(role=role, jwt=jwt, mount_point=ex.mount)
    return client


def capabilities(client: hvac.Client, path: str) -> set[str]:
    response = client.adapter.post("/v1/sys/capabilities-self", json={"paths": [path]})
    return set(response["data"][path])


def test_chart_service_accounts_log_in_with_least_privilege(
    env: LocalEnvironment, kube: Kube, example: Example
) -> None:
    operator = login(env, kube, example, role=example.role("operator"), account=f"{example.fullname}-operator")
    assert {"create", "read", "update"} <= capabilities(operator, "secret/data/pmkeys/keys/abc")
    assert {"create", "read", "update"} <= capabilities(operator, "secret/data/pmkeys/owners/uid")
    assert capabilities(operator, "secret/data/other-app/x") == {"deny"}

    verifier = login(env, kube, example, role=example.role("verifier"), account=f"{example.fullname}-verifier")
    assert capabilities(verifier, "secret/data/pmkeys/keys/abc") == {"read"}
    assert capabilities(verifier, "secret/data/pmkeys/pepper") == {"read"}
    assert capabilities(verifier, "secret/data/pmkeys/owners/uid") == {"deny"}


def test_roles_are_bound_to_their_own_service_account(env: LocalEnvironment, kube: Kube, example: Example) -> None:
    with pytest.raises(hvac.exceptions.Forbidden, match="service account name not authorized"):
        login(env, kube, example, role=example.role("operator"), account=f"{example.fullname}-verifier")
    with pytest.raises(hvac.exceptions.Forbidden, match="service account name not authorized"):
        login(env, kube, example, role=example.role("operator"), account=f"{example.fullname}-ui")


def test_policies_written_are_the_cli_policies(env: LocalEnvironment, example: Example) -> None:
    root = env.openbao.client()
    for component in ("operator", "verifier"):
        printed = subprocess.run(
            [sys.executable, "-m", "pmkeys", "vault-policy", component], capture_output=True, text=True, check=True
        ).stdout
        stored = root.sys.read_policy(example.role(component))["data"]["rules"]
        assert stored.strip() == printed.strip()
