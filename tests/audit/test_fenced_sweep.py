"""Two operators with kopf peering share one audit store: only the active one runs the retention
sweep and writes the checkpoint (the standby's fence refuses both), and after the active one
stops, the other takes both over. What each did is read from what it leaves, not from the fence:
its log's sweep lines (each also a record in the store) and the writer named in the checkpoint."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import hvac.exceptions
import pytest
import yaml
from kubernetes import client

from pmkeys.audit import store
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.openbao import KV_MOUNT
from pmkeys_dev.postgres import PostgresServer
from pmkeys_dev.processes import ServerProcess, free_port
from tests.kube import Kube, wait_for

pytestmark = pytest.mark.integration

CRDS = Path(__file__).resolve().parents[2] / "charts" / "pmkeys" / "crds" / "kopf.dev-peerings.yaml"


@dataclass
class Operator:
    name: str
    proc: ServerProcess
    metrics_port: int

    def active(self) -> bool:
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return False
        return "pmkeys_operator_active_writer 1.0" in text

    def sweeps(self) -> int:
        """Retention sweeps this operator ran, from its log."""
        return self.proc.log_path.read_text(errors="replace").count("audit retention sweep removed")

    def wrote(self, checkpoint: dict[str, object] | None) -> bool:
        """Whether ``checkpoint`` names this operator (its peering identity carries its pid)."""
        return checkpoint is not None and str(checkpoint.get("writer", "")).split("/")[1:2] == [str(self.proc.pid)]


@pytest.fixture
def peered(env: LocalEnvironment, kube: Kube, tenant: str, audit_server: PostgresServer) -> Iterator[
    tuple[Operator, Operator, str]
]:  # fmt: skip
    """Operators ``high`` (priority 100) and ``low`` (50) peering in ``tenant``'s namespace,
    sweeping and checkpointing every second into ``audit_server`` and a Vault path of their own."""
    bootstrap.apply_manifests(kube.api, list(yaml.safe_load_all(CRDS.read_text())))
    peering = f"audit-{secrets.token_hex(3)}"
    body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": peering, "namespace": tenant}}
    custom = client.CustomObjectsApi(kube.api)
    wait_for(
        lambda: custom.create_namespaced_custom_object("kopf.dev", "v1", tenant, "kopfpeerings", body),
        what="peering CRD served",
    )
    checkpoint_path = f"audit/checkpoint-{peering}"
    started: list[Operator] = []
    for name, priority in (("high", 100), ("low", 50)):
        port = free_port()
        proc = env.start_component(
            "operator",
            name=f"audit-fence-{name}-{secrets.token_hex(2)}",
            PMKEYS_PEERING=peering,
            PMKEYS_PRIORITY=str(priority),
            PMKEYS_NAMESPACES=json.dumps([tenant]),
            PMKEYS_METRICS_PORT=str(port),
            PMKEYS_BCRYPT_COST="4",
            PMKEYS_RETENTION_SWEEP_SECONDS="1",
            PMKEYS_AUDIT__DSN=audit_server.component_dsn("operator"),
            PMKEYS_AUDIT__STREAM="[]",
            PMKEYS_AUDIT__CHECKPOINT_SECONDS="1",
            PMKEYS_AUDIT__CHECKPOINT_PATH=checkpoint_path,
        )
        started.append(Operator(name, proc, port))
    try:
        yield started[0], started[1], checkpoint_path
    finally:
        for op in started:
            op.proc.stop(grace=10)


def _checkpoint(env: LocalEnvironment, path: str) -> dict[str, object] | None:
    try:
        answer = env.openbao.client().secrets.kv.v2.read_secret_version(
            path=f"{bootstrap.VAULT_PREFIX}/{path}", mount_point=KV_MOUNT, raise_on_deleted_version=True
        )
    except hvac.exceptions.InvalidPath:
        return None
    return dict(answer["data"]["data"])


def _sweeps(audit_server: PostgresServer) -> int:
    reader = store.AuditReader(audit_server.component_dsn("auditor"))
    return len(reader.query(store.Query(actions=("retention_sweep",), limit=10_000)))


def _verify_with_vault(env: LocalEnvironment, audit_server: PostgresServer, path: str) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PMKEYS_")}
    environ |= {
        "PMKEYS_VAULT__ADDR": env.openbao.url,
        "PMKEYS_VAULT__TOKEN": env.openbao.root_token,
        "PMKEYS_VAULT__KV_MOUNT": KV_MOUNT,
        "PMKEYS_VAULT__PREFIX": bootstrap.VAULT_PREFIX,
        "PMKEYS_AUDIT__CHECKPOINT_PATH": path,
    }
    dsn = audit_server.component_dsn("auditor")
    argv = [sys.executable, "-m", "pmkeys", "audit", "--dsn", dsn, "verify", "--vault"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=environ)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_only_the_active_operator_sweeps_and_checkpoints(
    env: LocalEnvironment, audit_server: PostgresServer, peered: tuple[Operator, Operator, str]
) -> None:
    high, low, path = peered
    wait_for(high.active, timeout=90, what="the higher-priority operator active")
    wait_for(lambda: _sweeps(audit_server) >= 5, timeout=60, what="five sweeps by the active operator")
    wait_for(lambda: high.wrote(_checkpoint(env, path)), timeout=30, what="a checkpoint by the active one")
    assert not low.active()
    assert low.sweeps() == 0, "the standby swept"
    # Every sweep record in the store is one the active operator logged (nobody else swept it).
    assert _sweeps(audit_server) <= high.sweeps()
    assert "agrees with 1 checkpoint" in _verify_with_vault(env, audit_server, path)

    high.proc.stop(grace=10)
    swept_by_high = high.sweeps()
    wait_for(low.active, timeout=90, what="the standby taking over")
    wait_for(lambda: low.sweeps() >= 2, timeout=60, what="sweeps by the new writer")
    wait_for(lambda: low.wrote(_checkpoint(env, path)), timeout=30, what="a checkpoint by the new writer")
    assert high.sweeps() == swept_by_high
    assert _sweeps(audit_server) <= swept_by_high + low.sweeps()
    assert "agrees with 1 checkpoint" in _verify_with_vault(env, audit_server, path)
