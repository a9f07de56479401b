"""The verifier stays up when Vault or the API server goes away.

* OpenBao stopped for five minutes under steady traffic: keys verified before the outage keep
  passing (stale while unavailable), a key revoked during the outage is refused within a
  second (the watch carries it; Vault is not needed), a key never verified gets 503, and both
  replicas stay ready and say they are serving stale entries.
* kube-apiserver restarted under traffic: both replicas stay ready the whole time (the cache is
  synced; the watch's interruption is within the staleness rules) and every answer is right;
  afterwards the watch carries a revocation again.

Both run two verifier replicas as processes against the fault environment's OpenBao (raft
storage, so its records survive the stop) and its operator.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pmkeys_dev.environment import LocalEnvironment
from tests import report
from tests.faults.conftest import OperatorControl
from tests.faults.test_verifier_faults import Load, bad_answers
from tests.kube import Kube, wait_for
from tests.verifier.conftest import VerifierProcess, Verifiers, issue

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OUTAGE_SECONDS = 300.0
#: A revocation made while Vault is down must be refused by every replica within this.
REVOCATION_BOUND = 1.0


@pytest.fixture
def replicas(fault_env: LocalEnvironment, fkube: Kube) -> Iterator[Verifiers]:
    started = Verifiers(fault_env, fkube.issued)
    yield started
    started.stop_all()


class ReadinessSampler:
    """Polls every replica's /readyz every ``interval`` seconds, remembering each answer."""

    def __init__(self, targets: list[VerifierProcess], *, interval: float = 0.1) -> None:
        self.targets = targets
        self.interval = interval
        #: (monotonic time, {port: ready}) per round
        self.rounds: list[tuple[float, dict[int, bool]]] = []
        self.bodies: dict[int, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self._stop.is_set():
                answers: dict[int, bool] = {}
                for target in self.targets:
                    try:
                        response = http.get(f"{target.url}/readyz")
                        answers[target.port] = response.status_code == 200
                        self.bodies[target.port] = response.json()
                    except httpx.HTTPError:
                        answers[target.port] = False
                self.rounds.append((time.monotonic(), answers))
                self._stop.wait(self.interval)

    def __enter__(self) -> ReadinessSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def rounds_with_none_ready(self) -> int:
        return sum(1 for _, answers in self.rounds if not any(answers.values()))

    def rounds_not_ready(self, port: int) -> int:
        return sum(1 for _, answers in self.rounds if not answers.get(port, False))


def refused_within(replicas: list[VerifierProcess], plaintext: str, bound: float) -> dict[int, float | None]:
    """Seconds until each replica answers 401 for ``plaintext`` (None: not within ``bound``)."""
    started = time.monotonic()
    took: dict[int, float | None] = {r.port: None for r in replicas}
    while time.monotonic() - started < bound + 2 and any(t is None for t in took.values()):
        for replica in replicas:
            if took[replica.port] is None and replica.verify(plaintext, "send_email").status_code == 401:
                took[replica.port] = time.monotonic() - started
        time.sleep(0.02)
    return took


@pytest.mark.timeout(OUTAGE_SECONDS + 240)
def test_openbao_stopped_five_minutes_under_traffic(
    fault_env: LocalEnvironment, control: OperatorControl, replicas: Verifiers, fkube: Kube, ftenant: str
) -> None:
    control.start()
    a, b = replicas.start(), replicas.start()
    steady, _ = issue(fkube, ftenant, "steady", tier="enterprise")
    doomed, _ = issue(fkube, ftenant, "doomed", tier="enterprise")
    cold, _ = issue(fkube, ftenant, "cold", tier="enterprise")
    violations: list[str] = []
    for replica in (a, b):
        for plaintext in (steady, doomed):
            if replica.verify(plaintext, "send_email").status_code != 200:
                violations.append(f"replica {replica.port}: a key failed before the outage")
    with Load([a, b], steady, rps=10) as load, ReadinessSampler([a, b], interval=1.0) as readiness:
        time.sleep(2)
        fault_env.openbao.stop()
        stopped = time.monotonic()
        try:
            time.sleep(45)  # past the 30 s cache TTL: every entry is stale now
            during = {r.port: r.http.get("/readyz").json() for r in (a, b)}
            cold_answer = a.verify(cold, "send_email")
            fkube.patch_key(ftenant, "doomed", {"spec": {"revoked": True}})
            revocation = refused_within([a, b], doomed, REVOCATION_BOUND)
            metrics = a.metrics()
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
            doomed_at_end = [r.verify(doomed, "send_email").status_code for r in (a, b)]
        finally:
            fault_env.openbao.restart()
        outage = time.monotonic() - stopped
        wait_for(
            lambda: all(r.http.get("/readyz").json()["vault"] == "up" for r in (a, b)),
            timeout=30,
            what="replicas see Vault again",
        )
        time.sleep(2)
    for port in (a.port, b.port):
        if bad_answers(load, port):
            violations.append(f"replica {port}: {dict(bad_answers(load, port))} for a key verified before the outage")
        if readiness.rounds_not_ready(port):
            violations.append(
                f"replica {port}: not ready in {readiness.rounds_not_ready(port)} of {len(readiness.rounds)} probes"
            )
        facts = during[port]
        if not (facts["vault"] == "down" and facts["servingStale"] and facts["staleEntries"] >= 2):
            violations.append(f"replica {port}: /readyz during the outage did not say it serves stale entries: {facts}")
    slowest = max((t for t in revocation.values() if t is not None), default=None)
    if any(t is None or t > REVOCATION_BOUND for t in revocation.values()):
        violations.append(f"revocation during the outage: refused after {revocation} s (bound {REVOCATION_BOUND} s)")
    if doomed_at_end != [401, 401]:
        violations.append(f"the revoked key answered {doomed_at_end} at the end of the outage")
    if cold_answer.status_code != 503 or cold_answer.json()["reason"] != "vault_unavailable":
        violations.append(f"a key never verified answered {cold_answer.status_code} during the outage, not 503")
    if "pmkeys_verifier_vault_up 0.0" not in metrics or "pmkeys_verifier_stale_answers_total 0.0" in metrics:
        violations.append("metrics during the outage do not show Vault down and stale answers")
    after = [r.verify(p, "send_email").status_code for r in (a, b) for p in (steady, doomed, cold)]
    if after != [200, 401, 200, 200, 401, 200]:
        violations.append(f"after the outage: steady/doomed/cold answered {after}")
    answered = load.total(a.port) + load.total(b.port)
    report.record(
        f"OpenBao stopped {outage:.0f} s under verifier traffic (2 replicas)",
        violations,
        f"{answered} answers for a key verified before, 0 non-2xx; revocation refused in "
        f"{slowest:.2f} s; unseen key 503; both ready throughout"
        if slowest is not None
        else "",
    )
    assert not violations, violations


def test_api_server_restart_keeps_a_ready_verifier(
    fault_env: LocalEnvironment, control: OperatorControl, replicas: Verifiers, fkube: Kube, ftenant: str
) -> None:
    control.start()
    a, b = replicas.start(), replicas.start()
    steady, _ = issue(fkube, ftenant, "steady", tier="enterprise")
    later, _ = issue(fkube, ftenant, "later", tier="enterprise")
    for replica in (a, b):
        assert replica.verify(later, "send_email").status_code == 200
    with Load([a, b], steady, rps=20) as load, ReadinessSampler([a, b]) as readiness:
        time.sleep(2)
        restart_started = time.monotonic()
        fault_env.restart_apiserver()
        restart_took = time.monotonic() - restart_started
        time.sleep(3)
    violations: list[str] = []
    if readiness.rounds_with_none_ready():
        violations.append(f"no replica ready in {readiness.rounds_with_none_ready()} of {len(readiness.rounds)} probes")
    unready = {p: readiness.rounds_not_ready(p) for p in (a.port, b.port)}
    for port in (a.port, b.port):
        if bad_answers(load, port):
            violations.append(f"replica {port}: {dict(bad_answers(load, port))}")
    # The watch is back: a revocation reaches both replicas again.
    fkube.patch_key(ftenant, "later", {"spec": {"revoked": True}})
    revocation = refused_within([a, b], later, 5.0)
    if any(t is None for t in revocation.values()):
        violations.append(f"after the restart a revocation did not reach every replica: {revocation}")
    answered = load.total(a.port) + load.total(b.port)
    report.record(
        "kube-apiserver restarted under verifier traffic (2 replicas)",
        violations,
        f"restart {restart_took:.1f} s; {answered} answers, 0 failed; {len(readiness.rounds)} readiness probes, "
        f"unready {unready[a.port]}/{unready[b.port]}; revocation after it reached both",
    )
    assert not violations, violations
