"""Logging that cannot print a key, whatever the level.

Every component logs through :func:`configure`: one handler on the root logger, and on that
handler a filter that rewrites each record before it is formatted. A level setting decides
which records are made, never whether they are scrubbed, because the filter sits on the
handler every record reaches, not on a logger a level could bypass. The filter removes:

* API keys (``pm_live_``/``pm_test_`` + 32 characters) and their base64 form (a Secret's
  ``data`` as the Kubernetes REST client prints response bodies at DEBUG in some versions that
  ``kubernetes>=30`` allows), in the message, its arguments and any exception text;
* the values of credential headers and fields (``Authorization``, ``X-API-Key``,
  ``X-Pmkeys-Caller-Token``, ``token``), wherever a library prints a header list.

Independently, loggers that print response bodies or request headers are held at INFO or above
whatever the configured level (``kubernetes.client.rest``, ``urllib3``), and uvicorn never runs
at its ``trace`` level (which logs every request's headers): DEBUG is the lowest level a
component accepts. What they would have printed is not needed to debug pmkeys.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
from typing import Final

LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"
#: Loggers held at INFO or above: they print HTTP bodies or headers at DEBUG.
NOISY: Final = ("kubernetes.client.rest", "urllib3", "urllib3.connectionpool", "httpx", "httpcore", "hpack")

_KEY = r"pm_(?:live|test)_[A-Za-z0-9]{32}"
_B64 = "A-Za-z0-9+/"


def _base64_prefixes() -> list[str]:
    """The base64 characters fixed by ``pm_live_``/``pm_test_`` at each of the three alignments
    a key can have inside a base64 text (bits of the prefix that fill whole characters)."""
    found = []
    for prefix in (b"pm_live_", b"pm_test_"):
        for offset in range(3):
            encoded = base64.b64encode(b"\0" * offset + prefix + b"\0" * 3).decode()
            start = -(-8 * offset // 6)
            end = (8 * offset + 8 * len(prefix)) // 6
            found.append(re.escape(encoded[start:end]))
    return found


_PATTERN = re.compile(
    rf"{_KEY}"
    rf"|[{_B64}]{{0,3}}(?:{'|'.join(_base64_prefixes())})[{_B64}]{{30,}}={{0,2}}"
    r"|(?i:(?<=authorization[\"']: [\"'])[^\"']+|(?<=authorization: )\S+(?: \S+)?)"
    r"|(?i:(?<=x-api-key[\"']: [\"'])[^\"']+|(?<=x-api-key: )\S+)"
    r"|(?i:(?<=x-pmkeys-caller-token[\"']: [\"'])[^\"']+|(?<=x-pmkeys-caller-token: )\S+)"
)


def redact(text: str) -> str:
    """``text`` with every key, base64-encoded key and credential header value replaced."""
    return _PATTERN.sub(REDACTED, text)


class Redactor(logging.Filter):
    """Rewrites each record's message, arguments and exception text before formatting."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is, scrubbed
            message = f"{record.msg} {record.args}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def configure(level: str) -> None:
    """Root handler on stderr with the redactor; ``level`` one of :data:`LEVELS`."""
    name = level.upper()
    if name not in LEVELS:
        raise SystemExit(f"log_level must be one of {', '.join(LEVELS)}, got {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(Redactor())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name)
    floor = max(logging.INFO, logging.getLevelName(name))
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(floor)


def uvicorn_level(level: str) -> str:
    """The level for uvicorn: never ``trace`` (it logs every request's headers)."""
    name = level.lower()
    return name if name in {lv.lower() for lv in LEVELS} else "info"
