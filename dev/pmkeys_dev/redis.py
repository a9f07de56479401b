"""Redis from Debian (``redis-server``) for the shared rate limits, on a free loopback port.

No persistence (rate-limit state and pending usage are short-lived by design), its own
directory, protected mode on loopback. :meth:`RedisServer.stop` and :meth:`RedisServer.start`
keep the port, so fault tests can take Redis away and bring it back under running verifiers.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pmkeys_dev.processes import ServerProcess, free_port


def redis_binary() -> Path:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise FileNotFoundError(
            "redis-server not found: run hack/install-system-packages.sh (Debian package redis-server)"
        )
    return Path(found)


def ping(port: int, *, host: str = "127.0.0.1", password: str | None = None, timeout: float = 0.5) -> bool:
    """A raw ``PING`` (no client library needed), after ``AUTH`` when there is a password."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                if not sock.recv(16).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pmkeys-redis-")))
    port: int = field(default_factory=free_port)
    process: ServerProcess | None = None
    #: Listen address: loopback, or a real node's IP so that pods reach it.
    host: str = "127.0.0.1"
    #: Needed off loopback: Redis's protected mode refuses other clients without one.
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(redis_binary()),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", "",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        self.process = ServerProcess(f"redis-{self.port}", argv, log_dir=self.workdir / "logs")
        self.process.start()
        self.process.wait_ready(lambda: ping(self.port, host=self.host, password=self.password), timeout=15)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def running(self) -> bool:
        return (
            self.process is not None
            and self.process.running()
            and ping(self.port, host=self.host, password=self.password)
        )

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
