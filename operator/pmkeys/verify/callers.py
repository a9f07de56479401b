"""Who may call the verifier: every endpoint but ``/healthz``, ``/readyz`` and ``/metrics``
answers 401 unless the caller presents one of the configured caller tokens.

Why tokens, and not ServiceAccount tokens or mTLS: the callers are API gateways, and the three
we document can all send a fixed secret but not a rotating one. nginx and Envoy add a header to
the auth request (``proxy_set_header``, ``headers_to_add``; both replace a client's header of
the same name). Traefik's ForwardAuth cannot add a header to the auth request, but its
``address`` is fixed by configuration and Traefik does not append the client's path or query
to it, so in traefik mode the token may travel as the ``caller_token`` query parameter of the
address. A ServiceAccount token (checked once by TokenReview, then cached) would need the
gateway to read a projected token file per request, which none of them can do without a plugin;
mTLS would put TLS and a certificate authority in the path of every request and of every
gateway configuration. A token per caller, created by the chart in a Secret, is what all three
can send, and it names the caller: the failed-attempt gate counts per caller as well as per
client, so one caller cannot exhaust another's budget.

Tokens are compared through their SHA-256 digests (a dict lookup of a digest: the time taken
does not depend on how much of a guess was right). They are never logged; a 401 says only that
the caller token was missing or wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from pmkeys.config import VerifierSettings

logger = logging.getLogger(__name__)
CALLER_HEADER = "X-Pmkeys-Caller-Token"
QUERY_PARAMETER = "caller_token"
#: Where the caller's name is kept in the ASGI scope for the handlers.
SCOPE_KEY = "pmkeys.caller"
ANONYMOUS = "anonymous"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MIN_TOKEN_LENGTH = 32
_HEADER = CALLER_HEADER.lower().encode()


class CallerConfigError(ValueError):
    """The caller tokens are missing or unusable; the message says which setting to fix."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class CallerTokens:
    """Token → caller name, held as digests."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._names: dict[bytes, str] = {}
        for name, token in tokens.items():
            if len(token) < MIN_TOKEN_LENGTH:
                raise CallerConfigError(
                    f"caller token for {name!r} is {len(token)} characters; at least {MIN_TOKEN_LENGTH} are needed"
                )
            self._names[_digest(token)] = name

    @classmethod
    def from_settings(cls, settings: VerifierSettings) -> CallerTokens:
        tokens = {name: secret.get_secret_value() for name, secret in settings.caller_tokens.items()}
        if settings.caller_tokens_dir:
            tokens.update(read_dir(Path(settings.caller_tokens_dir)))
        if settings.caller_auth == "token" and not tokens:
            raise CallerConfigError(
                "caller_auth=token but no caller tokens are configured: set PMKEYS_CALLER_TOKENS_DIR "
                "(a directory with one file per caller) or PMKEYS_CALLER_TOKENS (JSON), "
                "or PMKEYS_CALLER_AUTH=off for local use"
            )
        return cls(tokens)

    def identify(self, token: str) -> str | None:
        return self._names.get(_digest(token))

    @property
    def callers(self) -> list[str]:
        return sorted(self._names.values())


def read_dir(directory: Path) -> dict[str, str]:
    """A mounted Secret: one file per caller (dot files, Kubernetes' ``..data`` links, skipped)."""
    if not directory.is_dir():
        raise CallerConfigError(f"caller_tokens_dir {str(directory)!r} is not a directory")
    return {f.name: f.read_text().strip() for f in sorted(directory.iterdir()) if not f.name.startswith(".")}


class CallerAuth:
    """ASGI middleware: 401 for unauthenticated callers, the caller's name in the scope else."""

    def __init__(self, app: ASGIApp, tokens: CallerTokens, *, enabled: bool, query_token: bool) -> None:
        self.app = app
        self.tokens = tokens
        self.enabled = enabled
        self.query_token = query_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if not self.enabled:
            scope[SCOPE_KEY] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        caller = self._caller(scope)
        if caller is None:
            await _unauthenticated(send)
            return
        scope[SCOPE_KEY] = caller
        await self.app(scope, receive, send)

    def _caller(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == _HEADER:
                return self.tokens.identify(value.decode("latin-1"))
        if self.query_token and scope["query_string"]:
            for name, value in parse_qsl(scope["query_string"].decode("latin-1")):
                if name == QUERY_PARAMETER:
                    return self.tokens.identify(value)
        return None


async def _unauthenticated(send: Send) -> None:
    payload = json.dumps(
        {
            "reason": "caller_unauthenticated",
            "detail": f"this endpoint needs a caller token ({CALLER_HEADER}); see docs/verifier.md",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"www-authenticate", b'PmkeysCaller realm="pmkeys-verifier"'),
                (b"x-pmkeys-reason", b"caller_unauthenticated"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
