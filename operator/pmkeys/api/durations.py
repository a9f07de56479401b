"""Durations as users write them in ``spec.rotation``: ``90d``, ``720h``, ``1h30m``, ``45s``, ``0``.

Go's ``time.ParseDuration`` has no days; key rotation is usually counted in days, so ``d``
(24 hours) is accepted too. Months and years are not: their length varies.
"""

from __future__ import annotations

import re
from datetime import timedelta

#: The schema's pattern; ``parse_duration`` accepts exactly the strings it matches.
DURATION_PATTERN = r"^(0|([0-9]{1,6}(d|h|m|s))+)$"
_PART = re.compile(r"([0-9]+)(d|h|m|s)")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """Parse a duration; raise ``ValueError`` naming the accepted forms."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"invalid duration {text!r}: use a sequence of <number><unit> with units d, h, m, s "
            "(e.g. 90d, 720h, 1h30m) or 0"
        )
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest string :func:`parse_duration` maps back to ``value``."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0"
    parts = []
    for unit, size in _UNIT_SECONDS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
