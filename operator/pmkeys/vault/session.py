"""An authenticated Vault client that stays authenticated.

Token auth (development) or the Kubernetes auth method (production: the pod's ServiceAccount
token, reviewed by Vault through TokenReview). A login's token is cached and renewed when two
thirds of its TTL have passed, and re-acquired once on 403, so reconciles never log in one by
one. hvac is synchronous; calls run on a small thread pool so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import hvac
import hvac.exceptions
import requests

from pmkeys.config import VaultSettings
from pmkeys.vault.errors import CasConflict, VaultDenied, VaultError, VaultSealed, VaultUnavailable

T = TypeVar("T")
logger = logging.getLogger(__name__)


def translate(exc: Exception) -> VaultError:
    """Map hvac/requests exceptions onto :mod:`pmkeys.vault.errors` (messages carry no data)."""
    if isinstance(exc, hvac.exceptions.VaultDown):
        return VaultSealed("Vault is sealed")
    if isinstance(exc, hvac.exceptions.Forbidden):
        return VaultDenied("Vault denied the request (check the policy bound to this role)")
    if isinstance(exc, hvac.exceptions.InvalidRequest) and "check-and-set" in str(exc):
        return CasConflict("check-and-set conflict")
    if isinstance(exc, requests.exceptions.RequestException):
        return VaultUnavailable(f"Vault unreachable: {type(exc).__name__}")
    if isinstance(exc, hvac.exceptions.VaultError):
        return VaultUnavailable(f"Vault error: {type(exc).__name__}")
    raise exc


class VaultSession:
    def __init__(
        self,
        settings: VaultSettings,
        *,
        threads: int = 8,
        observe: Callable[[float, str | None], None] | None = None,
    ) -> None:
        self.settings = settings
        #: Called after each request with its duration and the error reason (None on success).
        self._observe = observe
        verify: str | bool = str(settings.ca_cert) if settings.ca_cert else True
        session = requests.Session()
        # Without proxy variables there is nothing to look up in the environment, and requests
        # would otherwise read them (and ~/.netrc) on every single call.
        session.trust_env = settings.trust_env
        self._client = hvac.Client(url=settings.addr, timeout=settings.timeout, verify=verify, session=session)
        if settings.auth == "token":
            if settings.token is None:
                raise ValueError("vault.auth=token needs vault.token (PMKEYS_VAULT__TOKEN)")
            self._client.token = settings.token.get_secret_value()
        self._renew_at = 0.0 if settings.auth == "kubernetes" else float("inf")
        self._login_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="vault")
        self.logins = 0

    async def call(self, fn: Callable[[hvac.Client], T]) -> T:
        """Run ``fn(client)`` on the pool; Vault failures arrive as :class:`VaultError`."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.call_sync, fn)

    def call_sync(self, fn: Callable[[hvac.Client], T]) -> T:
        if self._observe is None:
            return self._call_sync(fn)
        started = time.perf_counter()
        error: str | None = None
        try:
            return self._call_sync(fn)
        except VaultError as exc:
            error = exc.reason
            raise
        finally:
            self._observe(time.perf_counter() - started, error)

    def _call_sync(self, fn: Callable[[hvac.Client], T]) -> T:
        try:
            self._ensure_token()
            try:
                return fn(self._client)
            except hvac.exceptions.Forbidden:
                if self.settings.auth != "kubernetes":
                    raise
                self._login()
                return fn(self._client)
        except VaultError:
            raise
        except Exception as exc:
            raise translate(exc) from None

    def _ensure_token(self) -> None:
        if time.monotonic() < self._renew_at:
            return
        with self._login_lock:
            if time.monotonic() < self._renew_at:
                return
            if self._client.token and self.logins:
                try:
                    self._remember_ttl(self._client.auth.token.renew_self()["auth"])
                    return
                except Exception:
                    logger.info("Vault token renewal failed; logging in again")
            self._login()

    def _login(self) -> None:
        jwt = self.settings.token_path.read_text().strip()
        response = self._client.auth.kubernetes.login(
            role=self.settings.role, jwt=jwt, mount_point=self.settings.auth_mount
        )
        self.logins += 1
        self._remember_ttl(response["auth"])
        logger.info("logged into Vault with role %s", self.settings.role)

    def _remember_ttl(self, auth: dict[str, object]) -> None:
        ttl = float(auth.get("lease_duration") or 0)  # type: ignore[arg-type]
        self._renew_at = time.monotonic() + (ttl * 2 / 3 if ttl else float("inf"))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
