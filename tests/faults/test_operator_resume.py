"""An operator restart with every key consistent costs no Secret read per object and no bcrypt,
and what changed while it was down is still repaired (real API server, OpenBao, operator).

The restarted operator confirms each object's Secret from its managed-Secret list (one LIST in
pages) instead of reading it; the API server's own request counter is the witness. A Secret
deleted while the operator was down is not in that list, so it is read, and the key replaced.
"""

from __future__ import annotations

import re
import subprocess
import time

import httpx
import pytest

from pmkeys_dev import binaries
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import free_port
from tests.builders import key
from tests.faults.conftest import OperatorControl
from tests.kube import Kube

pytestmark = [pytest.mark.integration]
KEYS = 12


def api_requests(env: LocalEnvironment, verb: str, resource: str) -> float:
    """The API server's count of requests with this verb on this resource, all clients."""
    text = subprocess.run(
        [str(binaries.built("kubectl")), f"--kubeconfig={env.kubeconfig}", "get", "--raw", "/metrics"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    wanted = ("apiserver_request_total{", f'verb="{verb}"', f'resource="{resource}"')
    total = 0.0
    for line in text.splitlines():
        whole = 'subresource="' not in line or 'subresource=""' in line  # not .../status
        if line.startswith(wanted[0]) and all(w in line for w in wanted[1:]) and whole:
            total += float(line.rsplit(" ", 1)[1])
    return total


def reconciles(url: str) -> float:
    text = httpx.get(url, timeout=5).text
    found = re.findall(r"^pmkeys_operator_reconcile_duration_seconds_count\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(n) for n in found)


def metric(url: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", httpx.get(url, timeout=5).text, re.M)
    return float(match.group(1)) if match else 0.0


def restart(control: OperatorControl) -> str:
    port = free_port()
    control.start(PMKEYS_METRICS_PORT=str(port))
    return f"http://127.0.0.1:{port}/metrics"


def wait_reconciled(url: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if reconciles(url) >= count:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the restarted operator reconciled {reconciles(url):.0f} of {count} objects")


def test_a_restart_reads_no_secret_and_repairs_one_deleted_while_down(
    fault_env: LocalEnvironment, control: OperatorControl, fkube: Kube, ftenant: str
) -> None:
    control.start()
    names = [f"resume-{n:02d}" for n in range(KEYS)]
    for name in names:
        fkube.create_key(key(name, ftenant))
    before = {name: fkube.wait_phase(ftenant, name, "Active", timeout=60)["keyId"] for name in names}

    url = restart(control)
    gets = api_requests(fault_env, "GET", "secrets")
    wait_reconciled(url, KEYS)
    assert api_requests(fault_env, "GET", "secrets") == gets, "the restart read Secrets one by one"
    assert metric(url, "pmkeys_operator_bcrypt_operations") == 0
    assert {name: fkube.wait_phase(ftenant, name, "Active")["keyId"] for name in names} == before

    control.stop()
    fkube.core.delete_namespaced_secret(names[0], ftenant)
    url = restart(control)
    wait_reconciled(url, KEYS)
    status = fkube.wait_status(ftenant, names[0], lambda s: s.get("keyId") not in (None, before[names[0]]))
    assert status["phase"] == "Active" and fkube.secret(ftenant, names[0]) is not None
    assert {name: fkube.wait_phase(ftenant, name, "Active")["keyId"] for name in names[1:]} == {
        name: before[name] for name in names[1:]
    }
