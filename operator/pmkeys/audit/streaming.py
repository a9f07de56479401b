"""Copies of every appended record, one JSON line each, for SIEMs and log pipelines.

Sinks: ``stdout``, ``file:/path`` (appended, one line per record) and ``http(s)://…`` (POSTed
as ``application/x-ndjson``). A copy carries the record's ``seq`` and ``hash``, so a SIEM that
keeps the stream holds an outside witness of the chain: a trail truncated or rewritten in the
database no longer matches the hashes the SIEM received.

The store is the record of truth; a sink that fails is logged and skipped, never retried into
the caller's latency.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import httpx

logger = logging.getLogger(__name__)


class Sink(Protocol):
    def emit(self, line: str) -> None: ...


class StdoutSink:
    def emit(self, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class FileSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def emit(self, line: str) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")


class WebhookSink:
    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout, trust_env=False)

    def emit(self, line: str) -> None:
        self._client.post(self.url, content=line + "\n", headers={"Content-Type": "application/x-ndjson"})


def sink_for(spec: str) -> Sink:
    """``stdout``, ``file:/path`` or an ``http(s)://`` URL; anything else is refused by name."""
    if spec == "stdout":
        return StdoutSink()
    if spec.startswith("file:"):
        return FileSink(Path(spec.removeprefix("file:")))
    if spec.startswith(("http://", "https://")):
        return WebhookSink(spec)
    raise ValueError(f"audit.stream entry {spec!r}: allowed are 'stdout', 'file:/path' or an http(s):// URL")


class Stream:
    def __init__(self, specs: Iterable[str]) -> None:
        self.sinks = [sink_for(spec) for spec in specs]

    def emit(self, record: dict[str, Any]) -> None:
        if not self.sinks:
            return
        line = json.dumps(record, separators=(",", ":"), sort_keys=True)
        for sink in self.sinks:
            try:
                sink.emit(line)
            except (OSError, httpx.HTTPError) as exc:
                logger.warning("audit stream %s failed: %s", type(sink).__name__, exc)
