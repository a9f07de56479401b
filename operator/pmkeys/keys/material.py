"""The API key itself: ``pm_{live|test}_`` followed by 32 base62 characters.

32 characters drawn with :mod:`secrets` from 62 symbols carry ≈190 bits. :func:`parse` is the
first step of every verification, so it rejects malformed input with string checks only and
its errors never repeat the input: a mistyped key is still a secret.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass

from pmkeys.api.vocabulary import Environment

ALPHABET = string.ascii_letters + string.digits
RANDOM_LENGTH = 32
DISPLAY_CHARS = 4
_PREFIXES = {f"pm_{env.value}_": env for env in Environment}
_PREFIX_LENGTH = len("pm_live_")
KEY_LENGTH = _PREFIX_LENGTH + RANDOM_LENGTH
_RANDOM_PART = re.compile(rf"[A-Za-z0-9]{{{RANDOM_LENGTH}}}")
_KEY_ID_ALPHABET = string.ascii_lowercase + string.digits
KEY_ID_LENGTH = 12


class MalformedKey(ValueError):
    """The text is not an API key; the message explains the format, never echoes the input."""


@dataclass(frozen=True, slots=True, repr=False)
class ApiKey:
    """A plaintext key. ``repr`` and ``str`` show only the display prefix."""

    value: str
    environment: Environment

    @property
    def display_prefix(self) -> str:
        return display_prefix(self.value)

    def __repr__(self) -> str:
        return f"ApiKey({self.display_prefix})"

    __str__ = __repr__


def display_prefix(value: str) -> str:
    """``pm_live_4fQx…``: the environment and the first few random characters."""
    return value[: _PREFIX_LENGTH + DISPLAY_CHARS] + "…"


def generate(environment: Environment) -> ApiKey:
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return ApiKey(f"pm_{environment.value}_{random_part}", environment)


def parse(text: str) -> ApiKey:
    """Return the key in ``text`` or raise :class:`MalformedKey` (no I/O, no echo)."""
    if len(text) != KEY_LENGTH:
        raise MalformedKey(
            f"an API key is {KEY_LENGTH} characters: pm_live_ or pm_test_ and {RANDOM_LENGTH} letters or digits"
        )
    environment = _PREFIXES.get(text[:_PREFIX_LENGTH])
    if environment is None:
        raise MalformedKey("an API key starts with pm_live_ or pm_test_")
    if not _RANDOM_PART.fullmatch(text, _PREFIX_LENGTH):
        raise MalformedKey(f"an API key ends with {RANDOM_LENGTH} letters or digits (A-Z, a-z, 0-9)")
    return ApiKey(text, environment)


def new_key_id() -> str:
    """A short public id for humans, Events and URLs; unrelated to the key's value."""
    return "k" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH - 1))
