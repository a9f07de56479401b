"""The host state a real node changes, and the guard that keeps pods' traffic on this machine.

A kubelet node is not a set of processes in a directory: the CNI bridge, veth pairs, network
namespaces under ``/run/netns``, kube-proxy's nftables tables, mounts, cgroups, ``ip_forward``
and a few hard-wired directories (``/var/lib/kubelet/device-plugins``, ``/run/containerd``,
``/var/lib/cni``, ``/var/log/containers``) all live on the host. :class:`HostSnapshot` records
what exists before the node starts, so teardown removes exactly what the node added and puts
``ip_forward`` back.

The rule of the machine is that nothing a pod sends leaves it. Pods reach Services through
forwarding, so :class:`OutsideGuard` installs an nftables table that drops every forwarded
packet in or out of the interfaces that existed before the node (the outside interface ``eth0``
and any other), before the first pod starts, with counters a test reads (they must stay 0).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NODE_IP = "10.200.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
GUARD_TABLE = "pmkeys_guard"
#: Paths the kubelet, containerd and the CNI plugins use whatever their configuration says.
HARD_WIRED_DIRS = (
    Path("/var/lib/kubelet/device-plugins"),
    Path("/var/lib/kubelet"),
    Path("/run/containerd"),
    Path("/var/lib/cni"),
    Path("/run/netns"),
    Path("/var/run/netns"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/etc/cni"),
    Path("/opt/cni"),
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Kernel settings the kubelet sets to its own defaults when it starts (it fails instead with
#: protectKernelDefaults): put back on teardown.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
)
BRIDGE = "pmkeys0"
#: Mounts the node makes outside its own directory: pod network namespaces, shim state.
MOUNT_PREFIXES = ("/run/netns/", "/var/run/netns/", "/run/containerd/", "/var/lib/kubelet/")


class HostError(RuntimeError):
    """A host command failed; the message carries its output."""


def run(*argv: str, stdin: str | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise HostError(f"{' '.join(argv[:4])} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def links() -> set[str]:
    return {link["ifname"] for link in json.loads(run("ip", "-j", "link", "show"))}


def node_links() -> set[str]:
    """Interfaces of the kind the node creates: its bridge and the host ends of veth pairs."""
    return {name for name in links() if name == BRIDGE or name.startswith("veth")}


def node_mounts(workdir: Path) -> list[str]:
    prefixes = (*MOUNT_PREFIXES, f"{workdir}/")
    return [m for m in mounts() if m.startswith(prefixes)]


def nft_tables() -> set[tuple[str, str]]:
    listing = json.loads(run("nft", "-j", "list", "tables"))["nftables"]
    return {(item["table"]["family"], item["table"]["name"]) for item in listing if "table" in item}


def nft_chains() -> set[tuple[str, str, str]]:
    """(family, table, chain) of every chain: the kubelet adds chains to iptables' tables."""
    listing = json.loads(run("nft", "-j", "list", "chains"))["nftables"]
    return {(c["chain"]["family"], c["chain"]["table"], c["chain"]["name"]) for c in listing if "chain" in c}


#: libcni's result cache (hard-wired): one file per attachment, removed by CNI DEL.
CNI_RESULTS = Path("/var/lib/cni/results")


def cni_results() -> set[str]:
    return {p.name for p in CNI_RESULTS.glob("*")} if CNI_RESULTS.is_dir() else set()


def mounts() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def cgroup_dirs(name: str) -> list[Path]:
    """``name`` (e.g. ``kubepods``) directly under each mounted cgroup hierarchy."""
    return [path for path in CGROUP_ROOT.glob(f"*/{name}") if path.is_dir()]


