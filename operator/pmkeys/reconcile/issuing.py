"""Issuing: find the key the Secret holds, or make a new one, in the crash-safe order.

The order (each step persisted before the next; ``crashpoints`` marks them): generate, digest
and bcrypt in memory → a *pending* owner-index entry (the intent) → the Secret (from here on
the Secret is the truth) → the Vault record. Settling the superseded key and reporting come
after, in :mod:`pmkeys.reconcile.settling` and :mod:`pmkeys.reconcile.reporting`.

On resume, :meth:`Issuer.find_current` matches the Secret's key against the index: an entry
without its record gets one (hashing the Secret's plaintext, the only case that re-hashes).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys import metrics
from pmkeys.api import vocabulary as v
from pmkeys.api.vocabulary import Reason
from pmkeys.keys import material
from pmkeys.keys.digest import digest
from pmkeys.keys.hashing import Hasher
from pmkeys.reconcile import crashpoints, secrets
from pmkeys.reconcile.interfaces import Kube, Store
from pmkeys.reconcile.kube import secret_plaintext
from pmkeys.reconcile.ledger import Ledger
from pmkeys.reconcile.memory import ObjectMemory
from pmkeys.reconcile.objects import KeyObject
from pmkeys.reconcile.refusals import foreign_secret
from pmkeys.reconcile.reporting import Current, Reporter
from pmkeys.vault.records import EntryState, Intent, KeyRecord, KeyState, OwnerEntry

logger = logging.getLogger(__name__)


class ObjectGone(Exception):
    """The object was deleted (or is being deleted) since it was read: issue nothing for it."""


class Issuer:
    def __init__(
        self, *, kube: Kube, store: Store, hasher: Hasher, reporter: Reporter, clock: Callable[[], dt.datetime]
    ) -> None:
        self.kube = kube
        self.store = store
        self.hasher = hasher
        self.reporter = reporter
        self.clock = clock

    async def find_current(self, obj: KeyObject, ledger: Ledger, secret: client.V1Secret | None) -> Current | None:
        """The Secret's key if it is a live key of this object (restoring its record if a
        crash came between the Secret and the record); None if a new key is needed."""
        if secret is None:
            return None
        try:
            key = material.parse(secret_plaintext(secret) or "")
        except material.MalformedKey:
            await self._repairing(obj, "Secret's key was altered; issuing a new key")
            return None
        found = ledger.find_digest(digest(p, key.value) for p in await self.store.peppers())
        if found is None:
            await self._repairing(obj, "Secret holds a key this TenantApiKey never issued; issuing a new key")
            return None
        key_id, entry = found
        if entry.state is EntryState.REVOKED:
            return None
        stored = await self.store.get_record(entry.digest)
        if stored is None:
            stored = (await self._restore_record(obj, key_id, entry, key), 1)
        record, version = stored
        if record.state is not KeyState.ACTIVE or record.uid != obj.uid:
            return None
        if entry.state is not EntryState.ACTIVE:
            entry = ledger.update(key_id, state=EntryState.ACTIVE)
        return Current(key_id, entry, record, version)

    async def issue(
        self,
        obj: KeyObject,
        memory: ObjectMemory,
        ledger: Ledger,
        secret: client.V1Secret | None,
        *,
        intent: Intent,
        supersedes: str | None,
        grace: int = 0,
    ) -> Current:
        await self._check_still_there(obj)
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
        memory.written_secret = await self._write_secret(obj, secret, key, key_id)
        crashpoints.reach("after-secret")
        record = new_record(obj, key_id, entry, hashed, pepper_version=pepper.version)
        await self.store.create_record(key_digest, record)
        crashpoints.reach("after-record")
        metrics.KEYS_ISSUED.labels(str(intent)).inc()
        entry = ledger.update(key_id, state=EntryState.ACTIVE)
        return Current(key_id, entry, record, 1)

    async def _check_still_there(self, obj: KeyObject) -> None:
        """A key is made only for an object that exists now (the copy a reconcile works on may
        have been read before a deletion) and that carries the finalizer, so that deleting it
        revokes the key. kopf adds the finalizer after the first event is handled; a key issued
        before that, on an object deleted at once, would outlive it. One read per issuance."""
        found = await self.kube.get_key_object(obj.namespace, obj.name)
        meta = (found or {}).get("metadata") or {}
        if meta.get("uid") != obj.uid or meta.get("deletionTimestamp"):
            raise ObjectGone(obj.ref)
        finalizers = list(meta.get("finalizers") or [])
        if v.FINALIZER not in finalizers:
            await self.kube.add_finalizer(
                obj.namespace, obj.name, finalizers=[*finalizers, v.FINALIZER], resource_version=meta["resourceVersion"]
            )

    async def _repairing(self, obj: KeyObject, message: str) -> None:
        # The repair itself is audited once it is done (settling), with both key ids.
        await self.reporter.event(obj, Reason.SECRET_REPAIRED, message, warning=True, audited=False)

    async def _restore_record(self, obj: KeyObject, key_id: str, entry: OwnerEntry, key: material.ApiKey) -> KeyRecord:
        hashed = await self.hasher.hash(key.value)
        pepper = await self.store.current_pepper()
        record = new_record(obj, key_id, entry, hashed, pepper_version=pepper.version)
        await self.store.create_record(entry.digest, record)
        logger.info("%s: restored the Vault record of key %s from its Secret", obj.ref, key_id)
        return record

    async def _write_secret(
        self, obj: KeyObject, secret: client.V1Secret | None, key: material.ApiKey, key_id: str
    ) -> str:
        """Create or replace the Secret; return the resourceVersion written."""
        if secret is None:
            try:
                return await self.kube.create_secret(
                    obj.namespace, secrets.build(obj, key, key_id, resource_version=None)
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
            secret = await self.kube.read_secret(obj.namespace, obj.secret_name)
            if secret is None or not secrets.owned_by(secret, obj.uid):
                raise foreign_secret(obj) from None
        manifest = secrets.build(obj, key, key_id, resource_version=secret.metadata.resource_version)
        return await self.kube.replace_secret(obj.namespace, manifest)


def new_record(obj: KeyObject, key_id: str, entry: OwnerEntry, hashed: str, *, pepper_version: int) -> KeyRecord:
    return KeyRecord(
        key_id=key_id,
        tenant=obj.spec.tenant,
        namespace=obj.namespace,
        name=obj.name,
        uid=obj.uid,
        bcrypt=hashed,
        scopes=list(obj.spec.scopes),
        tier=obj.tier,
        rate_limit=obj.rate_limit,
        created_at=entry.issued_at,
        not_after=obj.spec.expires_at,
        pepper_version=pepper_version,
        display_prefix=entry.display_prefix,
    )
