"""``pmkeys ui``: the FastAPI application that serves the pages and the JSON API.

:func:`create_app` wires the routers, the static files shipped in the package (nothing is
fetched from the internet), strict security headers (a CSP without inline script or style,
no framing, no caching of anything but static files) and one error shape for the API and the
pages. :func:`run` serves it with uvicorn.

The UI's own Kubernetes identity (``settings.kubeconfig``, in a pod its ServiceAccount) is used
only for TokenReview, SubjectAccessReview and listing namespaces; see docs/ui.md for its RBAC.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from kubernetes import client
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pmkeys import __version__
from pmkeys.config import UiSettings
from pmkeys.kubeclient import api_client
from pmkeys.redaction import uvicorn_level
from pmkeys.ui import api, audit, audit_pages, pages
from pmkeys.ui.callers import SignInRequired
from pmkeys.ui.context import UiContext
from pmkeys.ui.errors import FieldError, UiError, validation_error
from pmkeys.ui.schemas import PATTERN_HINTS

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


#: Browsers that saw this over HTTPS refuse plain HTTP to the host for a year.
HSTS = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeaders:
    """Adds the security headers to every response, and ``Cache-Control: no-store`` to all but
    static files (pages and API answers carry tenant data; the reveal carries a key). Served over
    TLS, also ``Strict-Transport-Security`` (over plain HTTP browsers ignore it, and local
    plain-HTTP use must keep working)."""

    def __init__(self, app: ASGIApp, *, tls: bool = False) -> None:
        self.app = app
        self.headers = [*SECURITY_HEADERS, HSTS] if tls else SECURITY_HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, val) for k, val in self.headers if k not in present]
                if not static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(api.PREFIX)


def _error_response(request: Request, error: UiError) -> Response:
    if _is_api(request):
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)
    if error.status == 401:
        return RedirectResponse(f"/signin?reason=expired&next={quote(request.url.path)}", status_code=303)
    return pages.render(request, "error.html", error.status, error=error)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UiError)
    async def ui_error(request: Request, exc: UiError) -> Response:
        return _error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        error = validation_error(exc.errors(), pattern_hints=PATTERN_HINTS)
        if not _is_api(request):
            error = UiError(404, "not_found", "there is no such page", error.fields)
        return _error_response(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # a body FastAPI could not even parse (not JSON, not UTF-8)
            unreadable = UiError(
                422, "invalid", "the request body is not valid JSON", [FieldError("body", "not valid JSON (UTF-8)")]
            )
            return _error_response(request, unreadable)
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = "there is no such page" if exc.status_code == 404 else str(exc.detail)
        return _error_response(request, UiError(exc.status_code, codes.get(exc.status_code, "error"), message))

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return _error_response(request, UiError(500, "internal", "something went wrong on our side"))


def create_app(settings: UiSettings, *, kube: client.ApiClient | None = None) -> FastAPI:
    """The application; ``kube`` is the UI's own client (default: from ``settings.kubeconfig``)."""
    ui = UiContext.build(settings, kube or api_client(settings.kubeconfig))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        ui.close()

    app = FastAPI(
        title="pmkeys self-service API",
        version=__version__,
        description=(
            "Create, inspect, regenerate, reveal (once) and revoke PenguinMails API keys. "
            "Authenticate with `Authorization: Bearer <token>` (any token the cluster accepts); "
            "Kubernetes RBAC in each tenant namespace decides what you may do."
        ),
        openapi_url=api.OPENAPI_URL,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ui = ui
    app.add_middleware(SecurityHeaders, tls=settings.served_over_tls)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.include_router(api.public)
    app.include_router(api.router)
    app.include_router(audit.router)
    app.include_router(pages.router)
    app.include_router(audit_pages.router)
    _install_error_handlers(app)
    return app


def run(settings: UiSettings) -> None:
    app = create_app(settings)
    scheme = "https" if settings.tls_cert_file else "http"
    logger.info("pmkeys UI on %s://%s:%s (OpenAPI at %s)", scheme, settings.bind, settings.port, api.OPENAPI_URL)
    uvicorn.run(
        app,
        host=settings.bind,
        port=settings.port,
        log_config=None,  # uvicorn's loggers reach the root handler and its redaction
        log_level=uvicorn_level(settings.log_level),
        proxy_headers=True,
        server_header=False,
        ssl_certfile=settings.tls_cert_file or None,
        ssl_keyfile=settings.tls_key_file or None,
    )
