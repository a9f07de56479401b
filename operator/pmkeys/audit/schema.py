"""The audit store's SQL: tables, indexes, the append-only functions and the roles.

Least privilege is enforced by PostgreSQL itself, not by the writers' good manners:

- ``pmkeys_audit_writer`` may only ``EXECUTE pmkeys_audit.append(jsonb)``. It has no
  ``INSERT``, ``UPDATE``, ``DELETE`` or even ``SELECT`` on the tables: the function (``SECURITY
  DEFINER``, owned by the migrating role) assigns ``seq`` and ``at`` itself and links the hash.
- ``pmkeys_audit_sweeper`` may only ``EXECUTE pmkeys_audit.sweep(jsonb)``, which removes records
  older than the retention *stored in the database* (``pmkeys_audit.settings``): the caller
  cannot pass a shorter one, and every sweep appends a record of itself.
- ``pmkeys_audit_reader`` may ``SELECT`` (the UI, ``kubectl pmkeys audit``, ``verify``).
- ``pmkeys_audit.head(seq)`` (sweeper and reader) tells the chain's head, base and retention,
  and ``pmkeys_audit.records_since(seq, n)`` (sweeper) the records from ``seq`` on: what the
  operator needs to keep the checkpoint of the head outside the database
  (:mod:`pmkeys.audit.checkpoint`). Neither is trusted for the hashes: the keeper recomputes
  every link from the checkpointed record on, so a replaced function can only show an
  extension of the checkpointed history.

One row (``pmkeys_audit.chain``) holds the head and the base of the chain; ``append`` locks it
``FOR UPDATE``, so writers on any number of replicas append one at a time, each in one round
trip. Credential operations are rare next to that ceiling (thousands per second).

Indexes serve the questions people ask: a tenant's trail newest first, one key's trail, one
actor's or one action's records, and the sweep's scan by time.
"""

from __future__ import annotations

WRITER_ROLE = "pmkeys_audit_writer"
READER_ROLE = "pmkeys_audit_reader"
SWEEPER_ROLE = "pmkeys_audit_sweeper"
ROLES = (WRITER_ROLE, READER_ROLE, SWEEPER_ROLE)

_ROLES_SQL = "\n".join(
    f"""DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} NOLOGIN; END IF;
END $$;"""
    for role in ROLES
)

