"""Shared fixtures: one real local environment per test session.

The session starts etcd, kube-apiserver, kube-controller-manager and OpenBao once (a few
seconds), the operator once (bcrypt cost 4 to keep the suite fast; the benchmarks use 12), and
gives every test its own tenant namespace. At the end it stops everything, checks that no
process is left, and runs the leak scan over everything the run produced.

Runs that start a real node (tests/node/) change the host; the session-wide leftover check
compares the host with a snapshot taken at start: no interface, nftables table, mount,
cgroup, hard-wired directory, sysctl change or detached process (containerd shims) may remain.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pmkeys.kubeclient import api_client
from pmkeys_dev import bootstrap, hostnet, postgres
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess, free_port, pid_alive
from tests import leakscan
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView

TEST_BCRYPT_COST = "4"
_ISSUED: set[str] = set()


@pytest.fixture(scope="session")
def env() -> Iterator[LocalEnvironment]:
    environment = LocalEnvironment()
    findings: list[leakscan.Finding] = []
    try:
        environment.start()
        yield environment
        findings = leak_scan(environment)
    finally:
        pids = [p.pid for p in environment.controlplane.processes if p.pid]
        environment.stop()
        leftovers = [pid for pid in pids if pid_alive(pid)]
        environment.cleanup()
        assert not leftovers, f"processes left behind: {leftovers}"
        assert not environment.workdir.exists()
    assert not findings, "plaintext keys leaked: " + "; ".join(map(str, findings))


@contextlib.contextmanager
def scanned_environment(**options: str) -> Iterator[LocalEnvironment]:
    """An environment of its own (for a module that restarts or breaks servers), stopped at the
    end and leak-scanned like the session's."""
    environment = LocalEnvironment(**options)
    findings: list[leakscan.Finding] = []
    try:
        environment.start()
        yield environment
        findings = leak_scan(environment)
    finally:
        environment.stop()
        environment.cleanup()
    assert not findings, "plaintext keys leaked: " + "; ".join(map(str, findings))


def leak_scan(environment: LocalEnvironment) -> list[leakscan.Finding]:
    """Scan what a still-running environment produced for every key seen during the run: the
    cluster, the logs, Vault, the audit store (every record) and its server's log; the audit
    stream is a file in the environment's directory, scanned with the logs."""
    api = api_client(str(environment.kubeconfig))
    vault_dump = VaultView(environment.openbao.client()).dump_everything()
    extra = leakscan.audit_texts(environment.postgres.dsn(), environment.postgres.workdir / "logs")
    return leakscan.scan_environment(api, environment.workdir, vault_dump, _ISSUED, extra=extra)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    texts = [report.longreprtext, report.capstdout, report.capstderr, report.caplog]
    leakscan.REPORT_TEXTS.extend(t for t in texts if t)


@pytest.fixture(scope="session")
def kube(env: LocalEnvironment) -> Kube:
    return Kube(api_client(str(env.kubeconfig)), env.kubeconfig, _ISSUED)


@pytest.fixture(scope="session")
def vault(env: LocalEnvironment) -> VaultView:
    return VaultView(env.openbao.client())


@pytest.fixture(scope="session")
def operator(env: LocalEnvironment) -> ServerProcess:
    """The operator as a separate process, logging into OpenBao with its ServiceAccount; ready
    once its own metrics say it is the active writer, so no test pays for its start-up."""
    port = free_port()
    leakscan.METRICS_URLS.append(f"http://127.0.0.1:{port}/metrics")
    return env.start_component(
        "operator",
        name="operator",
        ready_url=f"http://127.0.0.1:{port}/metrics",
        ready_text="pmkeys_operator_active_writer 1.0",
        PMKEYS_BCRYPT_COST=TEST_BCRYPT_COST,
        PMKEYS_METRICS_PORT=str(port),
    )


@pytest.fixture
def tenant(kube: Kube) -> Iterator[str]:
    """A fresh namespace labelled for a fresh tenant; its name is the tenant id."""
    name = f"t-{secrets.token_hex(4)}"
    bootstrap.tenant_namespace(kube.api, name, name)
    yield name


@pytest.fixture
def namespace_factory(kube: Kube) -> Iterator[object]:
    def make(tenant: str | None, *, prefix: str = "ns") -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        labels = {"penguinmails.io/tenant": tenant} if tenant else {}
        kube.core.create_namespace({"metadata": {"name": name, "labels": labels}})
        return name

    yield make


def issued_keys() -> set[str]:
    return _ISSUED


__all__ = ["Kube", "Path", "VaultView", "issued_keys", "wait_for"]


def _our_temp_dirs() -> set[Path]:
    # PostgreSQL's, as root, live in the shared /tmp under a name that carries ours.
    return set(Path(tempfile.gettempdir()).glob("pmkeys-*")) | set(postgres.workdirs_outside_tempdir())


_HOST: dict[str, hostnet.HostSnapshot] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Give this run a temp dir of its own, so leftovers are ours and not a parallel run's."""
    base = Path(tempfile.mkdtemp(prefix="pmkeys-tests-"))
    tempfile.tempdir = str(base)
    os.environ["TMPDIR"] = str(base)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Snapshot the host when this run starts a real node (only then: a parallel run's node
    is none of this run's business)."""
    if any("tests/node/" in item.nodeid for item in session.items) and os.geteuid() == 0 and shutil.which("nft"):
        _HOST["before"] = hostnet.HostSnapshot()


def _host_leftovers() -> list[str]:
    before = _HOST.get("before")
    return before.leftovers(under=Path(tempfile.gettempdir())) if before else []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No test may leave a process or a temp dir behind: fail the run if one did."""
    deadline = time.monotonic() + 15
    children = psutil.Process().children(recursive=True)
    while children and time.monotonic() < deadline:
        time.sleep(0.2)
        children = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    leftovers = sorted(str(p) for p in _our_temp_dirs())
    if not leftovers:
        shutil.rmtree(tempfile.gettempdir(), ignore_errors=True)
    problems = [f"process {c.pid} ({' '.join(c.cmdline()[:3])})" for c in children]
    problems += [f"temp dir {p}" for p in leftovers]
    problems += _host_leftovers()
    if problems:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            "left behind by the tests: " + "; ".join(problems), red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    from tests import report

    lines = report.render()
    if lines:
        terminalreporter.section("fault scenarios")
        for line in lines:
            terminalreporter.write_line(line)
