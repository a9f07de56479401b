"""A verifier replica stopped under traffic fails no request (real process, OpenBao, API server).

What a user notices during a rolling update: nothing. Kubernetes sends SIGTERM and removes the
pod from the endpoints at the same moment, and traffic keeps arriving for a while from
endpoints that have not caught up. The verifier answers all of it for ``PMKEYS_DRAIN_SECONDS``
(out of readiness, asking keep-alive clients to reconnect), then stops. Without the drain the
same traffic meets a closed port — the second test shows the first can fail.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from pmkeys.verify.draining import GRACEFUL_SHUTDOWN_SECONDS
from tests.deploy.conftest import Helm, by_kind, env_of
from tests.kube import Kube
from tests.verifier.conftest import CALLER_HEADERS, Plaintext, VerifierProcess, Verifiers, issue

pytestmark = [pytest.mark.integration]
DRAIN = 3.0
#: How long after SIGTERM the traffic keeps coming (endpoints that have not caught up).
LAG = 2.0


@pytest.fixture
def api_key(kube: Kube, tenant: str) -> Plaintext:
    return issue(kube, tenant, "drained", tenant=tenant, tier="enterprise")[0]


class Traffic:
    """Four keep-alive clients verifying one key every 40 ms each (well under the enterprise
    tier's 1000 per minute over the test), until stopped."""

    def __init__(self, verifier: VerifierProcess, api_key: str) -> None:
        self.statuses: list[int] = []
        self.closing = 0
        self._stop = threading.Event()
        self._url, self._key = verifier.url, api_key
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]

    def _run(self) -> None:
        with httpx.Client(base_url=self._url, headers=CALLER_HEADERS, timeout=10) as http:
            while not self._stop.is_set():
                try:
                    answer = http.post("/v1/verify", json={"key": self._key, "scope": "send_email"})
                except httpx.HTTPError:
                    self.statuses.append(599)
                    self._stop.wait(0.04)
                    continue
                self.statuses.append(answer.status_code)
                self.closing += answer.headers.get("connection") == "close"
                self._stop.wait(0.04)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


def readiness(verifier: VerifierProcess) -> tuple[int, dict[str, object]]:
    answer = verifier.anonymous.get("/readyz")
    return answer.status_code, answer.json()


def test_sigterm_under_traffic_fails_no_request(verifiers: Verifiers, api_key: Plaintext) -> None:
    verifier = verifiers.start(PMKEYS_DRAIN_SECONDS=str(DRAIN))
    assert verifier.verify(api_key, "send_email").status_code == 200
    with Traffic(verifier, api_key) as traffic:
        time.sleep(0.5)
        before = len(traffic.statuses)
        sent = time.monotonic()
        os.killpg(verifier.proc.pid or 0, signal.SIGTERM)
        time.sleep(0.3)
        status, body = readiness(verifier)
        assert status == 503, "a draining replica must leave the rotation at once"
        assert body["checks"]["serving"] is False  # type: ignore[index]
        time.sleep(LAG - 0.3)
        during = len(traffic.statuses) - before
    assert during > 40, f"only {during} requests reached the draining replica"
    failed = [s for s in traffic.statuses if s != 200]
    assert not failed, f"{len(failed)} of {len(traffic.statuses)} answers not 200 during the drain: {set(failed)}"
    assert traffic.closing > 0, "keep-alive clients were not asked to reconnect"
    while verifier.proc.running() and time.monotonic() - sent < DRAIN + 15:
        time.sleep(0.1)
    stopped = time.monotonic() - sent
    assert not verifier.proc.running(), "the drain did not end"
    assert stopped >= DRAIN - 0.2, f"stopped {stopped:.1f} s after SIGTERM, before its {DRAIN} s drain"


def test_without_the_drain_the_same_traffic_fails(verifiers: Verifiers, api_key: Plaintext) -> None:
    """The control: ``PMKEYS_DRAIN_SECONDS=0`` stops accepting at SIGTERM."""
    verifier = verifiers.start(PMKEYS_DRAIN_SECONDS="0")
    with Traffic(verifier, api_key) as traffic:
        time.sleep(0.5)
        os.killpg(verifier.proc.pid or 0, signal.SIGTERM)
        time.sleep(LAG)
    assert any(s != 200 for s in traffic.statuses), "requests after SIGTERM did not fail without a drain"


@pytest.mark.parametrize("drain", [5, 30])
def test_the_chart_gives_the_drain_time_to_finish(drain: int) -> None:
    """The kubelet SIGKILLs after terminationGracePeriodSeconds: it must cover the drain, the 10 s
    for in-flight requests and the last usage flush."""
    docs = Helm(None).template("--set", f"verifier.drainSeconds={drain}")
    pod = by_kind(docs, "Deployment")["pmkeys-verifier"]["spec"]["template"]["spec"]
    assert env_of(pod["containers"][0])["PMKEYS_DRAIN_SECONDS"] == str(drain)
    assert pod["terminationGracePeriodSeconds"] >= drain + GRACEFUL_SHUTDOWN_SECONDS + 5