MIGRATION = (
    _ROLES_SQL
    + r"""
CREATE SCHEMA IF NOT EXISTS pmkeys_audit;
REVOKE ALL ON SCHEMA pmkeys_audit FROM PUBLIC;

CREATE TABLE IF NOT EXISTS pmkeys_audit.settings (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  retention interval NOT NULL CHECK (retention > interval '0')
);
INSERT INTO pmkeys_audit.settings (retention) VALUES (interval '400 days') ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS pmkeys_audit.chain (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  base_seq bigint NOT NULL,
  base_hash bytea NOT NULL,
  head_seq bigint NOT NULL,
  head_hash bytea NOT NULL
);
INSERT INTO pmkeys_audit.chain (base_seq, base_hash, head_seq, head_hash)
  VALUES (1, decode(repeat('00', 32), 'hex'), 0, decode(repeat('00', 32), 'hex'))
  ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS pmkeys_audit.records (
  seq bigint PRIMARY KEY,
  at timestamptz NOT NULL,
  tenant text NOT NULL,
  namespace text NOT NULL,
  name text NOT NULL,
  key_id text NOT NULL,
  action text NOT NULL,
  outcome text NOT NULL,
  actor text NOT NULL,
  body text NOT NULL,
  prev_hash bytea NOT NULL,
  hash bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS records_tenant_at ON pmkeys_audit.records (tenant, at DESC, seq DESC);
CREATE INDEX IF NOT EXISTS records_tenant_key ON pmkeys_audit.records (tenant, key_id, at DESC);
CREATE INDEX IF NOT EXISTS records_tenant_action ON pmkeys_audit.records (tenant, action, at DESC);
CREATE INDEX IF NOT EXISTS records_tenant_actor ON pmkeys_audit.records (tenant, actor, at DESC);
CREATE INDEX IF NOT EXISTS records_at ON pmkeys_audit.records (at);

CREATE OR REPLACE FUNCTION pmkeys_audit.append(fields jsonb)
RETURNS TABLE (o_seq bigint, o_at timestamptz, o_body text, o_prev bytea, o_hash bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  c pmkeys_audit.chain%ROWTYPE;
  s bigint;
  t timestamptz := clock_timestamp();
  b text;
  h bytea;
BEGIN
  IF jsonb_typeof(fields) IS DISTINCT FROM 'object'
     OR jsonb_typeof(fields->'action') IS DISTINCT FROM 'string'
     OR jsonb_typeof(fields->'outcome') IS DISTINCT FROM 'string' THEN
    RAISE EXCEPTION 'an audit record is a JSON object with string fields action and outcome';
  END IF;
  SELECT * INTO c FROM pmkeys_audit.chain WHERE id FOR UPDATE;
  s := c.head_seq + 1;
  b := ((fields - 'seq' - 'at') || jsonb_build_object(
          'seq', s, 'at', to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')))::text;
  h := sha256(c.head_hash || convert_to(b, 'UTF8'));
  INSERT INTO pmkeys_audit.records
    VALUES (s, t, coalesce(fields->>'tenant', ''), coalesce(fields->>'namespace', ''),
            coalesce(fields->'object'->>'name', ''), coalesce(fields->>'key_id', ''),
            fields->>'action', fields->>'outcome', coalesce(fields->'actor'->>'username', ''),
            b, c.head_hash, h);
  UPDATE pmkeys_audit.chain SET head_seq = s, head_hash = h WHERE id;
  RETURN QUERY SELECT s, t, b, c.head_hash, h;
END
$fn$;

CREATE OR REPLACE FUNCTION pmkeys_audit.sweep(actor jsonb)
RETURNS TABLE (o_removed bigint, o_through bigint, o_seq bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  c pmkeys_audit.chain%ROWTYPE;
  keep interval;
  cutoff timestamptz;
  through bigint;
  through_hash bytea;
  removed bigint := 0;
  appended bigint;
BEGIN
  SELECT retention INTO keep FROM pmkeys_audit.settings WHERE id;
  cutoff := clock_timestamp() - keep;
  SELECT * INTO c FROM pmkeys_audit.chain WHERE id FOR UPDATE;
  -- Only a prefix of the chain goes: everything before the oldest record inside the retention.
  SELECT coalesce(min(r.seq), c.head_seq + 1) - 1 INTO through FROM pmkeys_audit.records r WHERE r.at >= cutoff;
  IF through >= c.base_seq THEN
    SELECT r.hash INTO through_hash FROM pmkeys_audit.records r WHERE r.seq = through;
    IF through_hash IS NULL THEN
      RAISE EXCEPTION 'audit record % is missing; run pmkeys audit verify before sweeping', through;
    END IF;
    DELETE FROM pmkeys_audit.records r WHERE r.seq <= through;
    GET DIAGNOSTICS removed = ROW_COUNT;
    UPDATE pmkeys_audit.chain SET base_seq = through + 1, base_hash = through_hash WHERE id;
  ELSE
    through := c.base_seq - 1;
  END IF;
  SELECT a.o_seq INTO appended FROM pmkeys_audit.append(jsonb_build_object(
    'action', 'retention_sweep', 'outcome', 'success', 'actor', actor, 'component', 'operator',
    'reason', 'records older than the retention period removed',
    'details', jsonb_build_object('removed', removed, 'removed_through_seq', through,
                                  'retention', keep::text, 'cutoff', cutoff))) a;
  RETURN QUERY SELECT removed, through, appended;
END
$fn$;

-- What a checkpoint outside the database needs: the head (with its record's time), the base,
-- the retention, and the stored hash of one earlier record (NULL when it is not there).
CREATE OR REPLACE FUNCTION pmkeys_audit.head(since bigint)
RETURNS TABLE (o_head_seq bigint, o_head_hash bytea, o_head_at timestamptz, o_base_seq bigint,
               o_base_hash bytea, o_retention_seconds double precision, o_since_hash bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
  SELECT c.head_seq, c.head_hash, (SELECT r.at FROM pmkeys_audit.records r WHERE r.seq = c.head_seq),
         c.base_seq, c.base_hash, (SELECT extract(epoch FROM s.retention) FROM pmkeys_audit.settings s WHERE s.id),
         (SELECT r.hash FROM pmkeys_audit.records r WHERE r.seq = since)
  FROM pmkeys_audit.chain c WHERE c.id
$fn$;

-- The records from one seq on, oldest first, for the checkpoint's keeper to follow the links itself.
CREATE OR REPLACE FUNCTION pmkeys_audit.records_since(from_seq bigint, max_rows integer)
RETURNS TABLE (o_seq bigint, o_at timestamptz, o_body text, o_prev bytea, o_hash bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
  SELECT r.seq, r.at, r.body, r.prev_hash, r.hash FROM pmkeys_audit.records r
  WHERE r.seq >= from_seq ORDER BY r.seq LIMIT max_rows
$fn$;

REVOKE ALL ON ALL TABLES IN SCHEMA pmkeys_audit FROM PUBLIC;
REVOKE ALL ON FUNCTION pmkeys_audit.head(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION pmkeys_audit.records_since(bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION pmkeys_audit.append(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION pmkeys_audit.sweep(jsonb) FROM PUBLIC;
GRANT USAGE ON SCHEMA pmkeys_audit TO pmkeys_audit_writer, pmkeys_audit_reader, pmkeys_audit_sweeper;
GRANT EXECUTE ON FUNCTION pmkeys_audit.append(jsonb) TO pmkeys_audit_writer;
GRANT EXECUTE ON FUNCTION pmkeys_audit.sweep(jsonb) TO pmkeys_audit_sweeper;
GRANT EXECUTE ON FUNCTION pmkeys_audit.head(bigint) TO pmkeys_audit_sweeper, pmkeys_audit_reader;
GRANT EXECUTE ON FUNCTION pmkeys_audit.records_since(bigint, integer) TO pmkeys_audit_sweeper;
GRANT SELECT ON pmkeys_audit.records, pmkeys_audit.chain, pmkeys_audit.settings TO pmkeys_audit_reader;
"""
)
