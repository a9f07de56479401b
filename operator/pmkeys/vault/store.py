"""Key records, owner indexes and the pepper in Vault's KV v2, every write check-and-set.

:class:`KeyStore` is the narrow interface the operator and the verifier use; it knows paths and
versions, not reconciliation. Reads return ``(value, version)`` so that the following write can
be check-and-set against exactly what was read.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hvac
import hvac.exceptions

from pmkeys.keys.digest import Pepper, new_pepper
from pmkeys.vault.errors import CasConflict
from pmkeys.vault.records import KeyRecord, OwnerIndex
from pmkeys.vault.session import VaultSession


@dataclass(frozen=True)
class Versioned:
    """A value read from KV v2 and the version to pass as ``cas`` when writing it back."""

    value: Any
    version: int


def _unfenced(what: str) -> None:
    return None


class KeyStore:
    def __init__(self, session: VaultSession) -> None:
        self.session = session
        self.mount = session.settings.kv_mount
        self.prefix = session.settings.prefix
        self._peppers: list[Pepper] | None = None
        #: Asked before every write (pmkeys.reconcile.leadership: one writer at a time).
        self.fence: Callable[[str], None] = _unfenced

    # -- paths ---------------------------------------------------------------------------
    def record_path(self, digest: str) -> str:
        return f"{self.prefix}/keys/{digest}"

    def owner_path(self, uid: str) -> str:
        return f"{self.prefix}/owners/{uid}"

    @property
    def pepper_path(self) -> str:
        return f"{self.prefix}/pepper"

    # -- raw KV v2 -----------------------------------------------------------------------
    async def _read(self, path: str) -> Versioned | None:
        def read(client: hvac.Client) -> Versioned | None:
            try:
                response = client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.mount, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath:
                return None
            data = response["data"]
            return Versioned(data["data"], int(data["metadata"]["version"]))

        return await self.session.call(read)

    async def _write(self, path: str, value: dict[str, Any], *, cas: int) -> int:
        """Write ``value`` if the path is at version ``cas`` (0: only if absent)."""
        self.fence("vault write")

        def write(client: hvac.Client) -> int:
            response = client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=value, cas=cas, mount_point=self.mount
            )
            return int(response["data"]["version"])

        return await self.session.call(write)

    # -- other documents under the prefix (the audit trail's checkpoint) ----------------
    async def read_document(self, name: str) -> Versioned | None:
        return await self._read(f"{self.prefix}/{name}")

    async def write_document(self, name: str, value: dict[str, Any], *, cas: int) -> int:
        return await self._write(f"{self.prefix}/{name}", value, cas=cas)

    # -- pepper --------------------------------------------------------------------------
    async def peppers(self) -> list[Pepper]:
        """All pepper versions, newest first; created once (check-and-set) if missing."""
        if self._peppers is None:
            self._peppers = await self._load_or_create_peppers()
        return self._peppers

    async def read_peppers(self) -> list[Pepper]:
        """The pepper versions, newest first, never creating one ([] until the operator has):
        for readers such as the verifier, whose policy cannot write."""
        stored = await self._read(self.pepper_path)
        if stored is None:
            return []
        versions = stored.value["versions"]
        return [Pepper(int(v), base64.b64decode(versions[v])) for v in sorted(versions, key=int, reverse=True)]

    async def current_pepper(self) -> Pepper:
        return (await self.peppers())[0]

    async def _load_or_create_peppers(self) -> list[Pepper]:
        stored = await self._read(self.pepper_path)
        if stored is None:
            pepper = new_pepper(1)
            encoded = {"versions": {"1": base64.b64encode(pepper.secret).decode()}}
            try:
                await self._write(self.pepper_path, encoded, cas=0)
                return [pepper]
            except CasConflict:
                stored = await self._read(self.pepper_path)
                assert stored is not None
        versions = stored.value["versions"]
        return [Pepper(int(v), base64.b64decode(versions[v])) for v in sorted(versions, key=int, reverse=True)]

    # -- records -------------------------------------------------------------------------
    async def get_record(self, digest: str) -> tuple[KeyRecord, int] | None:
        stored = await self._read(self.record_path(digest))
        if stored is None:
            return None
        return KeyRecord.model_validate(stored.value), stored.version

    async def create_record(self, digest: str, record: KeyRecord) -> None:
        """Write a new record; if one already exists for this key id it is left as it is."""
        try:
            await self._write(self.record_path(digest), record.model_dump(mode="json"), cas=0)
        except CasConflict:
            existing = await self.get_record(digest)
            if existing is None or existing[0].key_id != record.key_id:
                raise

    async def update_record(self, digest: str, record: KeyRecord, *, version: int) -> None:
        await self._write(self.record_path(digest), record.model_dump(mode="json"), cas=version)

    async def list_records(self) -> list[str]:
        """Every record digest (operators' audits and leak scans; never on a hot path)."""

        def listing(client: hvac.Client) -> list[str]:
            try:
                response = client.secrets.kv.v2.list_secrets(path=f"{self.prefix}/keys", mount_point=self.mount)
            except hvac.exceptions.InvalidPath:
                return []
            return list(response["data"]["keys"])

        return await self.session.call(listing)

    async def destroy_record(self, digest: str) -> None:
        """Delete a record and all its versions (retention of long-revoked records only)."""
        self.fence("vault destroy")

        def destroy(client: hvac.Client) -> None:
            client.secrets.kv.v2.delete_metadata_and_all_versions(path=self.record_path(digest), mount_point=self.mount)

        await self.session.call(destroy)

    # -- owner index ---------------------------------------------------------------------
    async def get_owner(self, uid: str) -> tuple[OwnerIndex, int] | None:
        stored = await self._read(self.owner_path(uid))
        if stored is None:
            return None
        return OwnerIndex.model_validate(stored.value), stored.version

    async def put_owner(self, uid: str, index: OwnerIndex, *, version: int) -> int:
        return await self._write(self.owner_path(uid), index.model_dump(mode="json"), cas=version)
