"""A real Redis Cluster on loopback from Debian's ``redis-server``: three masters, each with one
replica, so tests can check hash-tagged scripts across slots and the failover of a master.

Each node gets its own directory, a free client port and a free cluster-bus port
(``--cluster-port``), no persistence, and a short ``cluster-node-timeout`` so that a killed
master is replaced by its replica within a few seconds. ``redis-cli --cluster create`` assigns
the slots and pairs replicas with masters.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pmkeys_dev.processes import ServerProcess, free_port
from pmkeys_dev.redis import ping, redis_binary

NODE_TIMEOUT_MS = 1000


def redis_cli() -> Path:
    return redis_binary().with_name("redis-cli")


@dataclass
class ClusterNode:
    port: int
    bus_port: int
    workdir: Path
    process: ServerProcess | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(redis_binary()),
            "--port", str(self.port),
            "--cluster-port", str(self.bus_port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--save", "",
            # A replica that has not finished its first sync never takes over (it has no data):
            # start that sync at once instead of after the default 5 s wait for more replicas.
            "--repl-diskless-sync-delay", "0",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", "",
        ]  # fmt: skip
        self.process = ServerProcess(f"redis-cluster-{self.port}", argv, log_dir=self.workdir / "logs")
        self.process.start()
        self.process.wait_ready(lambda: ping(self.port), timeout=15)

    def cli(self, *args: str) -> str:
        argv = [str(redis_cli()), "-p", str(self.port), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout

    def role(self) -> str:
        return self.cli("ROLE").split("\n", 1)[0].strip()


@dataclass
class RedisCluster:
    """Three masters and three replicas; :attr:`url` names one node (clients discover the rest)."""

    masters: int = 3
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pmkeys-redis-cluster-")))
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.live_nodes()[0].port}"

    def start(self) -> None:
        for n in range(self.masters * 2):
            node = ClusterNode(free_port(), free_port(), self.workdir / f"node-{n}")
            self.nodes.append(node)
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [str(redis_cli()), "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.wait_healthy()

    def live_nodes(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.process is not None and n.process.running()]

    def master_nodes(self) -> list[ClusterNode]:
        return [n for n in self.live_nodes() if n.role() == "master"]

    def wait_healthy(self, *, timeout: float = 30) -> None:
        """Until every live node says ``cluster_state:ok``, there are ``masters`` masters, and
        every live replica has synced with its master (a replica that has not cannot take over:
        a failover test that killed a master within seconds of the start saw no failover)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = [n.cli("CLUSTER", "INFO") for n in self.live_nodes()]
                links = [n.cli("INFO", "replication") for n in self.live_nodes()]
                synced = all("master_link_status:up" in r for r in links if "role:slave" in r)
                if all("cluster_state:ok" in s for s in states) and len(self.master_nodes()) == self.masters and synced:
                    return
            except subprocess.SubprocessError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"Redis Cluster not healthy after {timeout}s")

    def master_of(self, name: str) -> ClusterNode:
        """The node serving the slot of the Redis key ``name`` now."""
        slot = int(self.live_nodes()[0].cli("CLUSTER", "KEYSLOT", name).strip())
        for node in self.master_nodes():
            for line in node.cli("CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" in fields[2] and "master" in fields[2]:
                    for span in fields[8:]:
                        low, _, high = span.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return node
        raise LookupError(f"no master serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.process.stop(grace=5)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
