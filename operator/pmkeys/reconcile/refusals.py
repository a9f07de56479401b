"""Why an object cannot be served as it is: not a transient failure, and nothing is written.

A refusal is reported in status and an Event and rechecked later; nothing new is issued. Tenancy
(a key is issued only for its namespace's own tenant), a Secret name that someone else holds,
and a new key that asks for more than its TenantPlan allows are the reasons. Keys issued before
a namespace changed hands are withdrawn (revoked, the Secret removed) by the reconciler: they
must not keep working for the previous tenant.
"""

from __future__ import annotations

from pmkeys.api.vocabulary import Reason
from pmkeys.reconcile.objects import KeyObject


class Refused(Exception):
    """The object cannot be served as it is; status says why."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        #: Status fields to report with the refusal (the keys it withdrew), if any.
        self.fields: dict[str, object] = {}


def tenancy(obj: KeyObject, namespace_tenant: str | None) -> Refused | None:
    """The refusal for a key whose namespace belongs to no tenant or to another one."""
    if namespace_tenant is None:
        return Refused(
            Reason.NAMESPACE_UNBOUND,
            f"namespace {obj.namespace} has no penguinmails.io/tenant label; label it with "
            f"penguinmails.io/tenant={obj.spec.tenant} to issue keys here",
        )
    if namespace_tenant != obj.spec.tenant:
        return Refused(
            Reason.TENANT_MISMATCH,
            f"spec.tenant {obj.spec.tenant!r} does not match namespace {obj.namespace}'s "
            f"tenant {namespace_tenant!r}; keys are only issued for the namespace's own tenant",
        )
    return None


def over_plan(obj: KeyObject) -> Refused | None:
    """``PlanExceeded`` for a key never issued that asks for more than its plan (admission
    refuses these; this catches keys that reached the operator without it, e.g. created before
    the namespace got its plan). Issued keys are not refused after a downgrade: their limits
    follow the plan, and admission refuses raising anything."""
    if obj.plan is None:
        return None
    found = obj.plan.refusals(obj.spec)
    if not found:
        return None
    return Refused(Reason.PLAN_EXCEEDED, "; ".join(found))


def foreign_secret(obj: KeyObject) -> Refused:
    return Refused(
        Reason.SECRET_CONFLICT,
        f"Secret {obj.secret_name} exists and is not owned by this TenantApiKey; "
        "choose another spec.secret.name or delete that Secret",
    )