@dataclass
class HostSnapshot:
    """What the host had before the node started."""

    links: set[str] = field(default_factory=links)
    tables: set[tuple[str, str]] = field(default_factory=nft_tables)
    chains: set[tuple[str, str, str]] = field(default_factory=nft_chains)
    results: set[str] = field(default_factory=cni_results)
    mounts: set[str] = field(default_factory=lambda: set(mounts()))
    dirs: set[Path] = field(default_factory=lambda: {d for d in HARD_WIRED_DIRS if d.exists()})
    sysctls: dict[str, str] = field(default_factory=lambda: read_sysctls())
    cgroups: set[Path] = field(default_factory=lambda: set(cgroup_dirs("kubepods")))

    def save(self, path: Path) -> None:
        state = {
            "links": sorted(self.links),
            "tables": sorted(self.tables),
            "chains": sorted(self.chains),
            "results": sorted(self.results),
            "mounts": sorted(self.mounts),
            "dirs": sorted(map(str, self.dirs)),
            "sysctls": self.sysctls,
            "cgroups": sorted(map(str, self.cgroups)),
        }
        path.write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, path: Path) -> HostSnapshot:
        state = json.loads(path.read_text())
        return cls(
            links=set(state["links"]),
            tables={(f, n) for f, n in state["tables"]},
            chains={(f, t, c) for f, t, c in state["chains"]},
            results=set(state["results"]),
            mounts=set(state["mounts"]),
            dirs={Path(d) for d in state["dirs"]},
            sysctls=state["sysctls"],
            cgroups={Path(c) for c in state["cgroups"]},
        )

    def leftovers(self, *, under: Path) -> list[str]:
        """What exists now that did not before (empty after a clean teardown); ``under`` is
        the node's own directory: no mount may remain below it, nor any process naming it."""
        found = [f"interface {name}" for name in sorted(node_links() - self.links)]
        found += [f"nftables table {f} {n}" for f, n in sorted(nft_tables() - self.tables)]
        found += [f"nftables chain {f} {t} {c}" for f, t, c in sorted(self._new_chains_in_old_tables())]
        found += [f"CNI result {CNI_RESULTS / r}" for r in sorted(cni_results() - self.results)]
        found += [f"mount {m}" for m in node_mounts(under) if m not in self.mounts]
        found += [f"directory {d}" for d in HARD_WIRED_DIRS if d.exists() and d not in self.dirs]
        found += [f"cgroup {c}" for c in cgroup_dirs("kubepods") if c not in self.cgroups]
        found += [f"process {pid} ({name})" for pid, name in processes_naming(under)]
        if NODE_IP in run("ip", "-4", "-o", "addr", "show", "dev", "lo"):
            found.append(f"address {NODE_IP} on lo")
        now = read_sysctls()
        found += [f"sysctl {k} is {now[k]}, was {v}" for k, v in self.sysctls.items() if now.get(k) != v]
        return found

    def _new_chains_in_old_tables(self) -> set[tuple[str, str, str]]:
        return {c for c in nft_chains() - self.chains if (c[0], c[1]) in self.tables}

    def restore(self, *, workdir: Path) -> None:
        """Remove what the node added (best effort, every step tried); put the sysctls back."""
        for mount in sorted((m for m in node_mounts(workdir) if m not in self.mounts), key=len, reverse=True):
            with contextlib.suppress(HostError):
                run("umount", "-l", mount)
        for name in node_links() - self.links:
            with contextlib.suppress(HostError):
                run("ip", "link", "delete", name)
        for family, name in nft_tables() - self.tables:
            with contextlib.suppress(HostError):
                run("nft", "delete", "table", family, name)
        for family, table, chain in self._new_chains_in_old_tables():
            with contextlib.suppress(HostError):
                run("nft", "flush", "chain", family, table, chain)
                run("nft", "delete", "chain", family, table, chain)
        for name in cni_results() - self.results:
            with contextlib.suppress(OSError):
                (CNI_RESULTS / name).unlink()
        for cgroup in cgroup_dirs("kubepods"):
            if cgroup not in self.cgroups:
                kill_cgroup_processes(cgroup)
                remove_cgroup_tree(cgroup)
        for directory in sorted(HARD_WIRED_DIRS, key=lambda d: len(str(d)), reverse=True):
            if directory.exists() and directory not in self.dirs:
                shutil.rmtree(directory, ignore_errors=True)
        for name, value in self.sysctls.items():
            with contextlib.suppress(OSError):
                (SYSCTL_ROOT / name).write_text(value + "\n")


SYSCTL_ROOT = Path("/proc/sys")


def read_sysctls() -> dict[str, str]:
    return {name: (SYSCTL_ROOT / name).read_text().strip() for name in KUBELET_SYSCTLS}


