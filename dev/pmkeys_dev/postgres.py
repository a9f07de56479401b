"""PostgreSQL from Debian (``postgresql``) for the audit store, on a free loopback port.

Unlike Redis, this server keeps its data: the directory survives :meth:`PostgresServer.stop`
and :meth:`PostgresServer.start` (same port), so tests can restart the store under running
components and find every record still there.

PostgreSQL refuses to run as root. When we are root (CI), the server runs as the Debian
package's ``postgres`` user through ``setpriv``, in a directory that user owns outside our
private temp dir (which is mode 0700); its name carries the temp dir's, so the test session's
leftover check (:func:`workdirs_outside_tempdir`) finds a server that was not cleaned up.
:meth:`PostgresServer.stop` keeps the data (a restart finds every record);
:meth:`PostgresServer.cleanup` stops and removes the directory. Passwords are random per environment; the roles are
the audit store's least-privilege ones (see ``pmkeys.audit.schema``): one login per
component, plus an admin that only the environment itself (and tamper tests) use.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import psycopg.sql

from pmkeys.audit import schema, store
from pmkeys_dev.processes import ServerProcess, free_port

ADMIN = "pmkeys_admin"
DATABASE = "pmkeys"
#: Login roles of the components and what each may do with the audit trail.
LOGINS = {
    "operator": (schema.WRITER_ROLE, schema.SWEEPER_ROLE),
    "ui": (schema.WRITER_ROLE, schema.READER_ROLE),
    "verifier": (schema.WRITER_ROLE,),
    "auditor": (schema.READER_ROLE,),
}


def postgres_bin_dir() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "postgres").exists():
            return candidate
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    raise FileNotFoundError("PostgreSQL not found: run hack/install-system-packages.sh (Debian package postgresql)")


def _run_as() -> tuple[list[str], int | None]:
    """argv prefix and uid for the server: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return [], None
    user = pwd.getpwnam("postgres")
    prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
    return prefix, user.pw_uid


SHARED_TMP = Path("/tmp")


def _workdir_prefix() -> str:
    """``pmkeys-postgres-`` and, in the shared /tmp, the name of the temp dir we would have
    used, so the run that owns that temp dir (a test session) can find its servers' leftovers."""
    if os.geteuid() != 0:
        return "pmkeys-postgres-"
    owner = Path(tempfile.gettempdir())
    return "pmkeys-postgres-" if owner == SHARED_TMP else f"pmkeys-postgres-{owner.name.removeprefix('pmkeys-')}-"


def _workdir() -> Path:
    # Root's private temp dir (0700) is closed to the postgres user: use the shared /tmp then.
    parent = str(SHARED_TMP) if os.geteuid() == 0 else None
    return Path(tempfile.mkdtemp(prefix=_workdir_prefix(), dir=parent))


def workdirs_outside_tempdir() -> list[Path]:
    """The working directories of servers started with this temp dir that live outside it (in
    the shared /tmp, when we are root): a leftover check looks in the temp dir and here."""
    if os.geteuid() != 0 or Path(tempfile.gettempdir()) == SHARED_TMP:
        return []
    return sorted(SHARED_TMP.glob(_workdir_prefix() + "*"))


@dataclass
class PostgresServer:
    workdir: Path = field(default_factory=_workdir)
    port: int = field(default_factory=free_port)
    process: ServerProcess | None = None
    passwords: dict[str, str] = field(default_factory=dict)
    retention_days: float | None = None
    bootstrapped: bool = False

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def dsn(self, login: str = ADMIN) -> str:
        return f"postgresql://{login}:{self.passwords[login]}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> None:
        if not self.data_dir.exists():
            self._initdb()
        self._serve()
        if not self.bootstrapped:
            self._bootstrap()

    def _initdb(self) -> None:
        prefix, uid = _run_as()
        self.passwords[ADMIN] = secrets.token_urlsafe(18)
        pwfile = self.workdir / "admin.pw"
        pwfile.write_text(self.passwords[ADMIN])
        if uid is not None:
            os.chown(self.workdir, uid, -1)
            os.chown(pwfile, uid, -1)
        subprocess.run(
            [*prefix, str(postgres_bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", ADMIN,
             f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"],
            check=True, capture_output=True,
        )  # fmt: skip
        pwfile.unlink()

    def _serve(self) -> None:
        prefix, _ = _run_as()
        argv = [
            *prefix, str(postgres_bin_dir() / "postgres"), "-D", str(self.data_dir),
            "-p", str(self.port), "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.workdir}",
            "-c", "fsync=off", "-c", "synchronous_commit=on", "-c", "log_min_messages=warning",
            "-c", "max_connections=100",
        ]  # fmt: skip
        self.process = ServerProcess(f"postgres-{self.port}", argv, log_dir=self.workdir / "logs")
        self.process.start()
        self.process.wait_ready(self._ready, timeout=60)

    def _ready(self) -> bool:
        with psycopg.connect(self._admin_dsn("postgres"), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def _admin_dsn(self, database: str) -> str:
        return f"postgresql://{ADMIN}:{self.passwords[ADMIN]}@127.0.0.1:{self.port}/{database}"

    def _bootstrap(self) -> None:
        with psycopg.connect(self._admin_dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        store.migrate(self.dsn(ADMIN), retention_days=self.retention_days)
        with psycopg.connect(self.dsn(ADMIN), autocommit=True) as conn:
            for login, roles in LOGINS.items():
                role = f"pmkeys_{login}"
                self.passwords[role] = secrets.token_urlsafe(18)
                conn.execute(
                    psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                        psycopg.sql.Identifier(role),
                        psycopg.sql.Literal(self.passwords[role]),
                        psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(r) for r in roles),
                    )
                )
        self.bootstrapped = True

    def component_dsn(self, component: str) -> str:
        return self.dsn(f"pmkeys_{component}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=10)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def restart(self) -> None:
        self.stop()
        self._serve()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
