"""Reconcile one ``TenantApiKey``: make the world match its spec, from whatever state it is in.

Level-triggered: every run reads the Secret, the owner index and the current key's record,
works out what is missing, does it, and reports the result in status and Events. The same
code path serves creation, updates, operator restarts, timers and repairs, which is what makes
a crash at any line recoverable.

Issuance order (each step persisted before the next; ``crashpoints`` marks them):

1. generate the key, digest it, bcrypt it (in memory only);
2. add a *pending* entry to the owner index (the intent: "this digest may become ours");
3. write the Secret — from here on the Secret is the truth;
4. create the Vault record;
5. settle: the superseded key retires (grace) or is revoked, the entry becomes active;
6. status, Events.

On resume the Secret's key is matched against the index: an entry without its record gets
one (hashing the Secret's plaintext — the only case that re-hashes), pending entries that
never reached the Secret are dropped, and anything active that is not the current key is
revoked. Keys that are already consistent cost two reads and no bcrypt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys import metrics
from pmkeys.api.durations import parse_duration
from pmkeys.api.vocabulary import ConditionType, Phase, Reason
from pmkeys.keys import material
from pmkeys.keys.digest import digest
from pmkeys.keys.hashing import Hasher
from pmkeys.reconcile import crashpoints, secrets, status
from pmkeys.reconcile.kube import KubeApi, secret_plaintext
from pmkeys.reconcile.ledger import Ledger
from pmkeys.reconcile.objects import KeyObject
from pmkeys.reconcile.scheduling import rotation_jitter
from pmkeys.reconcile.status import CondSpec, StatusFacts, iso
from pmkeys.vault.errors import VaultError
from pmkeys.vault.records import EntryState, KeyRecord, KeyState, OwnerEntry
from pmkeys.vault.store import KeyStore

logger = logging.getLogger(__name__)

#: How soon to look again at an object we refused (tenant mismatch, foreign Secret).
REFUSAL_RECHECK = dt.timedelta(seconds=60)
#: Backoff after Vault or API failures: base * 2^attempt, capped, with ±50% jitter.
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Current:
    """The key in the Secret, with its index entry and record."""

    key_id: str
    entry: OwnerEntry
    record: KeyRecord
    version: int


class Refused(Exception):
    """The object cannot be served as it is; status says why. Not a transient failure."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Reconciler:
    def __init__(
        self,
        *,
        kube: KubeApi,
        store: KeyStore,
        hasher: Hasher,
        jitter_fraction: float = 0.05,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.kube = kube
        self.store = store
        self.hasher = hasher
        self.jitter_fraction = jitter_fraction
        self.clock = clock
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._failures: dict[str, int] = {}
        #: resourceVersions of Secrets this operator wrote, to ignore their watch echoes.
        self.written_secrets: dict[str, str] = {}
        #: Last reported phase per object (for the keys-by-phase gauge) and the last outcome.
        self._phases: dict[str, str] = {}
        #: Objects refused (uid → namespace, name), retried early when their namespace changes.
        self.refused: dict[str, tuple[str, str]] = {}
        self.last_outcome = "ok"

    def _lock(self, uid: str) -> asyncio.Lock:
        lock = self._locks.get(uid)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[uid] = lock
        return lock

    # -- entry points --------------------------------------------------------------------
    async def reconcile(self, body: object) -> dt.datetime | None:
        """Converge one object; return when it next needs attention (None: only on change)."""
        obj = KeyObject.from_body(body)
        async with self._lock(obj.uid):
            try:
                wake = await self._converge(obj)
            except Refused as refusal:
                self.last_outcome = "refused"
                self.refused[obj.uid] = (obj.namespace, obj.name)
                await self._report_refusal(obj, refusal)
                return self.clock() + REFUSAL_RECHECK
            except Exception as exc:
                self.last_outcome = "retry"
                metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
                if not isinstance(exc, VaultError | ApiException | OSError):
                    logger.exception("%s: reconcile failed unexpectedly", obj.ref)
                return await self._report_failure(obj, exc)
            self.last_outcome = "ok"
            self.refused.pop(obj.uid, None)
            self._failures.pop(obj.uid, None)
            return wake

    async def finalize(self, body: object) -> None:
        """The object is being deleted: revoke every key it had (records stay as the trail)."""
        obj = KeyObject.from_body(body)
        async with self._lock(obj.uid):
            ledger = await Ledger.load(self.store, obj)
            await self._revoke_all(obj, ledger, reason="TenantApiKey deleted")
            secret = await self.kube.read_secret(obj.namespace, obj.secret_name)
            if secret is not None and secrets.owned_by(secret, obj.uid):
                await self.kube.delete_secret(obj.namespace, obj.secret_name, uid=secret.metadata.uid)
            self._failures.pop(obj.uid, None)
            self.written_secrets.pop(obj.uid, None)
            metrics.phase_changed(self._phases.pop(obj.uid, None), None)

    # -- the reconcile -------------------------------------------------------------------
    async def _converge(self, obj: KeyObject) -> dt.datetime | None:
        await self._check_tenant(obj)
        ledger = await Ledger.load(self.store, obj)
        # A fresh object has no Secret to find: it is created, not read first (a name someone
        # else holds shows up as a conflict on create). Saves a request per new key.
        fresh = not ledger.entries and not obj.spec.revoked
        secret = None if fresh else await self.kube.read_secret(obj.namespace, obj.secret_name)
        if secret is not None and not secrets.owned_by(secret, obj.uid):
            raise _foreign_secret(obj)
        now = self.clock()
        if obj.spec.revoked:
            await self._end(obj, ledger, secret, Phase.REVOKED, Reason.KEY_REVOKED, "revoked by spec")
            return None
        expires_at = obj.spec.expires_at
        if expires_at is not None and now >= expires_at:
            await self._end(obj, ledger, secret, Phase.EXPIRED, Reason.KEY_EXPIRED, "expired")
            return None

        current = await self._find_current(obj, ledger, secret)
        if current is None:
            superseded = _active_key(ledger)
            intent = "repair" if superseded else "issue"
            current = await self._issue(obj, ledger, secret, intent=intent, supersedes=superseded)
        elif self._rotation_due(obj, current, now):
            grace = int(parse_duration(obj.spec.rotation.grace_period).total_seconds())
            current = await self._issue(obj, ledger, secret, intent="rotate", supersedes=current.key_id, grace=grace)
        current = await self._settle(obj, ledger, current)
        await ledger.flush()
        await self._publish_active(obj, ledger, current)
        return self._next_wake(obj, ledger, current)

    async def _check_tenant(self, obj: KeyObject) -> None:
        tenant = await self.kube.namespace_tenant(obj.namespace)
        if tenant is None:
            raise Refused(
                Reason.NAMESPACE_UNBOUND,
                f"namespace {obj.namespace} has no penguinmails.io/tenant label; label it with "
                f"penguinmails.io/tenant={obj.spec.tenant} to issue keys here",
            )
        if tenant != obj.spec.tenant:
            raise Refused(
                Reason.TENANT_MISMATCH,
                f"spec.tenant {obj.spec.tenant!r} does not match namespace {obj.namespace}'s "
                f"tenant {tenant!r}; keys are only issued for the namespace's own tenant",
            )

    async def _find_current(self, obj: KeyObject, ledger: Ledger, secret: client.V1Secret | None) -> Current | None:
        """The Secret's key if it is a live key of this object (restoring its record if a
        crash came between the Secret and the record); None if a new key is needed."""
        if secret is None:
            return None
        plaintext = secret_plaintext(secret)
        try:
            key = material.parse(plaintext or "")
        except material.MalformedKey:
            await self._event(
                obj,
                Reason.SECRET_REPAIRED,
                "Secret's key was altered; issuing a new key",
                warning=True,
            )
            return None
        peppers = await self.store.peppers()
        found = ledger.find_digest(digest(p, key.value) for p in peppers)
        if found is None:
            await self._event(
                obj,
                Reason.SECRET_REPAIRED,
                "Secret holds a key this TenantApiKey never issued; issuing a new key",
                warning=True,
            )
            return None
        key_id, entry = found
        if entry.state is EntryState.REVOKED:
            return None
        stored = await self.store.get_record(entry.digest)
        if stored is None:
            record = await self._restore_record(obj, key_id, entry, key)
            stored = (record, 1)
        record, version = stored
        if record.state is not KeyState.ACTIVE or record.uid != obj.uid:
            return None
        if entry.state is not EntryState.ACTIVE:
            entry = ledger.update(key_id, state=EntryState.ACTIVE)
        return Current(key_id, entry, record, version)

    async def _restore_record(self, obj: KeyObject, key_id: str, entry: OwnerEntry, key: material.ApiKey) -> KeyRecord:
        hashed = await self.hasher.hash(key.value)
        record = self._new_record(
            obj, key_id, entry, hashed, pepper_version=(await self.store.current_pepper()).version
        )
        await self.store.create_record(entry.digest, record)
        logger.info("%s: restored the Vault record of key %s from its Secret", obj.ref, key_id)
        return record

    def _new_record(
        self, obj: KeyObject, key_id: str, entry: OwnerEntry, hashed: str, *, pepper_version: int
    ) -> KeyRecord:
        return KeyRecord(
            key_id=key_id,
            tenant=obj.spec.tenant,
            namespace=obj.namespace,
            name=obj.name,
            uid=obj.uid,
            bcrypt=hashed,
            scopes=list(obj.spec.scopes),
            tier=obj.spec.tier,
            rate_limit=obj.spec.effective_rate_limit,
            created_at=entry.issued_at,
            not_after=obj.spec.expires_at,
            pepper_version=pepper_version,
            display_prefix=entry.display_prefix,
        )

    async def _issue(
        self,
        obj: KeyObject,
        ledger: Ledger,
        secret: client.V1Secret | None,
        *,
        intent: str,
        supersedes: str | None,
        grace: int = 0,
    ) -> Current:
        key = material.generate(obj.spec.environment)
        pepper = await self.store.current_pepper()
        key_digest = digest(pepper, key.value)
        hashed = await self.hasher.hash(key.value)
        crashpoints.reach("after-hash")
        key_id = material.new_key_id()
        entry = OwnerEntry(
            digest=key_digest,
            display_prefix=key.display_prefix,
            intent=intent,
            supersedes=supersedes,
            grace_seconds=grace,
            issued_at=self.clock(),
            counter=obj.spec.rotation.counter,
            annotation=obj.rotate_annotation,
        )
        await ledger.add(key_id, entry)
        crashpoints.reach("after-index")
        await self._write_secret(obj, secret, key, key_id)
        crashpoints.reach("after-secret")
        record = self._new_record(obj, key_id, entry, hashed, pepper_version=pepper.version)
        await self.store.create_record(key_digest, record)
        crashpoints.reach("after-record")
        metrics.KEYS_ISSUED.labels(intent).inc()
        entry = ledger.update(key_id, state=EntryState.ACTIVE)
        return Current(key_id, entry, record, 1)

    async def _write_secret(
        self, obj: KeyObject, secret: client.V1Secret | None, key: material.ApiKey, key_id: str
    ) -> None:
        if secret is None:
            try:
                written = await self.kube.create_secret(
                    obj.namespace, secrets.build(obj, key, key_id, resource_version=None)
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                secret = await self.kube.read_secret(obj.namespace, obj.secret_name)
                if secret is None or not secrets.owned_by(secret, obj.uid):
                    raise _foreign_secret(obj) from None
        if secret is not None:
            manifest = secrets.build(obj, key, key_id, resource_version=secret.metadata.resource_version)
            written = await self.kube.replace_secret(obj.namespace, manifest)
        self.written_secrets[obj.uid] = written

    def _rotation_due(self, obj: KeyObject, current: Current, now: dt.datetime) -> bool:
        rotation = obj.spec.rotation
        if rotation.counter > current.entry.counter:
            return True
        if obj.rotate_annotation and obj.rotate_annotation != current.entry.annotation:
            return True
        due = self._rotation_due_at(obj, current)
        return due is not None and now >= due

    def _rotation_due_at(self, obj: KeyObject, current: Current) -> dt.datetime | None:
        interval = parse_duration(obj.spec.rotation.interval)
        if not interval:
            return None
        jitter = rotation_jitter(current.key_id, interval, self.jitter_fraction)
        return current.entry.issued_at + interval + jitter

    # -- settling: everything that is not the current key ---------------------------------
    async def _settle(self, obj: KeyObject, ledger: Ledger, current: Current) -> Current:
        now = self.clock()
        await self._finish_supersede(obj, ledger, current, now)
        for key_id, entry in list(ledger.entries.items()):
            if key_id == current.key_id:
                continue
            if entry.state is EntryState.PENDING:
                await self._revoke(ledger, key_id, reason="never reached its Secret")
            elif entry.state is EntryState.ACTIVE:
                await self._revoke(ledger, key_id, reason="no longer the key in the Secret")
                await self._event(obj, Reason.KEY_REVOKED, f"revoked stray key {key_id}")
            elif entry.state is EntryState.RETIRING and entry.not_after and entry.not_after <= now:
                await self._revoke(ledger, key_id, reason="grace period ended")
                await self._event(obj, Reason.GRACE_EXPIRED, f"grace period of key {key_id} ended; it is revoked")
        current = await self._sync_record(obj, ledger, current)
        await self._restart_targets(obj, ledger, current, now)
        return current

    async def _finish_supersede(self, obj: KeyObject, ledger: Ledger, current: Current, now: dt.datetime) -> None:
        old_id = current.entry.supersedes
        old = ledger.entries.get(old_id) if old_id else None
        if old_id is None or old is None or old.state not in (EntryState.ACTIVE, EntryState.PENDING):
            return
        deadline = current.entry.issued_at + dt.timedelta(seconds=current.entry.grace_seconds)
        if obj.spec.expires_at is not None:
            deadline = min(deadline, obj.spec.expires_at)
        new = f"{current.key_id} ({current.entry.display_prefix})"
        if current.entry.intent == "rotate" and deadline > now:
            await self._retire(ledger, old_id, deadline)
            message = f"rotated to key {new}; previous key {old_id} works until {iso(deadline)}"
        else:
            await self._revoke(ledger, old_id, reason=f"replaced by {current.key_id}")
            message = f"key {old_id} revoked and replaced by {new}"
        crashpoints.reach("after-supersede")
        if current.entry.intent == "rotate":
            await self._event(obj, Reason.KEY_ROTATED, message)
        else:
            await self._event(obj, Reason.SECRET_REPAIRED, f"Secret was lost or altered: {message}", warning=True)

    async def _retire(self, ledger: Ledger, key_id: str, deadline: dt.datetime) -> None:
        entry = ledger.entries[key_id]
        stored = await self.store.get_record(entry.digest)
        if stored is not None and stored[0].state is KeyState.ACTIVE:
            record, version = stored
            retired = record.model_copy(update={"state": KeyState.RETIRING, "not_after": deadline})
            await self.store.update_record(entry.digest, retired, version=version)
        ledger.update(key_id, state=EntryState.RETIRING, not_after=deadline)

    async def _revoke(self, ledger: Ledger, key_id: str, *, reason: str) -> None:
        entry = ledger.entries[key_id]
        stored = await self.store.get_record(entry.digest)
        if stored is not None and stored[0].state is not KeyState.REVOKED:
            record, version = stored
            revoked = record.model_copy(
                update={
                    "state": KeyState.REVOKED,
                    "revoked_at": self.clock(),
                    "revoked_reason": reason,
                }
            )
            await self.store.update_record(entry.digest, revoked, version=version)
            metrics.KEYS_REVOKED.inc()
            crashpoints.reach("after-revoke-record")
        ledger.update(key_id, state=EntryState.REVOKED)

    async def _revoke_all(self, obj: KeyObject, ledger: Ledger, *, reason: str) -> list[str]:
        revoked = []
        for key_id, _entry in ledger.in_state(EntryState.PENDING, EntryState.ACTIVE, EntryState.RETIRING):
            await self._revoke(ledger, key_id, reason=reason)
            revoked.append(key_id)
        await ledger.flush()
        return revoked

    async def _sync_record(self, obj: KeyObject, ledger: Ledger, current: Current) -> Current:
        """Spec changes that keep the key (scopes, tier, rate limit, expiry) go to the records."""
        wanted = {
            "scopes": list(obj.spec.scopes),
            "tier": obj.spec.tier,
            "rate_limit": obj.spec.effective_rate_limit,
            "not_after": obj.spec.expires_at,
        }
        record = current.record
        if all(getattr(record, k) == val for k, val in wanted.items()):
            return current
        updated = record.model_copy(update=wanted)
        await self.store.update_record(ledger.entries[current.key_id].digest, updated, version=current.version)
        for key_id, entry in ledger.in_state(EntryState.RETIRING):
            await self._sync_retiring(obj, entry, key_id)
        changes = ", ".join(k for k, val in wanted.items() if getattr(record, k) != val)
        await self._event(obj, Reason.KEY_UPDATED, f"key {current.key_id} updated in place: {changes}")
        return Current(current.key_id, current.entry, updated, current.version + 1)

    async def _sync_retiring(self, obj: KeyObject, entry: OwnerEntry, key_id: str) -> None:
        stored = await self.store.get_record(entry.digest)
        if stored is None or stored[0].state is not KeyState.RETIRING:
            return
        record, version = stored
        not_after = record.not_after
        if obj.spec.expires_at is not None and not_after is not None:
            not_after = min(not_after, obj.spec.expires_at)
        updated = record.model_copy(
            update={
                "scopes": list(obj.spec.scopes),
                "tier": obj.spec.tier,
                "rate_limit": obj.spec.effective_rate_limit,
                "not_after": not_after,
            }
        )
        if updated != record:
            await self.store.update_record(entry.digest, updated, version=version)

    async def _restart_targets(self, obj: KeyObject, ledger: Ledger, current: Current, now: dt.datetime) -> None:
        targets = obj.spec.rotation.restart_targets
        if current.entry.intent == "issue" or current.entry.restarted or not targets:
            return
        when = iso(now) or ""
        for target in targets:
            try:
                await self.kube.restart_workload(obj.namespace, target.kind, target.name, when)
            except ApiException as exc:
                await self._event(
                    obj,
                    Reason.RESTART_FAILED,
                    f"could not restart {target.kind}/{target.name}: {exc.reason}",
                    warning=True,
                )
            else:
                await self._event(
                    obj,
                    Reason.RESTART_TRIGGERED,
                    f"restarted {target.kind}/{target.name} to pick up key {current.key_id}",
                )
        ledger.update(current.key_id, restarted=True)

    # -- terminal states -----------------------------------------------------------------
    async def _end(
        self,
        obj: KeyObject,
        ledger: Ledger,
        secret: client.V1Secret | None,
        phase: Phase,
        reason: Reason,
        why: str,
    ) -> None:
        revoked = await self._revoke_all(obj, ledger, reason=why)
        if secret is not None:
            await self.kube.delete_secret(obj.namespace, obj.secret_name, uid=secret.metadata.uid)
        if revoked:
            await self._event(obj, reason, f"key {', '.join(revoked)} {why}; Secret removed")
        message = (
            "revoked: revocation is final; create a new TenantApiKey for a new key"
            if phase is Phase.REVOKED
            else "expired: move spec.expiresAt into the future to get a new key"
        )
        facts = StatusFacts(
            phase=phase,
            generation=obj.generation,
            message=message,
            conditions=[CondSpec(ConditionType.READY, False, reason, message), _vault_ok()],
            fields=self._key_fields(obj, ledger, None),
        )
        await self._patch_status(obj, facts)

    # -- status and Events ---------------------------------------------------------------
    async def _publish_active(self, obj: KeyObject, ledger: Ledger, current: Current) -> None:
        previous = ledger.in_state(EntryState.RETIRING)
        phase = Phase.ROTATING if previous else Phase.ACTIVE
        if obj.status.key_id != current.key_id and current.entry.intent == "issue":
            await self._event(
                obj,
                Reason.KEY_ISSUED,
                f"issued key {current.key_id} ({current.entry.display_prefix}) into Secret {obj.secret_name}",
            )
        grace_message = (
            f"previous key(s) {', '.join(k for k, _ in previous)} still accepted until their notAfter"
            if previous
            else "no previous key is accepted"
        )
        facts = StatusFacts(
            phase=phase,
            generation=obj.generation,
            message=f"key {current.key_id} is active",
            conditions=[
                CondSpec(ConditionType.READY, True, Reason.ACTIVE, f"key {current.key_id} is active"),
                CondSpec(
                    ConditionType.IN_GRACE,
                    bool(previous),
                    Reason.IN_GRACE if previous else Reason.NO_GRACE,
                    grace_message,
                ),
                _vault_ok(),
            ],
            fields=self._key_fields(obj, ledger, current),
        )
        await self._patch_status(obj, facts)
        crashpoints.reach("after-status")

    def _key_fields(self, obj: KeyObject, ledger: Ledger, current: Current | None) -> dict[str, object]:
        previous = [
            {"keyId": k, "displayPrefix": e.display_prefix, "notAfter": iso(e.not_after)}
            for k, e in ledger.in_state(EntryState.RETIRING)
        ]
        revoked = [k for k, _ in ledger.in_state(EntryState.REVOKED)]
        fields: dict[str, object] = {
            "secretName": obj.secret_name if current else None,
            "previousKeys": previous,
            "revokedKeyIds": revoked,
            "effectiveRateLimit": obj.spec.effective_rate_limit,
            "expiresAt": iso(obj.spec.expires_at),
            "keyId": current.key_id if current else None,
            "displayPrefix": current.entry.display_prefix if current else None,
        }
        if current is None:
            fields["nextRotationAt"] = None
            return fields
        first_issue = min((e.issued_at for e in ledger.entries.values()), default=current.entry.issued_at)
        rotated = current.entry.issued_at if current.entry.intent != "issue" else None
        fields.update(
            {
                "createdAt": iso(obj.status.created_at or first_issue),
                "lastRotatedAt": iso(rotated or obj.status.last_rotated_at),
                "nextRotationAt": iso(self._rotation_due_at(obj, current)),
                "rotation": {
                    "observedCounter": current.entry.counter,
                    "observedAnnotation": current.entry.annotation,
                },
            }
        )
        return fields

    async def _patch_status(self, obj: KeyObject, facts: StatusFacts) -> None:
        patch = status.render(obj.status, facts, now=self.clock())
        current = obj.status.model_dump(mode="json", by_alias=True, exclude_none=False)
        if status.changed(_comparable(current), _comparable(patch)):
            await self.kube.patch_status(obj.namespace, obj.name, patch)
        previous_phase = self._phases.get(obj.uid)
        if previous_phase != patch["phase"]:
            self._phases[obj.uid] = patch["phase"]
            metrics.phase_changed(previous_phase, patch["phase"])

    async def _event(self, obj: KeyObject, reason: str, message: str, *, warning: bool = False) -> None:
        logger.info("%s: %s: %s", obj.ref, reason, message)
        await self.kube.post_event(obj.body, reason=str(reason), message=message, warning=warning)

    async def _report_refusal(self, obj: KeyObject, refusal: Refused) -> None:
        if obj.status.phase is not Phase.FAILED or _ready_reason(obj) != refusal.reason:
            await self._event(obj, refusal.reason, refusal.message, warning=True)
        facts = StatusFacts(
            phase=Phase.FAILED,
            generation=obj.generation,
            message=refusal.message,
            conditions=[CondSpec(ConditionType.READY, False, refusal.reason, refusal.message)],
        )
        try:
            await self._patch_status(obj, facts)
        except ApiException as exc:
            logger.warning("%s: could not report refusal: %s", obj.ref, exc.reason)

    async def _report_failure(self, obj: KeyObject, exc: Exception) -> dt.datetime:
        attempt = self._failures.get(obj.uid, 0)
        self._failures[obj.uid] = attempt + 1
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
        delay *= 0.5 + random.random()
        if isinstance(exc, VaultError):
            reason, what = exc.reason, str(exc)
        elif isinstance(exc, ApiException):
            reason, what = "KubernetesApiError", f"Kubernetes API error: {exc.status} {exc.reason}"
        else:
            # Only the type: an arbitrary exception's text is not known to be free of secrets.
            reason, what = "ReconcileError", f"reconcile failed: {type(exc).__name__}"
        message = f"{what}; retrying in {delay:.0f}s (attempt {attempt + 1})"
        logger.warning("%s: %s", obj.ref, message)
        if attempt == 0:
            await self._event(obj, reason, message, warning=True)
        conditions = [CondSpec(ConditionType.READY, False, reason, message)]
        if isinstance(exc, VaultError):
            conditions.append(CondSpec(ConditionType.VAULT_AVAILABLE, False, reason, what))
        facts = StatusFacts(
            phase=obj.status.phase if obj.status.key_id else Phase.PENDING,
            generation=obj.status.observed_generation or 0,
            message=message,
            conditions=conditions,
        )
        try:
            await self._patch_status(obj, facts)
        except (ApiException, OSError) as patch_exc:
            logger.warning("%s: could not report failure: %s", obj.ref, patch_exc)
        return self.clock() + dt.timedelta(seconds=delay)

    def _next_wake(self, obj: KeyObject, ledger: Ledger, current: Current) -> dt.datetime | None:
        candidates = [self._rotation_due_at(obj, current), obj.spec.expires_at]
        candidates += [e.not_after for _, e in ledger.in_state(EntryState.RETIRING)]
        due = [c for c in candidates if c is not None]
        return min(due) if due else None


def _foreign_secret(obj: KeyObject) -> Refused:
    return Refused(
        Reason.SECRET_CONFLICT,
        f"Secret {obj.secret_name} exists and is not owned by this TenantApiKey; "
        "choose another spec.secret.name or delete that Secret",
    )


def _active_key(ledger: Ledger) -> str | None:
    active = ledger.in_state(EntryState.ACTIVE)
    return active[-1][0] if active else None


def _vault_ok() -> CondSpec:
    return CondSpec(ConditionType.VAULT_AVAILABLE, True, Reason.REACHABLE, "Vault answered")


def _ready_reason(obj: KeyObject) -> str | None:
    return next((c.reason for c in obj.status.conditions if c.type == ConditionType.READY), None)


def _comparable(data: dict[str, object]) -> dict[str, object]:
    """Status without volatile parts (transition times) for change detection."""
    out = dict(data)
    conditions = out.get("conditions")
    if isinstance(conditions, list):
        out["conditions"] = [{k: val for k, val in c.items() if k != "lastTransitionTime"} for c in conditions]
    return out
