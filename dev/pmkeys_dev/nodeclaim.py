"""Who holds the one local node a host can run (its address, ``hostnet.NODE_IP``, is fixed).

A claim file names the node's directory and the processes that keep it: the test session's
own process, or for ``pmkeys dev up --node`` the node's servers. A node whose keepers are all
gone was left by a run that was killed before its teardown (the address on ``lo``, nftables
tables, mounts, orphaned servers and containers): the next node removes those remains first,
says so, and starts. A live test session's node is waited for (it ends by itself); a live
``dev up --node`` node is never touched (``pmkeys dev down`` stops it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pmkeys_dev import hostnet

CLAIM = Path("/run/pmkeys-node.json")
#: How long a new test session waits for another session's node before giving up.
WAIT_FOR_SESSION = 1800.0
POLL = 10.0


def _started(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of its stat), so that a reused pid is not
    taken for a keeper; None when no such process runs (or only its zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


@dataclass(frozen=True)
class NodeClaim:
    workdir: Path
    kind: str  # "test" (a session that ends by itself) or "dev" (kept until `pmkeys dev down`)
    keepers: tuple[tuple[int, str], ...]  # (pid, start time)

    @classmethod
    def of(cls, workdir: Path, kind: str, pids: list[int]) -> NodeClaim:
        keepers = tuple((pid, started) for pid in pids if (started := _started(pid)) is not None)
        return cls(workdir=workdir, kind=kind, keepers=keepers)

    def alive(self) -> bool:
        return any(_started(pid) == started for pid, started in self.keepers)

    def save(self) -> None:
        state = {"workdir": str(self.workdir), "kind": self.kind, "keepers": [list(k) for k in self.keepers]}
        CLAIM.write_text(json.dumps(state))

    @classmethod
    def load(cls) -> NodeClaim | None:
        try:
            state = json.loads(CLAIM.read_text())
        except FileNotFoundError:
            return None
        keepers = tuple((int(pid), str(started)) for pid, started in state["keepers"])
        return cls(workdir=Path(state["workdir"]), kind=state["kind"], keepers=keepers)


def claim(workdir: Path, kind: str, pids: list[int]) -> None:
    """Take the host's node for ``workdir``: wait for a live test session's node, refuse a live
    dev node, remove what a dead one left; then write the claim."""
    deadline = time.monotonic() + WAIT_FOR_SESSION
    while (held := NodeClaim.load()) is not None and held.workdir != workdir and held.alive():
        if held.kind != "test" or time.monotonic() > deadline:
            raise hostnet.HostError(
                f"a local node ({held.kind}, {held.workdir}) is running: stop it first (`pmkeys dev down`)"
            )
        print(f"waiting for the local node of another test session ({held.workdir}) to stop", file=sys.stderr)
        time.sleep(POLL)
    if held is not None and held.workdir != workdir:
        reclaim(held)
    NodeClaim.of(workdir, kind, pids).save()


def release(workdir: Path) -> None:
    held = NodeClaim.load()
    if held is not None and held.workdir == workdir:
        CLAIM.unlink(missing_ok=True)


def reclaim(dead: NodeClaim) -> list[str]:
    """Remove what a node whose keepers are gone left on the host; returns what was found."""
    found = _remains(dead.workdir)
    for pid, _name in hostnet.processes_naming(dead.workdir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    before = dead.workdir / "node" / "host-before.json"
    if before.exists():
        hostnet.HostSnapshot.load(before).restore(workdir=dead.workdir)
    hostnet.OutsideGuard.remove()
    hostnet.remove_node_ip()
    shutil.rmtree(dead.workdir, ignore_errors=True)
    CLAIM.unlink(missing_ok=True)
    if found:
        print(f"removed what a killed local node left ({dead.workdir}): {', '.join(found)}", file=sys.stderr)
    return found


def _remains(workdir: Path) -> list[str]:
    before = workdir / "node" / "host-before.json"
    if before.exists():
        return hostnet.HostSnapshot.load(before).leftovers(under=workdir)
    return [f"process {pid} ({name})" for pid, name in hostnet.processes_naming(workdir)]
