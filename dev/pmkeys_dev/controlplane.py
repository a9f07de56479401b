"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

This is what controller-runtime's envtest runs, plus the controller-manager so that
ownerReference garbage collection and namespace deletion behave as on a cluster. There is no
kubelet: nothing schedules pods, and the product's components run as local processes that
talk to this API server exactly as they would to a remote one.

With ``node_ip`` set (the real node of :mod:`pmkeys_dev.node`), the API server listens on that
address instead of loopback, so pods reach it through the ``kubernetes`` Service, and the
controller-manager runs every default controller (Deployments, ReplicaSets, EndpointSlices, the
``kube-root-ca.crt`` publisher that projected ServiceAccount volumes need, ...).

Authentication: an admin client certificate in ``system:masters`` (written to the kubeconfig),
ServiceAccount tokens signed with a generated RSA key (TokenRequest and TokenReview work).
Authorization: RBAC only, so least-privilege tests mean something.
"""

from __future__ import annotations

import base64
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from pmkeys_dev import binaries, hostnet, pki
from pmkeys_dev.processes import ServerProcess, free_port

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS = "garbage-collector-controller,namespace-controller,serviceaccount-controller,resourcequota-controller"
SERVICE_CIDR = hostnet.SERVICE_CIDR
KUBERNETES_SERVICE_IP = "10.96.0.1"


@dataclass
class ControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop`; ``kubeconfig`` is the admin config."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pmkeys-cp-")))
    etcd_port: int = field(default_factory=free_port)
    apiserver_port: int = field(default_factory=free_port)
    processes: list[ServerProcess] = field(default_factory=list)
    #: Listen on this address (a real node's IP) instead of 127.0.0.1, with every controller.
    node_ip: str | None = None

    @property
    def address(self) -> str:
        return self.node_ip or "127.0.0.1"

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def ca_cert(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    def start(self) -> None:
        extra_ips = (self.node_ip, KUBERNETES_SERVICE_IP) if self.node_ip else ()
        certs = pki.generate(self.workdir / "pki", extra_ips=extra_ips)
        self._start_etcd()
        self._start_apiserver(certs)
        self._write_kubeconfig(certs)
        self._start_controller_manager()

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def process(self, name: str) -> ServerProcess:
        return next(p for p in self.processes if p.name == name)

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver with the same flags (fault tests)."""
        proc = self.process("kube-apiserver")
        proc.stop()
        proc.start()
        proc.wait_ready(self._apiserver_ready, timeout=90)

    def _start_etcd(self) -> None:
        peer = free_port()
        client = f"http://127.0.0.1:{self.etcd_port}"
        proc = ServerProcess(
            "etcd",
            [
                str(binaries.built("etcd")),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            log_dir=self.logs,
        )
        proc.start()
        self.processes.append(proc)
        proc.wait_ready(lambda: httpx.get(f"{client}/health", timeout=1).status_code == 200, timeout=30)

    def _start_apiserver(self, certs: pki.Pki) -> None:
        proc = ServerProcess(
            "kube-apiserver",
            [
                str(binaries.built("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={certs.serving_cert}",
                f"--tls-private-key-file={certs.serving_key}",
                f"--client-ca-file={certs.ca_cert}",
                "--authorization-mode=RBAC",
                # Pods' API server: reach the kubelet by its node IP, never by resolving a name,
                # and authenticate to it (logs, exec) with the admin certificate.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={certs.admin_cert}",
                f"--kubelet-client-key={certs.admin_key}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={certs.sa_public}",
                f"--service-account-signing-key-file={certs.sa_private}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--event-ttl=24h",
                "--v=1",
            ],
            log_dir=self.logs,
        )
        proc.start()
        self.processes.append(proc)
        self._certs = certs
        proc.wait_ready(self._apiserver_ready, timeout=120)

    def _apiserver_ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self._certs.ca_cert))
        ctx.load_cert_chain(str(self._certs.admin_cert), str(self._certs.admin_key))
        return httpx.get(f"{self.url}/readyz", verify=ctx, timeout=2).status_code == 200

    def _write_kubeconfig(self, certs: pki.Pki) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "pmkeys-local",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": b64(certs.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "pmkeys-admin",
                    "user": {
                        "client-certificate-data": b64(certs.admin_cert),
                        "client-key-data": b64(certs.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "pmkeys-local",
                    "context": {"cluster": "pmkeys-local", "user": "pmkeys-admin"},
                }
            ],
            "current-context": "pmkeys-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _controller_flags(self) -> list[str]:
        if not self.node_ip:
            return [f"--controllers={CONTROLLERS}"]
        return [
            "--controllers=*",
            f"--root-ca-file={self._certs.ca_cert}",
            f"--service-account-private-key-file={self._certs.sa_private}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ]

    def _start_controller_manager(self) -> None:
        port = free_port()
        kubeconfig = str(self.kubeconfig)
        proc = ServerProcess(
            "kube-controller-manager",
            [
                str(binaries.built("kube-controller-manager")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                *self._controller_flags(),
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--use-service-account-credentials=false",
                "--concurrent-gc-syncs=5",
                # The CRDs appear after kcm starts: its quota monitor finds them within 30 s, but
                # a quota that lacked their evaluator is recounted only at the next full resync.
                "--resource-quota-sync-period=10s",
                "--v=1",
            ],
            log_dir=self.logs,
        )
        proc.start()
        self.processes.append(proc)
        proc.wait_ready(
            lambda: httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=1).status_code == 200,
            timeout=60,
        )
