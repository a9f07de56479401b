"""The PostgreSQL audit store: append, query, sweep, and read the chain for ``verify``.

Writers (:class:`AuditLog`) hold one connection each and call ``pmkeys_audit.append`` — one
round trip, autocommit — so a record is durable when the call returns. When the store cannot
be reached, :meth:`AuditLog.record` either raises :class:`AuditUnavailable` (``required=True``:
the UI refuses to reveal a key it cannot record revealing) or keeps the record in a bounded
in-memory queue that the next append (or :meth:`AuditLog.flush_pending`) retries first, so the
order of one writer's records is kept. A full queue drops its oldest record, never silently:
the writer logs an error, counts what it dropped (:class:`Loss`) and, once the store answers
again, writes a ``records_lost`` record (how many, of which actions and tenants, between which
times) before the queued ones, so the trail itself says where it has a gap.

Readers (:class:`AuditReader`) page through records newest first with the indexed filters,
and stream the whole chain oldest first for :func:`pmkeys.audit.chain.verify`.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pmkeys.audit import chain, checkpoint, schema
from pmkeys.audit.records import Action, Actor, ActorSource, AuditEvent, Outcome, StoredRecord
from pmkeys.audit.streaming import Stream

logger = logging.getLogger(__name__)
PENDING_LIMIT = 10_000
#: Tenants a ``records_lost`` record names at most.
MAX_LOST_TENANTS = 100
CONNECT_TIMEOUT = 5


@dataclass
class Loss:
    """Records a writer dropped from its full queue since it last reported a loss."""

    count: int = 0
    first: str = ""
    last: str = ""
    actions: collections.Counter[str] = field(default_factory=collections.Counter)
    tenants: set[str] = field(default_factory=set)

    def add(self, fields: dict[str, Any]) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.first = self.first or now
        self.last = now
        self.count += 1
        self.actions[str(fields.get("action", ""))] += 1
        if len(self.tenants) < MAX_LOST_TENANTS:
            self.tenants.add(str(fields.get("tenant", "")))

    def event(self, component: str) -> AuditEvent:
        return AuditEvent(
            Action.RECORDS_LOST,
            Outcome.FAILURE,
            Actor(f"pmkeys:{component}", (), ActorSource.SYSTEM),
            reason=f"queue_full: {self.count} record(s) dropped while the store was unreachable",
            component=component,
            details={
                "count": self.count,
                "first_dropped_at": self.first,
                "last_dropped_at": self.last,
                "actions": dict(sorted(self.actions.items())),
                "tenants": sorted(t for t in self.tenants if t),
                "tenants_complete": len(self.tenants) < MAX_LOST_TENANTS,
            },
        )


class AuditUnavailable(RuntimeError):
    """The audit store did not take the record."""


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def migrate(dsn: str, *, retention_days: float | None = None) -> None:
    """Create (or bring up to date) the schema, functions and roles; optionally set the retention."""
    with connect(dsn) as conn:
        conn.execute(schema.MIGRATION)
        if retention_days is not None:
            set_retention(conn, dt.timedelta(days=retention_days))


def set_retention(conn: psycopg.Connection[Any], retention: dt.timedelta) -> None:
    conn.execute("UPDATE pmkeys_audit.settings SET retention = %s WHERE id", (retention,))


def _stored(row: tuple[Any, ...]) -> StoredRecord:
    seq, at, body, prev, digest = row
    return StoredRecord(seq=seq, at=at, body=body, prev_hash=bytes(prev), hash=bytes(digest))


class AuditLog:
    """A component's writer: thread-safe, reconnecting, streaming each record it wrote."""

    def __init__(
        self, dsn: str, *, component: str, stream: Stream | None = None, pending_limit: int = PENDING_LIMIT
    ) -> None:
        self.dsn = dsn
        self.component = component
        self.stream = stream or Stream(())
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._pending_limit = pending_limit
        #: Dropped from the full queue and not yet reported by a ``records_lost`` record.
        self._loss: Loss | None = None
        self.appended = 0
        #: Records dropped from the full queue since the start (reported or not).
        self.lost = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, event: AuditEvent, *, required: bool = False) -> StoredRecord | None:
        fields = event.fields()
        if not fields["component"]:
            fields["component"] = self.component
        with self._lock:
            try:
                return self._drain_and_append(fields)
            except psycopg.Error as exc:
                self._drop_connection()
                if required:
                    raise AuditUnavailable(f"audit store unavailable: {exc}") from exc
                self._queue(fields)
                logger.warning("audit store unavailable, %d record(s) queued: %s", len(self._pending), exc)
                return None

    def _queue(self, fields: dict[str, Any]) -> None:
        if len(self._pending) >= self._pending_limit:
            if self._loss is None:
                self._loss = Loss()
                logger.error(
                    "audit queue full (%d records): dropping the oldest until the store answers; "
                    "a records_lost record will say how many",
                    self._pending_limit,
                )
            self._loss.add(self._pending.popleft())
            self.lost += 1
        self._pending.append(fields)

    def flush_pending(self) -> int:
        """Retry queued records; returns how many are still queued."""
        with self._lock:
            try:
                self._drain()
            except psycopg.Error as exc:
                self._drop_connection()
                logger.warning("audit store still unavailable, %d record(s) queued: %s", len(self._pending), exc)
            return len(self._pending)

    def sweep(self, actor: Actor) -> tuple[int, int, int]:
        """Run the retention sweep (needs the sweeper role): (removed, through seq, sweep record seq)."""
        with self._lock:
            conn = self._connection()
            row = conn.execute(
                "SELECT o_removed, o_through, o_seq FROM pmkeys_audit.sweep(%s)", (Jsonb(actor.to_json()),)
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def head(self) -> checkpoint.Head:
        """The chain's head, base and retention as the store's row says (the sweeper role)."""
        with self._lock:
            try:
                return checkpoint.read_head(self._connection())
            except psycopg.OperationalError:
                self._drop_connection()
                raise

    def records_since(self, seq: int, *, limit: int) -> list[StoredRecord]:
        """Up to ``limit`` records from ``seq`` on, oldest first (the sweeper role)."""
        sql = "SELECT * FROM pmkeys_audit.records_since(%s, %s)"
        with self._lock:
            try:
                return [_stored(row) for row in self._connection().execute(sql, (seq, limit)).fetchall()]
            except psycopg.OperationalError:
                self._drop_connection()
                raise

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def _drain_and_append(self, fields: dict[str, Any]) -> StoredRecord:
        """One retry on a fresh connection: a server restart leaves the old one dead."""
        try:
            self._drain()
            return self._append(fields)
        except psycopg.OperationalError:
            self._drop_connection()
            self._drain()
            return self._append(fields)

    def _drain(self) -> None:
        if self._loss is not None:
            self._append(self._loss.event(self.component).fields())
            self._loss = None
        while self._pending:
            self._append(self._pending[0])
            self._pending.popleft()

    def _append(self, fields: dict[str, Any]) -> StoredRecord:
        row = self._connection().execute("SELECT * FROM pmkeys_audit.append(%s)", (Jsonb(fields),)).fetchone()
        assert row is not None
        stored = _stored(row)
        self.appended += 1
        self.stream.emit(stored.to_json())
        return stored

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


@dataclass(frozen=True)
class Query:
    """Filters of a trail query; ``tenant`` empty means every tenant (auditors only)."""

    tenant: str = ""
    namespace: str = ""
    #: Any of these namespaces (the UI: those the signed-in user may view).
    namespaces: tuple[str, ...] = ()
    name: str = ""
    key_id: str = ""
    actions: tuple[str, ...] = ()
    actor: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    before_seq: int | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        # PostgreSQL text holds no NUL, so no record could match; say so instead of failing late.
        for column in ("tenant", "namespace", "name", "key_id", "actor", "actions", "namespaces"):
            value = getattr(self, column)
            if any("\x00" in v for v in ((value,) if isinstance(value, str) else value)):
                raise ValueError(f"{column}: must not contain NUL characters")

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column in ("tenant", "namespace", "name", "key_id", "actor"):
            value = getattr(self, column)
            if value:
                clauses.append(f"{column} = %s")
                params.append(value)
        for column, values in (("action", self.actions), ("namespace", self.namespaces)):
            if values:
                clauses.append(f"{column} = ANY(%s)")
                params.append(list(values))
        for column, op, value in (("at", ">=", self.since), ("at", "<", self.until), ("seq", "<", self.before_seq)):
            if value is not None:
                clauses.append(f"{column} {op} %s")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class AuditReader:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def query(self, query: Query) -> list[StoredRecord]:
        where, params = query.where()
        sql = (
            "SELECT seq, at, body, prev_hash, hash FROM pmkeys_audit.records"
            f"{where} ORDER BY at DESC, seq DESC LIMIT %s"
        )
        with connect(self.dsn) as conn:
            return [_stored(row) for row in conn.execute(sql, [*params, query.limit]).fetchall()]

    def verify(self, checkpoints: tuple[checkpoint.Checkpoint, ...] = ()) -> list[chain.Finding]:
        """Check the whole chain, and that it agrees with each of ``checkpoints`` (heads seen
        earlier from outside the database), in one snapshot (REPEATABLE READ), so appends
        running meanwhile neither look like a truncation nor get half-read."""
        with psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                state = _state(conn)
                walked = _Watched({cp.seq for cp in checkpoints})
                found = chain.verify(state, walked.rows(_rows(conn)))
                now = dt.datetime.now(dt.UTC)
                for cp in checkpoints:
                    found += checkpoint.findings(cp, walked.head(state, cp.seq), now=now)
                return found

    def state(self) -> chain.ChainState:
        with connect(self.dsn) as conn:
            return _state(conn)


@dataclass
class _Watched:
    """What the chain walk saw of the checkpointed records: their hashes where their bodies still
    hash to them, recomputed here (never a hash the database hands over unchecked)."""

    wanted: set[int]
    hashes: dict[int, bytes] = field(default_factory=dict)
    newest: int = 0

    def rows(self, rows: Iterator[chain.Row]) -> Iterator[chain.Row]:
        for row in rows:
            rec = row.record
            self.newest = max(self.newest, rec.seq)
            if rec.seq in self.wanted and chain.link(rec.prev_hash, rec.body) == rec.hash:
                self.hashes[rec.seq] = rec.hash
            yield row

    def head(self, state: chain.ChainState, asked: int) -> checkpoint.Head:
        return checkpoint.Head(
            self.newest, state.head_hash, None, state.base_seq, state.base_hash, 0.0, self.hashes.get(asked)
        )


def _state(conn: psycopg.Connection[Any]) -> chain.ChainState:
    row = conn.execute("SELECT base_seq, base_hash, head_seq, head_hash FROM pmkeys_audit.chain").fetchone()
    assert row is not None
    return chain.ChainState(int(row[0]), bytes(row[1]), int(row[2]), bytes(row[3]))


def _rows(conn: psycopg.Connection[Any]) -> Iterator[chain.Row]:
    """Every record oldest first, through a server-side cursor (a year is millions of rows)."""
    sql = (
        "SELECT seq, at, body, prev_hash, hash, tenant, namespace, name, key_id, action, outcome, actor"
        " FROM pmkeys_audit.records ORDER BY seq"
    )
    with conn.cursor(name="verify") as cur:
        cur.itersize = 5000
        cur.execute(sql)
        for row in cur:
            columns = dict(zip(chain.INDEXED, row[5:], strict=True))
            yield chain.Row(_stored(row[:5]), columns)
