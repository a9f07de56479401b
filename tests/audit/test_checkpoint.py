"""The chain's head kept in Vault, against someone with superuser rights on the audit database:
truncating the newest records and setting the head back, appending a forged tail, recomputing
the whole chain, and sweeping with a shortened retention all verify as intact without the
checkpoint, and are each reported with it; the operator's keeper never moves the checkpoint
onto the forged history. A legitimate sweep is not reported."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

from pmkeys.audit import store
from pmkeys.audit.checkpoint import Checkpoint, VaultCheckpoint
from pmkeys.audit.housekeeping import CheckpointKeeper
from pmkeys.audit.records import Action, Actor, ActorSource, AuditEvent, Outcome
from pmkeys.config import VaultSettings
from pmkeys.vault.session import VaultSession
from pmkeys.vault.store import KeyStore
from pmkeys_dev.openbao import KV_MOUNT, OpenBao
from pmkeys_dev.postgres import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBao]:
    server = OpenBao(mode="dev")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


class Trail:
    """One store, its operator's keeper and checkpoint in Vault, and the auditor's verify."""

    def __init__(self, pg: PostgresServer, bao: OpenBao) -> None:
        self.pg = pg
        self.prefix = f"cp-{secrets.token_hex(3)}"
        self.vault_settings = VaultSettings(addr=bao.url, token=bao.root_token, kv_mount=KV_MOUNT, prefix=self.prefix)
        self.log = store.AuditLog(pg.component_dsn("operator"), component="operator")
        self.vault = VaultCheckpoint(KeyStore(VaultSession(self.vault_settings)), "audit/checkpoint")
        self.keeper = CheckpointKeeper(self.log, self.vault)

    def append(self, count: int, *, actor: str = "alice") -> list[int]:
        return [self.log.record(_event(n, actor)).seq for n in range(count)]  # type: ignore[union-attr]

    def advance(self) -> Checkpoint | None:
        return asyncio.run(self.keeper.advance())

    def stored(self) -> Checkpoint:
        found = asyncio.run(self.vault.read())
        assert found is not None
        return found.checkpoint

    def verify(self, *extra: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PMKEYS_")}
        env.update(
            PMKEYS_VAULT__ADDR=self.vault_settings.addr,
            PMKEYS_VAULT__TOKEN=self.vault_settings.token.get_secret_value(),  # type: ignore[union-attr]
            PMKEYS_VAULT__KV_MOUNT=KV_MOUNT,
            PMKEYS_VAULT__PREFIX=self.prefix,
        )
        argv = [sys.executable, "-m", "pmkeys", "audit", "--dsn", self.pg.component_dsn("auditor"), "verify", *extra]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.pg.dsn(), autocommit=True)


def _event(n: int, actor: str) -> AuditEvent:
    return AuditEvent(
        Action.REVEAL, Outcome.SUCCESS, Actor(actor, ("devs",), ActorSource.UI), tenant="acme",
        namespace="acme", name=f"key-{n}", key_id=f"k{n:011d}",
    )  # fmt: skip


def _truncate_consistently(conn: psycopg.Connection[tuple[object, ...]], keep_through: int) -> None:
    """What a superuser does to hide the newest records: delete them and set the head back."""
    conn.execute("DELETE FROM pmkeys_audit.records WHERE seq > %s", (keep_through,))
    conn.execute(
        "UPDATE pmkeys_audit.chain SET head_seq = %s,"
        " head_hash = (SELECT hash FROM pmkeys_audit.records WHERE seq = %s)",
        (keep_through, keep_through),
    )


def _recompute_chain(conn: psycopg.Connection[tuple[object, ...]], edit: tuple[str, str]) -> None:
    """Rewrite every body (``edit``: old, new text) and recompute every hash and link."""
    rows = conn.execute("SELECT seq, body FROM pmkeys_audit.records ORDER BY seq").fetchall()
    base = conn.execute("SELECT base_hash FROM pmkeys_audit.chain").fetchone()
    prev = bytes(base[0])  # type: ignore[index, arg-type]
    for seq, body in rows:
        new_body = str(body).replace(*edit)
        digest = hashlib.sha256(prev + new_body.encode()).digest()
        conn.execute(
            "UPDATE pmkeys_audit.records SET body = %s, actor = %s, prev_hash = %s, hash = %s WHERE seq = %s",
            (new_body, edit[1].strip('"'), prev, digest, seq),
        )
        prev = digest
    conn.execute("UPDATE pmkeys_audit.chain SET head_hash = %s", (prev,))


def test_a_truncated_then_forged_tail_is_reported_and_never_checkpointed(pg: PostgresServer, bao: OpenBao) -> None:
    trail = Trail(pg, bao)
    trail.append(10)
    first = trail.advance()
    assert first is not None and first.seq == 10 and trail.stored() == first
    intact = trail.verify("--vault")
    assert intact.returncode == 0 and "agrees with 1 checkpoint" in intact.stdout, intact.stdout + intact.stderr
    noted = intact.stdout.splitlines()[-1].split()[1]  # "head SEQ:HASH ...", what an auditor keeps
    assert noted == str(first)

    with trail.admin() as conn:
        _truncate_consistently(conn, keep_through=7)
    assert trail.verify().returncode == 0, "the chain alone cannot see a consistent truncation"
    result = trail.verify("--vault")
    assert result.returncode == 1
    assert "seq 8: truncated: the checkpoint of" in result.stdout and "saw seq 10 but the trail ends at seq 7" in (
        result.stdout
    )
    assert trail.advance() == first and trail.keeper.mismatch, "the keeper keeps the old checkpoint"
    assert trail.stored() == first

    trail.append(5, actor="mallory")  # a forged tail through the store's own function: a consistent chain
    assert trail.verify().returncode == 0
    for extra in (("--vault",), ("--checkpoint", noted)):
        result = trail.verify(*extra)
        assert result.returncode == 1 and "seq 10: rewritten:" in result.stdout, result.stdout
    assert trail.advance() == first and trail.stored() == first


def test_a_replaced_head_function_fools_neither_the_keeper_nor_verify(pg: PostgresServer, bao: OpenBao) -> None:
    """The superuser also replaces the store's own function to vouch for the checkpointed hash:
    the keeper and verify recompute the links themselves, so the lie changes nothing."""
    trail = Trail(pg, bao)
    trail.append(10)
    first = trail.advance()
    assert first is not None
    with trail.admin() as conn:
        _truncate_consistently(conn, keep_through=7)
    trail.append(5, actor="mallory")
    with trail.admin() as conn:
        conn.execute(
            f"""CREATE OR REPLACE FUNCTION pmkeys_audit.head(since bigint)
            RETURNS TABLE (o_head_seq bigint, o_head_hash bytea, o_head_at timestamptz, o_base_seq bigint,
                           o_base_hash bytea, o_retention_seconds double precision, o_since_hash bytea)
            LANGUAGE sql SECURITY DEFINER AS $$
              SELECT c.head_seq, c.head_hash, now(), c.base_seq, c.base_hash, 400 * 86400.0,
                     decode('{first.hash.hex()}', 'hex') FROM pmkeys_audit.chain c
            $$"""
        )
    assert trail.advance() == first and trail.keeper.mismatch, "the keeper was fooled"
    assert [f.kind for f in trail.keeper.mismatch] == ["rewritten"]
    result = trail.verify("--vault")
    assert result.returncode == 1 and "seq 10: rewritten:" in result.stdout, result.stdout


def test_a_wholesale_recomputed_chain_is_reported(pg: PostgresServer, bao: OpenBao) -> None:
    trail = Trail(pg, bao)
    trail.append(6)
    assert trail.advance() is not None
    with trail.admin() as conn:
        _recompute_chain(conn, ('"alice"', '"mallory"'))
    assert trail.verify().returncode == 0, "a recomputed chain verifies on its own"
    result = trail.verify("--vault")
    assert result.returncode == 1 and "seq 6: rewritten:" in result.stdout, result.stdout
    assert trail.keeper.mismatch == [] and trail.advance() is not None and trail.keeper.mismatch


def test_a_sweep_with_a_shortened_retention_is_reported_a_due_one_is_not(pg: PostgresServer, bao: OpenBao) -> None:
    trail = Trail(pg, bao)
    with trail.admin() as conn:
        store.set_retention(conn, dt.timedelta(seconds=2))
    trail.append(3)
    assert trail.advance() is not None
    time.sleep(2.5)
    trail.append(1)
    assert trail.log.sweep(Actor.system("operator"))[0] == 3
    due = trail.verify("--vault")
    assert due.returncode == 0, "records past the checkpoint's retention may go: " + due.stdout
    assert trail.advance() is not None and trail.stored().seq == 5  # the sweep's own record

    with trail.admin() as conn:
        store.set_retention(conn, dt.timedelta(days=400))
    trail.append(3)
    assert trail.advance() is not None and trail.stored().retention_seconds == 400 * 86400
    with trail.admin() as conn:  # a superuser shortens the retention and sweeps everything
        store.set_retention(conn, dt.timedelta(microseconds=1))
    time.sleep(0.1)
    trail.append(1)
    assert trail.log.sweep(Actor.system("operator"))[0] > 0
    assert trail.verify().returncode == 0, "the sweep itself is recorded and consistent"
    result = trail.verify("--vault")
    assert result.returncode == 1 and "removed-within-retention" in result.stdout, result.stdout
    assert trail.advance() is not None and trail.keeper.mismatch


def test_a_writer_only_login_cannot_read_the_head(pg: PostgresServer) -> None:
    """The verifier's login appends and nothing else (the UI's also reads the trail)."""
    login = pg.component_dsn("verifier")
    with psycopg.connect(login, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM pmkeys_audit.head(1)")


def test_a_checkpoint_that_is_not_one_is_reported_and_left_alone(pg: PostgresServer, bao: OpenBao) -> None:
    trail = Trail(pg, bao)
    trail.append(2)
    asyncio.run(trail.vault.store.write_document("audit/checkpoint", {"seq": "ten"}, cas=0))
    assert trail.advance() is None
    assert [f.kind for f in trail.keeper.mismatch] == ["checkpoint-unreadable"]
    found = asyncio.run(trail.vault.store.read_document("audit/checkpoint"))
    assert found is not None and found.value == {"seq": "ten"}, "the keeper overwrote it"
    result = trail.verify("--vault")
    assert result.returncode == 1 and "unreadable" in result.stdout, result.stdout
