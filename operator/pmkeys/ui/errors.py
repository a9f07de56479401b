"""Errors the UI shows: one shape for the JSON API and the pages, each naming its field.

The API server is the validator of record (the CRD's OpenAPI schema and CEL rules): a 422 it
returns carries ``details.causes[].field`` such as ``spec.rateLimit`` or ``spec.scopes[1]``.
:func:`from_api_exception` maps those paths to the names the JSON API and the create form use
(``rateLimit``, ``scopes``), so a message appears next to the field it is about. Other API
server answers keep their meaning: 403 stays 403 (RBAC said no), 404 stays 404, 409 stays 409.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from pmkeys.api.admission import is_no_plan_refusal
from pmkeys.api.plan import NO_PLAN

#: API-server field paths (without list indexes) → the JSON API / form field names.
FIELD_NAMES: dict[str, str] = {
    "metadata.name": "name",
    "spec.displayName": "displayName",
    "spec.environment": "environment",
    "spec.scopes": "scopes",
    "spec.tier": "tier",
    "spec.rateLimit": "rateLimit",
    "spec.expiresAt": "expiresAt",
    "spec.rotation.interval": "rotationInterval",
    "spec.rotation.gracePeriod": "gracePeriod",
    "spec.rotation.counter": "counter",
    "spec.revoked": "revoked",
}
_INDEX = re.compile(r"\[[^\]]*\]")


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


@dataclass
class UiError(Exception):
    """A refusal to show the user: HTTP status, a stable code, a sentence, per-field messages."""

    status: int
    code: str
    message: str
    fields: list[FieldError] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "fields": [{"field": f.field, "message": f.message} for f in self.fields],
            }
        }

    def message_for(self, name: str) -> str | None:
        """The first message about field ``name`` (for rendering next to a form field)."""
        return next((f.message for f in self.fields if f.field == name), None)


def field_name(path: str) -> str:
    """``spec.scopes[1]`` → ``scopes``; unknown paths come back without the ``spec.`` prefix."""
    bare = _INDEX.sub("", path).strip(".")
    if bare in FIELD_NAMES:
        return FIELD_NAMES[bare]
    for known, name in FIELD_NAMES.items():
        if bare.startswith(known + "."):
            return name
    return bare.removeprefix("spec.")


def _status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _causes(status: dict[str, Any]) -> list[FieldError]:
    causes = (status.get("details") or {}).get("causes") or []
    errors = []
    for cause in causes:
        if not isinstance(cause, dict):
            continue
        path = str(cause.get("field") or "")
        message = str(cause.get("message") or cause.get("reason") or "invalid value")
        errors.append(FieldError(field_name(path) if path else "", message))
    return errors


def from_api_exception(exc: ApiException, *, what: str) -> UiError:
    """Translate an API-server error about ``what`` (e.g. ``key "billing"``) into a UiError."""
    status = _status_body(exc)
    message = str(status.get("message") or exc.reason or "the Kubernetes API refused the request")
    code = exc.status or 502
    if code == 401:
        return UiError(401, "unauthenticated", "your token is no longer accepted by the cluster; sign in again")
    if code in (400, 403, 422) and is_no_plan_refusal(message):
        return UiError(422, "no_plan", NO_PLAN, [FieldError("", NO_PLAN)])
    if code == 403:
        return UiError(403, "forbidden", f"you are not allowed to do this to {what}: {message}")
    if code == 404:
        return UiError(404, "not_found", f"{what} does not exist")
    if code == 409:
        if status.get("reason") == "AlreadyExists":
            taken = f"{what} already exists"
            return UiError(409, "already_exists", taken, [FieldError("name", taken)])
        return UiError(409, "conflict", f"{what} was changed by someone else meanwhile; try again")
    if code in (400, 422):
        fields = _causes(status)
        summary = "; ".join(f"{f.field}: {f.message}" if f.field else f.message for f in fields[:5])
        return UiError(422, "invalid", summary or message, fields)
    if code == 429:
        return UiError(429, "busy", "the Kubernetes API is busy; try again in a moment")
    return UiError(502, "kubernetes_unavailable", f"the Kubernetes API answered {code} for {what}")


_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def validation_error(errors: Sequence[Any], *, pattern_hints: Mapping[str, str] | None = None) -> UiError:
    """A 422 from pydantic's error list (request bodies, query and path parameters, forms).

    ``loc`` ``("body", "scopes", 0)`` names the field ``scopes``; a body that is not JSON at all
    is reported against ``body``. ``pattern_hints`` replaces pydantic's regex-quoting message
    for a field with a sentence a person can act on.
    """
    hints = pattern_hints or {}
    fields = []
    for error in errors:
        loc = list(error.get("loc", ()))
        where = str(loc.pop(0)) if loc and loc[0] in _LOCATIONS else "body"
        named = next((part for part in loc if isinstance(part, str)), where)
        message = str(error.get("msg") or "invalid value").removeprefix("Value error, ")
        if error.get("type") == "string_pattern_mismatch" and named in hints:
            message = hints[named]
        fields.append(FieldError(named, message))
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields[:5]) or "invalid input"
    return UiError(422, "invalid", summary, fields)


def unavailable(what: str) -> UiError:
    """The API server could not be reached at all."""
    return UiError(502, "kubernetes_unavailable", f"the Kubernetes API could not be reached for {what}")


T = TypeVar("T")


def kube_call(fn: Callable[[], T], *, what: str) -> T:
    """Call the Kubernetes API as the user; its refusals and outages as UiErrors about ``what``."""
    try:
        return fn()
    except ApiException as exc:
        raise from_api_exception(exc, what=what) from None
    except HTTPError:
        raise unavailable(what) from None
