"""The audit store against a real PostgreSQL: tampering is found, retention sweeps are recorded,
each role can do exactly what it is for, records survive a restart of the server."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

from pmkeys.audit import store
from pmkeys.audit.records import Action, Actor, ActorSource, AuditEvent, Outcome
from pmkeys_dev.postgres import PostgresServer

pytestmark = pytest.mark.integration


def _event(n: int, *, tenant: str = "acme") -> AuditEvent:
    return AuditEvent(
        Action.UPDATE,
        Outcome.SUCCESS,
        Actor("alice", ("devs",), ActorSource.ADMISSION),
        tenant=tenant,
        namespace=tenant,
        name=f"key-{n}",
        key_id=f"k{n:011d}",
        details={"changes": {"tier": {"from": "starter", "to": "pro"}}},
    )


def _verify_cli(dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pmkeys", "audit", "--dsn", dsn, "verify"], capture_output=True, text=True, timeout=60
    )


def _admin(server: PostgresServer) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(server.dsn(), autocommit=True)


def test_verify_reports_a_changed_a_deleted_and_two_swapped_records(audit_server: PostgresServer) -> None:
    log = store.AuditLog(audit_server.component_dsn("operator"), component="operator")
    seqs = [log.record(_event(n)).seq for n in range(10)]  # type: ignore[union-attr]
    auditor = audit_server.component_dsn("auditor")
    untouched = _verify_cli(auditor)
    assert untouched.returncode == 0, untouched.stdout + untouched.stderr
    assert "intact" in untouched.stdout and "seq" not in untouched.stdout

    changed, deleted, swap_a, swap_b = seqs[2], seqs[4], seqs[6], seqs[8]
    with _admin(audit_server) as conn:
        conn.execute(
            "UPDATE pmkeys_audit.records SET body = replace(body, '\"alice\"', '\"mallory\"') WHERE seq = %s",
            (changed,),
        )
        conn.execute("DELETE FROM pmkeys_audit.records WHERE seq = %s", (deleted,))
        conn.execute("UPDATE pmkeys_audit.records SET seq = -1 WHERE seq = %s", (swap_a,))
        conn.execute("UPDATE pmkeys_audit.records SET seq = %s WHERE seq = %s", (swap_a, swap_b))
        conn.execute("UPDATE pmkeys_audit.records SET seq = %s WHERE seq = -1", (swap_b,))

    result = _verify_cli(auditor)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(
        line.startswith(f"seq {changed}: altered:") and "no longer matches its hash" in line for line in lines
    ), result.stdout
    assert any(line.startswith(f"seq {deleted}: removed: record {deleted} missing") for line in lines)
    assert any(line.startswith(f"seq {swap_a}: reordered:") for line in lines)
    assert any(line.startswith(f"seq {swap_b}: reordered:") for line in lines)
    assert lines[-1] == "audit trail NOT intact: 4 finding(s)", result.stdout


@pytest.fixture
def fresh_server() -> PostgresServer:
    server = PostgresServer()
    server.start()
    yield server  # type: ignore[misc]
    server.cleanup()


def test_truncating_the_newest_records_is_reported(fresh_server: PostgresServer) -> None:
    log = store.AuditLog(fresh_server.component_dsn("ui"), component="ui")
    for n in range(5):
        log.record(_event(n))
    with _admin(fresh_server) as conn:
        conn.execute("DELETE FROM pmkeys_audit.records WHERE seq >= 4")
    result = _verify_cli(fresh_server.component_dsn("auditor"))
    assert result.returncode == 1
    assert "seq 4: truncated: records 4..5 (the newest) were removed; the head is 5" in result.stdout


def test_retention_sweep_removes_old_records_records_itself_and_keeps_the_chain(fresh_server: PostgresServer) -> None:
    with _admin(fresh_server) as conn:
        store.set_retention(conn, dt.timedelta(seconds=2))
    log = store.AuditLog(fresh_server.component_dsn("operator"), component="operator")
    old = [log.record(_event(n, tenant="old")).seq for n in range(3)]  # type: ignore[union-attr]
    time.sleep(2.5)
    recent = log.record(_event(9, tenant="new")).seq  # type: ignore[union-attr]
    removed, through, sweep_seq = log.sweep(Actor.system("operator"))
    assert (removed, through) == (3, old[-1])
    reader = store.AuditReader(fresh_server.component_dsn("auditor"))
    assert reader.query(store.Query(tenant="old")) == []
    assert [r.seq for r in reader.query(store.Query(tenant="new"))] == [recent]
    (sweep,) = reader.query(store.Query(actions=("retention_sweep",)))
    assert sweep.seq == sweep_seq
    assert sweep.data["details"]["removed"] == 3 and sweep.data["actor"]["username"] == "pmkeys:operator"
    assert reader.verify() == []
    # Removing more of the oldest records than the sweep did is tampering, base row and all.
    with _admin(fresh_server) as conn:
        conn.execute("DELETE FROM pmkeys_audit.records WHERE seq = %s", (recent,))
        conn.execute(
            "UPDATE pmkeys_audit.chain SET base_seq = %s, base_hash = (SELECT prev_hash FROM pmkeys_audit.records"
            " WHERE seq = %s)",
            (sweep_seq, sweep_seq),
        )
    assert [f.kind for f in reader.verify()] == ["removed-before-base"]


def test_each_role_can_do_only_its_part(audit_server: PostgresServer) -> None:
    denied = psycopg.errors.InsufficientPrivilege
    for login in ("operator", "ui", "verifier"):
        with psycopg.connect(audit_server.component_dsn(login), autocommit=True) as conn:
            for sql in (
                "UPDATE pmkeys_audit.records SET actor = 'x'",
                "DELETE FROM pmkeys_audit.records",
                "INSERT INTO pmkeys_audit.records SELECT * FROM pmkeys_audit.records LIMIT 1",
                "UPDATE pmkeys_audit.chain SET head_seq = 0",
                "UPDATE pmkeys_audit.settings SET retention = interval '1 second'",
            ):
                with pytest.raises(denied):
                    conn.execute(sql)
    with psycopg.connect(audit_server.component_dsn("auditor"), autocommit=True) as conn:
        with pytest.raises(denied):
            conn.execute('SELECT * FROM pmkeys_audit.append(\'{"action": "x", "outcome": "y"}\')')
        with pytest.raises(denied):
            conn.execute("SELECT * FROM pmkeys_audit.sweep('{}')")
    with psycopg.connect(audit_server.component_dsn("verifier"), autocommit=True) as conn, pytest.raises(denied):
        conn.execute("SELECT * FROM pmkeys_audit.sweep('{}')")


def test_records_survive_a_restart_of_the_server(audit_server: PostgresServer) -> None:
    log = store.AuditLog(audit_server.component_dsn("ui"), component="ui")
    written = log.record(_event(1, tenant="durable"))
    assert written is not None
    audit_server.kill()
    audit_server.restart()
    again = log.record(_event(2, tenant="durable"))
    assert again is not None and again.seq == written.seq + 1
    reader = store.AuditReader(audit_server.component_dsn("auditor"))
    assert [r.seq for r in reader.query(store.Query(tenant="durable"))] == [again.seq, written.seq]


def test_a_record_shaped_like_a_key_is_refused() -> None:
    from pmkeys.audit.records import SecretInRecord

    event = AuditEvent(Action.REVEAL, Outcome.SUCCESS, Actor("bob"), reason="pm_live_" + "A" * 32)
    with pytest.raises(SecretInRecord):
        event.fields()


def test_the_leak_scan_reads_every_audit_record(audit_server: PostgresServer) -> None:
    from pmkeys.api.vocabulary import Environment
    from pmkeys.keys import material
    from tests import leakscan

    planted = material.generate(Environment.TEST).value
    with _admin(audit_server) as conn:
        conn.execute(
            "INSERT INTO pmkeys_audit.records VALUES (-5, now(), '', '', '', '', 'x', 'y', '', %s, '', '')",
            (f'{{"reason": "{planted}"}}',),
        )
    try:
        texts = leakscan.audit_texts(audit_server.dsn(), audit_server.workdir / "logs")
        findings = leakscan.scan(texts, [planted])
        assert [f.source for f in findings] == ["audit record -5"]
    finally:
        with _admin(audit_server) as conn:
            conn.execute("DELETE FROM pmkeys_audit.records WHERE seq = -5")


@pytest.mark.parametrize("filters", [{"actor": "a\x00"}, {"namespaces": ("ok", "b\x00")}, {"actions": ("\x00",)}])
def test_a_query_no_stored_text_could_match_names_its_field(filters: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=f"^{next(iter(filters))}: must not contain NUL"):
        store.Query(**filters)


def test_a_full_queue_drops_its_oldest_records_and_the_trail_says_so(fresh_server: PostgresServer) -> None:
    """While the store is down a writer queues; past its bound it drops the oldest, and the first
    append afterwards writes a records_lost record (how many, of what, whose) before the rest."""
    log = store.AuditLog(fresh_server.component_dsn("ui"), component="ui", pending_limit=3)
    fresh_server.stop()
    for n in range(5):
        assert log.record(_event(n, tenant=f"t{n}")) is None
    assert (log.pending, log.lost) == (3, 2)
    fresh_server.restart()
    assert log.record(_event(5, tenant="t5")) is not None
    written = store.AuditReader(fresh_server.component_dsn("auditor")).query(store.Query(limit=10))
    oldest_first = [r.data for r in reversed(written)]
    lost = oldest_first[0]
    assert (lost["action"], lost["outcome"], lost["actor"]["username"]) == ("records_lost", "failure", "pmkeys:ui")
    assert lost["details"]["count"] == 2
    assert lost["details"]["actions"] == {"update": 2}
    assert lost["details"]["tenants"] == ["t0", "t1"]
    assert [r["tenant"] for r in oldest_first[1:]] == ["t2", "t3", "t4", "t5"]
    assert _verify_cli(fresh_server.component_dsn("auditor")).returncode == 0
