"""Settings of every component, from environment variables or a YAML file.

Environment variables use the ``PMKEYS_`` prefix and ``__`` for nesting
(``PMKEYS_VAULT__ADDR``, ``PMKEYS_VAULT__AUTH=kubernetes``). ``PMKEYS_CONFIG=/path.yaml``
loads a file first; variables override it. The Helm chart sets the variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from pmkeys.keys.hashing import PRODUCTION_COST

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class VaultSettings(BaseModel):
    addr: str = "http://127.0.0.1:8200"
    auth: Literal["token", "kubernetes"] = "token"
    token: SecretStr | None = None
    #: Kubernetes auth: the Vault role, the auth mount and the ServiceAccount token file.
    role: str = "pmkeys-operator"
    auth_mount: str = "kubernetes"
    token_path: Path = SERVICE_ACCOUNT_TOKEN
    ca_cert: Path | None = None
    kv_mount: str = "secret"
    prefix: str = Field(default="pmkeys", pattern=r"^[a-z0-9][a-z0-9_/-]*[a-z0-9]$")
    timeout: float = 5.0
    #: Honour HTTP(S)_PROXY / NO_PROXY and ~/.netrc for Vault calls (off: none are read).
    trust_env: bool = False


class AuditSettings(BaseModel):
    """Where audit records go (see docs/audit.md); an empty DSN turns the trail off."""

    #: PostgreSQL connection string of this component's login (writer; the UI also reads).
    dsn: SecretStr | None = None
    #: Copies of each record, one JSON line: "stdout", "file:/path", "https://siem/..."
    stream: list[str] = Field(default_factory=list)
    #: The verifier writes failed verifications aggregated over this period.
    failures_flush_seconds: float = Field(default=60.0, gt=0)
    #: The operator copies the chain's head to Vault (``<vault prefix>/<checkpoint_path>``) this often.
    checkpoint_seconds: float = Field(default=60.0, gt=0)
    checkpoint_path: str = Field(default="audit/checkpoint", pattern=r"^[a-z0-9][a-z0-9_/-]*[a-z0-9]$")


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PMKEYS_", env_nested_delimiter="__", extra="ignore")

    vault: VaultSettings = Field(default_factory=VaultSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    #: Kubeconfig file; empty means in-cluster config, then ~/.kube/config.
    kubeconfig: str = ""
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("PMKEYS_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


class AuditorSettings(_Settings):
    """``pmkeys audit``: the store (``audit.dsn``) and, for the checkpoint, Vault."""


class OperatorSettings(_Settings):
    bcrypt_cost: int = Field(default=PRODUCTION_COST, ge=4, le=31)
    #: bcrypt threads; 0 = one per CPU core.
    bcrypt_workers: int = Field(default=0, ge=0)
    #: Namespaces to watch; empty = all namespaces.
    namespaces: list[str] = Field(default_factory=list)
    #: kopf peering: empty = standalone (one replica).
    peering: str = ""
    priority: int = 0
    #: Seconds a peer counts as alive after its keep-alive; bounds the takeover time
    #: (pmkeys.reconcile.leadership). kopf's default is 60.
    peering_lifetime: int = Field(default=15, ge=10, le=600)
    #: Longest random delay added to scheduled rotations, as a fraction of the interval.
    rotation_jitter: float = Field(default=0.05, ge=0, le=0.5)
    metrics_port: int = 0
    #: kopf's liveness endpoint (/healthz), which answers only while the event loop runs.
    health_port: int = 0
    #: Revoked records older than this are deleted from Vault (0 = keep forever).
    retention_days: float = Field(default=400, ge=0)
    #: How often the housekeeping sweep (retention, orphans) runs.
    retention_sweep_seconds: float = Field(default=6 * 3600, gt=0)
    #: Usable records of vanished objects are revoked once older than this.
    orphan_min_age_seconds: float = Field(default=600, ge=0)
    #: Test-only: kill the process with SIGKILL when reaching this crash point.
    crash_at: str = ""
    #: Test-only: wait at named points, as "point=seconds[,point=seconds]" (races made visible).
    pause_at: str = ""
    #: Test-only: append one line per write (wall-clock ns, peering identity, term, what) to this file.
    write_journal: str = ""


class VerifierSettings(_Settings):
    bind: str = "127.0.0.1"
    port: int = 8080
    cache_ttl: float = Field(default=30.0, gt=0)
    negative_ttl: float = Field(default=5.0, ge=0)
    #: While Vault cannot be read, keys verified at most this long ago keep answering (if the
    #: watch is live); 0 turns it off. Why 15 minutes is safe: pmkeys.verify.staleness.
    stale_for_seconds: float = Field(default=900.0, ge=0)
    bcrypt_workers: int = Field(default=0, ge=0)
    bcrypt_max_queue: int = Field(default=64, ge=1)
    redis_url: str = ""
    #: When Redis is unreachable: "open" limits each replica locally, "closed" refuses (503).
    redis_failure_policy: Literal["open", "closed"] = "open"
    #: Prefix of every Redis key the verifier writes (rate-limit state, pending usage).
    redis_prefix: str = Field(default="pmkeys", min_length=1)
    #: Seconds before a Redis call counts as failed (then the failure policy applies).
    redis_timeout: float = Field(default=0.25, gt=0)
    #: ``redis_url`` names one node of a Redis Cluster (the others are discovered).
    redis_cluster: bool = False
    usage_flush_seconds: float = Field(default=10.0, gt=0)
    #: Namespace of the usage ledger ConfigMaps ("" = the verifier's own, else pmkeys-system).
    usage_namespace: str = ""
    #: Number of usage ledgers: at most this many ledger writes per flush interval.
    usage_shards: int = Field(default=16, ge=1, le=256)
    #: Budget of ``status.usage`` copies written per second (all replicas with Redis together).
    usage_status_writes_per_second: float = Field(default=10.0, gt=0)
    #: Budget of TenantPlan ``status.tenantUse`` writes per second (the current use of the
    #: tenant-wide limit; all replicas with Redis together).
    tenant_use_writes_per_second: float = Field(default=5.0, gt=0)
    #: Failed verifications allowed per client per minute before it gets 429.
    failed_attempts_per_minute: int = Field(default=30, ge=1)
    watch: bool = True
    #: Namespaces whose TenantApiKeys are watched for revocation (empty = all).
    namespaces: list[str] = Field(default_factory=list)
    #: Route → scope mapping for the gateway endpoint, as "METHOD /prefix=scope" entries.
    routes: list[str] = Field(default_factory=list)
    #: Which gateway calls the gateway endpoint; it decides which headers and parts of the
    #: request are trusted (docs/verifier.md, "Gateways"): nginx, envoy, traefik, or direct
    #: (the caller's own request line, nothing else).
    gateway: Literal["nginx", "envoy", "traefik", "direct"] = "direct"
    #: Header naming the scope of a route the map does not cover; honoured only in envoy mode,
    #: where the gateway's headers_to_add overrides whatever the client sent ("" = off).
    scope_header: str = "X-Required-Scope"
    #: Gateway requests whose scope is neither mapped nor in the header: "deny" (403) or
    #: "authenticate" (any valid key passes).
    unmapped_routes: Literal["deny", "authenticate"] = "deny"
    #: Header naming the client for the failed-attempt limit (right-most entry), else the peer.
    client_header: str = "X-Forwarded-For"
    #: Callers of the HTTP service authenticate with a token ("token"); "off" is for local use
    #: only (every endpoint but /healthz, /readyz and /metrics then answers anyone).
    caller_auth: Literal["token", "off"] = "token"
    #: Caller name -> token; the chart mounts them from a Secret as files (caller_tokens_dir,
    #: one file per caller, named after it), tests and local set-ups may pass JSON here.
    caller_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    caller_tokens_dir: str = ""
    #: Unknown keys (each costs a Vault read) one caller may present per minute, whatever
    #: clients it names, before it gets 429 for keys this verifier has not cached.
    caller_unknown_keys_per_minute: int = Field(default=600, ge=1)
    #: Largest request body (bytes) and header block the HTTP service accepts (413 / 431 beyond).
    max_body_bytes: int = Field(default=4096, ge=256)
    max_header_bytes: int = Field(default=16384, ge=1024)
    #: On SIGTERM: seconds out of readiness but still serving before shutting down, so
    #: endpoints and gateways catch up (pmkeys.verify.draining); 0 = stop at once. The chart sets 5.
    drain_seconds: float = Field(default=0.0, ge=0, le=300)
    #: At start, with Redis: readiness waits at most this long for the records of proven keys to
    #: be read into the cache (pmkeys.verify.preloading); 0 = no preload.
    preload_seconds: float = Field(default=60.0, ge=0)
    #: Vault reads the preload keeps in flight (the Vault session has 8 threads).
    preload_concurrency: int = Field(default=8, ge=1, le=64)
    #: With Redis: leave the records of proven keys sealed in Redis after each Vault read (for as
    #: long as this replica would answer from them), and open them at start instead of reading
    #: Vault (pmkeys.verify.handover).
    handover: bool = True
    #: While the watch is live, entries past their TTL answer and are re-read in the background,
    #: at most this many per second per replica (pmkeys.verify.refreshing); 0 = on the request path.
    refresh_per_second: float = Field(default=50.0, ge=0)

    @property
    def trusted_seconds(self) -> float:
        """How long after its Vault read a cached entry may answer while Vault and the watch work:
        one TTL, or ``stale_for_seconds`` when entries are re-read behind the request path."""
        return max(self.cache_ttl, self.stale_for_seconds) if self.refresh_per_second > 0 else self.cache_ttl


class UiSettings(_Settings):
    bind: str = "127.0.0.1"
    port: int = 8090
    #: Set the Secure flag on cookies (on behind TLS; off for plain-HTTP local use).
    secure_cookies: bool = False
    #: Serve HTTPS with this certificate and key (PEM files); empty: plain HTTP (behind a
    #: TLS-terminating proxy set secure_cookies instead).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: Verifier used for "try it" checks (optional).
    verifier_url: str = ""
    #: Sessions end after this long without a request, and after the lifetime in any case.
    session_idle_seconds: float = Field(default=1800, gt=0)
    session_lifetime_seconds: float = Field(default=8 * 3600, gt=0)
    #: Redis for sessions (shared by replicas, kept across rollouts; see pmkeys.ui.redis_sessions);
    #: empty = in the process (one replica, a restart signs everyone out).
    session_redis_url: str = ""
    session_redis_prefix: str = Field(default="pmkeys", min_length=1)
    #: How long TokenReview / SubjectAccessReview answers are reused (and a session's token is re-checked).
    authz_cache_seconds: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _tls_pair(self) -> UiSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file (PMKEYS_TLS_CERT_FILE, PMKEYS_TLS_KEY_FILE) go together")
        return self

    @property
    def served_over_tls(self) -> bool:
        """HTTPS reaches the browser: served here, or by a proxy in front (secure_cookies)."""
        return bool(self.tls_cert_file) or self.secure_cookies
