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
    The API reports requests that failed (``{"count": n}``), presenting the key that made them
    (``Authorization: Bearer`` or ``X-API-Key``): they add to ``status.usage.errors``.
``/healthz`` (the process runs), ``/readyz`` (pepper loaded, watch synced), ``/metrics``.

Callers: every endpoint but ``/healthz``, ``/readyz`` and ``/metrics`` needs a caller token
(:mod:`~pmkeys.verify.callers`), else 401.

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

This module is the wiring: the lifespan, the route table, the server. The handlers' logic lives
in :mod:`~pmkeys.verify.gateway` (the gateway check), the bodies in
:mod:`~pmkeys.verify.schemas`, the size guard in :mod:`~pmkeys.verify.sizelimits`, the
documentation of the plain routes in :mod:`~pmkeys.verify.openapi`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import ValidationError
from starlette.routing import Route

from pmkeys import __version__
from pmkeys.config import VerifierSettings
from pmkeys.redaction import uvicorn_level
from pmkeys.verify import headers as h
from pmkeys.verify.callers import ANONYMOUS, SCOPE_KEY, CallerAuth, CallerConfigError, CallerTokens
from pmkeys.verify.draining import GRACEFUL_SHUTDOWN_SECONDS, Drain, DrainingServer, closing_while_draining
from pmkeys.verify.gateway import AUTHZ_METHODS, AUTHZ_PREFIX, Gateway, peer
from pmkeys.verify.metrics import VerifierCollector
from pmkeys.verify.openapi import document
from pmkeys.verify.responses import RawResponse, invalid, json_response
from pmkeys.verify.routes import RouteError, RouteMap
from pmkeys.verify.schemas import ErrorReceipt, ErrorReport, VerifyRequest
from pmkeys.verify.sizelimits import SizeLimits
from pmkeys.verify.verifier import Verifier

logger = logging.getLogger(__name__)
#: What ``run`` raises for a configuration it cannot start with (the message names the setting).
StartupRefused = (CallerConfigError, RouteError)


class _Holder:
    verifier: Verifier

    def __init__(self, drain: Drain) -> None:
        self.drain = drain


