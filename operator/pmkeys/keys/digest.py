"""Lookup without scanning: ``HMAC-SHA256(pepper, key)`` names a key's Vault record.

The pepper is 32 random bytes kept in Vault, so a copy of the records alone cannot be used to
test guesses offline, even before bcrypt. Pepper versions let it be replaced: records say which
version made their digest, and verification tries each known version, newest first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PEPPER_BYTES = 32


@dataclass(frozen=True, slots=True, repr=False)
class Pepper:
    version: int
    secret: bytes

    def __repr__(self) -> str:
        return f"Pepper(version={self.version})"


def new_pepper(version: int = 1) -> Pepper:
    return Pepper(version, secrets.token_bytes(PEPPER_BYTES))


def digest(pepper: Pepper, key: str) -> str:
    """Hex HMAC-SHA256 of the full key under ``pepper``."""
    return hmac.digest(pepper.secret, key.encode(), hashlib.sha256).hex()
