"""The audit trail's JSON API: where people (and scripts) read it.

``GET /api/v1/namespaces/{ns}/audit`` (the tenant namespace's trail) and
``…/keys/{name}/audit`` (one key's), filtered by action, actor and time, as JSON or CSV. The
caller must be allowed to view the namespace (the same RBAC check as the key list); records
are selected by the namespace they happened in, a fact no tenant writes. What the UI records
itself is in :mod:`pmkeys.ui.trail`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response

from pmkeys.audit import export
from pmkeys.audit.records import Action, StoredRecord
from pmkeys.audit.store import Query as TrailQuery
from pmkeys.ui.api import ERRORS, Responses, error_doc
from pmkeys.ui.callers import Caller, KeyName, Namespace, api_caller, context, namespace_access
from pmkeys.ui.context import UiContext
from pmkeys.ui.schemas import AuditList
from pmkeys.ui.trail import record_view

MAX_LIMIT = 1000
#: PostgreSQL text holds no NUL: a filter with one is refused (422) instead of failing in the store.
NO_NUL = "^[^\\x00]*$"


# -- the JSON API ------------------------------------------------------------------------------
#: Besides the shared errors: the CSV download and the audit store being unavailable.
AUDIT_RESPONSES: Responses = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON, or CSV with format=csv."},
    503: error_doc("No audit store is configured, or it cannot be reached."),
}
router = APIRouter(prefix="/api/v1", tags=["audit"], responses={**ERRORS, **AUDIT_RESPONSES})
CallerDep = Annotated[Caller, Depends(api_caller)]
Ui = Annotated[UiContext, Depends(context)]
ActionFilter = Annotated[list[Action] | None, Query(description="Only these actions (repeatable).")]
ActorFilter = Annotated[str, Query(max_length=256, pattern=NO_NUL, description="Only records of this username.")]
TimeFilter = Annotated[dt.datetime | None, Query(description="RFC 3339 time.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Before = Annotated[int | None, Query(ge=1, description="Page on: only records with a smaller seq.")]
Format = Annotated[Literal["json", "csv"], Query(description="json (default) or csv (a download).")]


def trail_query(
    namespace: str,
    *,
    name: str = "",
    action: list[Action] | None = None,
    actor: str = "",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    before: int | None = None,
) -> TrailQuery:
    return TrailQuery(
        namespaces=(namespace,), name=name, actions=tuple(str(a) for a in action or ()), actor=actor,
        since=since, until=until, limit=limit, before_seq=before,
    )  # fmt: skip


def _answer(records: list[StoredRecord], fmt: str, filename: str) -> Any:
    if fmt == "csv":
        headers = {"Content-Disposition": f'attachment; filename="{filename}.csv"'}
        return Response(export.to_csv(records), media_type="text/csv; charset=utf-8", headers=headers)
    items = [record_view(r) for r in records]
    return AuditList(items=items, next_before=items[-1].seq if items else None)


@router.get("/namespaces/{namespace}/audit", response_model=AuditList)
def namespace_audit(
    namespace: Namespace,
    caller: CallerDep,
    ui: Ui,
    action: ActionFilter = None,
    actor: ActorFilter = "",
    name: Annotated[str, Query(max_length=253, pattern=NO_NUL, description="Only records of this TenantApiKey.")] = "",
    since: TimeFilter = None,
    until: TimeFilter = None,
    limit: Limit = 100,
    before: Before = None,
    format: Format = "json",
) -> Any:
    """The namespace's audit trail, newest first: every key operation, who did it, the outcome."""
    namespace_access(ui, caller.user, namespace)
    query = trail_query(
        namespace, name=name, action=action, actor=actor, since=since, until=until, limit=limit, before=before
    )
    return _answer(ui.audit.query(query), format, f"audit-{namespace}")


@router.get("/namespaces/{namespace}/keys/{name}/audit", response_model=AuditList)
def key_audit(
    namespace: Namespace,
    name: KeyName,
    caller: CallerDep,
    ui: Ui,
    action: ActionFilter = None,
    actor: ActorFilter = "",
    since: TimeFilter = None,
    until: TimeFilter = None,
    limit: Limit = 100,
    before: Before = None,
    format: Format = "json",
) -> Any:
    """One key's audit trail (every key it ever had under this name), newest first."""
    namespace_access(ui, caller.user, namespace)
    query = trail_query(
        namespace, name=name, action=action, actor=actor, since=since, until=until, limit=limit, before=before
    )
    return _answer(ui.audit.query(query), format, f"audit-{namespace}-{name}")
