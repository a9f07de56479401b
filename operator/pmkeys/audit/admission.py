"""The MutatingAdmissionPolicy that stamps who changed a TenantApiKey, unforgeably.

The operator alone cannot know who edited an object: it sees the result, not the request. The
API server does: at admission, ``request.userInfo`` is the authenticated caller (the
``kubectl --as`` user, Argo CD's ServiceAccount, the UI user whose token the UI forwards). A
MutatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA and on by default in
Kubernetes 1.36: no webhook to run, no certificate, no extra availability dependency) writes it
into annotations on every create and update that changes anything a person changes:

- ``audit.penguinmails.io/changed-by``: the username;
- ``audit.penguinmails.io/changed-by-groups``: the groups, comma-separated;
- ``audit.penguinmails.io/change-log``: the last :data:`LOG_LINES` edits, one line each:
  ``<resourceVersion before the edit> <changed fields, comma-separated> <username>``.

The values are computed from ``request`` and ``oldObject`` only, never from what the caller
sent, so a tenant who writes someone else's name into these annotations gets their own name
back. The change log answers *two edits between reconciles*: when alice changes the tier and
bob the scopes before the operator looks, the operator's one update record names both, each
with the fields they touched.

Writes that change neither spec, labels nor annotations (the operator adding or removing its
finalizer) are not stamped, so the operator never appears as the last editor of a change it
merely reacted to. Deletion cannot be stamped (a DELETE has no new object): the operator
records it with the last editor known and says so; the UI records its own deletions with the
signed-in user.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from pmkeys.api import vocabulary as v
from pmkeys.api.model import TenantApiKeySpec
from pmkeys.api.plan import TenantPlanSpec

PREFIX = "audit.penguinmails.io"
CHANGED_BY = f"{PREFIX}/changed-by"
CHANGED_BY_GROUPS = f"{PREFIX}/changed-by-groups"
CHANGE_LOG = f"{PREFIX}/change-log"
STAMPED = (CHANGED_BY, CHANGED_BY_GROUPS, CHANGE_LOG)
LOG_LINES = 16
POLICY_NAME = "pmkeys-audit-actor"
#: The same stamp on TenantPlans, so plan changes (made by the platform) name their author too.
PLAN_POLICY_NAME = "pmkeys-audit-plan-actor"


def _spec_fields(spec: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in spec.model_fields.items()]


def _changed_expression(spec: type[BaseModel]) -> str:
    """CEL listing the spec fields (and metadata maps) an update changes, in schema order."""
    parts = []
    for f in _spec_fields(spec):
        new, old = f"object.spec.{f}", f"oldObject.spec.{f}"
        differs = f"has({new}) != has({old}) || (has({new}) && {new} != {old})"
        parts.append(f"(({differs}) ? ['{f}'] : [])")
    for meta in ("labels", "annotations"):
        new, old = f"object.metadata.{meta}", f"oldObject.metadata.{meta}"
        parts.append(f"((has({new}) ? {new} : {{}}) != (has({old}) ? {old} : {{}}) ? ['{meta}'] : [])")
    return " + ".join(parts)


def _maps_unchanged(meta: str) -> str:
    new, old = f"object.metadata.{meta}", f"oldObject.metadata.{meta}"
    return f"(has({new}) ? {new} : {{}}) == (has({old}) ? {old} : {{}})"


def policy(
    *, name: str = POLICY_NAME, plural: str = v.PLURAL, spec: type[BaseModel] = TenantApiKeySpec
) -> dict[str, Any]:
    somebody_changed_something = (
        "request.operation == 'CREATE' || object.spec != oldObject.spec || "
        f"!({_maps_unchanged('labels')}) || !({_maps_unchanged('annotations')})"
    )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [v.GROUP],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [plural],
                    }
                ]
            },
            "matchConditions": [{"name": "changes-something", "expression": somebody_changed_something}],
            "variables": _variables(spec),
            "mutations": [
                {
                    "patchType": "ApplyConfiguration",
                    "applyConfiguration": {
                        "expression": (
                            "Object{metadata: Object.metadata{annotations: {"
                            f"'{CHANGED_BY}': variables.user, "
                            f"'{CHANGED_BY_GROUPS}': request.userInfo.groups.join(','), "
                            f"'{CHANGE_LOG}': variables.kept == '' ? variables.entry : "
                            "variables.kept + '\\n' + variables.entry"
                            "}}}"
                        )
                    },
                }
            ],
        },
    }


def _variables(spec: type[BaseModel]) -> list[dict[str, str]]:
    """The editor, the change log before this edit, the changed fields, the new log line."""
    return [
        {"name": "user", "expression": "request.userInfo.username.replace('\\n', ' ')"},
        {
            "name": "oldLog",
            "expression": (
                f"request.operation == 'CREATE' || !has(oldObject.metadata.annotations) || "
                f"!('{CHANGE_LOG}' in oldObject.metadata.annotations) ? '' : "
                f"oldObject.metadata.annotations['{CHANGE_LOG}']"
            ),
        },
        {
            "name": "changed",
            "expression": f"request.operation == 'CREATE' ? ['created'] : ({_changed_expression(spec)})",
        },
        {
            "name": "entry",
            "expression": (
                "(request.operation == 'CREATE' ? '0' : oldObject.metadata.resourceVersion) + ' ' + "
                "(size(variables.changed) == 0 ? '-' : variables.changed.join(',')) + ' ' + variables.user"
            ),
        },
        {
            "name": "kept",
            "expression": (
                f"size(variables.oldLog.split('\\n')) >= {LOG_LINES} ? "
                "variables.oldLog.substring(variables.oldLog.indexOf('\\n') + 1) : variables.oldLog"
            ),
        },
    ]


def binding(name: str = POLICY_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name},
    }


def plan_policy() -> dict[str, Any]:
    return policy(name=PLAN_POLICY_NAME, plural=v.PLAN_PLURAL, spec=TenantPlanSpec)


def manifests() -> list[dict[str, Any]]:
    return [policy(), binding(), plan_policy(), binding(PLAN_POLICY_NAME)]
