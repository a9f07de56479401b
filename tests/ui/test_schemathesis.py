"""schemathesis against the published OpenAPI document (fetched from the running UI): generated
requests, valid and invalid, to every operation, as a real tenant admin, must never get a 5xx,
and every answer must match the document (status codes, schemas, content types).

Bounded: ``MAX_EXAMPLES`` per operation and mode, no deadline per example (the API server and
operator behind it are real). The ``namespace`` path parameter is pinned to the admin's own
namespace, and for half the runs ``name`` to an issued key, so generated bodies reach the code
behind the authorization check rather than stopping at 403 / 404 (those have their own tests).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from kubernetes import client
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from pmkeys.config import UiSettings
from pmkeys.ui.app import create_app
from pmkeys_dev import bootstrap
from tests.kube import Kube
from tests.ui.conftest import TenantUser, UiServer, new_user, wait_issued

pytestmark = [pytest.mark.integration]
TARGET = "fuzz-target"
MAX_EXAMPLES = 25
#: The operations, from the same application offline (the test itself reads the served document).
OPERATIONS = [
    f"{method.upper()} {path}"
    for path, methods in create_app(UiSettings(), kube=client.ApiClient()).openapi()["paths"].items()
    for method in methods
]
PARAMETERLESS = {"GET /api/v1/vocabulary", "GET /api/v1/me"}
SEMANTIC_RULES = {"POST /api/v1/namespaces/{namespace}/keys/{name}/revoke", "POST /api/v1/namespaces/{namespace}/keys"}


@pytest.fixture(scope="module")
def fuzz_user(kube: Kube, ui_server: UiServer, ui_rbac: None) -> Iterator[TenantUser]:
    namespace = f"fuzz-{secrets.token_hex(4)}"
    bootstrap.tenant_namespace(kube.api, namespace, namespace)
    user = new_user(kube, ui_server.url, namespace)
    assert user.http.post(user.keys_url(), json={"name": TARGET, "scopes": ["send_email"]}).status_code == 201
    wait_issued(user, TARGET)
    yield user
    user.http.close()


@pytest.fixture(scope="module")
def api_schema(ui_server: UiServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{ui_server.url}/api/v1/openapi.json")


def test_every_operation_is_covered(api_schema: schemathesis.BaseSchema) -> None:
    served = sorted(op.ok().label for op in api_schema.get_all_operations())
    assert served == sorted(OPERATIONS)


def _runs() -> list[Any]:
    """(operation, valid/invalid, key name pinned to an issued key or generated)."""
    runs = []
    for label in OPERATIONS:
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if label not in PARAMETERLESS else [])
        for mode in modes:
            pins = [True, False] if "{name}" in label and mode is GenerationMode.POSITIVE else [False]
            for pin in pins:
                kind = "valid" if mode is GenerationMode.POSITIVE else "invalid"
                suffix = "-existing-key" if pin else ""
                runs.append(pytest.param(label, mode, pin, id=f"{label} {kind}{suffix}"))
    return runs


@pytest.mark.parametrize(("label", "mode", "pin_name"), _runs())
def test_no_5xx_and_answers_match_the_document(
    api_schema: schemathesis.BaseSchema, fuzz_user: TenantUser, label: str, mode: GenerationMode, pin_name: bool
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None
    pinned = {}
    if "{namespace}" in label and mode is GenerationMode.POSITIVE:
        pinned["namespace"] = fuzz_user.namespace
    if pin_name:
        pinned["name"] = TARGET
    headers = {"Authorization": f"Bearer {fuzz_user.token}"}
    # Rules no JSON Schema can state: revoke's ``confirm`` must repeat the key's name, and a new
    # key's ``expiresAt`` must lie in the future. Schema-valid requests breaking them get 422.
    excluded = [positive_data_acceptance] if label in SEMANTIC_RULES else []

    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned or None))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        statuses.append(case.call_and_validate(headers=headers, excluded_checks=excluded).status_code)

    run()
    reaches_a_key = (mode is GenerationMode.POSITIVE and "{name}" not in label) or (pin_name and "revoke" not in label)
    if reaches_a_key:
        # The generated requests got past authorization and reached the API server at least once.
        assert any(200 <= code < 300 for code in statuses), sorted(set(statuses))
