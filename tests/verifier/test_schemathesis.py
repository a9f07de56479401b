"""schemathesis against the verifier's published OpenAPI document (fetched from a running
verifier): generated requests, valid and invalid, to every operation must never get a 5xx and
every answer must match the document. For half the valid runs the ``key`` field or header is
pinned to a real issued key, so generated requests reach the code behind the key check.

Bounded: ``MAX_EXAMPLES`` per operation and mode, no deadline per example (real servers).
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection
from tests.kube import Kube
from tests.verifier.conftest import CALLER_HEADERS, VerifierProcess, Verifiers, issue

from pmkeys_dev import bootstrap

pytestmark = [pytest.mark.integration]
MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def verifier(module_verifiers: Verifiers) -> VerifierProcess:
    return module_verifiers.start()


@pytest.fixture(scope="module")
def issued_key(kube: Kube) -> str:
    ns = f"t-{secrets.token_hex(4)}"
    bootstrap.tenant_namespace(kube.api, ns, ns)
    plaintext, _ = issue(kube, ns, "fuzzed", tier="enterprise", scopes=["send_email", "read_analytics"])
    return plaintext


@pytest.fixture(scope="module")
def api_schema(verifier: VerifierProcess) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{verifier.url}/openapi.json", headers=CALLER_HEADERS)


def _labels(schema: schemathesis.BaseSchema) -> list[str]:
    return sorted(op.ok().label for op in schema.get_all_operations())


def test_the_document_lists_the_verification_operations(api_schema: schemathesis.BaseSchema) -> None:
    labels = _labels(api_schema)
    assert "POST /v1/verify" in labels
    assert any(label.startswith("GET /v1/authz") for label in labels)


@pytest.mark.parametrize(
    ("mode", "pin_key"),
    [(GenerationMode.POSITIVE, True), (GenerationMode.POSITIVE, False), (GenerationMode.NEGATIVE, False)],
    ids=["valid-issued-key", "valid", "invalid"],
)
def test_no_5xx_and_answers_match_the_document(
    api_schema: schemathesis.BaseSchema, issued_key: str, mode: GenerationMode, pin_key: bool
) -> None:
    failures: list[str] = []
    for operation in (op.ok() for op in api_schema.get_all_operations()):
        label = operation.label

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            headers: dict[str, Any] = dict(CALLER_HEADERS)
            if pin_key:
                headers["Authorization"] = f"Bearer {issued_key}"
                if isinstance(case.body, dict) and "key" in case.body:
                    case.body["key"] = issued_key
            response = case.call(headers=headers)
            if response.status_code >= 500 and response.status_code != 503:
                failures.append(f"{case.operation.label}: {response.status_code}")
            # An oversized invalid body is refused by the size guard (413) before validation (422);
            # schemathesis's list of rejection codes lacks 413, so that one check is skipped then.
            excluded = [negative_data_rejection] if response.status_code == 413 else []
            case.validate_response(response, excluded_checks=excluded)

        try:
            run()
        except Unsatisfiable:
            # Operations without inputs (/healthz, /metrics) have no invalid form to generate.
            assert mode is GenerationMode.NEGATIVE, label
    assert not failures, failures
