"""The gateway check (``/v1/authz``): what an API gateway asks before it proxies a request.

One handler serves Envoy ext_authz (HTTP mode, which appends the original path to the auth
URL and keeps the method), Traefik ForwardAuth (``X-Forwarded-Method``/``-Uri``) and nginx
``auth_request`` (``X-Original-Method``/``-URI``). It reads, top to bottom:

1. the auth URL's own query: ``rate_limited_status`` (403 for nginx) and ``scope`` (set per
   route in the gateway's configuration);
2. the key (``Authorization: Bearer`` or ``X-API-Key``) and the client address;
3. the original method and path, and from them the scope: the route map first, then the
   ``scope`` query, then the scope header, then the unmapped-route policy;
4. the verifier's decision, answered as 200 with identity headers for the upstream, or as the
   refusal's status with its reason.

Route lookups are cached (a gateway sees few distinct paths; the cache is bounded).
"""

from __future__ import annotations

import functools
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import Response

from pmkeys.api.vocabulary import Scope
from pmkeys.config import VerifierSettings
from pmkeys.verify import headers as h
from pmkeys.verify.decision import Outcome
from pmkeys.verify.responses import RawResponse, json_response
from pmkeys.verify.routes import RouteMap
from pmkeys.verify.verifier import Verifier

AUTHZ_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
AUTHZ_PREFIX = "/v1/authz"
_SCOPES = ", ".join(s.value for s in Scope)
_SCOPE_VALUES = frozenset(s.value for s in Scope)
#: A scope no key has: the unmapped-route refusal goes through the same checks (401 first).
_NO_SCOPE = ""
_RATE_LIMITED_STATUS = {"429": 429, "403": 403}
_NO_KEY = "no key was sent: send it as Authorization: Bearer <key> or X-API-Key: <key>"


class Gateway:
    """The ``/v1/authz`` handler for one configuration (route map, headers, policy)."""

    def __init__(self, settings: VerifierSettings, routes: RouteMap) -> None:
        self.routes = routes
        self.scope_header = settings.scope_header.lower()
        self.scope_header_name = settings.scope_header
        self.client_header = settings.client_header.lower()
        self.authenticate_unmapped = settings.unmapped_routes == "authenticate"
        self.route_scope = functools.lru_cache(maxsize=4096)(self._route_scope)

    def _route_scope(self, method: str, uri: str) -> tuple[bool, Scope | None]:
        route = self.routes.match(method, uri)
        return (True, route.scope) if route is not None else (False, None)

    async def check(self, request: Request, verifier: Verifier) -> Response:
        asgi_scope = request.scope
        rate_limited_status = 429
        configured: str | None = None
        if asgi_scope["query_string"]:
            query = request.query_params
            found = _RATE_LIMITED_STATUS.get(query.get("rate_limited_status", "429"))
            if found is None:
                return json_response({"detail": "rate_limited_status must be 429 or 403"}, 400)
            rate_limited_status = found
            configured = query.get("scope")
            if configured is not None and configured not in _SCOPE_VALUES:
                return json_response({"detail": f"the scope query parameter must be one of {_SCOPES}"}, 400)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in asgi_scope["headers"]}
        key = h.credential(headers.get("authorization"), headers.get("x-api-key"))
        client = h.client_address(headers.get(self.client_header), peer(request))
        method = h.forwarded(headers, h.METHOD_HEADERS) or asgi_scope["method"]
        uri = h.forwarded(headers, h.URI_HEADERS) or asgi_scope["path"][len(AUTHZ_PREFIX) :] or "/"
        mapped, route_scope_value = self.route_scope(method, uri)
        if mapped:
            scope: str | None = route_scope_value
        elif configured is not None:
            scope = configured
        elif self.scope_header and (named := headers.get(self.scope_header)):
            if named not in _SCOPE_VALUES:
                return json_response({"detail": f"{self.scope_header_name} must be one of {_SCOPES}"}, 400)
            scope = named
        else:
            scope = None if self.authenticate_unmapped else _NO_SCOPE
        decision = await verifier.verify(key or "", scope, client=client)
        if scope == _NO_SCOPE and decision.reason is Outcome.SCOPE_MISSING:
            decision = replace(decision, reason=Outcome.ROUTE_UNMAPPED, detail=f"{method} {uri}")
        elif key is None and decision.reason is Outcome.MALFORMED:
            decision = replace(decision, detail=_NO_KEY)
        out = h.decision_headers(decision, presented=key is not None)
        if decision.allowed:
            return RawResponse(200, out)
        status = h.deny_status(decision, rate_limited_status=rate_limited_status)
        return json_response({"reason": decision.reason.value, "message": decision.message}, status, out)


def peer(request: Request) -> str:
    return request.client.host if request.client else ""
