"""The audit store's server leaves nothing behind: its directory (in the shared /tmp when we
are root) is one the session's leftover check looks at, stop keeps the data, cleanup removes it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psycopg
import pytest

from pmkeys_dev import postgres
from pmkeys_dev.postgres import PostgresServer
from tests import conftest

pytestmark = pytest.mark.integration


def test_the_servers_directory_is_seen_by_the_leftover_check_until_cleanup() -> None:
    server = PostgresServer()
    try:
        server.start()
        if os.geteuid() == 0:
            assert server.workdir.parent == Path("/tmp"), "the postgres user cannot enter our private temp dir"
            assert server.workdir in postgres.workdirs_outside_tempdir()
        else:
            assert server.workdir.parent == Path(tempfile.gettempdir())
        assert server.workdir in conftest._our_temp_dirs(), "the leftover check would miss it"
        server.stop()
        assert server.data_dir.exists(), "stop keeps the records for a restart"
        server.start()
        with psycopg.connect(server.dsn(), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    finally:
        server.cleanup()
    assert not server.workdir.exists()
    assert server.workdir not in conftest._our_temp_dirs()


def test_another_runs_directories_are_not_ours() -> None:
    """A parallel test run (another temp dir) has its own prefix: its servers are not our leftovers."""
    if os.geteuid() != 0:
        pytest.skip("as a user, the servers live in the run's own temp dir")
    other = Path(tempfile.mkdtemp(prefix="pmkeys-postgres-someone-else-", dir="/tmp"))
    try:
        assert other not in postgres.workdirs_outside_tempdir()
    finally:
        other.rmdir()
