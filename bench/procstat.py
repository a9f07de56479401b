"""CPU time and memory of processes, read from /proc, for the benchmarks beside this file."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all cores have spent busy since boot."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS")


def peak_rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmHWM")


def stop_servers_on_sigterm() -> None:
    """SIGTERM (a timeout, CI) becomes SystemExit, so a benchmark's ``finally`` stops its servers."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
