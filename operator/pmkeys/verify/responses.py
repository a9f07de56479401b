"""Responses the verifier's handlers build: headers encoded once, JSON without negotiation.

Starlette's ``Response`` renders and re-encodes its headers on every call; the hot endpoints
answer tens of thousands of times per second, so :class:`RawResponse` takes the header list
ready-made.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi.responses import Response


class RawResponse(Response):
    """A Starlette response whose headers are encoded once, without content negotiation."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes = b"", media_type: str | None = None) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        if media_type:
            raw.append((b"content-type", media_type.encode()))
        self.raw_headers = raw


def json_response(payload: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> RawResponse:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return RawResponse(status, headers or {}, body, "application/json")


def invalid(errors: Sequence[Any]) -> RawResponse:
    """422 with where and what was wrong; pydantic's errors also carry the input, which may be a
    key, so that is dropped."""
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
    return json_response({"detail": detail}, 422)
