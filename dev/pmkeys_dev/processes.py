"""Child processes with a log file, a readiness probe and a clean stop.

Every server the local environment starts goes through :class:`ServerProcess`, so that
stopping is uniform (SIGTERM, then SIGKILL after a grace period) and no process outlives
the environment that started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class StartupError(RuntimeError):
    """A server did not become ready; the message names it and points at its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_pid(pid: int, *, grace: float = 10.0) -> None:
    """Stop a process group leader: SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = 0 if pid_alive(pid) else pid
            if done == pid or not pid_alive(pid):
                return
            time.sleep(0.05)


class ServerProcess:
    """One long-running server started in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self._env = env
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_ready(self, probe: Callable[[], bool], *, timeout: float) -> None:
        def alive_and_ready() -> bool:
            if not self.running():
                raise StartupError(self._exit_message())
            return probe()

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if alive_and_ready():
                    return
            except StartupError:
                raise
            except Exception:
                pass
            time.sleep(0.1)
        raise StartupError(f"{self.name} was not ready within {timeout:.0f}s; see {self.log_path}")

    def _exit_message(self) -> str:
        tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
        code = self._proc.returncode if self._proc else None
        return f"{self.name} exited with {code}; last lines of {self.log_path}:\n" + "\n".join(tail)

    def stop(self, *, grace: float = 10.0) -> None:
        if self._proc is None:
            return
        terminate_pid(self._proc.pid, grace=grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL without grace: used by crash tests."""
        if self._proc is not None and self.running():
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
