"""``pmkeys verifier``: the verifier as an HTTP service, for services and API gateways.

Endpoints (OpenAPI at ``/openapi.json``):

``POST /v1/verify``
    JSON ``{"key", "scope", "client"}`` → the decision as JSON, answered with the decision's
    status (200, 401, 403, 429, 503) and the rate-limit headers.
``/v1/authz`` and ``/v1/authz/{path}`` (any method)
    The gateway endpoint, for Envoy ext_authz (HTTP mode, which appends the original path and
    keeps the method), Traefik ForwardAuth (``X-Forwarded-Method``/``-Uri``) and nginx
    ``auth_request`` (``X-Original-Method``/``-URI``). Key from ``Authorization: Bearer`` or
    ``X-API-Key``; scope from the route map, else the ``scope`` query parameter of the auth URL
    (set per route in the gateway's configuration), else the scope header, else the
    unmapped-route policy. 200 carries ``X-Tenant-Id``, ``X-Api-Key-Id``, ``X-Api-Key-Scopes`` for the gateway
    to pass upstream. ``?rate_limited_status=403`` answers rate-limit refusals with 403 (and
    ``X-Pmkeys-Reason: rate_limited`` + ``Retry-After``) for nginx, whose ``auth_request`` turns
    any status but 2xx/401/403 into a 500; its config maps them back to 429.
``POST /v1/keys/{key_id}/errors``
    The API reports requests that failed (``{"count": n}``): they add to ``status.usage.errors``.
``/healthz`` (the process runs), ``/readyz`` (pepper loaded, watch synced), ``/metrics``.

Limits: request bodies over ``max_body_bytes`` get 413 and header blocks over
``max_header_bytes`` 431, before any handler runs. Validation errors never echo the input (it
may be a key).

The endpoints called on every API request (``/v1/authz``, ``/v1/verify``) and ``/healthz`` are
plain Starlette routes placed before FastAPI's: FastAPI's dependency injection costs more per
request than the verification itself (measured by ``bench/verify.py``). FastAPI still documents
them (declarations that delegate to the plain handlers) and serves everything else.
``/healthz`` takes the same path as the gateway check, so the benchmark's "trivial endpoint on
the same stack" differs from it only by the verification.

One process per replica, one event loop (uvloop, httptools): the caches are per process, so
scale with replicas (and Redis), not with workers.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.routing import Route

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
_SCOPE_VALUES = frozenset(s.value for s in Scope)
_RATE_LIMITED_STATUS = {"429": 429, "403": 403}
_NO_KEY = "no key was sent: send it as Authorization: Bearer <key> or X-API-Key: <key>"


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
    413: {"description": "The request body is larger than the configured limit."},
    431: {"description": "The request headers are larger than the configured limit."},
}
_BAD_QUERY: dict[int | str, dict[str, Any]] = {
    400: {"description": "A query parameter or the scope header names a value that does not exist."},
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
        # Everything alive now (modules, clients, settings) lives as long as the process: keep
        # it out of the cyclic collector's full passes, which would otherwise pause requests.
        gc.collect()
        gc.freeze()
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
    async def invalid_request(_: Request, exc: RequestValidationError) -> RawResponse:
        return _invalid(exc.errors())

    # -- the hot endpoints: plain Starlette handlers, no dependency injection ------------------
    async def verify(request: Request) -> RawResponse:
        try:
            body = VerifyRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _invalid(exc.errors())
        client = body.client if body.client is not None else _peer(request)
        decision = await held.verifier.verify(body.key, body.scope, client=client)
        return _json(decision.as_dict(), decision.status, h.decision_headers(decision))

    @functools.lru_cache(maxsize=4096)
    def route_scope(method: str, uri: str) -> tuple[bool, Scope | None]:
        route = routes.match(method, uri)
        return (True, route.scope) if route is not None else (False, None)

    async def authz(request: Request) -> Response:
        asgi_scope = request.scope
        rate_limited_status = 429
        configured: str | None = None
        if asgi_scope["query_string"]:
            query = request.query_params
            found = _RATE_LIMITED_STATUS.get(query.get("rate_limited_status", "429"))
            if found is None:
                return _json({"detail": "rate_limited_status must be 429 or 403"}, 400, {})
            rate_limited_status = found
            configured = query.get("scope")
            if configured is not None and configured not in _SCOPE_VALUES:
                return _json({"detail": f"the scope query parameter must be one of {_SCOPES}"}, 400, {})
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in asgi_scope["headers"]}
        key = h.credential(headers.get("authorization"), headers.get("x-api-key"))
        client = h.client_address(headers.get(client_header), _peer(request))
        method = h.forwarded(headers, h.METHOD_HEADERS) or asgi_scope["method"]
        uri = h.forwarded(headers, h.URI_HEADERS) or asgi_scope["path"][len(AUTHZ_PREFIX) :] or "/"
        mapped, route_scope_value = route_scope(method, uri)
        if mapped:
            scope: str | None = route_scope_value
        elif configured is not None:
            scope = configured
        elif scope_header and (named := headers.get(scope_header)):
            if named not in _SCOPE_VALUES:
                return _json({"detail": f"{settings.scope_header} must be one of {_SCOPES}"}, 400, {})
            scope = named
        else:
            scope = None if authenticate_unmapped else _NO_SCOPE
        decision = await held.verifier.verify(key or "", scope, client=client)
        if scope == _NO_SCOPE and decision.reason is Outcome.SCOPE_MISSING:
            decision = replace(decision, reason=Outcome.ROUTE_UNMAPPED, detail=f"{method} {uri}")
        elif key is None and decision.reason is Outcome.MALFORMED:
            decision = replace(decision, detail=_NO_KEY)
        out = h.decision_headers(decision, presented=key is not None)
        if decision.allowed:
            return RawResponse(200, out)
        status = h.deny_status(decision, rate_limited_status=rate_limited_status)
        return _json({"reason": decision.reason.value, "message": decision.message}, status, out)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    app.router.routes[:0] = [
        Route("/v1/verify", verify, methods=["POST"]),
        Route(AUTHZ_PREFIX, authz, methods=AUTHZ_METHODS),
        Route(AUTHZ_PREFIX + "/{path:path}", authz, methods=AUTHZ_METHODS),
        Route("/healthz", healthz, methods=["GET"]),
    ]

    # /openapi.json describes the plain routes above through these declarations. The plain
    # routes come first, so FastAPI never routes here; if it did, they would still answer.
    @app.post(
        "/v1/verify",
        summary="Verify a key for a scope",
        response_model=DecisionBody,
        responses={**_DENIALS, 200: {"description": "The key is valid for the scope.", "model": DecisionBody}},
        tags=["verify"],
    )
    async def verify_documented(body: VerifyRequest, request: Request) -> Response:
        return await verify(request)

    async def authz_documented(
        request: Request,
        rate_limited_status: Annotated[
            Literal[429, 403], Query(description="Status for rate-limit refusals: 429, or 403 for nginx auth_request.")
        ] = 429,
        scope: Annotated[
            Scope | None,
            Query(
                description="The scope routes using this auth URL need (set in the gateway's configuration); "
                "the route map, when it matches, comes first."
            ),
        ] = None,
    ) -> Response:
        return await authz(request)

    for method in AUTHZ_METHODS:
        app.add_api_route(
            AUTHZ_PREFIX,
            authz_documented,
            methods=[method],
            operation_id=f"authz_{method.lower()}",
            response_class=Response,
            summary="Gateway check (Envoy ext_authz, Traefik ForwardAuth, nginx auth_request)",
            description="Also at /v1/authz/{original path} (Envoy ext_authz appends the request path).",
            responses={**_DENIALS, **_BAD_QUERY, 200: {"description": "Allowed; identity headers for the upstream."}},
            tags=["gateway"],
        )

    @app.get("/healthz", response_class=PlainTextResponse, tags=["operations"], summary="The process is alive")
    async def healthz_documented(request: Request) -> Response:
        return await healthz(request)

    @app.post(
        "/v1/keys/{key_id}/errors",
        status_code=202,
        response_model=ErrorReceipt,
        responses={
            400: {"description": "The body is not valid JSON."},
            404: {"description": "This verifier does not know the key id."},
        },
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

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> Response:
        verifier = held.verifier
        checks = verifier.readiness()
        ready = all(checks.values())
        return _json({"ready": ready, "checks": checks, **verifier.describe()}, 200 if ready else 503, {})

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def _invalid(errors: Sequence[Any]) -> RawResponse:
    """422 with where and what was wrong; pydantic's errors also carry the input, which may be a
    key, so that is dropped."""
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
    return _json({"detail": detail}, 422, {})


def _peer(request: Request) -> str:
    return request.client.host if request.client else ""


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


def _json(payload: dict[str, Any], status: int, headers: dict[str, str]) -> RawResponse:
    return RawResponse(status, headers, json.dumps(payload, separators=(",", ":")).encode(), "application/json")


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
