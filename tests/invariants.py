"""The promises that must hold after any crash or outage, checked from the outside.

For every TenantApiKey that should have a key: exactly one current key, it is the one in the
Secret, its record is active and bcrypt-verifies, and status names it. Everything else the
object ever had is retiring (listed in status, with a deadline) or revoked. Across Vault: no
usable record belongs to an object that does not claim it (no orphans), and no record is
usable past its deadline.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pmkeys.api import vocabulary as v
from pmkeys.vault.records import EntryState, KeyState
from tests.kube import Kube
from tests.vaultview import VaultView, bcrypt_matches


@dataclass
class Violations:
    items: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.items.append(message)

    def __bool__(self) -> bool:
        return bool(self.items)


def check_key(kube: Kube, vault: VaultView, ns: str, name: str, *, max_records: int | None = None) -> list[str]:
    """Invariants of one active TenantApiKey; returns the violations (empty when all hold)."""
    out = Violations()
    obj = kube.get_key(ns, name)
    uid = obj["metadata"]["uid"]
    status = obj.get("status") or {}
    out.check(status.get("phase") in ("Active", "Rotating"), f"{name}: phase {status.get('phase')}")
    secret_name = status.get("secretName") or name
    secret = kube.secret(ns, secret_name)
    if secret is None:
        out.check(False, f"{name}: no Secret")
        return out.items
    plaintext = kube.plaintext(ns, secret_name)
    record = vault.record_for(plaintext)
    if record is None:
        out.check(False, f"{name}: the Secret's key has no Vault record")
        return out.items
    out.check(record.state is KeyState.ACTIVE, f"{name}: current record is {record.state}")
    out.check(record.uid == uid, f"{name}: current record belongs to another object")
    out.check(bcrypt_matches(plaintext, record), f"{name}: the Secret's key does not match its bcrypt hash")
    out.check(status.get("keyId") == record.key_id, f"{name}: status.keyId is not the Secret's key")
    out.check(
        (secret.metadata.annotations or {}).get(v.KEY_ID_ANNOTATION) == record.key_id,
        f"{name}: Secret annotation names another key",
    )

    index = vault.owner(uid)
    out.check(index is not None, f"{name}: no owner index")
    if index is None:
        return out.items
    entries = index.keys
    active = [k for k, e in entries.items() if e.state is EntryState.ACTIVE]
    out.check(active == [record.key_id], f"{name}: active entries {active}, expected only the current key")
    pending = [k for k, e in entries.items() if e.state is EntryState.PENDING]
    out.check(not pending, f"{name}: pending entries left: {pending}")
    previous = {p["keyId"]: p["notAfter"] for p in status.get("previousKeys") or []}
    records = vault.records_of(uid)
    for key_id, rec in records.items():
        if key_id == record.key_id:
            continue
        if rec.state is KeyState.RETIRING:
            out.check(key_id in previous, f"{name}: retiring key {key_id} missing from status.previousKeys")
            out.check(rec.not_after is not None, f"{name}: retiring key {key_id} has no deadline")
        else:
            out.check(rec.state is KeyState.REVOKED, f"{name}: stray {rec.state} key {key_id}")
    if max_records is not None:
        out.check(len(records) <= max_records, f"{name}: {len(records)} keys issued, expected at most {max_records}")
    return out.items


def check_vault(kube: Kube, vault: VaultView) -> list[str]:
    """No usable record without an object that claims it; nothing usable past its deadline."""
    out = Violations()
    now = dt.datetime.now(dt.UTC)
    claimed: dict[str, set[str]] = {}
    for obj in kube.custom.list_cluster_custom_object(v.GROUP, v.VERSION, v.PLURAL)["items"]:
        status = obj.get("status") or {}
        ids = {p["keyId"] for p in status.get("previousKeys") or []}
        if status.get("keyId"):
            ids.add(status["keyId"])
        claimed[obj["metadata"]["uid"]] = ids
    for rec in vault.all_records():
        if rec.state is KeyState.REVOKED:
            continue
        owner_ids = claimed.get(rec.uid)
        out.check(owner_ids is not None, f"orphan {rec.state} record {rec.key_id} of deleted object {rec.name}")
        if owner_ids is not None:
            out.check(
                rec.key_id in owner_ids or not rec.usable_at(now),
                f"record {rec.key_id} of {rec.namespace}/{rec.name} is usable but unclaimed",
            )
        if rec.not_after is not None and rec.not_after < now - dt.timedelta(seconds=5):
            out.check(
                rec.state is not KeyState.ACTIVE or not rec.usable_at(now),
                f"record {rec.key_id} usable past its deadline",
            )
    return out.items
