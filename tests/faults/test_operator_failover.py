"""Operator failover with kopf peering: two operators (priorities 100 and 50), the active one
SIGKILLed — or SIGSTOPped and later SIGCONTed — in the middle of issuance and rotation bursts.

What a user would notice, and what is asserted: the standby takes over within
``TAKEOVER_BOUND`` seconds (measured: kill → the standby's first write); every key converges
with the invariants of ``tests/invariants.py`` (one key per object, no orphan, no duplicate);
and there are never two writers — every write either operator makes is journalled with its
wall-clock time and the writer's term (``PMKEYS_WRITE_JOURNAL``, test-only: a term is one run
of the fence's on-top reads), and the spans from the first to the last write of each term,
over both operators, never overlap. After SIGCONT there may be more than one handover (kopf
briefly drops the resumed operator's own peering entry while it catches up, and the standby
may legitimately take over again); the spans show each one was clean.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client

from pmkeys.reconcile.leadership import FRESH
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess, free_port
from tests import report
from tests.builders import key
from tests.invariants import check_key, check_vault
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CRDS = Path(__file__).resolve().parents[2] / "charts" / "pmkeys" / "crds" / "kopf.dev-peerings.yaml"
LIFETIME = 15
#: lifetime (the dead peer's entry expiring) + one poll + the handover wait, with room for load.
TAKEOVER_BOUND = 30.0


@dataclass
class Peer:
    name: str
    proc: ServerProcess
    journal: Path
    metrics_port: int

    def active_writer(self) -> bool:
        """What the operator's own metrics say: ``pmkeys_operator_active_writer``."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        return "pmkeys_operator_active_writer 1.0" in text


class Peers:
    """Operators sharing one ClusterKopfPeering, each journalling its writes."""

    def __init__(self, env: LocalEnvironment, peering: str, workdir: Path) -> None:
        self.env = env
        self.peering = peering
        self.workdir = workdir
        self.started: list[Peer] = []

    def start(self, name: str, priority: int) -> Peer:
        journal = self.workdir / f"{name}.writes"
        metrics_port = free_port()
        proc = self.env.start_component(
            "operator",
            name=f"failover-{name}-{secrets.token_hex(2)}",
            PMKEYS_BCRYPT_COST="10",  # ~80 ms a hash: kills land in the middle of issuance
            PMKEYS_PEERING=self.peering,
            PMKEYS_PRIORITY=str(priority),
            PMKEYS_PEERING_LIFETIME=str(LIFETIME),
            PMKEYS_WRITE_JOURNAL=str(journal),
            PMKEYS_METRICS_PORT=str(metrics_port),
        )
        peer = Peer(name, proc, journal, metrics_port)
        self.started.append(peer)
        return peer

    def stop_all(self) -> None:
        for peer in self.started:
            if peer.proc.pid is not None and peer.proc.running():
                os.killpg(peer.proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            peer.proc.stop(grace=5)

    def writes(self) -> list[tuple[int, str, int]]:
        """Every journalled write of every operator, as (wall ns, operator name, term), in time order."""
        merged: list[tuple[int, str, int]] = []
        for peer in self.started:
            if peer.journal.exists():
                for line in peer.journal.read_text().splitlines():
                    when, _, term, _ = line.split(" ", 3)
                    merged.append((int(when), peer.name, int(term)))
        return sorted(merged)


def terms(writes: list[tuple[int, str, int]]) -> list[tuple[int, int, str]]:
    """(first write, last write, operator) of each writer's term, by first write."""
    spans: dict[tuple[str, int], list[int]] = {}
    for when, who, term in writes:
        spans.setdefault((who, term), []).append(when)
    return sorted((min(t), max(t), who) for (who, _), t in spans.items())


def overlaps(writes: list[tuple[int, str, int]]) -> list[str]:
    """Terms whose writes overlap in time: two writers at once."""
    spans = terms(writes)
    return [
        f"{b[2]} wrote from {b[0]} while {a[2]} wrote until {a[1]}"
        for a, b in itertools.pairwise(spans)
        if b[0] <= a[1]
    ]


def writers(writes: list[tuple[int, str, int]]) -> list[str]:
    return [who for _, _, who in terms(writes)]


def first_write(writes: list[tuple[int, str, int]], who: str, after: int) -> int | None:
    return next((t for t, w, _ in writes if w == who and t > after), None)


@pytest.fixture
def peers(fault_env: LocalEnvironment, fkube: Kube, tmp_path: Path) -> Iterator[Peers]:
    bootstrap.apply_manifests(fkube.api, list(yaml.safe_load_all(CRDS.read_text())))
    custom = client.CustomObjectsApi(fkube.api)
    name = f"pmkeys-failover-{secrets.token_hex(3)}"
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    wait_for(
        lambda: custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body),
        what="peering CRD served",
    )
    started = Peers(fault_env, name, tmp_path)
    yield started
    started.stop_all()
    custom.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)


def active_writer(fkube: Kube, peers: Peers, ns: str, probe: str) -> str:
    """Create ``probe`` and return the only operator whose journal shows writes."""
    fkube.create_key(key(probe, ns))
    fkube.wait_phase(ns, probe, "Active", timeout=60)
    seen = {who for _, who, _ in peers.writes()}
    assert len(seen) == 1, f"writers before any fault: {seen}"
    return seen.pop()


