"""Small conveniences over the real API server for tests: apply, read, wait."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v
from pmkeys_dev import binaries, bootstrap

T = TypeVar("T")


def wait_for(probe: Callable[[], T], *, timeout: float = 30, interval: float = 0.1, what: str = "condition") -> T:
    """Poll until ``probe`` returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except ApiException as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def plan_quota_counted(kube: Kube, namespace: str) -> bool:
    """Whether the plan's key quota is counted (until then every key is refused)."""
    return bootstrap.plan_quota_counted(kube.api, namespace)


class Kube:
    """The admin view of the local cluster."""

    def __init__(self, api: client.ApiClient, kubeconfig: Path, issued: set[str]) -> None:
        self.api = api
        self.kubeconfig = kubeconfig
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        #: Every plaintext key a test read; the leak scanner looks for these.
        self.issued = issued

    def kubectl(self, *args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = [str(binaries.built("kubectl")), "--kubeconfig", str(self.kubeconfig), *args]
        return subprocess.run(cmd, input=input, capture_output=True, text=True, check=check, timeout=60)

    def apply(self, manifest: dict[str, Any], *, dry_run: bool = False) -> subprocess.CompletedProcess[str]:
        args = ["apply", "--server-side", "--field-manager=tests", "-f", "-"]
        if dry_run:
            args.append("--dry-run=server")
        return self.kubectl(*args, input=yaml.safe_dump(manifest))

    def create_key(self, manifest: dict[str, Any]) -> dict[str, Any]:
        ns = manifest["metadata"]["namespace"]
        return self.custom.create_namespaced_custom_object(v.GROUP, v.VERSION, ns, v.PLURAL, manifest)

    def get_key(self, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(v.GROUP, v.VERSION, namespace, v.PLURAL, name)

    def patch_key(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(v.GROUP, v.VERSION, namespace, v.PLURAL, name, patch)

    def delete_key(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(v.GROUP, v.VERSION, namespace, v.PLURAL, name)

    def key_gone(self, namespace: str, name: str) -> bool:
        try:
            self.get_key(namespace, name)
        except ApiException as exc:
            return exc.status == 404
        return False

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get_key(namespace, name).get("status") or {}

    def wait_phase(self, namespace: str, name: str, phase: str, *, timeout: float = 30) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.status(namespace, name)).get("phase") == phase and s,
            timeout=timeout,
            what=f"{namespace}/{name} phase {phase}",
        )

    def wait_status(
        self,
        namespace: str,
        name: str,
        pred: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 30,
        what: str = "status",
    ) -> dict[str, Any]:
        return wait_for(lambda: (s := self.status(namespace, name)) and pred(s) and s, timeout=timeout, what=what)

    def secret(self, namespace: str, name: str) -> client.V1Secret | None:
        try:
            return self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def plaintext(self, namespace: str, secret_name: str) -> str:
        """The key in a Secret (remembered for the leak scan)."""
        secret = self.secret(namespace, secret_name)
        assert secret is not None, f"Secret {namespace}/{secret_name} does not exist"
        value = base64.b64decode(secret.data[v.SECRET_DATA_KEY]).decode()
        self.issued.add(value)
        return value

    def events(self, namespace: str, name: str | None = None) -> list[client.CoreV1Event]:
        events = self.core.list_namespaced_event(namespace).items
        if name:
            events = [e for e in events if e.involved_object.name == name]
        return sorted(events, key=lambda e: (e.last_timestamp or e.event_time or 0, e.metadata.name))

    def event_reasons(self, namespace: str, name: str) -> list[str]:
        return [e.reason for e in self.events(namespace, name)]
