"""Read what the operator wrote to OpenBao, with the root token, for assertions."""

from __future__ import annotations

import base64
from typing import Any

import bcrypt
import hvac

from pmkeys.keys.digest import Pepper, digest
from pmkeys.vault.records import KeyRecord, OwnerIndex

MOUNT = "secret"
PREFIX = "pmkeys"


class VaultView:
    def __init__(self, client: hvac.Client) -> None:
        self.client = client

    def _read(self, path: str) -> dict[str, Any] | None:
        try:
            response = self.client.secrets.kv.v2.read_secret_version(
                path=f"{PREFIX}/{path}", mount_point=MOUNT, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None
        return response["data"]["data"]

    def peppers(self) -> list[Pepper]:
        data = self._read("pepper")
        assert data, "no pepper in Vault"
        return [Pepper(int(k), base64.b64decode(val)) for k, val in data["versions"].items()]

    def digest_of(self, plaintext: str) -> str:
        return digest(max(self.peppers(), key=lambda p: p.version), plaintext)

    def record(self, digest_hex: str) -> KeyRecord | None:
        data = self._read(f"keys/{digest_hex}")
        return KeyRecord.model_validate(data) if data else None

    def record_for(self, plaintext: str) -> KeyRecord | None:
        return self.record(self.digest_of(plaintext))

    def owner(self, uid: str) -> OwnerIndex | None:
        data = self._read(f"owners/{uid}")
        return OwnerIndex.model_validate(data) if data else None

    def records_of(self, uid: str) -> dict[str, KeyRecord]:
        index = self.owner(uid)
        if index is None:
            return {}
        found = {kid: self.record(e.digest) for kid, e in index.keys.items()}
        return {kid: rec for kid, rec in found.items() if rec is not None}

    def all_digests(self) -> list[str]:
        try:
            response = self.client.secrets.kv.v2.list_secrets(path=f"{PREFIX}/keys", mount_point=MOUNT)
        except hvac.exceptions.InvalidPath:
            return []
        return list(response["data"]["keys"])

    def all_records(self) -> list[KeyRecord]:
        return [r for d in self.all_digests() if (r := self.record(d))]

    def dump_everything(self) -> str:
        """Every value under the prefix, as text (the leak scanner searches it)."""
        out = []
        stack = [PREFIX]
        while stack:
            path = stack.pop()
            try:
                keys = self.client.secrets.kv.v2.list_secrets(path=path, mount_point=MOUNT)["data"]["keys"]
            except hvac.exceptions.InvalidPath:
                continue
            for k in keys:
                full = f"{path}/{k}".replace("//", "/")
                if k.endswith("/"):
                    stack.append(full.rstrip("/"))
                else:
                    data = self.client.secrets.kv.v2.read_secret_version(
                        path=full, mount_point=MOUNT, raise_on_deleted_version=False
                    )
                    out.append(f"{full}: {data['data']['data']}")
        return "\n".join(out)


def bcrypt_matches(plaintext: str, record: KeyRecord) -> bool:
    return bcrypt.checkpw(plaintext.encode(), record.bcrypt.encode())
