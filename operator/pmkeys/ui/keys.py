"""What a tenant user can do to their keys, done with the user's own Kubernetes identity.

Every method calls the API server with the client built from the caller's bearer token, so
RBAC decides each action; nothing here writes Vault or a Secret's data. Create is a
``TenantApiKey`` create; regenerate bumps ``spec.rotation.counter`` (and sets the grace period)
in a patch guarded by the resourceVersion it read; revoke sets ``spec.revoked``; reveal is
:func:`pmkeys.reveal.reveal_once`, which reads the Secret and marks it seen in one guarded
patch, so each key is shown once.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.reveal import AlreadyRevealed, NotIssuedYet, reveal_once
from pmkeys.tenantapikey import (
    Refusal,
    TenantApiKey,
    TenantApiKeys,
    reveal_refusal,
    revoke_needed,
    revoke_patch,
    rotate_patch,
    rotate_refusal,
)
from pmkeys.ui.errors import FieldError, UiError, kube_call
from pmkeys.ui.identity import REQUEST_TIMEOUT, Access, User
from pmkeys.ui.plans import TenantPlanState, read_plan, refuse_beyond, refuse_grace
from pmkeys.ui.schemas import EventView, GracePeriod, KeyCreate, KeyView, RegenerateResult, RevealedKey
from pmkeys.ui.views import build_manifest, event_views, key_view

logger = logging.getLogger(__name__)
PATCH_ATTEMPTS = 3


class TenantKeys:
    """The keys of one tenant namespace, seen and changed as ``user``."""

    def __init__(self, api: client.ApiClient, access: Access, user: User) -> None:
        self.access = access
        self.namespace = access.namespace
        self.user = user
        self._api = api
        self._keys = TenantApiKeys(api, timeout=REQUEST_TIMEOUT)
        self._core = client.CoreV1Api(api)

    def _what(self, name: str) -> str:
        return f'key "{name}" in namespace {self.namespace}'

    # -- reading ------------------------------------------------------------------------
    def raw(self, name: str) -> dict[str, Any]:
        return kube_call(lambda: self._keys.get(self.namespace, name), what=self._what(name))

    def get(self, name: str) -> KeyView:
        return key_view(self.raw(name))

    def all(self) -> list[KeyView]:
        """Every key of the namespace, revoked ones last."""
        listing = kube_call(lambda: self._keys.list(self.namespace), what=f"the keys of namespace {self.namespace}")
        views = [key_view(item) for item in listing]
        return sorted(views, key=lambda k: (k.revoked, k.name))

    def events(self, name: str, *, uid: str = "") -> list[EventView]:
        selector = f"involvedObject.kind={v.KIND},involvedObject.name={name}"
        if uid:
            selector += f",involvedObject.uid={uid}"
        listing = kube_call(
            lambda: self._core.list_namespaced_event(
                self.namespace, field_selector=selector, _request_timeout=REQUEST_TIMEOUT
            ),
            what=f"the audit trail of {self._what(name)}",
        )
        return event_views(listing.items, uid=uid)

    def plan(self) -> TenantPlanState:
        """The namespace's TenantPlan, read as the user (403 when their role may not)."""
        return read_plan(self._api, self.namespace)

    def plan_or_none(self) -> TenantPlanState | None:
        """The plan, or None when the user's role may not read it (admission still applies it)."""
        try:
            return self.plan()
        except UiError as err:
            if err.status == 403:
                return None
            raise

    # -- changing -----------------------------------------------------------------------
    def create(self, request: KeyCreate) -> KeyView:
        """Create the key, refused first (422, naming each field) if it asks for more than the
        namespace's plan allows; admission judges again whatever passes."""
        manifest = build_manifest(request, namespace=self.namespace, tenant=self.access.tenant)
        plan = self.plan_or_none() if self.access.can_manage else None  # else RBAC answers first
        if plan is not None and plan.plan is not None:
            refuse_beyond(plan.plan, manifest, keys=len(self.all()))
        created = kube_call(lambda: self._keys.create(self.namespace, manifest), what=self._what(request.name))
        logger.info("%s created %s", self.user.username, self._what(request.name))
        return key_view(created)

    def _patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return kube_call(lambda: self._keys.patch(self.namespace, name, body), what=self._what(name))

    def regenerate(self, name: str, grace: GracePeriod) -> RegenerateResult:
        """Ask the operator for a new key now; the current one keeps working for ``grace``.

        The patch carries the resourceVersion it read, so two concurrent regenerations cannot
        both bump the counter from the same value; a lost race is retried with fresh state.
        """
        for _ in range(PATCH_ATTEMPTS - 1):
            try:
                return self._regenerate_once(name, grace)
            except UiError as err:
                if err.code != "conflict":
                    raise
        return self._regenerate_once(name, grace)

    def _regenerate_once(self, name: str, grace: GracePeriod) -> RegenerateResult:
        raw = self.raw(name)
        key = TenantApiKey.from_object(raw)
        _refuse(rotate_refusal(key))
        plan = self.plan_or_none() if self.access.can_manage else None
        refuse_grace(plan.plan if plan is not None else None, raw, grace)
        assert key.key_id is not None
        patched = self._patch(name, rotate_patch(key, grace=grace))
        logger.info("%s regenerated %s (grace %s)", self.user.username, self._what(name), grace)
        return RegenerateResult(
            previous_key_id=key.key_id, counter=key.counter + 1, grace_period=grace, key=key_view(patched)
        )

    def revoke(self, name: str, confirm: str) -> KeyView:
        if confirm != name:
            raise UiError(
                422,
                "invalid",
                "type the key's name to confirm the revocation",
                [FieldError("confirm", f'type "{name}" exactly to confirm')],
            )
        current = self.raw(name)
        if not revoke_needed(TenantApiKey.from_object(current)):
            return key_view(current)
        revoked = self._patch(name, revoke_patch())
        logger.info("%s revoked %s", self.user.username, self._what(name))
        return key_view(revoked)

    def reveal(self, name: str) -> RevealedKey:
        """The plaintext key, once; 409 when it was shown before or is not there yet."""
        obj = self.raw(name)
        key = TenantApiKey.from_object(obj)
        _refuse(reveal_refusal(key))
        assert key.secret_name is not None
        secret = key.secret_name
        try:
            revealed = kube_call(lambda: reveal_once(self._core, self.namespace, secret), what=f"the Secret of {name}")
        except AlreadyRevealed:
            raise UiError(
                409,
                "already_revealed",
                f"{self._what(name)} was already shown once and is never shown again; regenerate it to get a new key",
            ) from None
        except NotIssuedYet:
            raise UiError(409, "not_issued", f"{self._what(name)} has not been issued yet") from None
        logger.info("%s revealed %s (key id %s)", self.user.username, self._what(name), revealed.key_id)
        return RevealedKey(
            key_id=revealed.key_id or key.key_id or "",
            api_key=revealed.plaintext,
            environment=key_view(obj).environment,
        )


def _refuse(refusal: Refusal | None) -> None:
    """A rule's refusal as the API's 409, with the rule's code."""
    if refusal is not None:
        raise UiError(409, str(refusal.code), refusal.message)
