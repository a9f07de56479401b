"""The audit trail: who did what to which key, when, from where, and with what outcome.

Every component appends records (the operator for lifecycle changes, the UI for sign-ins and
reveals, the verifier for failed verifications aggregated per key per minute) to one
PostgreSQL store whose rows are hash-chained, so a changed, removed or reordered record is
found by ``pmkeys audit verify``. The design and its reasons are in ``docs/audit.md``.

Layers: :mod:`records` (the record, pure), :mod:`chain` (hashing and verification, pure),
:mod:`schema` (the SQL: tables, append-only functions, roles), :mod:`store` (PostgreSQL I/O),
:mod:`streaming` (copies to stdout / a file / a webhook), :mod:`actors` (who changed an
object, from the admission stamp), :mod:`failures` (the verifier's per-minute aggregation),
:mod:`admission` (the MutatingAdmissionPolicy that stamps the actor), :mod:`export` (CSV and
JSON for people).
"""
