"""Helpers of the end-to-end audit tests: people with Kubernetes names, and the trail as an
auditor reads it."""

from __future__ import annotations

import json
from typing import Any

from pmkeys.audit import store
from pmkeys.audit.records import StoredRecord
from pmkeys.ui import rbac
from pmkeys_dev import bootstrap
from tests.kube import Kube, wait_for

PERSON_ROLE = "pmkeys-audit-test-tenant-admin"
#: What a tenant admin may do, plus writing Events (to try forging the trail with them).
PERSON_RULES = [*rbac.TENANT_ADMIN_RULES, {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]


def grant_people(kube: Kube, namespace: str, *people: str) -> None:
    """Bind the tenant-admin rules to users (as a cluster's OIDC users would be bound)."""
    bootstrap.apply_manifests(kube.api, [rbac.cluster_role(PERSON_ROLE, PERSON_RULES)])
    bootstrap.apply_manifests(
        kube.api,
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"audit-people-{'-'.join(people)}", "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": PERSON_ROLE},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": p} for p in people],
            }
        ],
    )
    for person in people:
        wait_for(
            lambda p=person: (
                kube.kubectl("auth", "can-i", "patch", "tenantapikeys", "-n", namespace, f"--as={p}").stdout.strip()
                == "yes"
            ),
            what=f"RBAC for {person}",
        )


def as_person(kube: Kube, person: str, *args: str, input: str | None = None) -> str:
    result = kube.kubectl(f"--as={person}", *args, input=input)
    assert result.returncode == 0, f"kubectl --as={person} {' '.join(args)}: {result.stderr}"
    return result.stdout


def records(dsn: str, namespace: str, *actions: str) -> list[StoredRecord]:
    """The namespace's records, oldest first."""
    found = store.AuditReader(dsn).query(store.Query(namespace=namespace, actions=tuple(actions), limit=1000))
    return sorted(found, key=lambda r: r.seq)


def wait_record(dsn: str, namespace: str, action: str, *, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]] | None:
        found = [r.data for r in records(dsn, namespace, action)]
        return found if len(found) >= count else None

    return wait_for(probe, timeout=timeout, what=f"{count} {action} record(s) in {namespace}")


def dump(dsn: str, namespace: str) -> str:
    return json.dumps([r.data for r in records(dsn, namespace)], indent=1)
