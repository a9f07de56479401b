"""Least-privilege Vault policies for each component, rendered for a mount and prefix.

One definition serves the local environment, the tests, ``pmkeys vault-policy`` and the
Helm chart's documentation, so the policy users install is the one the tests prove.
"""

from __future__ import annotations


def operator_policy(*, mount: str, prefix: str) -> str:
    """The operator writes records, owner indexes and the pepper (never deletes data in place;
    ``delete`` on metadata is for retention of long-revoked records)."""
    return (
        f'path "{mount}/data/{prefix}/*" {{\n  capabilities = ["create", "read", "update"]\n}}\n'
        f'path "{mount}/metadata/{prefix}/*" {{\n  capabilities = ["read", "list", "delete"]\n}}\n'
    )


def verifier_policy(*, mount: str, prefix: str) -> str:
    """The verifier reads key records and the pepper, and nothing else."""
    return (
        f'path "{mount}/data/{prefix}/keys/*" {{\n  capabilities = ["read"]\n}}\n'
        f'path "{mount}/data/{prefix}/pepper" {{\n  capabilities = ["read"]\n}}\n'
    )


POLICIES = {"operator": operator_policy, "verifier": verifier_policy}
