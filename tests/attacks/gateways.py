"""Helpers for the attack tests: raw HTTP requests (no client library that normalises the
target), the verifiers and gateways under attack, and keys to attack with.

A client library may resolve dot segments or re-encode a target before sending it; an attacker
does not, so these tests send request lines byte for byte with :mod:`http.client`.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def __repr__(self) -> str:
        # An upstream's echo holds the request's Authorization header: never in a test report.
        return f"<Answer {self.status}, {len(self.body)} bytes>"

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(port: int, method: str, target: str, headers: dict[str, str] | None = None) -> Answer:
    """Send ``method target`` exactly as given to 127.0.0.1:``port``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()