def burst(fkube: Kube, ns: str, prefix: str, rotated: list[str]) -> list[str]:
    """20 creations and a rotation of each of ``rotated``, sent as fast as the API takes them."""
    names = [f"{prefix}{i}" for i in range(20)]
    for name in names:
        fkube.create_key(key(name, ns, rotation={"gracePeriod": "1h"}))
    for name in rotated:
        fkube.patch_key(ns, name, {"spec": {"rotation": {"counter": 1}}})
    return names


def settle(fkube: Kube, fvault: VaultView, ns: str, created: list[str], rotated: list[str]) -> list[str]:
    wait_for(
        lambda: all(fkube.status(ns, n).get("phase") == "Active" for n in created), timeout=120, what="burst settled"
    )
    wait_for(
        lambda: all(fkube.status(ns, n).get("rotation", {}).get("observedCounter") == 1 for n in rotated),
        timeout=120,
        what="rotations settled",
    )
    violations: list[str] = []
    for name in created:
        violations += check_key(fkube, fvault, ns, name, max_records=1)
    for name in rotated:
        violations += check_key(fkube, fvault, ns, name, max_records=2)
    return violations + check_vault(fkube, fvault)


def existing_keys(fkube: Kube, ns: str, count: int) -> list[str]:
    names = [f"r{i}" for i in range(count)]
    for name in names:
        fkube.create_key(key(name, ns, rotation={"gracePeriod": "1h"}))
    for name in names:
        fkube.wait_phase(ns, name, "Active", timeout=60)
    return names


def test_active_operator_sigkilled_mid_burst(peers: Peers, fkube: Kube, fvault: VaultView, ftenant: str) -> None:
    a = peers.start("a", 100)
    assert active_writer(fkube, peers, ftenant, "probe") == "a"
    peers.start("b", 50)
    rotated = existing_keys(fkube, ftenant, 10)
    created = burst(fkube, ftenant, "n", rotated)
    time.sleep(0.5)
    killed_at = time.time_ns()
    a.proc.kill()
    violations = settle(fkube, fvault, ftenant, created, rotated)
    writes = peers.writes()
    took = first_write(writes, "b", killed_at)
    violations += overlaps(writes)
    if writers(writes) != ["a", "b"]:
        violations.append(f"writer terms in time order: {writers(writes)} (expected a, then b)")
    if took is None or (took - killed_at) / 1e9 > TAKEOVER_BOUND:
        violations.append(f"takeover: {None if took is None else (took - killed_at) / 1e9:.1f} s")
    by_standby = sum(1 for _, w, _ in writes if w == "b")
    seconds = (took - killed_at) / 1e9 if took is not None else float("nan")
    report.record(
        "active operator SIGKILLed mid-burst (20 creations, 10 rotations)",
        violations,
        f"standby took over in {seconds:.1f} s (bound {TAKEOVER_BOUND:.0f} s); {by_standby} writes by it; "
        "one writer at a time; invariants hold",
    )
    assert not violations, violations


def test_active_operator_paused_then_resumed(peers: Peers, fkube: Kube, fvault: VaultView, ftenant: str) -> None:
    """SIGSTOP (a network or VM pause) of the active operator mid-burst: the standby takes over;
    SIGCONT: the higher-priority one takes back — and at no moment do both write."""
    a = peers.start("a", 100)
    assert active_writer(fkube, peers, ftenant, "probe") == "a"
    peers.start("b", 50)
    assert a.proc.pid is not None
    rotated = existing_keys(fkube, ftenant, 10)
    created = burst(fkube, ftenant, "n", rotated)
    time.sleep(0.5)
    stopped_at = time.time_ns()
    os.killpg(a.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: first_write(peers.writes(), "b", stopped_at), timeout=60, what="standby writes")
        time.sleep(FRESH)
        more = [f"m{i}" for i in range(5)]
        for name in more:
            fkube.create_key(key(name, ftenant))
        time.sleep(1)
    finally:
        resumed_at = time.time_ns()
        os.killpg(a.proc.pid, signal.SIGCONT)
    wait_for(a.active_writer, timeout=60, what="the resumed, higher-priority operator is the writer again")
    retook = (time.time_ns() - resumed_at) / 1e9
    later = [f"l{i}" for i in range(5)]
    for name in later:
        fkube.create_key(key(name, ftenant))
    violations = settle(fkube, fvault, ftenant, created + more + later, rotated)
    writes = peers.writes()
    violations += overlaps(writes)
    order = writers(writes)
    if order[:2] != ["a", "b"] or order[-1] != "a":
        violations.append(f"writer terms in time order: {order} (expected a, b, …, a)")
    took = first_write(writes, "b", stopped_at)
    spans = terms(writes)
    back = spans[-1][0] if spans and spans[-1][2] == "a" and spans[-1][0] > resumed_at else None
    last_b = max((t for t, w, _ in writes if w == "b"), default=0)
    seconds = (took - stopped_at) / 1e9 if took is not None else float("nan")
    if not seconds <= TAKEOVER_BOUND:
        violations.append(f"takeover after SIGSTOP: {seconds:.1f} s")
    if back is None:
        violations.append("the resumed operator's term is not the last one")
    gap = (back - last_b) / 1e9 if back is not None else float("nan")
    report.record(
        "active operator SIGSTOPped mid-burst, SIGCONTed after the takeover",
        violations,
        f"standby took over in {seconds:.1f} s; resumed one the writer again {retook:.1f} s after SIGCONT, "
        f"its last term from {gap:.1f} s after the standby's last write; {len(order)} terms "
        f"({' '.join(order)}), none overlapping; invariants hold",
    )
    assert not violations, violations
