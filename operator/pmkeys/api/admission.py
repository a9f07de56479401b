"""The admission policy that holds every TenantApiKey to its tenant's TenantPlan.

A ValidatingAdmissionPolicy (CEL inside the API server: no webhook to run, nothing to be down)
whose parameter is the ``TenantPlan`` named ``plan`` in the request's own namespace. Whatever
writes the key — ``kubectl``, Argo CD, the UI (which uses the user's own identity), the plugin —
goes through it, so a tenant cannot raise its tier, its limit, its rotation frequency or its
grace period past the plan, nor use a scope or environment the plan leaves out. Each refusal
names the field, the plan and the allowed values.

What admission cannot see is enforced elsewhere, and says so:

* **how many keys** a namespace holds: a ResourceQuota (``count/tenantapikeys.penguinmails.io``)
  that the operator keeps equal to the plan's ``maxKeys`` — the API server counts objects, CEL
  cannot;
* **a namespace without a plan** (``plans.withoutPlan: Deny``): no CEL runs without its
  parameter, so a second policy, :data:`REQUIRED_POLICY_NAME`, is bound with ``Deny`` for a
  missing plan, under a binding whose name tells the tenant what to do (the plan policy's own
  binding then says ``Allow``: it applies where there is a plan); the UI and the plugin replace
  that refusal with a plain sentence;
* **keys in grace** and **manual rotations** (a counter bump needs the time of the last
  rotation; CEL has no clock): the operator ends the oldest grace beyond ``maxKeysInGrace``.

On UPDATE only the fields that change are checked, so after a downgrade a key that was within
the old plan can still be revoked, renamed or lowered; raising anything is checked against the
plan in force. Defaults come from the tier table (:data:`~pmkeys.api.vocabulary.TIER_PLANS`),
rendered into the CEL here, so the policy and the Python resolution in :mod:`pmkeys.api.plan`
never disagree. ``python -m pmkeys.api.crd`` writes the policy next to the CRDs.
"""

from __future__ import annotations

from typing import Any

from pmkeys.api import vocabulary as v

POLICY_NAME = f"{v.PLAN_PLURAL}.{v.GROUP}"
_RANK = {tier.value: rank for rank, tier in enumerate(v.Tier)}
_UNITS = "{'d': 86400, 'h': 3600, 'm': 60, 's': 1}"


def _by_tier(values: dict[str, Any]) -> str:
    def literal(value: Any) -> str:
        if isinstance(value, (tuple, list)):
            return "[" + ", ".join(f"'{x}'" for x in value) + "]"
        if isinstance(value, str):
            return f"'{value}'"
        return str(value)

    return "{" + ", ".join(f"'{tier}': {literal(val)}" for tier, val in values.items()) + "}"


def _default(field: str, attr: str) -> str:
    """``params.spec.<field>`` or the tier's default for it."""
    table = _by_tier({tier.value: getattr(plan, attr) for tier, plan in v.TIER_PLANS.items()})
    return f"has(params.spec.{field}) ? params.spec.{field} : {table}[params.spec.tier]"


def _seconds(expr: str) -> str:
    """CEL turning a duration string of ``DURATION_PATTERN`` (``90d``, ``1h30m``, ``0``) into seconds."""
    return (
        f"({expr}).findAll('[0-9]+[dhms]')"
        f".map(p, int(p.substring(0, size(p) - 1)) * {_UNITS}[p.substring(size(p) - 1)]).sum()"
    )


def _changed(path: str) -> str:
    """True on CREATE, or when ``object.<path>`` differs from the stored object's."""
    return f"request.operation == 'CREATE' || object.?{path} != oldObject.?{path}"


VARIABLES: list[dict[str, str]] = [
    {"name": "plan", "expression": "'TenantPlan ' + params.metadata.namespace + '/' + params.metadata.name"},
    {"name": "planTier", "expression": "params.spec.tier"},
    {"name": "keyTier", "expression": "has(object.spec.tier) ? object.spec.tier : params.spec.tier"},
    {"name": "tierRank", "expression": _by_tier(_RANK)},
    {
        "name": "allowedTiers",
        "expression": "[" + ", ".join(f"'{t}'" for t in _RANK) + "].filter(t, variables.tierRank[t] <= "
        "variables.tierRank[params.spec.tier])",
    },
    {"name": "keyCeiling", "expression": _default("keyRateLimit", "key_rate_limit")},
    {"name": "scopes", "expression": _default("scopes", "scopes")},
    {"name": "environments", "expression": _default("environments", "environments")},
    {"name": "minInterval", "expression": _default("minRotationInterval", "min_rotation_interval")},
    {"name": "maxGrace", "expression": _default("maxGracePeriod", "max_grace_period")},
    {"name": "intervalSeconds", "expression": _seconds("object.spec.rotation.interval")},
    {"name": "graceSeconds", "expression": _seconds("object.spec.rotation.gracePeriod")},
]