def processes_naming(path: Path) -> list[tuple[int, str]]:
    """Processes whose command line mentions ``path`` (containerd shims are nobody's children)."""
    needle = str(path).encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes()
            if needle in argv and int(proc.name) != os.getpid():
                found.append((int(proc.name), argv.split(b"\0")[0].decode(errors="replace")))
    return found


def kill_cgroup_processes(top: Path) -> None:
    """SIGKILL whatever still runs in a cgroup tree the node created (containers whose shim
    was stopped before them); without it the cgroups cannot be removed."""
    for procs in top.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.5)


def remove_cgroup_tree(top: Path) -> None:
    """cgroup directories are removed with rmdir, deepest first (their files cannot be deleted)."""
    for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):
        top.rmdir()


@dataclass
class OutsideGuard:
    """Drops forwarded packets from or to the machine's own interfaces, counting them."""

    interfaces: list[str]

    def install(self) -> None:
        names = ", ".join(json.dumps(name) for name in sorted(self.interfaces))
        rules = (
            f"table inet {GUARD_TABLE} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority -300; policy accept;\n"
            # kube-proxy rewrites packets to live Services before this hook; one still addressed
            # to the Service range has no endpoints (a deleted Service, one not yet programmed)
            # and would follow the default route out: refuse it here, counted on its own.
            f'    ip daddr {SERVICE_CIDR} counter reject comment "to a Service IP without endpoints"\n'
            f'    iifname {{ {names} }} counter drop comment "into pods from outside"\n'
            f'    oifname {{ {names} }} counter drop comment "from pods to outside"\n'
            "  }\n"
            # The node IP (API server, OpenBao, Redis), pods and Services answer this machine only.
            "  chain input {\n"
            "    type filter hook input priority -300; policy accept;\n"
            f"    iifname {{ {names} }} ip daddr {{ {NODE_IP}, {POD_CIDR}, {SERVICE_CIDR} }} counter drop"
            ' comment "from outside to the node"\n'
            "  }\n"
            # This machine's own packets to cluster addresses never go out either. Checked at
            # postrouting, after kube-proxy's DNAT and the reroute that follows it: a packet to a
            # live Service leaves through the bridge, one to a dead Service IP would take eth0.
            "  chain postrouting {\n"
            "    type filter hook postrouting priority 200; policy accept;\n"
            f"    oifname {{ {names} }} ip daddr {{ {NODE_IP}, {POD_CIDR}, {SERVICE_CIDR} }} counter drop"
            ' comment "from the node to cluster addresses outside"\n'
            "  }\n"
            "}\n"
        )
        run("nft", "-f", "-", stdin=rules)

    #: The rule that refuses packets to dead Service IPs: not traffic to the outside.
    NO_ENDPOINTS = "to a Service IP without endpoints"

    @staticmethod
    def counters() -> dict[str, int]:
        """Packets dropped per rule, by comment; raises if the guard is not installed."""
        listing = json.loads(run("nft", "-j", "list", "table", "inet", GUARD_TABLE))["nftables"]
        found: dict[str, int] = {}
        for item in listing:
            rule = item.get("rule")
            if not rule:
                continue
            packets = next((e["counter"]["packets"] for e in rule["expr"] if "counter" in e), None)
            if packets is not None:
                found[rule.get("comment", "?")] = int(packets)
        return found

    @staticmethod
    def remove() -> None:
        with contextlib.suppress(HostError):
            run("nft", "delete", "table", "inet", GUARD_TABLE)


def outside_interfaces(existing: set[str]) -> list[str]:
    """Every interface the machine had before the node, except loopback."""
    return sorted(name for name in existing if name != "lo")


def add_node_ip() -> None:
    """The node's address, on ``lo`` (this kernel has no dummy interfaces)."""
    if NODE_IP in run("ip", "-4", "-o", "addr", "show", "dev", "lo"):
        raise HostError(f"{NODE_IP} is already on lo: another local node is running (`pmkeys dev down`)")
    run("ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")


def remove_node_ip() -> None:
    with contextlib.suppress(HostError):
        run("ip", "addr", "del", f"{NODE_IP}/32", "dev", "lo")


def require_root() -> None:
    if os.geteuid() != 0:
        raise HostError("a real node needs root (containerd, CNI, netfilter): run as root")
