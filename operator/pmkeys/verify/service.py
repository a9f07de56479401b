"""``pmkeys verifier``: the verifier as an HTTP service, for services and API gateways.

Endpoints (OpenAPI at ``/openapi.json``):

``POST /v1/verify``
    JSON ``{"key", "scope", "client"}`` → the decision as JSON, answered with the decision's
    status (200, 401, 403, 429, 503) and the rate-limit headers.
``/v1/authz`` and ``/v1/authz/{path}`` (any method)
    The gateway endpoint, for Envoy ext_authz (HTTP mode, which appends the original path and
    keeps the method), Traefik ForwardAuth (``X-Forwarded-Method``/``-Uri``) and nginx
    ``auth_request`` (``X-Original-Method``/``-URI``). Key from ``Authorization: Bearer`` or
    ``X-API-Key``; scope from the route map, else the scope header, else the unmapped-route
    policy. 200 carries ``X-Tenant-Id``, ``X-Api-Key-Id``, ``X-Api-Key-Scopes`` for the gateway
    to pass upstream. ``?rate_limited_status=403`` answers rate-limit refusals with 403 (and
    ``X-Pmkeys-Reason: rate_limited`` + ``Retry-After``) for nginx, whose ``auth_request`` turns
    any status but 2xx/401/403 into a 500; its config maps them back to 429.
``POST /v1/keys/{key_id}/errors``
    The API reports requests that failed (``{"count": n}``): they add to ``status.usage.errors``.
``/healthz`` (the process runs), ``/readyz`` (pepper loaded, watch synced), ``/metrics``.

Limits: request bodies over ``max_body_bytes`` get 413 and header blocks over
``max_header_bytes`` 431, before any handler runs. Validation errors never echo the input (it
may be a key).

One process per replica, one event loop (uvloop, httptools): the caches are per process, so
scale with replicas (and Redis), not with workers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import uvicorn
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from pmkeys import __version__
from pmkeys.api.vocabulary import Scope
from pmkeys.config import VerifierSettings
from pmkeys.verify import headers as h
from pmkeys.verify.decision import Outcome
from pmkeys.verify.metrics import VerifierCollector
from pmkeys.verify.routes import RouteMap
from pmkeys.verify.verifier import Verifier

logger = logging.getLogger(__name__)
AUTHZ_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
AUTHZ_PREFIX = "/v1/authz"
_SCOPES = ", ".join(s.value for s in Scope)
#: A scope no key has: the unmapped-route refusal goes through the same checks (401 first).
_NO_SCOPE = ""


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(max_length=256, description="The API key as presented by the caller.")
    scope: Scope | None = Field(default=None, description="The scope the request needs; null: any valid key.")
    client: str | None = Field(
        default=None, max_length=128, description="Who is asking (e.g. the caller's IP), for the failed-attempt limit."
    )


class RateLimitBody(BaseModel):
    limit: int = Field(description="The key's requests per minute (0: no limit applied).")
    remaining: int
    reset: int = Field(description="Seconds until the quota is full again.")
    retryAfter: int = Field(description="Seconds to wait before retrying (0 when allowed).")


class DecisionBody(BaseModel):
    allowed: bool
    reason: Outcome
    message: str
    tenant: str | None
    keyId: str | None
    scopes: list[str]
    rateLimit: RateLimitBody


class ErrorReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, ge=1, le=10_000, description="How many requests failed.")


class ErrorReceipt(BaseModel):
    keyId: str
    counted: int


_DENIALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Malformed, unknown, revoked or expired key (with WWW-Authenticate)."},
    403: {"description": "The key lacks the scope, or the route has none and the policy denies."},
    429: {"description": "Over the key's rate limit, or too many failures from this client (Retry-After)."},
    503: {"description": "Vault, Redis (closed policy) or the bcrypt pool cannot answer now; retry."},
}


# -- pure ASGI middleware: size limits before anything else ----------------------------------
AsgiScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[AsgiScope, Receive, Send], Awaitable[None]]


class SizeLimits:
    """431 for header blocks over ``max_header_bytes``, 413 for bodies over ``max_body_bytes``
    (declared or streamed), before the application sees the request."""

    def __init__(self, app: AsgiApp, *, max_body: int, max_headers: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_headers = max_headers

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
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


# -- the application --------------------------------------------------------------------------
class _Holder:
    verifier: Verifier


def create_app(settings: VerifierSettings, *, factory: Callable[[], Verifier] | None = None) -> FastAPI:
    """The FastAPI application; the verifier is built and started in its lifespan."""
    routes = RouteMap.parse(settings.routes)
    scope_header = settings.scope_header.lower()
    client_header = settings.client_header.lower()
    authenticate_unmapped = settings.unmapped_routes == "authenticate"
    held = _Holder()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        verifier = factory() if factory else Verifier.from_settings(settings)
        await verifier.start()
        collector = VerifierCollector(verifier)
        REGISTRY.register(collector)
        held.verifier = verifier
        logger.info("verifier ready to serve on %s:%s (%d routes mapped)", settings.bind, settings.port, len(routes))
        try:
            yield
        finally:
            REGISTRY.unregister(collector)
            await verifier.close()

    app = FastAPI(
        title="pmkeys verifier",
        version=__version__,
        description="Verifies PenguinMails API keys: validity, scope, rate limit; counts usage.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # pydantic's errors carry the input, which may be a key: keep only where and what.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.post(
        "/v1/verify",
        summary="Verify a key for a scope",
        response_model=DecisionBody,
        responses={**_DENIALS, 200: {"description": "The key is valid for the scope.", "model": DecisionBody}},
        tags=["verify"],
    )
    async def verify(body: VerifyRequest, request: Request) -> Response:
        client = body.client if body.client is not None else _peer(request)
        decision = await held.verifier.verify(body.key, body.scope, client=client)
        return _json(decision.as_dict(), decision.status, h.decision_headers(decision))

    async def authz(
        request: Request,
        rate_limited_status: int = Query(
            default=429, description="Status for rate-limit refusals: 429, or 403 for nginx auth_request."
        ),
    ) -> Response:
        if rate_limited_status not in (429, 403):
            return _json({"detail": "rate_limited_status must be 429 or 403"}, 400, {})
        headers = request.headers
        key = h.credential(headers.get("authorization"), headers.get("x-api-key"))
        client = h.client_address(headers.get(client_header), _peer(request))
        method = h.forwarded(headers, h.METHOD_HEADERS) or request.method
        uri = h.forwarded(headers, h.URI_HEADERS) or request.url.path[len(AUTHZ_PREFIX) :] or "/"
        route = routes.match(method, uri)
        if route is not None:
            scope: str | None = route.scope
        elif scope_header and (named := headers.get(scope_header)):
            if named not in Scope.__members__.values():
                return _json({"detail": f"{settings.scope_header} must be one of {_SCOPES}"}, 400, {})
            scope = named
        else:
            scope = None if authenticate_unmapped else _NO_SCOPE
        decision = await held.verifier.verify(key or "", scope, client=client)
        if scope == _NO_SCOPE and decision.reason is Outcome.SCOPE_MISSING:
            decision = replace(decision, reason=Outcome.ROUTE_UNMAPPED, detail=f"{method} {uri}")
        out = h.decision_headers(decision, presented=key is not None)
        if decision.allowed:
            return Response(status_code=200, headers=out)
        status = h.deny_status(decision, rate_limited_status=rate_limited_status)
        return _json({"reason": decision.reason.value, "message": decision.message}, status, out)

    for path in (AUTHZ_PREFIX, AUTHZ_PREFIX + "/{path:path}"):
        app.add_api_route(
            path,
            authz,
            methods=AUTHZ_METHODS,
            summary="Gateway check (Envoy ext_authz, Traefik ForwardAuth, nginx auth_request)",
            responses={**_DENIALS, 200: {"description": "Allowed; identity headers for the upstream."}},
            tags=["gateway"],
            include_in_schema=path == AUTHZ_PREFIX,
        )

    @app.post(
        "/v1/keys/{key_id}/errors",
        status_code=202,
        response_model=ErrorReceipt,
        responses={404: {"description": "This verifier does not know the key id."}},
        summary="Report failed requests made with a key (status.usage.errors)",
        tags=["usage"],
    )
    async def report_errors(
        key_id: str = Path(pattern=r"^k[a-z0-9]{11}$"), body: ErrorReport | None = None
    ) -> Response:
        count = body.count if body else 1
        if not held.verifier.report_errors(key_id, count):
            return _json({"detail": f"key {key_id} is not known to this verifier"}, 404, {})
        return _json({"keyId": key_id, "counted": count}, 202, {})

    @app.get("/healthz", response_class=PlainTextResponse, tags=["operations"])
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> Response:
        verifier = held.verifier
        checks = verifier.readiness()
        ready = all(checks.values())
        return _json({"ready": ready, "checks": checks, **verifier.describe()}, 200 if ready else 503, {})

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def _peer(request: Request) -> str:
    return request.client.host if request.client else ""


def _json(payload: dict[str, Any], status: int, headers: dict[str, str]) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":")).encode(),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def asgi(settings: VerifierSettings, *, factory: Callable[[], Verifier] | None = None) -> Any:
    """The application wrapped in its size limits (what uvicorn serves)."""
    return SizeLimits(
        create_app(settings, factory=factory), max_body=settings.max_body_bytes, max_headers=settings.max_header_bytes
    )


def run(settings: VerifierSettings) -> None:
    """Serve until SIGTERM/SIGINT; the lifespan flushes usage on the way out."""
    RouteMap.parse(settings.routes)  # fail at start, with the entry named, not on a request
    uvicorn.run(
        asgi(settings),
        host=settings.bind,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )
