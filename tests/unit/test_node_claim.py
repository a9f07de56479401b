"""The host's claim on its one local node: a killed run's remains are removed by the next run,
a live test session is waited for, a live ``dev up --node`` is never touched.

The claim file lives in a temp dir here and the host-wide steps (the node address on ``lo``,
the outside guard's table) are recorded instead of done: a node of this very session may be
running (tests/node), and these tests must not take it apart. The orphaned server is a real
process, killed for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pmkeys_dev import hostnet, nodeclaim
from pmkeys_dev.nodeclaim import NodeClaim


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    done: list[str] = []
    monkeypatch.setattr(nodeclaim, "CLAIM", tmp_path / "claim.json")
    monkeypatch.setattr(nodeclaim, "POLL", 0.1)
    monkeypatch.setattr(hostnet, "remove_node_ip", lambda: done.append("address removed"))
    monkeypatch.setattr(hostnet.OutsideGuard, "remove", staticmethod(lambda: done.append("guard removed")))
    yield done


def _server_naming(workdir: Path) -> subprocess.Popen[bytes]:
    """A process whose command line names the node's directory, as kubelet's does."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(workdir / "kubelet.conf")])


def test_a_killed_runs_node_is_removed_before_the_next_one_starts(tmp_path: Path, host: list[str]) -> None:
    old = tmp_path / "pmkeys-node-old"
    old.mkdir()
    orphan = _server_naming(old)
    try:
        gone = subprocess.Popen(["true"])
        gone.wait()
        NodeClaim(workdir=old, kind="test", keepers=((gone.pid, "1"),)).save()

        nodeclaim.claim(tmp_path / "pmkeys-node-new", "test", [os.getpid()])

        assert orphan.wait(timeout=10) == -9, "the orphaned server of the killed run still runs"
    finally:
        orphan.kill()
    assert not old.exists()
    assert host == ["guard removed", "address removed"]
    held = NodeClaim.load()
    assert held is not None and held.workdir == tmp_path / "pmkeys-node-new" and held.alive()


def test_a_live_dev_node_is_refused_and_left_running(tmp_path: Path, host: list[str]) -> None:
    dev = tmp_path / "node-env"
    dev.mkdir()
    server = _server_naming(dev)
    try:
        NodeClaim.of(dev, "dev", [server.pid]).save()
        with pytest.raises(hostnet.HostError, match=r"pmkeys dev down"):
            nodeclaim.claim(tmp_path / "pmkeys-node-new", "test", [os.getpid()])
        assert server.poll() is None and dev.exists() and host == []
        assert NodeClaim.load() == NodeClaim.of(dev, "dev", [server.pid])
    finally:
        server.kill()
        server.wait()


def test_a_live_test_sessions_node_is_waited_for(tmp_path: Path, host: list[str]) -> None:
    other = tmp_path / "pmkeys-node-other"
    other.mkdir()
    session = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    NodeClaim.of(other, "test", [session.pid]).save()
    reaper = threading.Thread(target=session.wait)  # the session's end, as its parent sees it
    reaper.start()
    started = time.monotonic()

    nodeclaim.claim(tmp_path / "pmkeys-node-new", "test", [os.getpid()])

    waited = time.monotonic() - started
    reaper.join()
    assert waited >= 1.0, f"claimed the host after {waited:.1f} s, while the other session still ran"
    held = NodeClaim.load()
    assert held is not None and held.workdir == tmp_path / "pmkeys-node-new"


def test_releasing_leaves_another_nodes_claim(tmp_path: Path, host: list[str]) -> None:
    NodeClaim.of(tmp_path / "a", "test", [os.getpid()]).save()
    nodeclaim.release(tmp_path / "b")
    assert NodeClaim.load() is not None
    nodeclaim.release(tmp_path / "a")
    assert NodeClaim.load() is None
