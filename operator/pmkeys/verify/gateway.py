"""The gateway check (``/v1/authz``): what an API gateway asks before it proxies a request.

Each gateway sends the original request in its own shape, and a client can add headers and
query parameters of its own to what reaches us. So the verifier is told which gateway calls it
(``PMKEYS_GATEWAY``) and reads only what that gateway sets, never what a client could have sent:

=========  =========================================  ====================  ==================
mode       original method and path                   ``?scope=`` of the    scope header
                                                      auth URL
=========  =========================================  ====================  ==================
nginx      ``X-Original-Method``, ``X-Original-URI``  yes: fixed by         no
           (``proxy_set_header`` replaces a           ``proxy_pass``
           client's)
traefik    ``X-Forwarded-Method``, ``X-Forwarded-     yes: fixed by         no
           Uri`` (Traefik always overwrites them)     ``address``
envoy      the check request's own method and raw     no: Envoy appends     yes: Envoy's
           path after ``/v1/authz`` (``path_prefix``)  the client's query    ``headers_to_add``
                                                                            replaces a client's
direct     as envoy                                   no                    no
=========  =========================================  ====================  ==================

``X-Forwarded-*`` is never read in nginx or envoy mode, ``X-Original-*`` never in traefik
mode. Paths are taken raw (the ASGI server's decoded ``path`` is never used) and decoded once by
:mod:`pmkeys.verify.routes`, which refuses ambiguous ones: the answer is 403
``path_ambiguous`` after the key is checked (a bad key still gets 401).

Then the key (``Authorization: Bearer`` or ``X-API-Key``), the client (the right-most entry of
``PMKEYS_CLIENT_HEADER``, which the nearest proxy appended), and the decision: 200 with the
identity headers for the upstream, or the refusal's status with its reason. The failed-attempt
gate counts by caller and client together, so a client of one gateway cannot spend another's.

Route lookups are cached (a gateway sees few distinct paths; the cache is bounded).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from starlette.requests import Request
from starlette.responses import Response

from pmkeys.api.vocabulary import Scope
from pmkeys.config import VerifierSettings
from pmkeys.verify import headers as h
from pmkeys.verify.callers import ANONYMOUS, SCOPE_KEY
from pmkeys.verify.decision import Outcome
from pmkeys.verify.responses import RawResponse, json_response
from pmkeys.verify.routes import AmbiguousPath, RouteMap
from pmkeys.verify.verifier import Verifier

AUTHZ_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
AUTHZ_PREFIX = "/v1/authz"
_RAW_PREFIX = AUTHZ_PREFIX.encode()
_SCOPES = ", ".join(s.value for s in Scope)
_SCOPE_VALUES = frozenset(s.value for s in Scope)
#: A scope no key has: the unmapped-route refusal goes through the same checks (401 first).
_NO_SCOPE = ""
_RATE_LIMITED_STATUS = {"429": 429, "403": 403}
_NO_KEY = "no key was sent: send it as Authorization: Bearer <key> or X-API-Key: <key>"


@dataclass(frozen=True, slots=True)
class Shape:
    """What one gateway sets on its auth request, hence what the verifier may trust."""

    #: Headers with the original method and request target; None: the check request's own.
    method_header: str | None
    uri_header: str | None
    #: The auth URL's query is fixed by the gateway's configuration (not the client's).
    trusts_query: bool
    #: The gateway replaces the scope header whatever the client sent.
    trusts_scope_header: bool


SHAPES = {
    "nginx": Shape("x-original-method", "x-original-uri", trusts_query=True, trusts_scope_header=False),
    "traefik": Shape("x-forwarded-method", "x-forwarded-uri", trusts_query=True, trusts_scope_header=False),
    "envoy": Shape(None, None, trusts_query=False, trusts_scope_header=True),
    "direct": Shape(None, None, trusts_query=False, trusts_scope_header=False),
}


class Gateway:
    """The ``/v1/authz`` handler for one configuration (gateway mode, route map, policy)."""

    def __init__(self, settings: VerifierSettings, routes: RouteMap) -> None:
        self.shape = SHAPES[settings.gateway]
        self.routes = routes
        self.scope_header = settings.scope_header.lower() if self.shape.trusts_scope_header else ""
        self.scope_header_name = settings.scope_header
        self.client_header = settings.client_header.lower()
        self.authenticate_unmapped = settings.unmapped_routes == "authenticate"
        self.route_scope = functools.lru_cache(maxsize=4096)(self._route_scope)

    def _route_scope(self, method: str, uri: str) -> tuple[Outcome | None, Scope | None]:
        """(None, scope) for a mapped route, (ROUTE_UNMAPPED | PATH_AMBIGUOUS, None) else."""
        try:
            route = self.routes.match(method, uri)
        except AmbiguousPath:
            return Outcome.PATH_AMBIGUOUS, None
        return (None, route.scope) if route is not None else (Outcome.ROUTE_UNMAPPED, None)

    def _original(self, request: Request, headers: dict[str, str]) -> tuple[str, str]:
        """The original method and raw request target, from where this gateway puts them."""
        shape = self.shape
        asgi_scope = request.scope
        if shape.uri_header is not None and shape.method_header is not None:
            return headers.get(shape.method_header) or asgi_scope["method"], headers.get(shape.uri_header) or ""
        raw: bytes = asgi_scope.get("raw_path") or b""
        if not raw.startswith(_RAW_PREFIX):  # an encoded prefix: the path is not what it seems
            return asgi_scope["method"], ""
        return asgi_scope["method"], raw[len(_RAW_PREFIX) :].decode("latin-1") or "/"

    def _auth_query(self, request: Request) -> tuple[int, str | None] | Response:
        """``rate_limited_status`` and ``scope`` of the auth URL, where the gateway fixes it."""
        if not (self.shape.trusts_query and request.scope["query_string"]):
            return 429, None
        query = request.query_params
        status = _RATE_LIMITED_STATUS.get(query.get("rate_limited_status", "429"))
        if status is None:
            return json_response({"detail": "rate_limited_status must be 429 or 403"}, 400)
        configured = query.get("scope")
        if configured is not None and configured not in _SCOPE_VALUES:
            return json_response({"detail": f"the scope query parameter must be one of {_SCOPES}"}, 400)
        return status, configured

    def _scope(
        self, refusal: Outcome | None, mapped: Scope | None, configured: str | None, headers: dict[str, str]
    ) -> str | Response | None:
        """The scope the request needs: route map, auth URL, trusted header, unmapped policy."""
        if refusal is None:
            return mapped
        if refusal is Outcome.PATH_AMBIGUOUS:
            return _NO_SCOPE
        if configured is not None:
            return configured
        if self.scope_header and (named := headers.get(self.scope_header)):
            if named not in _SCOPE_VALUES:
                return json_response({"detail": f"{self.scope_header_name} must be one of {_SCOPES}"}, 400)
            return named
        return None if self.authenticate_unmapped else _NO_SCOPE

    async def check(self, request: Request, verifier: Verifier) -> Response:
        query = self._auth_query(request)
        if isinstance(query, Response):
            return query
        rate_limited_status, configured = query
        asgi_scope = request.scope
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in asgi_scope["headers"]}
        key = h.credential(headers.get("authorization"), headers.get("x-api-key"))
        caller = asgi_scope.get(SCOPE_KEY, ANONYMOUS)
        client = caller + "|" + h.client_address(headers.get(self.client_header), peer(request))
        method, uri = self._original(request, headers)
        refusal, mapped = self.route_scope(method, uri)
        scope = self._scope(refusal, mapped, configured, headers)
        if isinstance(scope, Response):
            return scope
        decision = await verifier.verify(key or "", scope, client=client, caller=caller)
        if scope == _NO_SCOPE and decision.reason is Outcome.SCOPE_MISSING:
            reason = refusal or Outcome.ROUTE_UNMAPPED
            decision = replace(decision, reason=reason, detail=f"{method} {uri.split('?', 1)[0][:200]}")
        elif key is None and decision.reason is Outcome.MALFORMED:
            decision = replace(decision, detail=_NO_KEY)
        out = h.decision_headers(decision, presented=key is not None, key=key or "")
        if decision.allowed:
            return RawResponse(200, out)
        status = h.deny_status(decision, rate_limited_status=rate_limited_status)
        return json_response({"reason": decision.reason.value, "message": decision.message}, status, out)


def peer(request: Request) -> str:
    return request.client.host if request.client else ""
