"""The web pages: sign-in, the key list, the create form and the key detail.

Server-rendered (Jinja2) so every page works and reads well before any script runs; the
small script in ``static/app.js`` adds what needs a live page: waiting for the operator with
visible progress, the show-once dialog, regenerate and revoke (through the JSON API, with the
session's CSRF token), and filtering the list as you type.

Sign-in is a form that takes a bearer token. The form carries a one-time token matched
against a short-lived cookie, so another site cannot sign a visitor in under its own identity.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from pmkeys.api import vocabulary as v
from pmkeys.api.vocabulary import TIER_RATE_LIMITS, Phase, Scope
from pmkeys.ui import audit
from pmkeys.ui.callers import (
    KeyName,
    Namespace,
    SignInRequired,
    check_csrf,
    context,
    current_session,
    namespace_access,
    origin_allowed,
)
from pmkeys.ui.context import UiContext
from pmkeys.ui.errors import UiError, validation_error
from pmkeys.ui.identity import Access, InvalidToken
from pmkeys.ui.keys import TenantKeys
from pmkeys.ui.plans import form_choices, grace_choices
from pmkeys.ui.schemas import GRACE_CHOICES, PATTERN_HINTS, ROTATION_CHOICES, EventView, KeyCreate
from pmkeys.ui.sessions import CSRF_FIELD, Session, new_token, same_token
from pmkeys.ui.trail import client_address
from pmkeys.ui.views import matches

logger = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
SCOPE_LABELS: dict[str, tuple[str, str]] = {
    Scope.SEND_EMAIL: ("Send email", "Send messages through the PenguinMails API."),
    Scope.READ_ANALYTICS: ("Read analytics", "Read delivery, open and bounce statistics."),
    Scope.MANAGE_CONTACTS: ("Manage contacts", "Create, update and delete contacts and lists."),
}
#: The create form's labels, for the error summary at the top of the form.
FIELD_LABELS: dict[str, str] = {
    "name": "Name",
    "displayName": "Display name",
    "environment": "Environment",
    "scopes": "Scopes",
    "tier": "Tier",
    "rateLimit": "Custom limit",
    "expiresAt": "Expires on",
    "rotationInterval": "Automatic rotation",
    "gracePeriod": "Grace period",
}
PHASE_STYLES: dict[str, str] = {
    Phase.ACTIVE: "ok",
    Phase.ROTATING: "info",
    Phase.PENDING: "pending",
    Phase.REVOKED: "muted",
    Phase.EXPIRED: "muted",
    Phase.FAILED: "bad",
}

router = APIRouter(include_in_schema=False)
Ui = Annotated[UiContext, Depends(context)]


# -- formatting ---------------------------------------------------------------------------
def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def relative(when: dt.datetime | None, *, now: dt.datetime | None = None) -> str:
    """ "3 minutes ago", "in 89 days", "just now"; an em dash for no time."""
    if when is None:
        return "—"
    now = now or dt.datetime.now(dt.UTC)
    seconds = int((when - now).total_seconds())
    size = abs(seconds)
    if size < 45:
        return "just now" if seconds <= 0 else "in a few seconds"
    for limit, unit, length in ((3600, "minute", 60), (86400, "hour", 3600), (86400 * 60, "day", 86400)):
        if size < limit:
            amount = _plural(max(1, round(size / length)), unit)
            break
    else:
        amount = (
            _plural(round(size / (86400 * 30)), "month")
            if size < 86400 * 730
            else _plural(round(size / (86400 * 365)), "year")
        )
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def absolute(when: dt.datetime | None) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if when else ""


def number(value: int) -> str:
    return f"{value:,}"


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters.update(relative=relative, absolute=absolute, number=number, urlquote=quote)
    templates.env.globals.update(
        SCOPE_LABELS=SCOPE_LABELS,
        PHASE_STYLES=PHASE_STYLES,
        FIELD_LABELS=FIELD_LABELS,
        TIER_RATE_LIMITS=TIER_RATE_LIMITS,
        GRACE_CHOICES=GRACE_CHOICES,
        ROTATION_CHOICES=ROTATION_CHOICES,
        PHASES=list(Phase),
        ENVIRONMENTS=list(v.Environment),
        CSRF_FIELD=CSRF_FIELD,
    )
    return templates


templates = make_templates()


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    context.setdefault("user", session.user if session else None)
    context.setdefault("csrf", session.csrf if session else "")
    return templates.TemplateResponse(request, name, context, status_code=status_code)


# -- sessions -----------------------------------------------------------------------------
def page_session(request: Request, ui: Ui) -> Session:
    session = current_session(request, ui)
    if session is None:
        raise SignInRequired()
    request.state.session = session
    return session


SessionDep = Annotated[Session, Depends(page_session)]


def _local_path(target: str) -> str:
    """Only same-site paths are followed after sign-in (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _cookie_options(ui: UiContext) -> dict[str, Any]:
    return {"httponly": True, "samesite": "strict", "secure": ui.settings.served_over_tls, "path": "/"}


@router.get("/healthz")
def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@router.get("/signin")
def signin_form(request: Request, ui: Ui, next: str = "/", reason: str = "") -> Response:
    nonce = new_token()
    response = render(request, "signin.html", nonce=nonce, next=_local_path(next), reason=reason, error="")
    response.set_cookie(ui.signin_cookie, nonce, max_age=1800, **_cookie_options(ui))
    return response


@router.post("/signin")
def signin(
    request: Request,
    ui: Ui,
    token: Annotated[str, Form(max_length=16384)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    def again(error: str, status_code: int) -> Response:
        nonce = new_token()
        response = render(
            request, "signin.html", status_code, nonce=nonce, next=_local_path(next), error=error, reason=""
        )
        response.set_cookie(ui.signin_cookie, nonce, max_age=1800, **_cookie_options(ui))
        return response

    if not origin_allowed(request):
        # Login CSRF: another site posting its own token would sign the visitor in as itself.
        return again("Sign-in refused: the form was sent from another site. Open this page directly.", 403)
    expected = request.cookies.get(ui.signin_cookie, "")
    if not expected or not same_token(expected, csrf_token):
        return again("The sign-in form expired. Please paste your token again.", 403)
    token = token.strip()
    if not token:
        return again("Paste a token to sign in.", 422)
    try:
        user = ui.authenticator.authenticate(token)
    except InvalidToken:
        ui.audit.sign_in_failed(client_address(request), "the cluster did not accept the token")
        return again("The cluster did not accept this token. Check that it is complete and not expired.", 401)
    session = ui.sessions.create(user, token)
    ui.audit.signed_in(user, client_address(request))
    logger.info("%s signed in", user.username)
    response = RedirectResponse(_local_path(next), status_code=303)
    response.set_cookie(ui.cookie, session.id, **_cookie_options(ui))
    response.delete_cookie(ui.signin_cookie, path="/", secure=ui.settings.served_over_tls, httponly=True)
    return response


@router.post("/signout")
def signout(
    request: Request, ui: Ui, session: SessionDep, csrf_token: Annotated[str, Form(max_length=256)] = ""
) -> Response:
    check_csrf(request, session, csrf_token)
    ui.sessions.delete(session.id)
    response = RedirectResponse("/signin?reason=signed-out", status_code=303)
    response.delete_cookie(ui.cookie, path="/", secure=ui.settings.served_over_tls, httponly=True)
    return response


# -- pages --------------------------------------------------------------------------------
def _access(ui: UiContext, session: Session, namespace: str) -> Access:
    return namespace_access(ui, session.user, namespace)


def _common(ui: UiContext, session: Session, access: Access | None = None) -> dict[str, Any]:
    return {"namespaces": ui.authorizer.namespaces_for(session.user), "access": access}


@router.get("/")
def home(request: Request, ui: Ui, session: SessionDep) -> Response:
    namespaces = ui.authorizer.namespaces_for(session.user)
    if len(namespaces) == 1:
        return RedirectResponse(f"/ns/{namespaces[0].namespace}/keys", status_code=303)
    return render(request, "home.html", namespaces=namespaces, access=None)


@router.get("/ns/{namespace}/keys")
def key_list(
    request: Request,
    ui: Ui,
    session: SessionDep,
    namespace: Namespace,
    q: Annotated[str, Query(max_length=253)] = "",
    status: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    access = _access(ui, session, namespace)
    phase = Phase(status) if status in {p.value for p in Phase} else None
    with ui.client_for(session.token) as api:
        tenant = TenantKeys(api, access, session.user)
        keys = tenant.all()
        state = tenant.plan_or_none()
    shown = {k.name for k in keys if matches(k, name=q, phase=phase)}
    return render(
        request,
        "list.html",
        keys=keys,
        plan=state.view(len(keys)) if state is not None else None,
        shown=shown,
        q=q,
        status=phase.value if phase else "",
        **_common(ui, session, access),
    )


def _create_page(
    request: Request,
    ui: Ui,
    session: Session,
    access: Access,
    *,
    form: dict[str, Any],
    error: UiError | None = None,
    status_code: int = 200,
) -> Response:
    with ui.client_for(session.token) as api:
        tenant = TenantKeys(api, access, session.user)
        state = tenant.plan_or_none()
        view = state.view(len(tenant.all())) if state is not None else None
    choices = form_choices(state.plan if state is not None else None)
    for name, default in choices.defaults.items():
        form.setdefault(name, default)
    return render(
        request, "create.html", status_code, form=form, error=error, plan=view, choices=choices,
        **_common(ui, session, access),
    )  # fmt: skip


@router.get("/ns/{namespace}/keys/new")
def create_form(request: Request, ui: Ui, session: SessionDep, namespace: Namespace) -> Response:
    access = _access(ui, session, namespace)
    return _create_page(request, ui, session, access, form={})


@router.post("/ns/{namespace}/keys/new")
def create(
    request: Request,
    ui: Ui,
    session: SessionDep,
    namespace: Namespace,
    csrf_token: Annotated[str, Form(max_length=256)] = "",
    name: Annotated[str, Form(max_length=300)] = "",
    display_name: Annotated[str, Form(alias="displayName", max_length=300)] = "",
    environment: Annotated[str, Form(max_length=32)] = "live",
    scopes: Annotated[list[str] | None, Form()] = None,
    tier: Annotated[str, Form(max_length=32)] = "starter",
    rate_limit: Annotated[str, Form(alias="rateLimit", max_length=32)] = "",
    expires_at: Annotated[str, Form(alias="expiresAt", max_length=64)] = "",
    rotation_interval: Annotated[str, Form(alias="rotationInterval", max_length=64)] = "0",
    grace_period: Annotated[str, Form(alias="gracePeriod", max_length=64)] = "",
) -> Response:
    check_csrf(request, session, csrf_token)
    access = _access(ui, session, namespace)
    form: dict[str, Any] = {
        "name": name.strip(),
        "displayName": display_name.strip(),
        "environment": environment,
        "scopes": scopes or [],
        "tier": tier,
        "rateLimit": rate_limit.strip(),
        "expiresAt": expires_at.strip(),
        "rotationInterval": rotation_interval.strip() or "0",
        "gracePeriod": grace_period.strip(),
    }
    payload = {
        **form,
        "rateLimit": form["rateLimit"] or None,
        "gracePeriod": form["gracePeriod"] or None,
        "expiresAt": f"{form['expiresAt']}T23:59:59Z" if form["expiresAt"] else None,
    }
    try:
        request_model = KeyCreate.model_validate(payload)
    except ValidationError as exc:
        invalid = validation_error(exc.errors(), pattern_hints=PATTERN_HINTS)
        return _create_page(request, ui, session, access, form=form, error=invalid, status_code=422)
    try:
        with ui.client_for(session.token) as api:
            created = TenantKeys(api, access, session.user).create(request_model)
    except UiError as err:
        if err.status in (403, 409, 422):  # 403: admission (the plan, the key quota) or RBAC
            return _create_page(request, ui, session, access, form=form, error=err, status_code=err.status)
        raise
    return RedirectResponse(f"/ns/{namespace}/keys/{quote(created.name)}?issued=new", status_code=303)


@router.get("/ns/{namespace}/keys/{name}")
def key_detail(
    request: Request,
    ui: Ui,
    session: SessionDep,
    namespace: Namespace,
    name: KeyName,
    issued: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    access = _access(ui, session, namespace)
    with ui.client_for(session.token) as api:
        keys = TenantKeys(api, access, session.user)
        key = keys.get(name)
        try:
            events: list[EventView] | None = keys.events(name, uid=key.uid)
        except UiError as err:
            if err.status != 403:
                raise
            events = None  # RBAC allows the key but not its Events: show the rest of the page
        state = keys.plan_or_none()
    trail, trail_error = ui.audit.views(audit.trail_query(namespace, name=name, limit=50))
    return render(
        request,
        "detail.html",
        key=key,
        events=events,
        trail=trail,
        trail_error=trail_error,
        awaiting=issued == "new",
        graces=grace_choices(state.plan if state is not None else None),
        **_common(ui, session, access),
    )
