"""A real single-node cluster on this machine: containerd + runc, CNI bridge, kubelet,
kube-proxy, kube-scheduler and CoreDNS, next to the control plane of :mod:`.controlplane`.

Layout (every address is on this machine)::

    10.200.0.1/32 on lo      the node IP: kube-apiserver, kubelet, CoreDNS (:53), and the
                             host services pods use (OpenBao, Redis) listen here
    10.244.0.0/24 pmkeys0    the pods (CNI bridge + host-local, the bridge is the gateway)
    10.96.0.0/16             Service IPs (kube-proxy, nftables mode)

CoreDNS runs as a host process on the node IP rather than as a pod: it is the cluster's
resolver, not something under test, and as a process it needs no image and is up before the
first pod. It answers ``cluster.local`` from the API server and NXDOMAIN for every other name:
there is no ``forward``, so no pod's query leaves the machine.

Order matters: the outside guard (:mod:`.hostnet`) is installed before containerd starts, so
no pod ever runs without it; teardown deletes the pods first (the CNI plugin then releases
their addresses and namespaces), stops the processes, then removes whatever the node left on
the host. Settings without which a node fails on this kind of machine (cgroup v1, no
CAP_SYS_RESOURCE for root, crun failing) are explained where they are set.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from pmkeys_dev import binaries, hostnet
from pmkeys_dev.controlplane import ControlPlane
from pmkeys_dev.processes import ServerProcess, free_port

NODE_NAME = "pmkeys-node"
POD_CIDR = hostnet.POD_CIDR
POD_GATEWAY = "10.244.0.1"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "pmkeys.local/pause:3.10"
#: Images built by ``make image`` (hack/build-images.sh) and imported into the node's containerd.
IMAGES = {
    "pmkeys": "pmkeys.local/pmkeys:dev",
    "gateway": "pmkeys.local/gateway:dev",
    "base": "docker.io/library/python:3.11-slim-bookworm",
    "pause": PAUSE_IMAGE,
}


def image_tar(name: str) -> Path:
    path = binaries.cache_dir() / "images" / f"{name}.tar"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make image` (hack/build-images.sh)")
    return path


@dataclass
class Node:
    """Start with :meth:`start` after the control plane is up (with ``node_ip=hostnet.NODE_IP``)."""

    controlplane: ControlPlane
    workdir: Path
    processes: list[ServerProcess] = field(default_factory=list)
    snapshot: hostnet.HostSnapshot | None = None

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def start(self) -> None:
        hostnet.require_root()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.snapshot = hostnet.HostSnapshot()
        self.snapshot.save(self.workdir / "host-before.json")
        hostnet.OutsideGuard(hostnet.outside_interfaces(self.snapshot.links)).install()
        self._start_containerd()
        self._import_images()
        self._start_coredns()
        self._start_kubelet()
        self._start_kube_proxy()
        self._start_scheduler()
        self._wait_node_ready()

    def stop(self) -> None:
        """Delete every pod, stop the node's processes, remove what it left on the host.

        The scheduler stops first: the pods that controllers create in place of the deleted
        ones then stay Pending instead of starting while the node is being taken apart."""
        if self.processes:
            for proc in self.processes:
                if proc.name == "kube-scheduler":
                    proc.stop(grace=5)
            self.delete_all_pods()
        for proc in reversed(self.processes):
            proc.stop(grace=10)
        self.processes.clear()
        self._stop_shims()
        if self.snapshot is not None:
            self.snapshot.restore(workdir=self.workdir)

    # -- containerd ----------------------------------------------------------------------
    def _containerd_config(self) -> Path:
        base = self.workdir / "containerd"
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        (cni / "net.d" / "10-pmkeys.conflist").write_text(json.dumps(self._cni_config(cni), indent=1))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""\
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # The pause container asks for oom_score_adj -998; root here lacks CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        # cgroupfs: there is no systemd here. runc, not crun (crun fails on hybrid cgroups).
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}/net.d"
"""
        path = base / "config.toml"
        base.mkdir(parents=True, exist_ok=True)
        path.write_text(config)
        return path

    @staticmethod
    def _cni_config(cni: Path) -> dict[str, object]:
        return {
            "cniVersion": "0.4.0",
            "name": "pmkeys",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": hostnet.BRIDGE,
                    "isGateway": True,
                    # No masquerade: pod traffic has nowhere to go but this machine.
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                }
            ],
        }

    def _start_containerd(self) -> None:
        config = self._containerd_config()
        proc = ServerProcess(
            "containerd", ["/usr/bin/containerd", "--config", str(config), "--log-level", "warn"], log_dir=self.logs
        )
        proc.start()
        self.processes.append(proc)
        proc.wait_ready(lambda: self._ctr("version") is not None, timeout=30)

    def _ctr(self, *args: str) -> str:
        argv = ["/usr/bin/ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300).stdout

    def _import_images(self) -> None:
        for name in IMAGES:
            self._ctr("images", "import", "--no-unpack", str(image_tar(name)))

    # -- CoreDNS -------------------------------------------------------------------------
    def _start_coredns(self) -> None:
        ip = hostnet.NODE_IP
        corefile = self.workdir / "coredns" / "Corefile"
        corefile.parent.mkdir(parents=True, exist_ok=True)
        corefile.write_text(
            f"{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{\n"
            f"  bind {ip}\n  errors\n  cache 5\n"
            f"  kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{\n"
            f"    kubeconfig {self.controlplane.kubeconfig}\n    pods insecure\n  }}\n}}\n"
            # Every other name: NXDOMAIN at once. No forward: nothing resolves outside.
            f".:53 {{\n  bind {ip}\n  template ANY ANY {{\n    rcode NXDOMAIN\n  }}\n}}\n"
        )
        health = free_port()
        corefile.write_text(corefile.read_text().replace("  errors\n", f"  errors\n  health 127.0.0.1:{health}\n", 1))
        proc = ServerProcess(
            "coredns", [str(binaries.built("coredns")), "-conf", str(corefile)], log_dir=self.logs, cwd=corefile.parent
        )
        proc.start()
        self.processes.append(proc)
        proc.wait_ready(
            lambda: httpx.get(f"http://127.0.0.1:{health}/health", timeout=1).status_code == 200, timeout=30
        )

    # -- kubelet -------------------------------------------------------------------------
    def _start_kubelet(self) -> None:
        base = self.workdir / "kubelet"
        base.mkdir(parents=True, exist_ok=True)
        # Pods get only the cluster's resolver: no search domains or servers from the host.
        resolv = base / "resolv.conf"
        resolv.write_text("# pods resolve through the cluster DNS only\n")
        healthz = free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": hostnet.NODE_IP,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.controlplane.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            # This machine: cgroup v1 controllers, no systemd, maybe swap.
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "clusterDNS": [hostnet.NODE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(resolv),
            "podLogsDir": str(base / "pod-logs"),
            "podCIDR": POD_CIDR,
            "maxPods": 60,
            "serializeImagePulls": False,
            # The imported images are all there is (no registry): never garbage-collect them,
            # and do not evict pods because a shared disk is busy.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "shutdownGracePeriod": "0s",
        }
        config_path = base / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        proc = ServerProcess(
            "kubelet",
            [
                str(binaries.built("kubelet")),
                f"--config={config_path}",
                f"--kubeconfig={self.controlplane.kubeconfig}",
                f"--root-dir={base / 'root'}",
                f"--cert-dir={base / 'pki'}",
                f"--node-ip={hostnet.NODE_IP}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
            log_dir=self.logs,
        )
        proc.start()
        self.processes.append(proc)
        proc.wait_ready(
            lambda: httpx.get(f"http://127.0.0.1:{healthz}/healthz", timeout=1).status_code == 200, timeout=60
        )

    def _start_kube_proxy(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(self.controlplane.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_CIDR,
            "bindAddress": hostnet.NODE_IP,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # NodePorts only on the node IP, never on the outside interface.
            "nodePortAddresses": [f"{hostnet.NODE_IP}/32"],
            # Leave the host's conntrack sysctls alone (nothing to restore afterwards).
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = ServerProcess(
            "kube-proxy", [str(binaries.built("kube-proxy")), f"--config={path}", "--v=1"], log_dir=self.logs
        )
        proc.start()
        self.processes.append(proc)
        proc.wait_ready(lambda: ("ip", "kube-proxy") in hostnet.nft_tables(), timeout=60)

    def _start_scheduler(self) -> None:
        kubeconfig = str(self.controlplane.kubeconfig)
        port = free_port()
        proc = ServerProcess(
            "kube-scheduler",
            [
                str(binaries.built("kube-scheduler")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
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

    def _kubectl(self, *args: str, timeout: float = 120) -> str:
        argv = [str(binaries.built("kubectl")), f"--kubeconfig={self.controlplane.kubeconfig}", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=timeout).stdout

    def _wait_node_ready(self, timeout: float = 90) -> None:
        kubelet = next(p for p in self.processes if p.name == "kubelet")

        def ready() -> bool:
            node = json.loads(self._kubectl("get", "node", NODE_NAME, "-o", "json"))
            return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])

        kubelet.wait_ready(ready, timeout=timeout)

    # -- teardown ------------------------------------------------------------------------
    def delete_all_pods(self, timeout: float = 90) -> None:
        """Delete every pod and wait until containerd runs no task and the CNI released every
        address (the kubelet stops each sandbox with CNI DEL, after the pod object is gone)."""
        with contextlib.suppress(subprocess.SubprocessError):
            self._kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false")
        ipam = self.workdir / "cni" / "ipam" / "pmkeys"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                tasks = self._ctr("tasks", "list", "-q").strip()
            except subprocess.SubprocessError:
                return
            leased = [p for p in ipam.glob("10.*")] if ipam.is_dir() else []
            if not tasks and not leased:
                return
            time.sleep(0.5)

    def _stop_shims(self) -> None:
        """containerd-shim processes of this node outlive containerd by design: end them."""
        for pid in shim_pids(self.containerd_socket):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def shim_pids(socket: Path) -> list[int]:
    return [pid for pid, name in hostnet.processes_naming(socket) if name.endswith("containerd-shim-runc-v2")]