VALIDATIONS: list[dict[str, str]] = [
    {
        "expression": f"!({_changed('spec.tier')}) || variables.tierRank[variables.keyTier] <= "
        "variables.tierRank[variables.planTier]",
        "messageExpression": "'spec.tier: ' + variables.keyTier + ' is above the ' + variables.planTier + "
        "' plan of this tenant (' + variables.plan + '); allowed: ' + variables.allowedTiers.join(', ')",
        "reason": "Forbidden",
    },
    {
        "expression": f"!({_changed('spec.rateLimit')}) || !has(object.spec.rateLimit) || "
        "object.spec.rateLimit <= variables.keyCeiling",
        "messageExpression": "'spec.rateLimit: ' + string(object.spec.rateLimit) + ' exceeds the per-key ceiling of "
        "the ' + variables.planTier + ' plan (' + variables.plan + '); allowed: 1 to ' + "
        "string(variables.keyCeiling) + ' requests per minute'",
        "reason": "Forbidden",
    },
    {
        "expression": f"!({_changed('spec.scopes')}) || object.spec.scopes.all(s, s in variables.scopes)",
        "messageExpression": "'spec.scopes: ' + object.spec.scopes.filter(s, !(s in variables.scopes)).join(', ') + "
        "' not in the ' + variables.planTier + ' plan (' + variables.plan + '); allowed: ' + "
        "variables.scopes.join(', ')",
        "reason": "Forbidden",
    },
    {
        "expression": f"!({_changed('spec.environment')}) || object.spec.environment in variables.environments",
        "messageExpression": "'spec.environment: ' + object.spec.environment + ' not in the ' + variables.planTier + "
        "' plan (' + variables.plan + '); allowed: ' + variables.environments.join(', ')",
        "reason": "Forbidden",
    },
    {
        "expression": f"!({_changed('spec.rotation.interval')}) || variables.intervalSeconds == 0 || "
        f"variables.intervalSeconds >= {_seconds('variables.minInterval')}",
        "messageExpression": "'spec.rotation.interval: ' + object.spec.rotation.interval + ' is shorter than the ' + "
        "variables.planTier + ' plan allows (' + variables.plan + '); allowed: 0 (no scheduled rotation) or at "
        "least ' + variables.minInterval",
        "reason": "Forbidden",
    },
    {
        "expression": f"!({_changed('spec.rotation.gracePeriod')}) || "
        f"variables.graceSeconds <= {_seconds('variables.maxGrace')}",
        "messageExpression": "'spec.rotation.gracePeriod: ' + object.spec.rotation.gracePeriod + ' is longer than "
        "the ' + variables.planTier + ' plan allows (' + variables.plan + '); allowed: 0 to ' + variables.maxGrace",
        "reason": "Forbidden",
    },
]


def policy() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": v.API_VERSION, "kind": v.PLAN_KIND},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [v.GROUP],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [v.PLURAL],
                    }
                ]
            },
            "variables": VARIABLES,
            "validations": VALIDATIONS,
        },
    }


#: The policy that refuses keys in a namespace without a plan. The API server's refusal for a
#: missing parameter is fixed text ("failed to configure binding: no params found for policy
#: binding with `Deny` parameterNotFoundAction") and no CEL runs without the parameter, but the
#: text names the policy and the binding — so their names say what is wrong and what to do.
REQUIRED_POLICY_NAME = f"tenantplan-required.{v.GROUP}"
REQUIRED_BINDING_NAME = f"ask-the-platform-team-for-a-tenantplan-named-{v.PLAN_NAME}.{v.GROUP}"


def required_policy() -> dict[str, Any]:
    """Matches what the plan policy matches; its one check always holds once there is a plan:
    only its binding's ``Deny`` for a missing plan ever refuses."""
    body = policy()
    body["metadata"] = {"name": REQUIRED_POLICY_NAME}
    body["spec"].pop("variables")
    body["spec"]["validations"] = [
        {
            "expression": f"params.metadata.name == '{v.PLAN_NAME}'",
            "message": f"this namespace has no TenantPlan named '{v.PLAN_NAME}'; ask the platform team for one",
        }
    ]
    return body


def policies() -> list[dict[str, Any]]:
    return [policy(), required_policy()]


def bindings(*, without_plan: str = "Deny") -> list[dict[str, Any]]:
    """The plan policy's binding (the plan named ``plan`` in the request's namespace; without
    one it does not apply) and, with ``without_plan="Deny"``, the binding that refuses keys in a
    namespace without a plan, saying so. ``Allow``: such a namespace is held to no plan."""
    if without_plan not in ("Deny", "Allow"):
        raise ValueError(f"without_plan must be Deny or Allow, got {without_plan!r}")
    found = [_binding(POLICY_NAME, POLICY_NAME, "Allow")]
    if without_plan == "Deny":
        found.append(_binding(REQUIRED_BINDING_NAME, REQUIRED_POLICY_NAME, "Deny"))
    return found


def _binding(name: str, policy_name: str, not_found: str) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": policy_name,
            "validationActions": ["Deny"],
            "paramRef": {"name": v.PLAN_NAME, "parameterNotFoundAction": not_found},
        },
    }


def is_no_plan_refusal(message: str) -> bool:
    """Whether an API-server refusal is the one for a namespace without a plan."""
    return REQUIRED_POLICY_NAME in message and "no params found" in message
