"""A PostgreSQL audit store of the tests' own, for tests that tamper with it or sweep it.

The session environment's store is shared by every test (and verified at the end of the run);
tampering happens here, on a separate server, so it cannot spill over.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pmkeys_dev.postgres import PostgresServer


@pytest.fixture(scope="module")
def audit_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


# The UI's fixtures (a least-privilege UI process, tenant users), shared with tests/ui.
from tests.ui.conftest import admin, make_user, ui_rbac, ui_server  # noqa: E402
from tests.verifier.conftest import verifiers  # noqa: E402

__all__ = ["admin", "audit_server", "make_user", "ui_rbac", "ui_server", "verifiers"]
