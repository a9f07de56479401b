"""A TenantApiKey's world in memory: the reconciler against :mod:`tests.fakes`, and a clock.

``World`` builds objects the way the API server hands them to the operator (uid, generation,
the status the operator last wrote), runs the real :class:`Reconciler` over them with a real
(low-cost) bcrypt, and checks the promises of ``tests/invariants.py`` without servers. Helpers
return key ids, never plaintexts, so no assertion can print a key.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
from typing import Any

from pmkeys.api import vocabulary as v
from pmkeys.keys.digest import digest
from pmkeys.keys.hashing import Hasher
from pmkeys.reconcile.reconciler import Outcome, Reconciler
from pmkeys.vault.records import EntryState, KeyRecord, KeyState
from tests.fakes import FakeKube, FakeStore
from tests.vaultview import bcrypt_matches

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
HASHER = Hasher(cost=4, workers=1)
_uids = itertools.count(1)


class World:
    def __init__(self, tenants: dict[str, str | None] | None = None) -> None:
        self.kube = FakeKube({"acme": "acme"} if tenants is None else tenants)
        self.store = FakeStore()
        self.now = T0
        self.reconciler = Reconciler(
            kube=self.kube, store=self.store, hasher=HASHER, jitter_fraction=0.0, clock=lambda: self.now
        )
        self.objects: dict[str, dict[str, Any]] = {}

    # -- objects -------------------------------------------------------------------------
    def create(self, name: str = "mail", namespace: str = "acme", **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": v.API_VERSION,
            "kind": v.KIND,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{next(_uids)}",
                "generation": 1,
                "resourceVersion": "1",
            },
            "spec": {"tenant": namespace, "scopes": ["send_email"], **spec},
        }
        self.objects[name] = body
        self.kube.objects[(namespace, name)] = body
        return body

    def delete(self, name: str = "mail") -> None:
        """The object leaves the API server (its finalizer is the test's business)."""
        body = self.objects[name]
        del self.kube.objects[(body["metadata"]["namespace"], name)]

    def change(self, name: str, annotations: dict[str, str] | None = None, **spec: Any) -> None:
        body = self.objects[name]
        body["spec"].update(spec)
        body["metadata"]["generation"] += 1
        if annotations:
            body["metadata"]["annotations"] = annotations

    def body(self, name: str) -> dict[str, Any]:
        """The object as a watch would deliver it now: with the status last written."""
        body = self.objects[name]
        meta = body["metadata"]
        status = self.kube.statuses.get((meta["namespace"], meta["name"]), {})
        return {**body, "status": status}

    async def reconcile(self, name: str = "mail") -> Outcome:
        return await self.reconciler.reconcile(self.body(name))

    async def converge(self, name: str = "mail", *, attempts: int = 5) -> Outcome:
        """Reconcile until a run ends well (as the scheduler would retry)."""
        for _ in range(attempts):
            outcome = await self.reconcile(name)
            if outcome.result == "ok":
                return outcome
        raise AssertionError(f"{name} did not converge in {attempts} reconciles: {outcome}")

    async def finalize(self, name: str = "mail") -> None:
        await self.reconciler.finalize(self.body(name))

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)

    # -- what a user would look at -------------------------------------------------------
    def status(self, name: str = "mail") -> dict[str, Any]:
        body = self.objects[name]
        return self.kube.statuses.get((body["metadata"]["namespace"], name), {})

    def phase(self, name: str = "mail") -> str | None:
        return self.status(name).get("phase")

    def ready(self, name: str = "mail") -> dict[str, Any]:
        return next(c for c in self.status(name)["conditions"] if c["type"] == "Ready")

    def uid(self, name: str = "mail") -> str:
        return str(self.objects[name]["metadata"]["uid"])

    def _plaintext(self, name: str) -> str | None:
        body = self.objects[name]
        secret_name = body["spec"].get("secret", {}).get("name") or name
        secret = self.kube.secrets.get((body["metadata"]["namespace"], secret_name))
        if secret is None or v.SECRET_DATA_KEY not in (secret.data or {}):
            return None
        return base64.b64decode(secret.data[v.SECRET_DATA_KEY]).decode()

    def secret_record(self, name: str = "mail") -> KeyRecord | None:
        """The Vault record of the key in the Secret (None: no Secret or no record)."""
        plaintext = self._plaintext(name)
        if plaintext is None:
            return None
        found = self.store.records.get(digest(self.store.pepper, plaintext))
        return found[0] if found else None

    def secret_key_id(self, name: str = "mail") -> str | None:
        record = self.secret_record(name)
        return record.key_id if record else None

    def records(self, name: str = "mail") -> dict[str, KeyRecord]:
        uid = self.uid(name)
        return {r.key_id: r for r, _ in self.store.records.values() if r.uid == uid}

    def states(self, name: str = "mail") -> dict[str, str]:
        return {k: str(r.state) for k, r in self.records(name).items()}

    def usable(self, name: str = "mail") -> set[str]:
        """Key ids a verifier would accept now."""
        return {k for k, r in self.records(name).items() if r.usable_at(self.now)}

    def secret_bcrypt_matches(self, name: str = "mail") -> bool:
        plaintext, record = self._plaintext(name), self.secret_record(name)
        return plaintext is not None and record is not None and bcrypt_matches(plaintext, record)

    def leaks(self) -> list[str]:
        """Places other than Secrets where a plaintext key shows up."""
        plaintexts = [self._plaintext(n) for n in self.objects]
        texts = [e.message for e in self.kube.events] + [repr(s) for s in self.kube.statuses.values()]
        texts += [r.model_dump_json() for r, _ in self.store.records.values()]
        texts += [i.model_dump_json() for i, _ in self.store.owners.values()]
        return [t[:40] for t in texts for p in plaintexts if p and p in t]

    def violations(self, name: str = "mail") -> list[str]:
        """The invariants of an object that should have a key (tests/invariants.py, in memory)."""
        out: list[str] = []
        record = self.secret_record(name)
        if record is None:
            return [f"{name}: the Secret's key has no record"]
        status = self.status(name)
        if record.state is not KeyState.ACTIVE:
            out.append(f"{name}: current record is {record.state}")
        if not self.secret_bcrypt_matches(name):
            out.append(f"{name}: the Secret's key does not match its bcrypt hash")
        if status.get("keyId") != record.key_id:
            out.append(f"{name}: status.keyId is not the Secret's key")
        if status.get("phase") not in ("Active", "Rotating"):
            out.append(f"{name}: phase {status.get('phase')}")
        index = self.store.owners[self.uid(name)][0]
        active = [k for k, e in index.keys.items() if e.state is EntryState.ACTIVE]
        if active != [record.key_id]:
            out.append(f"{name}: active entries {active}, expected only the current key")
        pending = [k for k, e in index.keys.items() if e.state is EntryState.PENDING]
        if pending:
            out.append(f"{name}: pending entries left: {pending}")
        previous = {p["keyId"] for p in status.get("previousKeys") or []}
        for key_id, rec in self.records(name).items():
            if key_id == record.key_id:
                continue
            if rec.state is KeyState.RETIRING and key_id not in previous:
                out.append(f"{name}: retiring key {key_id} missing from status.previousKeys")
            if rec.state is KeyState.ACTIVE:
                out.append(f"{name}: stray active key {key_id}")
        return out + self.leaks()
