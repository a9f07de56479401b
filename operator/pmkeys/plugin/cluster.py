"""The caller's view of the cluster (their kubeconfig, context and namespace), and the one
place API errors become sentences the user can act on."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from pmkeys.api import vocabulary as v
from pmkeys.api.admission import is_no_plan_refusal
from pmkeys.api.plan import NO_PLAN
from pmkeys.tenantapikey import TenantApiKeys

T = TypeVar("T")


class CommandError(Exception):
    """A refusal the user can act on; printed as ``error: <message>`` with exit status 1."""


class Cluster:
    def __init__(self, *, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        try:
            api = config.new_client_from_config(config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except (ConfigException, FileNotFoundError) as exc:
            raise CommandError(f"cannot load kubeconfig: {exc}") from None
        if context:
            active = next((c for c in contexts if c["name"] == context), active)
        self.namespace = namespace or (active or {}).get("context", {}).get("namespace") or "default"
        self.core = client.CoreV1Api(api)
        self.keys = TenantApiKeys(api)

    def _what(self, name: str) -> str:
        return f"tenantapikey {self.namespace}/{name}"

    def get(self, name: str) -> dict[str, Any]:
        return call(lambda: self.keys.get(self.namespace, name), what=self._what(name))

    def objects(self, *, all_namespaces: bool) -> list[dict[str, Any]]:
        namespace = None if all_namespaces else self.namespace
        what = "tenantapikeys" if all_namespaces else f"tenantapikeys in {self.namespace}"
        return call(lambda: self.keys.list(namespace), what=what)

    def plan(self) -> dict[str, Any] | None:
        """The namespace's TenantPlan, or None when it has none."""
        try:
            found: dict[str, Any] = self.keys.custom.get_namespaced_custom_object(
                v.GROUP, v.VERSION, self.namespace, v.PLAN_PLURAL, v.PLAN_NAME
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise CommandError(api_message(exc, f"tenantplan {self.namespace}/{v.PLAN_NAME}")) from None
        return found

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return call(lambda: self.keys.patch(self.namespace, name, body), what=self._what(name))

    def events(self, name: str) -> list[client.CoreV1Event]:
        selector = f"involvedObject.name={name},involvedObject.kind={v.KIND}"
        try:
            events = self.core.list_namespaced_event(self.namespace, field_selector=selector).items
        except ApiException:
            return []  # Events are a convenience in describe; a viewer without access still sees the rest.
        return sorted(events, key=lambda e: event_time(e) or dt.datetime.min.replace(tzinfo=dt.UTC))


def call(fn: Callable[[], T], *, what: str) -> T:
    try:
        return fn()
    except ApiException as exc:
        raise CommandError(api_message(exc, what)) from None


def api_message(exc: ApiException, what: str) -> str:
    try:
        detail = json.loads(exc.body or "{}").get("message", "")
    except ValueError:
        detail = ""
    if exc.status == 404:
        return f"{what} not found"
    if is_no_plan_refusal(detail):
        return f"refused: {NO_PLAN}"
    if exc.status == 403:
        return f"forbidden: {detail or exc.reason}"
    return f"{what}: {detail or exc.reason} (HTTP {exc.status})"


def event_time(event: client.CoreV1Event) -> dt.datetime | None:
    when: dt.datetime | None = event.last_timestamp or event.event_time or event.first_timestamp
    return when
