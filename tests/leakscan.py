"""The leak scanner: no plaintext key may appear anywhere but its Secret.

At the end of a run it collects every text the run produced — component logs, every Event,
every TenantApiKey's status and annotations, the annotations of every Secret (never their
data), everything under the Vault prefix, the components' metrics and the test reports — and
searches them for every key issued during the run, in plain and base64 form. The audit store's
records and its server's log are scanned too, and the audit stream (a file the components append
to in the environment's directory) with the other files. Findings name the
source and the key's display prefix, never the key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.keys.material import display_prefix

#: Texts of test reports (failures, captured output), filled by the root conftest.
REPORT_TEXTS: list[str] = []
#: Metrics endpoints of components started during the run.
METRICS_URLS: list[str] = []


def scan_environment(
    api: client.ApiClient,
    workdir: Path,
    vault_dump: str,
    issued: set[str],
    *,
    extra: list[tuple[str, str]] | None = None,
) -> list[Finding]:
    """Everything one environment produced, against every key it issued."""
    keys = issued | managed_secret_keys(api)
    sources = cluster_texts(api) + file_texts(workdir) + url_texts(METRICS_URLS) + (extra or [])
    sources.append(("Vault", vault_dump))
    sources += [("pytest report", text) for text in REPORT_TEXTS]
    return scan(sources, keys)


@dataclass(frozen=True)
class Finding:
    source: str
    key_prefix: str
    form: str

    def __str__(self) -> str:
        return f"{self.key_prefix} found ({self.form}) in {self.source}"


def _forms(key: str) -> dict[str, str]:
    return {
        "plaintext": key,
        "random part": key[8:],
        "base64": base64.b64encode(key.encode()).decode().rstrip("="),
    }


def scan(sources: Iterable[tuple[str, str]], keys: Iterable[str]) -> list[Finding]:
    patterns = [(key, form, text) for key in set(keys) for form, text in _forms(key).items()]
    findings: dict[tuple[str, str], Finding] = {}
    for source, text in sources:
        for key, form, needle in patterns:
            if needle in text and (source, key) not in findings:
                findings[source, key] = Finding(source, display_prefix(key), form)
    return list(findings.values())


def managed_secret_keys(api: client.ApiClient) -> set[str]:
    """Plaintexts of every Secret the operator manages right now."""
    secrets = (
        client.CoreV1Api(api)
        .list_secret_for_all_namespaces(label_selector=f"{v.MANAGED_BY_LABEL}={v.MANAGED_BY_VALUE}")
        .items
    )
    return {base64.b64decode(s.data[v.SECRET_DATA_KEY]).decode() for s in secrets if s.data}


def cluster_texts(api: client.ApiClient) -> list[tuple[str, str]]:
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    out = []
    for event in core.list_event_for_all_namespaces().items:
        out.append(
            (
                f"Event {event.metadata.namespace}/{event.metadata.name}",
                f"{event.reason} {event.message} {event.metadata.annotations}",
            )
        )
    for obj in custom.list_cluster_custom_object(v.GROUP, v.VERSION, v.PLURAL)["items"]:
        meta = obj["metadata"]
        text = json.dumps(
            {"status": obj.get("status"), "annotations": meta.get("annotations"), "spec": obj.get("spec")}
        )
        out.append((f"TenantApiKey {meta['namespace']}/{meta['name']}", text))
    for secret in core.list_secret_for_all_namespaces().items:
        meta = secret.metadata
        out.append((f"Secret metadata {meta.namespace}/{meta.name}", json.dumps([meta.annotations, meta.labels])))
    for ns in core.list_namespace().items:
        out.append((f"Namespace {ns.metadata.name}", json.dumps([ns.metadata.annotations, ns.metadata.labels])))
    return out


def file_texts(root: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in {".log", ".txt", ".json", ".out"}:
            out.append((f"file {path.name}", path.read_text(errors="replace")))
    return out


def url_texts(urls: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for url in urls:
        try:
            out.append((f"metrics {url}", httpx.get(url, timeout=5).text))
        except httpx.HTTPError:
            continue
    return out


def audit_texts(dsn: str, log_dir: Path) -> list[tuple[str, str]]:
    """Every audit record (body, columns and hashes) and the audit database server's log."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT seq, body, tenant, namespace, name, key_id, actor FROM pmkeys_audit.records")
        out = [(f"audit record {row[0]}", json.dumps(row[1:])) for row in rows]
        chain = conn.execute("SELECT * FROM pmkeys_audit.chain").fetchall()
    out.append(("audit chain", repr(chain)))
    return out + [(f"audit store {k}", text) for k, text in file_texts(log_dir)]
