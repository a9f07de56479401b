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
    "pmkeys_vault_request_duration_seconds",
    "Latency of Vault requests.",
    ["component"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
VAULT_ERRORS = Counter("pmkeys_vault_errors_total", "Vault requests that failed.", ["component", "reason"])
BCRYPT_QUEUE = Gauge("pmkeys_bcrypt_pool_pending", "bcrypt jobs queued or running.", ["component"])
BCRYPT_CALLS = Counter("pmkeys_bcrypt_operations_total", "bcrypt hashes and checks computed.", ["component"])


def serve(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from inside the cluster
    start_http_server(port, addr=addr)
