"""Who is calling, and with which Kubernetes identity: FastAPI dependencies.

Two ways in. The JSON API accepts ``Authorization: Bearer <token>`` directly: nothing is
stored, and CSRF does not apply (a browser never attaches that header on its own). The pages
and their scripts use the session cookie; then every state-changing request must carry the
session's CSRF token, and a present ``Origin`` header must name this host.

A session re-checks its token with TokenReview every ``authz_cache_seconds``, so deleting a
ServiceAccount (or its token expiring) ends the sessions opened with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from kubernetes import client

from pmkeys.ui.context import UiContext
from pmkeys.ui.errors import UiError
from pmkeys.ui.identity import Access, InvalidToken, User
from pmkeys.ui.keys import TenantKeys
from pmkeys.ui.schemas import KEY_NAME_PATTERN, NAMESPACE_PATTERN
from pmkeys.ui.sessions import CSRF_HEADER, Session, same_token

Namespace = Annotated[
    str,
    Path(
        min_length=1,
        max_length=63,
        pattern=NAMESPACE_PATTERN,
        description="A tenant namespace (labelled penguinmails.io/tenant).",
    ),
]
KeyName = Annotated[
    str, Path(min_length=1, max_length=253, pattern=KEY_NAME_PATTERN, description="The TenantApiKey's name.")
]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
bearer = HTTPBearer(auto_error=False, description="A token the cluster accepts (e.g. `kubectl create token`).")


class SignInRequired(Exception):
    """A page needs a session; the handler redirects to the sign-in page."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Caller:
    user: User
    token: str = field(repr=False)
    session: Session | None = None


def context(request: Request) -> UiContext:
    ui: UiContext = request.app.state.ui
    return ui


def origin_allowed(request: Request) -> bool:
    """No Origin header (same-origin form posts from old browsers, API clients), or this host."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def current_session(request: Request, ui: UiContext) -> Session | None:
    """The request's live session, its token re-checked when due; None when there is none."""
    session = ui.sessions.get(request.cookies.get(ui.cookie))
    if session is None:
        return None
    if ui.sessions.needs_check(session, ui.settings.authz_cache_seconds):
        try:
            ui.authenticator.authenticate(session.token)
        except InvalidToken:
            ui.sessions.delete(session.id)
            return None
        ui.sessions.mark_checked(session)
    return session


def check_csrf(request: Request, session: Session, given: str | None) -> None:
    if not origin_allowed(request):
        raise UiError(403, "csrf", "cross-site request refused (the Origin header names another site)")
    if not same_token(session.csrf, given):
        raise UiError(403, "csrf", "missing or wrong CSRF token; reload the page and try again")


def api_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ui: Annotated[UiContext, Depends(context)],
) -> Caller:
    if credentials is not None and credentials.credentials:
        try:
            user = ui.authenticator.authenticate(credentials.credentials)
        except InvalidToken:
            raise UiError(401, "unauthenticated", "the cluster does not accept this bearer token") from None
        return Caller(user, credentials.credentials)
    session = current_session(request, ui)
    if session is None:
        raise UiError(401, "unauthenticated", "sign in, or send Authorization: Bearer <token>")
    if request.method not in SAFE_METHODS:
        check_csrf(request, session, request.headers.get(CSRF_HEADER))
    return Caller(session.user, session.token, session)


def user_client(
    caller: Annotated[Caller, Depends(api_caller)], ui: Annotated[UiContext, Depends(context)]
) -> Iterator[client.ApiClient]:
    """A Kubernetes client acting as the caller, closed when the request ends."""
    api = ui.client_for(caller.token)
    try:
        yield api
    finally:
        api.close()


def namespace_access(ui: UiContext, user: User, namespace: str) -> Access:
    access = ui.authorizer.access(user, namespace)
    if access is None:
        # The same answer whether the namespace exists or not: nothing about other tenants leaks.
        raise UiError(403, "forbidden", f"you may not manage API keys in namespace {namespace}")
    return access


def tenant_keys(caller: Caller, api: client.ApiClient, ui: UiContext, namespace: str) -> TenantKeys:
    return TenantKeys(api, namespace_access(ui, caller.user, namespace), caller.user)
