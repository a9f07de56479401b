"""Everything a request handler needs, built once per process: settings, the UI's own
Kubernetes client (for TokenReview, SubjectAccessReview and listing namespaces only), the
authenticator and authorizer, and the session store."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from pmkeys.config import UiSettings
from pmkeys.kubeclient import api_client_for_token
from pmkeys.ui.identity import Authenticator, Authorizer
from pmkeys.ui.redis_sessions import RedisBackend
from pmkeys.ui.sessions import SessionBackend, SessionStore, cookie_name
from pmkeys.ui.trail import UiAudit

SIGNIN_COOKIE = "pmkeys_signin"
SECURE_SIGNIN_COOKIE = "__Host-pmkeys_signin"


@dataclass
class UiContext:
    settings: UiSettings
    kube: client.ApiClient
    authenticator: Authenticator
    authorizer: Authorizer
    sessions: SessionStore
    audit: UiAudit

    @classmethod
    def build(cls, settings: UiSettings, kube: client.ApiClient) -> UiContext:
        return cls(
            settings=settings,
            kube=kube,
            authenticator=Authenticator(kube, cache_seconds=settings.authz_cache_seconds),
            authorizer=Authorizer(kube, cache_seconds=settings.authz_cache_seconds),
            sessions=SessionStore(
                idle_seconds=settings.session_idle_seconds,
                lifetime_seconds=settings.session_lifetime_seconds,
                backend=_session_backend(settings),
            ),
            audit=UiAudit.from_settings(settings),
        )

    @property
    def cookie(self) -> str:
        return cookie_name(secure=self.settings.served_over_tls)

    @property
    def signin_cookie(self) -> str:
        """The sign-in form's nonce. Over TLS it is a ``__Host-`` cookie: no other host (a
        sibling subdomain) can plant one for the parent domain to sign a visitor in."""
        return SECURE_SIGNIN_COOKIE if self.settings.served_over_tls else SIGNIN_COOKIE

    def client_for(self, token: str) -> client.ApiClient:
        """A client for the same API server that acts as the holder of ``token``."""
        return api_client_for_token(self.kube, token)

    def close(self) -> None:
        self.authorizer.close()
        if self.audit.log is not None:
            self.audit.log.close()


def _session_backend(settings: UiSettings) -> SessionBackend | None:
    """Redis when configured (sessions shared by replicas, kept across rollouts), else memory."""
    if not settings.session_redis_url:
        return None
    return RedisBackend(settings.session_redis_url, prefix=settings.session_redis_prefix)
