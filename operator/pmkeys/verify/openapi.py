"""The OpenAPI document of the endpoints that are plain Starlette routes.

``/v1/verify``, ``/v1/authz`` and ``/healthz`` are served by plain Starlette handlers placed
before FastAPI's routes (FastAPI's dependency injection costs more per request than the
verification itself). FastAPI documents only what it routes, so these declarations describe them
in ``/openapi.json``; they delegate to the plain handlers, so if FastAPI ever routed here the
answer would be the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import PlainTextResponse, Response

from pmkeys.api.vocabulary import Scope
from pmkeys.verify.gateway import AUTHZ_METHODS, AUTHZ_PREFIX
from pmkeys.verify.schemas import BAD_QUERY, DENIALS, DecisionBody, VerifyRequest

Handler = Callable[[Request], Awaitable[Response]]


def document(app: FastAPI, *, verify: Handler, authz: Handler, healthz: Handler) -> None:
    """Declare the plain routes on ``app`` so ``/openapi.json`` lists them."""

    @app.post(
        "/v1/verify",
        summary="Verify a key for a scope",
        response_model=DecisionBody,
        responses={**DENIALS, 200: {"description": "The key is valid for the scope.", "model": DecisionBody}},
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
            responses={**DENIALS, **BAD_QUERY, 200: {"description": "Allowed; identity headers for the upstream."}},
            tags=["gateway"],
        )

    @app.get("/healthz", response_class=PlainTextResponse, tags=["operations"], summary="The process is alive")
    async def healthz_documented(request: Request) -> Response:
        return await healthz(request)
