"""The chart's rendered settings run the real components: the verifier and the UI are started
with exactly the PMKEYS_* environment the chart gives their containers (values pointed at the
local environment), and answer their probes and a real verification."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.openbao import KV_MOUNT
from pmkeys_dev.processes import free_port
from pmkeys_dev.redis import RedisServer
from tests.builders import key
from tests.deploy.conftest import Helm, by_kind, env_of
from tests.kube import Kube

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator")]


@pytest.fixture(scope="module")
def redis(env: LocalEnvironment) -> Iterator[RedisServer]:
    server = RedisServer(workdir=env.workdir / "redis-chart")
    server.start()
    yield server
    server.cleanup()


def container_env(docs: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    """The container's environment, with Secret references resolved from the rendered Secrets."""
    rendered = by_kind(docs, "Secret")
    container = by_kind(docs, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"][0]
    out = {}
    for name, value in env_of(container).items():
        if isinstance(value, dict):
            ref = value["secretKeyRef"]
            value = base64.b64decode(rendered[ref["name"]]["data"][ref["key"]]).decode()
        out[name] = value
    return out


def test_verifier_and_ui_run_with_the_chart_settings(
    helm: Helm, env: LocalEnvironment, kube: Kube, redis: RedisServer, tenant: str
) -> None:
    verifier_port, ui_port = free_port(), free_port()
    docs = helm.template(
        "--set",
        f"vault.addr={env.openbao.url}",
        "--set",
        f"vault.kvMount={KV_MOUNT}",
        "--set-json",
        f'watchNamespaces=["{tenant}"]',
        "--set",
        "verifier.replicas=2",
        "--set",
        f"redis.url={redis.url}",
        "--set",
        "redis.failurePolicy=closed",
        "--set",
        f"verifier.port={verifier_port}",
        "--set-json",
        'verifier.routes=["POST /v1/send=send_email"]',
        "--set",
        f"ui.port={ui_port}",
        "--set",
        f"ui.verifierURL=http://127.0.0.1:{verifier_port}",
        release="pmkeys",
        namespace="pmkeys-system",
    )
    local = {"PMKEYS_BIND": "127.0.0.1", "PMKEYS_USAGE_FLUSH_SECONDS": "1"}  # not 0.0.0.0 on a shared machine

    # The caller-token Secret the chart renders, written out as the kubelet mounts it.
    callers = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "pmkeys-verifier-callers")
    mounted = env.workdir / f"callers-{verifier_port}"
    mounted.mkdir()
    for caller, value in callers["data"].items():
        (mounted / caller).write_bytes(base64.b64decode(value))
    gateway_token = base64.b64decode(callers["data"]["gateway"]).decode()
    verifier_env = {**container_env(docs, "pmkeys-verifier"), **local, "PMKEYS_CALLER_TOKENS_DIR": str(mounted)}
    verifier = env.start_component(
        "verifier",
        name=f"verifier-chart-{verifier_port}",
        ready_url=f"http://127.0.0.1:{verifier_port}/readyz",
        **verifier_env,
    )
    ui_env = {**container_env(docs, "pmkeys-ui"), **local}
    ui = env.start_component(
        "ui", name=f"ui-chart-{ui_port}", ready_url=f"http://127.0.0.1:{ui_port}/healthz", **ui_env
    )
    try:
        kube.create_key(key("gateway", tenant, scopes=["send_email"]))
        status = kube.wait_phase(tenant, "gateway", "Active")
        api_key = kube.plaintext(tenant, "gateway")
        base = f"http://127.0.0.1:{verifier_port}"
        sent = {"Authorization": f"Bearer {api_key}", "X-Pmkeys-Caller-Token": gateway_token}
        anonymous = httpx.post(f"{base}/v1/authz/v1/send", headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
        assert anonymous.status_code == 401, "the chart's verifier refuses callers without a token"
        allowed = httpx.post(f"{base}/v1/authz/v1/send", headers=sent, timeout=10)
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["X-Api-Key-Id"] == status["keyId"]
        unmapped = httpx.get(f"{base}/v1/authz/v1/other", headers=sent, timeout=10)
        assert unmapped.status_code == 403, "verifier.unmappedRoutes=deny from the chart"
        assert "pmkeys_verifier_redis_up 1.0" in httpx.get(f"{base}/metrics", timeout=10).text
        assert httpx.get(f"http://127.0.0.1:{ui_port}/healthz", timeout=10).status_code == 200
    finally:
        # Stopped as the kubelet stops them: SIGTERM, then the chart's grace period (the verifier's
        # covers its drain).
        deployments = by_kind(docs, "Deployment")
        for process, deployment in ((ui, "pmkeys-ui"), (verifier, "pmkeys-verifier")):
            grace = deployments[deployment]["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
            process.stop(grace=grace)
            env.components.remove(process)
