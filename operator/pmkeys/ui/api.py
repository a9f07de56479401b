"""The JSON API under ``/api/v1``; its OpenAPI document is served at ``/api/v1/openapi.json``.

Resource paths follow Kubernetes' own (``/namespaces/{namespace}/keys/{name}``) so a user can
tell which namespace's RBAC applies. Actions that are not plain CRUD are sub-resources you
POST to: ``regenerate``, ``revoke``, ``reveal``. Every error has one shape (:class:`ErrorBody`)
and names the field it is about.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from kubernetes import client

from pmkeys.api.vocabulary import Phase
from pmkeys.ui.callers import (
    Caller,
    KeyName,
    Namespace,
    api_caller,
    context,
    namespace_access,
    tenant_keys,
    user_client,
)
from pmkeys.ui.context import UiContext
from pmkeys.ui.errors import UiError
from pmkeys.ui.schemas import (
    ErrorBody,
    EventList,
    KeyCreate,
    KeyList,
    KeyView,
    Me,
    NamespaceView,
    PlanView,
    Regenerate,
    RegenerateResult,
    RevealedKey,
    Revoke,
    Vocabulary,
)
from pmkeys.ui.trail import client_address
from pmkeys.ui.views import matches

PREFIX = "/api/v1"
OPENAPI_URL = f"{PREFIX}/openapi.json"


Responses = dict[int | str, dict[str, Any]]


def error_doc(description: str) -> dict[str, Any]:
    """An error answer as the OpenAPI document declares it."""
    return {"model": ErrorBody, "description": description}


ERRORS: Responses = {
    401: error_doc("No or unaccepted credentials."),
    403: error_doc("RBAC does not allow this, the namespace is not one of yours, or the CSRF token is missing."),
    422: error_doc("Malformed input; `fields` names each offending field."),
    502: error_doc("The Kubernetes API could not be reached."),
}
NOT_FOUND: Responses = {404: error_doc("No such key in this namespace.")}
CONFLICT: Responses = {409: error_doc("The key's state does not allow this (already revealed, revoked, not issued).")}

router = APIRouter(prefix=PREFIX, tags=["keys"], responses=ERRORS, generate_unique_id_function=lambda route: route.name)
Ui = Annotated[UiContext, Depends(context)]
CallerDep = Annotated[Caller, Depends(api_caller)]
ClientDep = Annotated[client.ApiClient, Depends(user_client)]


#: Public, static answers (no credentials needed).
public = APIRouter(prefix=PREFIX, tags=["meta"], generate_unique_id_function=lambda route: route.name)


@public.get("/vocabulary", response_model=Vocabulary)
def vocabulary() -> Vocabulary:
    """Environments, scopes, tiers (with their limits), grace periods and phases."""
    return Vocabulary()


@router.get("/me", response_model=Me, tags=["meta"])
def me(caller: CallerDep, ui: Ui) -> Me:
    """Who you are, and the tenant namespaces whose keys you may see (and manage, and reveal)."""
    namespaces = [
        NamespaceView(namespace=a.namespace, tenant=a.tenant, can_manage=a.can_manage, can_reveal=a.can_reveal)
        for a in ui.authorizer.namespaces_for(caller.user)
    ]
    return Me(username=caller.user.username, groups=list(caller.user.groups), namespaces=namespaces)


@router.get("/namespaces/{namespace}", response_model=NamespaceView, tags=["meta"])
def namespace(namespace: Namespace, caller: CallerDep, ui: Ui) -> NamespaceView:
    """Your rights in one tenant namespace."""
    a = namespace_access(ui, caller.user, namespace)
    return NamespaceView(namespace=a.namespace, tenant=a.tenant, can_manage=a.can_manage, can_reveal=a.can_reveal)


@router.get("/namespaces/{namespace}/plan", response_model=PlanView, tags=["plans"])
def get_plan(namespace: Namespace, caller: CallerDep, api: ClientDep, ui: Ui) -> PlanView:
    """The namespace's TenantPlan as its tenant sees it: tier, "3 of 10 keys", the per-key and
    tenant-wide limits, the tenant-wide limit's current use (with how old that figure is) and
    what a new key may ask for. A namespace without a plan answers `hasPlan: false` and says
    what to do. Read with your own identity: 403 when your role may not read tenantplans."""
    keys = tenant_keys(caller, api, ui, namespace)
    return keys.plan().view(len(keys.all()))


@router.get("/namespaces/{namespace}/keys", response_model=KeyList)
def list_keys(
    namespace: Namespace,
    caller: CallerDep,
    api: ClientDep,
    ui: Ui,
    name: Annotated[str, Query(max_length=253, description="Substring of name, display name or prefix.")] = "",
    phase: Annotated[Phase | None, Query(alias="status", description="Only keys in this phase.")] = None,
) -> KeyList:
    """The tenant's keys, revoked ones last."""
    keys = tenant_keys(caller, api, ui, namespace).all()
    return KeyList(items=[k for k in keys if matches(k, name=name, phase=phase)])


