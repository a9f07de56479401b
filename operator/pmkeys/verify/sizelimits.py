"""Size limits before the application: 431 for large header blocks, 413 for large bodies.

A pure ASGI middleware, so a request over either limit is refused before Starlette parses it,
before routing, and before any handler reads a body (declared with ``Content-Length`` or
streamed with ``Transfer-Encoding: chunked``).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class SizeLimits:
    """431 for header blocks over ``max_header_bytes``, 413 for bodies over ``max_body_bytes``
    (declared or streamed), before the application sees the request."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_headers: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = 0
        has_body = False
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_body:
                    await _reject(send, 413, f"request bodies are limited to {self.max_body} bytes")
                    return
                has_body = value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
        if size > self.max_headers:
            await _reject(send, 431, f"request headers are limited to {self.max_headers} bytes")
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await _reject(send, 413, f"request bodies are limited to {self.max_body} bytes")
                return
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _reject(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})
