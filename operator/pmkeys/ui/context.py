"""Everything a request handler needs, built once per process: settings, the UI's own
Kubernetes client (for TokenReview, SubjectAccessReview and listing namespaces only), the
authenticator and authorizer, and the session store."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from pmkeys.config import UiSettings
from pmkeys.kubeclient import api_client_for_token
from pmkeys.ui.identity import Authenticator, Authorizer
from pmkeys.ui.sessions import SessionStore, cookie_name


@dataclass
class UiContext:
    settings: UiSettings
    kube: client.ApiClient
    authenticator: Authenticator
    authorizer: Authorizer
    sessions: SessionStore

    @classmethod
    def build(cls, settings: UiSettings, kube: client.ApiClient) -> UiContext:
        return cls(
            settings=settings,
            kube=kube,
            authenticator=Authenticator(kube, cache_seconds=settings.authz_cache_seconds),
            authorizer=Authorizer(kube, cache_seconds=settings.authz_cache_seconds),
            sessions=SessionStore(
                idle_seconds=settings.session_idle_seconds, lifetime_seconds=settings.session_lifetime_seconds
            ),
        )

    @property
    def cookie(self) -> str:
        return cookie_name(secure=self.settings.secure_cookies)

    def client_for(self, token: str) -> client.ApiClient:
        """A client for the same API server that acts as the holder of ``token``."""
        return api_client_for_token(self.kube, token)

    def close(self) -> None:
        self.authorizer.close()
