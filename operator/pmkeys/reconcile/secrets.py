"""The Secret that holds a key: its manifest, and who may own it.

The Secret carries the plaintext (data key ``api-key``) and public facts as annotations (key id,
tenant, owning TenantApiKey). Labels: the fixed ``app.kubernetes.io/managed-by: pmkeys`` plus
the user's ``spec.secret.labels`` — never the TenantApiKey's own labels, which may select
things (Argo CD's instance label would make Argo prune the Secret).
"""

from __future__ import annotations

import base64

from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.keys.material import ApiKey
from pmkeys.reconcile.objects import KeyObject


def owned_by(secret: client.V1Secret, uid: str) -> bool:
    return any(ref.uid == uid for ref in secret.metadata.owner_references or [])


def build(obj: KeyObject, key: ApiKey, key_id: str, *, resource_version: str | None) -> client.V1Secret:
    template = obj.spec.secret
    labels = {**template.labels, v.MANAGED_BY_LABEL: v.MANAGED_BY_VALUE}
    annotations = {
        **template.annotations,
        v.KEY_ID_ANNOTATION: key_id,
        v.TENANT_ANNOTATION: obj.spec.tenant,
        v.OWNER_ANNOTATION: obj.name,
    }
    owner = client.V1OwnerReference(
        api_version=v.API_VERSION,
        kind=v.KIND,
        name=obj.name,
        uid=obj.uid,
        controller=True,
        block_owner_deletion=True,
    )
    return client.V1Secret(
        metadata=client.V1ObjectMeta(
            name=obj.secret_name,
            namespace=obj.namespace,
            labels=labels,
            annotations=annotations,
            owner_references=[owner],
            resource_version=resource_version,
        ),
        type="Opaque",
        data={v.SECRET_DATA_KEY: base64.b64encode(key.value.encode()).decode()},
    )