@router.post(
    "/namespaces/{namespace}/keys",
    response_model=KeyView,
    status_code=status.HTTP_201_CREATED,
    responses={409: error_doc("A key with this name already exists.")},
)
def create_key(namespace: Namespace, body: KeyCreate, caller: CallerDep, api: ClientDep, ui: Ui) -> KeyView:
    """Create a key. The operator issues it within seconds: poll the key until `phase` is Active,
    then POST `reveal` once to read it. More than the namespace's plan allows is refused with 422
    `plan_exceeded` (each field named, with the plan and the allowed values; see `GET .../plan`),
    a namespace without a plan where the platform requires one with 422 `no_plan`."""
    return tenant_keys(caller, api, ui, namespace).create(body)


@router.get("/namespaces/{namespace}/keys/{name}", response_model=KeyView, responses=NOT_FOUND)
def get_key(namespace: Namespace, name: KeyName, caller: CallerDep, api: ClientDep, ui: Ui) -> KeyView:
    """One key: configuration, status and usage."""
    return tenant_keys(caller, api, ui, namespace).get(name)


@router.get("/namespaces/{namespace}/keys/{name}/events", response_model=EventList, responses=NOT_FOUND)
def key_events(namespace: Namespace, name: KeyName, caller: CallerDep, api: ClientDep, ui: Ui) -> EventList:
    """The key's audit trail (its Kubernetes Events), newest first."""
    keys = tenant_keys(caller, api, ui, namespace)
    current = keys.get(name)
    return EventList(items=keys.events(name, uid=current.uid))


@router.post(
    "/namespaces/{namespace}/keys/{name}/regenerate",
    response_model=RegenerateResult,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, **CONFLICT},
)
def regenerate_key(
    namespace: Namespace, name: KeyName, body: Regenerate, caller: CallerDep, api: ClientDep, ui: Ui
) -> RegenerateResult:
    """Issue a new key; the current one keeps working for `gracePeriod`. Poll the key until
    `keyId` differs from `previousKeyId`, then POST `reveal` once."""
    return tenant_keys(caller, api, ui, namespace).regenerate(name, body.grace_period)


@router.post("/namespaces/{namespace}/keys/{name}/revoke", response_model=KeyView, responses={**NOT_FOUND, **CONFLICT})
def revoke_key(namespace: Namespace, name: KeyName, body: Revoke, caller: CallerDep, api: ClientDep, ui: Ui) -> KeyView:
    """Revoke the key for good (`confirm` must repeat its name). Revoking twice is harmless."""
    return tenant_keys(caller, api, ui, namespace).revoke(name, body.confirm)


@router.post(
    "/namespaces/{namespace}/keys/{name}/reveal", response_model=RevealedKey, responses={**NOT_FOUND, **CONFLICT}
)
def reveal_key(
    namespace: Namespace,
    name: KeyName,
    request: Request,
    response: Response,
    caller: CallerDep,
    api: ClientDep,
    ui: Ui,
) -> RevealedKey:
    """The plaintext key, exactly once per issued key: later calls answer 409 `already_revealed`.
    Every reveal (and every refused one) is in the audit trail; with the audit store down, 503."""
    response.headers["Cache-Control"] = "no-store"
    keys = tenant_keys(caller, api, ui, namespace)
    where = {"namespace": namespace, "tenant": keys.access.tenant, "name": name, "address": client_address(request)}
    try:
        revealed = keys.reveal(name)
    except UiError as err:
        if err.status == 409:
            ui.audit.reveal_refused(caller.user, why=err.message, **where)
        raise
    ui.audit.reveal(caller.user, key_id=revealed.key_id, **where)
    return revealed