def create_app(
    settings: VerifierSettings, *, factory: Callable[[], Verifier] | None = None, drain: Drain | None = None
) -> FastAPI:
    """The FastAPI application; the verifier is built and started in its lifespan. While
    ``drain`` is on, ``/readyz`` answers 503 (check ``serving``)."""
    routes = RouteMap.parse(settings.routes)
    gateway = Gateway(settings, routes)
    held = _Holder(drain or Drain(settings.drain_seconds))

    app = FastAPI(
        title="pmkeys verifier",
        version=__version__,
        description="Verifies PenguinMails API keys: validity, scope, rate limit; counts usage.",
        lifespan=_lifespan(settings, held, factory=factory, routes=len(routes)),
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> RawResponse:
        return invalid(exc.errors())

    # -- the hot endpoints: plain Starlette handlers, no dependency injection ------------------
    async def verify(request: Request) -> Response:
        try:
            body = VerifyRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return invalid(exc.errors())
        caller = request.scope.get(SCOPE_KEY, ANONYMOUS)
        client = caller + "|" + (body.client if body.client is not None else peer(request))
        decision = await held.verifier.verify(body.key, body.scope, client=client, caller=caller)
        return json_response(decision.as_dict(), decision.status, h.decision_headers(decision, key=body.key))

    async def authz(request: Request) -> Response:
        return await gateway.check(request, held.verifier)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    app.router.routes[:0] = [
        Route("/v1/verify", verify, methods=["POST"]),
        Route(AUTHZ_PREFIX, authz, methods=AUTHZ_METHODS),
        Route(AUTHZ_PREFIX + "/{path:path}", authz, methods=AUTHZ_METHODS),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    document(app, verify=verify, authz=authz, healthz=healthz)

    _add_operations(app, held)
    return app


def _lifespan(
    settings: VerifierSettings, held: _Holder, *, factory: Callable[[], Verifier] | None, routes: int
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Build and start the verifier when the server starts; flush and close it when it stops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        verifier = factory() if factory else Verifier.from_settings(settings)
        await verifier.start()
        collector = VerifierCollector(verifier)
        REGISTRY.register(collector)
        held.verifier = verifier
        held.drain.armed = True  # serving from now on: SIGTERM drains
        # Everything alive now (modules, clients, settings) lives as long as the process: keep
        # it out of the cyclic collector's full passes, which would otherwise pause requests.
        gc.collect()
        gc.freeze()
        logger.info("verifier ready to serve on %s:%s (%d routes mapped)", settings.bind, settings.port, routes)
        try:
            yield
        finally:
            held.drain.armed = False
            REGISTRY.unregister(collector)
            await verifier.close()

    return lifespan


def _add_operations(app: FastAPI, held: _Holder) -> None:
    """The endpoints FastAPI routes itself: error reports, readiness, metrics."""

    @app.post(
        "/v1/keys/{key_id}/errors",
        status_code=202,
        response_model=ErrorReceipt,
        responses={
            400: {"description": "The body is not valid JSON."},
            401: {"description": "No key, or not a valid key: send the key that made the failed requests."},
            403: {"description": "The key presented is not the key named in the path."},
        },
        summary="Report failed requests made with a key (status.usage.errors); present that key",
        tags=["usage"],
    )
    async def report_errors(
        request: Request, key_id: str = Path(pattern=r"^k[a-z0-9]{11}$"), body: ErrorReport | None = None
    ) -> Response:
        count = body.count if body else 1
        key = h.credential(request.headers.get("authorization"), request.headers.get("x-api-key"))
        if key is None:
            return json_response({"detail": "send the key that made the failed requests (Bearer or X-API-Key)"}, 401)
        caller = request.scope.get(SCOPE_KEY, ANONYMOUS)
        decision = await held.verifier.report_errors_for(key, key_id, count, caller=caller)
        if not decision.allowed:
            return json_response({"reason": decision.reason.value, "detail": decision.message}, decision.status)
        return json_response({"keyId": key_id, "counted": count}, 202)

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> Response:
        verifier = held.verifier
        checks = verifier.readiness() | {"serving": not held.drain.draining}
        ready = all(checks.values())
        return json_response({"ready": ready, "checks": checks, **verifier.describe()}, 200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def asgi(
    settings: VerifierSettings, *, factory: Callable[[], Verifier] | None = None, drain: Drain | None = None
) -> Any:
    """The application behind its caller authentication and size limits, closing keep-alive
    connections while ``drain`` is on (what uvicorn serves)."""
    drain = drain or Drain(settings.drain_seconds)
    authenticated = CallerAuth(
        create_app(settings, factory=factory, drain=drain),
        CallerTokens.from_settings(settings),
        enabled=settings.caller_auth == "token",
        query_token=settings.gateway == "traefik",
    )
    limited = SizeLimits(authenticated, max_body=settings.max_body_bytes, max_headers=settings.max_header_bytes)
    return closing_while_draining(limited, drain)


def run(settings: VerifierSettings) -> None:
    """Serve until SIGTERM (after the drain, :mod:`~pmkeys.verify.draining`) or SIGINT; the
    lifespan flushes usage on the way out."""
    RouteMap.parse(settings.routes)  # fail at start, with the entry named, not on a request
    callers = CallerTokens.from_settings(settings)  # likewise for missing caller tokens
    logger.debug("settings: %s", settings.model_dump(mode="json", exclude={"caller_tokens"}))
    if settings.caller_auth == "off":
        logger.warning("caller authentication is off: anyone who reaches this port may call the verifier")
    else:
        logger.info("gateway mode %s; callers: %s", settings.gateway, ", ".join(callers.callers))
    drain = Drain(settings.drain_seconds)
    config = uvicorn.Config(
        asgi(settings, drain=drain),
        host=settings.bind,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        log_config=None,  # uvicorn's loggers reach the root handler and its redaction
        log_level=uvicorn_level(settings.log_level),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    DrainingServer(config, drain).run()
