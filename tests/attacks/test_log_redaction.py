"""Issue 12, logging: no log level prints a key.

The chart offers DEBUG, and at DEBUG the Kubernetes client's REST logger prints response bodies
(Secrets included) in some versions that ``kubernetes>=30`` allows. The version installed here
does not, so the first test makes the records such a version makes (the REST logger's own
name, a Secret body with the key base64-encoded, as the API server returns it) inside a real
``pmkeys`` process set up exactly as every component sets up its logging, and reads what that
process wrote. The second runs the verifier itself at DEBUG, sends it keys every way a client
can, and scans its log.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from tests import leakscan
from tests.kube import Kube
from tests.verifier.conftest import Plaintext, Verifiers, issue, random_key

EMIT = """
import base64, json, logging, sys
from pmkeys import cli

key = sys.argv[1]
cli._setup_logging(sys.argv[2])
secret = {"kind": "Secret", "data": {"api-key": base64.b64encode(key.encode()).decode()}}
rest = logging.getLogger("kubernetes.client.rest")
rest.debug("response body: %s", json.dumps(secret))
rest.warning("response body: %s", json.dumps(secret))
logging.getLogger("pmkeys.anything").debug("presented %s", key)
logging.getLogger("urllib3.connectionpool").debug("headers {'authorization': 'Bearer %s'}", key)
try:
    raise ValueError(f"bad key {key}")
except ValueError:
    logging.getLogger("pmkeys.anything").exception("failed")
logging.getLogger("pmkeys.anything").info("still logging after all that")
"""


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_no_level_lets_a_key_into_the_log(level: str) -> None:
    key = random_key()
    done = subprocess.run([sys.executable, "-c", EMIT, key, level], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-2000:].replace(key, "<key>")
    assert "still logging after all that" in output, "the records were made and written"
    findings = leakscan.scan([(f"pmkeys logging at {level}", output)], {key})
    assert not findings, [str(f) for f in findings]


def test_a_level_below_debug_is_refused_with_the_allowed_values() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from pmkeys import cli; cli._setup_logging('TRACE')"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in done.stderr


@pytest.fixture
def verifiers(env: LocalEnvironment, kube: Kube, operator: object) -> Iterator[Verifiers]:
    started = Verifiers(env, kube.issued)
    yield started
    started.stop_all()


@pytest.mark.integration
def test_the_verifier_at_debug_logs_no_key(env: LocalEnvironment, verifiers: Verifiers, kube: Kube) -> None:
    ns = "t-logs-" + random_key()[8:14].lower()
    bootstrap.tenant_namespace(kube.api, ns, ns)
    plaintext, _ = issue(kube, ns, "chatty")
    unknown: Plaintext = random_key("test")
    kube.issued.add(unknown)
    verifier = verifiers.start(PMKEYS_LOG_LEVEL="DEBUG", PMKEYS_GATEWAY="envoy")
    for key in (plaintext, unknown):
        verifier.verify(key, "send_email")
        verifier.http.post("/v1/verify", content=json.dumps({"key": key, "scope": "everything"}))
        verifier.http.post("/v1/verify", content=f'{{"key": "{key}"')
        verifier.http.get("/v1/authz/v1/messages", headers={"Authorization": f"Bearer {key}"})
        verifier.http.get(f"/v1/authz/v1/contacts/{key}", headers={"X-API-Key": key})
        verifier.http.post("/v1/keys/kabcdefghijk/errors", headers={"X-API-Key": key})
        verifier.anonymous.get("/v1/authz/v1/messages", headers={"X-API-Key": base64.b64encode(key.encode()).decode()})
    log = verifier.proc.log_path.read_text()
    assert "DEBUG" in log, "the verifier logged at DEBUG"
    findings = leakscan.scan([("verifier log at DEBUG", log)], {plaintext, unknown})
    assert not findings, [str(f) for f in findings]
