"""Show a key's plaintext once, to someone allowed to read its Secret.

Used by the UI and ``kubectl pmkeys reveal``. The caller's own Kubernetes identity reads the
Secret (so RBAC decides who may), then marks it revealed with an annotation in a patch that
carries the resourceVersion it read: of two concurrent reveals, exactly one succeeds. A
rotation writes a new Secret without the mark, so each new key can be revealed once.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v
from pmkeys.tenantapikey import format_time


class AlreadyRevealed(Exception):
    """The key was shown before; it will not be shown again."""


class NotIssuedYet(Exception):
    """The operator has not written the Secret yet."""


@dataclass(frozen=True, repr=False)
class Revealed:
    key_id: str
    plaintext: str

    def __repr__(self) -> str:
        return f"Revealed(key_id={self.key_id!r})"


def reveal_once(core: client.CoreV1Api, namespace: str, secret_name: str) -> Revealed:
    try:
        secret = core.read_namespaced_secret(secret_name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise NotIssuedYet(f"Secret {secret_name} does not exist yet") from None
        raise
    annotations = secret.metadata.annotations or {}
    if v.REVEALED_ANNOTATION in annotations:
        raise AlreadyRevealed(
            f"the key in Secret {secret_name} was already revealed at "
            f"{annotations[v.REVEALED_ANNOTATION]}; rotate it to get a new one"
        )
    key_id = annotations.get(v.KEY_ID_ANNOTATION, "")
    now = format_time(dt.datetime.now(dt.UTC))
    patch = {
        "metadata": {
            "resourceVersion": secret.metadata.resource_version,
            "annotations": {v.REVEALED_ANNOTATION: now},
        }
    }
    try:
        core.patch_namespaced_secret(secret_name, namespace, patch)
    except ApiException as exc:
        if exc.status == 409:
            raise AlreadyRevealed(f"the key in Secret {secret_name} is being revealed elsewhere") from None
        raise
    plaintext = base64.b64decode(secret.data[v.SECRET_DATA_KEY]).decode()
    return Revealed(key_id, plaintext)
