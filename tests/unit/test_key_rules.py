"""The UI and the plugin answer the same for reveal / rotate / revoke on the same objects.

Both front ends run their real code paths (``TenantKeys`` of the UI, the plugin's command
functions) over one table of TenantApiKey objects, against an in-memory stand-in for the one
TenantApiKey layer's verbs (get, patch) and for the Secret read. Whether each refuses (and
with which words), or goes on to patch the spec or read the Secret, must not depend on which
of them a user happens to use. Before the shared layer, the plugin revealed a key whose
``spec.revoked`` was set and asked to rotate expired, unissued and already-rotating keys.
"""

from __future__ import annotations

import argparse
import copy
import io
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys.plugin.cluster import Cluster, CommandError
from pmkeys.plugin.commands import cmd_reveal, cmd_revoke, cmd_rotate
from pmkeys.ui.errors import UiError
from pmkeys.ui.identity import Access, User
from pmkeys.ui.keys import TenantKeys
from pmkeys.ui.plans import TenantPlanState


def tak(phase: str | None = None, *, revoked: bool = False, counter: int = 0, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "penguinmails.io/v1alpha1",
        "kind": "TenantApiKey",
        "metadata": {"name": "billing", "namespace": "acme", "uid": "u-1", "resourceVersion": "41"},
        "spec": {
            "tenant": "acme",
            "scopes": ["send_email"],
            "revoked": revoked,
            "rotation": {"counter": counter, "gracePeriod": "24h"},
        },
        "status": dict(status),
    }
    if phase:
        body["status"]["phase"] = phase
    return body


ISSUED = {"keyId": "k1", "displayPrefix": "pm_live_AbCd…", "secretName": "billing"}
TABLE = {
    "active": tak("Active", **ISSUED),
    "rotating": tak("Rotating", **ISSUED, previousKeys=[{"keyId": "k0", "notAfter": "2026-12-02T00:00:00Z"}]),
    "fresh": tak(),
    "pending": tak("Pending"),
    "revoked-in-spec-not-yet-acted-on": tak("Active", revoked=True, **ISSUED),
    "revoked": tak("Revoked", revoked=True, keyId=None),
    "expired": tak("Expired", keyId=None),
    "expired-key-still-named": tak("Expired", **ISSUED),
    "rotation-already-asked-for": tak("Active", counter=2, **ISSUED, rotation={"observedCounter": 1}),
    "failed-after-issue": tak("Failed", **ISSUED),
    "active-without-secret-name": tak("Active", keyId="k1"),
}


class Keys:
    """The layer's verbs the front ends call, over one stored object."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.patches: list[dict[str, Any]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.obj)

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(body)
        return copy.deepcopy(self.obj)


class Core:
    """The Secret read of a reveal: records that it happened, answers 'not there'."""

    def __init__(self) -> None:
        self.secret_reads = 0

    def read_namespaced_secret(self, name: str, namespace: str) -> client.V1Secret:
        self.secret_reads += 1
        raise ApiException(status=404, reason="Not Found")


def ui(obj: dict[str, Any]) -> tuple[TenantKeys, Keys, Core]:
    keys = TenantKeys(client.ApiClient(), Access("acme", "acme", can_manage=True, can_reveal=True), User("alice"))
    stored, core = Keys(obj), Core()
    keys._keys, keys._core = stored, core  # type: ignore[assignment]
    # No plan in the namespace: the plan's own checks are tested in tests/plans.
    keys.plan = lambda: TenantPlanState("acme", None)  # type: ignore[method-assign]
    return keys, stored, core


def plugin(obj: dict[str, Any]) -> tuple[Cluster, Keys, Core]:
    cluster = Cluster.__new__(Cluster)
    stored, core = Keys(obj), Core()
    cluster.namespace, cluster.keys, cluster.core = "acme", stored, core  # type: ignore[assignment]
    return cluster, stored, core


def args(**extra: Any) -> argparse.Namespace:
    return argparse.Namespace(name="billing", output="table", wait=False, timeout=1.0, **extra)


def answer_ui(action: str, obj: dict[str, Any]) -> tuple[str, object]:
    keys, stored, core = ui(obj)
    try:
        if action == "reveal":
            keys.reveal("billing")
        elif action == "rotate":
            keys.regenerate("billing", "1h")
        else:
            keys.revoke("billing", "billing")
    except UiError as err:
        if core.secret_reads == 0:
            return "refused", err.message
    return _acted(stored, core)


def answer_plugin(action: str, obj: dict[str, Any]) -> tuple[str, object]:
    cluster, stored, core = plugin(obj)
    try:
        if action == "reveal":
            cmd_reveal(cluster, args(), io.StringIO())
        elif action == "rotate":
            cmd_rotate(cluster, args(grace="1h"), io.StringIO())
        else:
            cmd_revoke(cluster, args(yes=True), io.StringIO())
    except CommandError as err:
        if core.secret_reads == 0:
            return "refused", str(err)
    return _acted(stored, core)


def _acted(stored: Keys, core: Core) -> tuple[str, object]:
    if core.secret_reads:
        return "read the Secret", core.secret_reads
    if stored.patches:
        return "patched", stored.patches
    return "left alone", None


@pytest.mark.parametrize("action", ["reveal", "rotate", "revoke"])
@pytest.mark.parametrize("case", list(TABLE))
def test_ui_and_plugin_answer_the_same(case: str, action: str) -> None:
    assert answer_ui(action, TABLE[case]) == answer_plugin(action, TABLE[case])


# What the one set of rules answers, so the table above is not "both wrong the same way".
EXPECTED = {
    "active": ("read the Secret", "patched", "patched"),
    "rotating": ("read the Secret", "patched", "patched"),
    "fresh": ("refused", "refused", "patched"),
    "pending": ("refused", "refused", "patched"),
    "revoked-in-spec-not-yet-acted-on": ("refused", "refused", "left alone"),
    "revoked": ("refused", "refused", "left alone"),
    "expired": ("refused", "refused", "patched"),
    "expired-key-still-named": ("refused", "refused", "patched"),
    "rotation-already-asked-for": ("read the Secret", "refused", "patched"),
    "failed-after-issue": ("refused", "patched", "patched"),
    "active-without-secret-name": ("refused", "patched", "patched"),
}


@pytest.mark.parametrize("case", list(TABLE))
def test_the_rules(case: str) -> None:
    answers = tuple(answer_plugin(action, TABLE[case])[0] for action in ("reveal", "rotate", "revoke"))
    assert answers == EXPECTED[case]


def test_rotation_patch_is_guarded_by_the_version_read() -> None:
    _, stored, _ = ui(TABLE["active"])
    answer = answer_plugin("rotate", TABLE["active"])
    assert answer == (
        "patched",
        [{"metadata": {"resourceVersion": "41"}, "spec": {"rotation": {"counter": 1, "gracePeriod": "1h"}}}],
    )
    assert stored.patches == []
