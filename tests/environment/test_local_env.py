"""The local environment is the real thing: pinned versions, RBAC, TokenReview, garbage
collection, and OpenBao's Kubernetes auth with least-privilege policies."""

from __future__ import annotations

import secrets

import hvac
import hvac.exceptions
import pytest
from kubernetes import client

from pmkeys_dev import binaries, bootstrap
from pmkeys_dev.environment import LocalEnvironment
from tests.kube import Kube, wait_for

pytestmark = pytest.mark.integration


def pinned(name: str) -> str:
    for line in (binaries.REPO_ROOT / "hack" / "versions.env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise KeyError(name)


def test_servers_run_the_pinned_versions(kube: Kube) -> None:
    out = kube.kubectl("version", "-o", "json", check=True).stdout
    assert f'"gitVersion": "{pinned("KUBERNETES_VERSION")}"' in out.replace('":"', '": "')


def test_rbac_is_enforced(kube: Kube, env: LocalEnvironment) -> None:
    token = bootstrap.token(kube.api, bootstrap.service_account("verifier"))
    from pmkeys.kubeclient import api_client_for_token

    as_verifier = client.CoreV1Api(api_client_for_token(kube.api, token))
    with pytest.raises(client.ApiException) as err:
        as_verifier.list_namespaced_secret("default")
    assert err.value.status == 403


def test_token_review_accepts_service_account_tokens(kube: Kube) -> None:
    token = bootstrap.token(kube.api, bootstrap.service_account("ui"))
    review = client.AuthenticationV1Api(kube.api).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    )
    assert review.status.authenticated
    assert review.status.user.username == "system:serviceaccount:pmkeys-system:pmkeys-ui"
    bogus = client.AuthenticationV1Api(kube.api).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token[:-4] + "AAAA"))
    )
    assert not bogus.status.authenticated


def test_owner_garbage_collection(kube: Kube, tenant: str) -> None:
    owner = kube.core.create_namespaced_config_map(
        tenant, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    kube.core.create_namespaced_secret(
        tenant,
        client.V1Secret(metadata=client.V1ObjectMeta(name="owned", owner_references=[ref]), string_data={"x": "y"}),
    )
    kube.core.delete_namespaced_config_map("owner", tenant)
    wait_for(lambda: kube.secret(tenant, "owned") is None, timeout=30, what="garbage collection of the owned Secret")


def vault_login(env: LocalEnvironment, component: str) -> hvac.Client:
    bao = hvac.Client(url=env.openbao.url)
    bao.auth.kubernetes.login(role=bootstrap.service_account(component), jwt=env.token_files[component].read_text())
    return bao


def test_operator_token_writes_only_under_its_prefix(env: LocalEnvironment) -> None:
    bao = vault_login(env, "operator")
    path = f"pmkeys/keys/test-{secrets.token_hex(4)}"
    bao.secrets.kv.v2.create_or_update_secret(path=path, secret={"x": "1"}, mount_point="secret", cas=0)
    assert bao.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)[
        "data"
    ]["data"] == {"x": "1"}
    with pytest.raises(hvac.exceptions.Forbidden):
        bao.secrets.kv.v2.create_or_update_secret(path="elsewhere/x", secret={"x": "1"}, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        bao.sys.list_policies()


def test_verifier_token_reads_records_and_pepper_but_cannot_write(env: LocalEnvironment) -> None:
    root = env.openbao.client()
    root.secrets.kv.v2.create_or_update_secret(path="pmkeys/keys/readable", secret={"x": "1"}, mount_point="secret")
    bao = vault_login(env, "verifier")
    assert bao.secrets.kv.v2.read_secret_version(
        path="pmkeys/keys/readable", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"] == {"x": "1"}
    for path in ("pmkeys/keys/readable", "pmkeys/keys/new", "pmkeys/pepper"):
        with pytest.raises(hvac.exceptions.Forbidden):
            bao.secrets.kv.v2.create_or_update_secret(path=path, secret={"x": "2"}, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        bao.secrets.kv.v2.read_secret_version(
            path="pmkeys/owners/anything", mount_point="secret", raise_on_deleted_version=True
        )


def test_unbound_service_account_cannot_log_in(env: LocalEnvironment, kube: Kube, tenant: str) -> None:
    kube.core.create_namespaced_service_account(
        tenant, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="intruder"))
    )
    jwt = bootstrap.token(kube.api, "intruder", namespace=tenant)
    with pytest.raises(hvac.exceptions.Forbidden, match="service account name not authorized"):
        hvac.Client(url=env.openbao.url).auth.kubernetes.login(role="pmkeys-operator", jwt=jwt)
