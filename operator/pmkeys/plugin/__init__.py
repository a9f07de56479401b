"""``kubectl pmkeys``: everyday commands on TenantApiKeys, as the kubectl plugin ``kubectl-pmkeys``.

    kubectl pmkeys list                      keys in the namespace (-A: every namespace)
    kubectl pmkeys describe NAME             spec, status, conditions, previous keys, Events
    kubectl pmkeys rotate NAME [--grace 1h]  issue a new key now (bumps spec.rotation.counter)
    kubectl pmkeys revoke NAME [--yes]       revoke for good (asks first)
    kubectl pmkeys reveal NAME               print the key, once
    kubectl pmkeys usage [NAME]              requests, errors, last use

Every command acts with the caller's own kubeconfig identity, so RBAC (the chart's
``tenant-admin`` / ``tenant-viewer`` roles) decides what it may do; the plugin never talks to
Vault. Rotation and revocation only change the spec, exactly as the UI and a GitOps commit do,
by the same rules (:mod:`pmkeys.tenantapikey`); the operator does the rest. Output is a human
table by default, ``-o json|yaml`` for scripts. The key itself is printed by ``reveal`` only,
on stdout, and nowhere else.

Modules: :mod:`~.cluster` (the caller's cluster and its errors), :mod:`~.commands` (one
function per command), :mod:`~.output` (tables, ages, describe), :mod:`~.cli` (arguments).
"""

from pmkeys.plugin.cli import main, parser
from pmkeys.plugin.output import age, describe_text, table

__all__ = ["age", "describe_text", "main", "parser", "table"]
