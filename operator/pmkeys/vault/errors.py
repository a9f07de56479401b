"""Vault failures, sorted by what the caller should do about them."""

from __future__ import annotations


class VaultError(RuntimeError):
    """Base class; ``reason`` is the condition/Event reason to report."""

    reason = "VaultUnavailable"


class VaultUnavailable(VaultError):
    """Unreachable, timing out or answering 5xx: retry with backoff."""


class VaultSealed(VaultError):
    reason = "VaultSealed"


class VaultDenied(VaultError):
    """403: the token lacks a policy (or expired and re-login failed). Retrying will not help
    until someone fixes the policy, but we retry anyway, slowly."""

    reason = "VaultDenied"


class CasConflict(VaultError):
    """Another writer changed the path since we read it (check-and-set mismatch)."""

    reason = "VaultConflict"
