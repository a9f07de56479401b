"""The audit trail page: a tenant namespace's records, with filters and CSV/JSON export links.

The key page shows one key's trail too; both read the store through the
UI's reader (:mod:`pmkeys.ui.trail`), selected by namespace after the same RBAC check as the
key list. The exports are the JSON API's (:mod:`pmkeys.ui.audit`), which accept the session.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from pmkeys.audit.records import Action
from pmkeys.ui import audit
from pmkeys.ui.callers import Namespace
from pmkeys.ui.pages import SessionDep, Ui, _access, _common, render

router = APIRouter(include_in_schema=False)


@router.get("/ns/{namespace}/audit")
def audit_page(
    request: Request,
    ui: Ui,
    session: SessionDep,
    namespace: Namespace,
    action: Annotated[str, Query(max_length=32)] = "",
    actor: Annotated[str, Query(max_length=256)] = "",
    key: Annotated[str, Query(max_length=253)] = "",
    since: Annotated[str, Query(max_length=32)] = "",
    until: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    """The tenant namespace's audit trail with filters and CSV/JSON export."""
    access = _access(ui, session, namespace)
    chosen = [Action(action)] if action in {a.value for a in Action} else None
    query = audit.trail_query(
        namespace, name=key, action=chosen, actor=actor, since=_day(since), until=_day(until, end=True), limit=500
    )
    trail, trail_error = ui.audit.views(query)
    filters = {"action": action if chosen else "", "actor": actor, "key": key, "since": since, "until": until}
    export_query = urlencode({k: val for k, val in {**filters, "name": key}.items() if val and k != "key"})
    return render(
        request,
        "audit.html",
        trail=trail,
        trail_error=trail_error,
        filters=filters,
        actions=[a.value for a in Action],
        export_query=export_query,
        **_common(ui, session, access),
    )


def _day(text: str, *, end: bool = False) -> dt.datetime | None:
    """A date from the filter form (YYYY-MM-DD, UTC); the end of that day for ``until``."""
    try:
        day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return day + dt.timedelta(days=1) if end else day
