"""The whole local environment: control plane + OpenBao (+ Redis), bootstrapped, and the
product's components started as processes against it.

``pmkeys dev up`` keeps one running in the background (state in ``.cache/dev/state.json``,
stopped by ``pmkeys dev down``); the test suite starts one per session.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from pmkeys.kubeclient import api_client
from pmkeys_dev import bootstrap
from pmkeys_dev.controlplane import ControlPlane
from pmkeys_dev.openbao import KV_MOUNT, OpenBao
from pmkeys_dev.postgres import PostgresServer
from pmkeys_dev.processes import ServerProcess, pid_alive, terminate_pid


@dataclass
class LocalEnvironment:
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pmkeys-env-")))
    bao_mode: str = "dev"
    controlplane: ControlPlane = field(init=False)
    openbao: OpenBao = field(init=False)
    #: The audit store (PostgreSQL); its data outlives restarts of the server.
    postgres: PostgresServer = field(default_factory=PostgresServer)
    token_files: dict[str, Path] = field(default_factory=dict)
    components: list[ServerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.controlplane = ControlPlane(workdir=self.workdir / "controlplane")
        self.openbao = OpenBao(mode=self.bao_mode, workdir=self.workdir / "openbao")

    @property
    def kubeconfig(self) -> Path:
        return self.controlplane.kubeconfig

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def audit_stream(self) -> Path:
        return self.logs / "audit-stream.log"

    def start(self) -> None:
        """Start and bootstrap everything; if any step fails, what was started is stopped."""
        try:
            self.controlplane.start()
            self.openbao.start()
            self.postgres.start()
            api = api_client(str(self.kubeconfig))
            bootstrap.apply_crd(api)
            bootstrap.audit_admission_policy(api)
            bootstrap.service_accounts(api)
            bootstrap.configure_openbao(self.openbao, self.controlplane, api)
            self.token_files = bootstrap.write_token_files(api, self.workdir / "tokens")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in reversed(self.components):
            proc.stop(grace=5)
        self.components.clear()
        self.openbao.stop()
        self.postgres.stop()
        self.controlplane.stop()

    def cleanup(self) -> None:
        self.postgres.cleanup()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- component processes -------------------------------------------------------------
    def component_env(self, component: str, extra: dict[str, str], *, kubeconfig: Path | None = None) -> dict[str, str]:
        """Environment for ``pmkeys <component>``: Vault via the Kubernetes auth method with
        the component's own ServiceAccount token, as in a pod."""
        env = {k: val for k, val in os.environ.items() if not k.startswith("PMKEYS_")}
        env.update(
            {
                "PMKEYS_KUBECONFIG": str(kubeconfig or self.kubeconfig),
                "PMKEYS_VAULT__ADDR": self.openbao.url,
                "PMKEYS_VAULT__AUTH": "kubernetes",
                "PMKEYS_VAULT__ROLE": bootstrap.service_account(component),
                "PMKEYS_VAULT__TOKEN_PATH": str(self.token_files[component]),
                "PMKEYS_VAULT__KV_MOUNT": KV_MOUNT,
                "PMKEYS_VAULT__PREFIX": bootstrap.VAULT_PREFIX,
                "PMKEYS_AUDIT__DSN": self.postgres.component_dsn(component) if self.postgres.bootstrapped else "",
                # Every record also goes to one JSON-lines file, as a SIEM would take it.
                "PMKEYS_AUDIT__STREAM": json.dumps([f"file:{self.audit_stream}"]),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def start_component(
        self,
        component: str,
        *args: str,
        name: str | None = None,
        ready_url: str | None = None,
        ready_text: str = "",
        **env: str,
    ) -> ServerProcess:
        """Start ``pmkeys <component>``; with ``ready_url``, wait until it answers 200 (and its
        body contains ``ready_text``)."""
        proc = ServerProcess(
            name or component,
            [sys.executable, "-m", "pmkeys", component, *args],
            log_dir=self.logs,
            env=self.component_env(component, env),
        )
        proc.start()
        self.components.append(proc)
        if ready_url:

            def ready() -> bool:
                answer = httpx.get(ready_url, timeout=1)
                return answer.status_code == 200 and ready_text in answer.text

            proc.wait_ready(ready, timeout=60)
        return proc

    def restart_apiserver(self) -> float:
        """Restart kube-apiserver (fault tests) and wait until it admits TenantApiKeys again;
        returns the seconds that took after /readyz."""
        self.controlplane.restart_apiserver()
        return bootstrap.wait_until_keys_admitted(api_client(str(self.kubeconfig)))

    def kubeconfig_for_token(self, token: str, path: Path) -> Path:
        """A kubeconfig for the same cluster that authenticates with ``token`` (least-privilege runs)."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"] = [{"name": "token-user", "user": {"token": token}}]
        config["contexts"][0]["context"]["user"] = "token-user"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # -- state for `pmkeys dev up/down` -------------------------------------------------
    def save_state(self, path: Path) -> None:
        processes = [*self.controlplane.processes, self.openbao.process, self.postgres.process, *self.components]
        pids = [p.pid for p in processes if p and p.pid]
        state = {
            "workdir": str(self.workdir),
            "kubeconfig": str(self.kubeconfig),
            "apiserver": self.controlplane.url,
            "openbao": self.openbao.describe(),
            "tokens": {k: str(val) for k, val in self.token_files.items()},
            "audit_dsn": self.postgres.component_dsn("auditor"),
            "audit_workdir": str(self.postgres.workdir),
            "pids": pids,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)


def stop_from_state(path: Path) -> list[int]:
    """Stop every process a saved environment started and delete its files."""
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    stopped = []
    for pid in reversed(state.get("pids", [])):
        if pid_alive(pid):
            terminate_pid(pid, grace=5)
            stopped.append(pid)
    shutil.rmtree(state.get("workdir", ""), ignore_errors=True)
    if state.get("audit_workdir"):
        shutil.rmtree(state["audit_workdir"], ignore_errors=True)
    path.unlink()
    return stopped
