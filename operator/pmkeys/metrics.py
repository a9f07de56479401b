"""Prometheus metrics of the operator. Names, labels and bounded cardinality are documented in
``docs/metrics.md``; labels are tenant-level at most (never a key id on unbounded series).

The verifier's metrics live in :mod:`pmkeys.verify.metrics`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILE_SECONDS = Histogram(
    "pmkeys_operator_reconcile_duration_seconds",
    "Time to reconcile one TenantApiKey.",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter(
    "pmkeys_operator_reconcile_errors_total", "Reconciles that failed and were rescheduled.", ["reason"]
)
KEYS_BY_PHASE = Gauge("pmkeys_operator_keys", "TenantApiKeys by phase, as last reconciled.", ["phase"])
KEYS_ISSUED = Counter("pmkeys_operator_keys_issued_total", "Keys issued.", ["intent"])
KEYS_REVOKED = Counter("pmkeys_operator_keys_revoked_total", "Key records revoked.")
VAULT_SECONDS = Histogram(
    "pmkeys_operator_vault_request_duration_seconds",
    "Latency of the operator's Vault requests.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
VAULT_ERRORS = Counter("pmkeys_operator_vault_errors_total", "Operator Vault requests that failed.", ["reason"])
BCRYPT_PENDING = Gauge("pmkeys_operator_bcrypt_pending", "bcrypt jobs queued or running in the operator.")
ACTIVE_WRITER = Gauge(
    "pmkeys_operator_active_writer", "1 while this operator may write (kopf peering, fenced by leadership)."
)
AUDIT_CHECKPOINT_MISMATCH = Gauge(
    "pmkeys_operator_audit_checkpoint_mismatch",
    "1 while the audit trail disagrees with its checkpoint in Vault (truncated or rewritten).",
)
BCRYPT_CALLS = Gauge("pmkeys_operator_bcrypt_operations", "bcrypt hashes computed since the operator started.")


def observe_vault(seconds: float, error: str | None) -> None:
    VAULT_SECONDS.observe(seconds)
    if error:
        VAULT_ERRORS.labels(error).inc()


def phase_changed(old: str | None, new: str | None) -> None:
    if old:
        KEYS_BY_PHASE.labels(old).dec()
    if new:
        KEYS_BY_PHASE.labels(new).inc()


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr)
