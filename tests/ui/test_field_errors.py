"""Errors name the field a user typed: API-server Status causes and pydantic errors mapped to
the JSON API's / form's field names. Pure, no servers."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from pmkeys.ui.errors import field_name, from_api_exception, validation_error
from pmkeys.ui.schemas import PATTERN_HINTS, KeyCreate, Regenerate


def api_exception(status: int, body: dict[str, object] | str) -> ApiException:
    exc = ApiException(status=status, reason="Whatever")
    exc.body = body if isinstance(body, str) else json.dumps(body)
    return exc


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("spec.rateLimit", "rateLimit"),
        ("spec.scopes[1]", "scopes"),
        ("spec.rotation.interval", "rotationInterval"),
        ("spec.rotation.gracePeriod", "gracePeriod"),
        ("metadata.name", "name"),
        ("spec.expiresAt", "expiresAt"),
        ("spec.secret.labels[app]", "secret.labels"),
        ("spec", "spec"),
    ],
)
def test_api_server_paths_become_form_fields(path: str, field: str) -> None:
    assert field_name(path) == field


def test_invalid_status_keeps_each_cause_with_its_field() -> None:
    status = {
        "kind": "Status",
        "code": 422,
        "reason": "Invalid",
        "message": 'TenantApiKey "x" is invalid: ...',
        "details": {
            "causes": [
                {
                    "reason": "FieldValueInvalid",
                    "field": "spec.rateLimit",
                    "message": "Invalid value: 500: rateLimit must not exceed the tier's ceiling",
                },
                {"reason": "FieldValueNotSupported", "field": "spec.scopes[0]", "message": 'Unsupported value: "x"'},
            ]
        },
    }
    error = from_api_exception(api_exception(422, status), what='key "x"')
    assert (error.status, error.code) == (422, "invalid")
    assert error.message_for("rateLimit") == "Invalid value: 500: rateLimit must not exceed the tier's ceiling"
    assert error.message_for("scopes") == 'Unsupported value: "x"'
    assert error.body()["error"]["fields"][0]["field"] == "rateLimit"


@pytest.mark.parametrize(
    ("status", "reason", "code", "http"),
    [
        (401, "Unauthorized", "unauthenticated", 401),
        (403, "Forbidden", "forbidden", 403),
        (404, "NotFound", "not_found", 404),
        (409, "AlreadyExists", "already_exists", 409),
        (409, "Conflict", "conflict", 409),
        (429, "TooManyRequests", "busy", 429),
        (500, "InternalError", "kubernetes_unavailable", 502),
    ],
)
def test_other_answers_keep_their_meaning(status: int, reason: str, code: str, http: int) -> None:
    error = from_api_exception(
        api_exception(status, {"kind": "Status", "reason": reason, "message": "m"}), what='key "x"'
    )
    assert (error.status, error.code) == (http, code)


def test_already_exists_points_at_the_name_field() -> None:
    error = from_api_exception(api_exception(409, {"reason": "AlreadyExists"}), what='key "billing"')
    assert error.message_for("name") == 'key "billing" already exists'


def test_a_body_that_is_not_a_status_still_gives_an_error() -> None:
    error = from_api_exception(api_exception(403, "<html>proxy says no</html>"), what="k")
    assert error.status == 403 and "k" in error.message


def errors_of(model: type, data: object) -> list[str]:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(data)
    return [f.field for f in validation_error(raised.value.errors()).fields]


def test_pydantic_errors_name_the_api_field() -> None:
    assert errors_of(KeyCreate, {"name": "ok", "scopes": ["x"], "rateLimit": "y"}) == ["scopes", "rateLimit"]
    assert errors_of(KeyCreate, {"name": "ok", "scopes": ["send_email"], "displayName": 3}) == ["displayName"]
    assert errors_of(Regenerate, {"gracePeriod": "2h"}) == ["gracePeriod"]


def test_request_locations_are_dropped_and_unparsable_bodies_named_body() -> None:
    fields = validation_error(
        [
            {"loc": ("body", "scopes", 0), "msg": "Input should be 'send_email'"},
            {"loc": ("path", "namespace"), "msg": "String should match pattern"},
            {"loc": ("query", "status"), "msg": "Input should be 'Active'"},
            {"loc": ("body", 3), "msg": "JSON decode error"},
            {"loc": ("body",), "msg": "Field required"},
            {"loc": ("expiresAt",), "msg": "Value error, must be in the future"},
        ]
    ).fields
    assert [f.field for f in fields] == ["scopes", "namespace", "status", "body", "body", "expiresAt"]
    assert fields[-1].message == "must be in the future"


def test_pattern_errors_say_what_to_type_instead_of_quoting_a_regex() -> None:
    with pytest.raises(ValidationError) as raised:
        KeyCreate.model_validate({"name": "Bad Name", "scopes": ["send_email"], "rotationInterval": "3 weeks"})
    fields = validation_error(raised.value.errors(), pattern_hints=PATTERN_HINTS).fields
    assert [f.message for f in fields] == [PATTERN_HINTS["name"], PATTERN_HINTS["rotationInterval"]]
    assert all("^" not in f.message for f in fields)
