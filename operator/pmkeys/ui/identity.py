"""Who the caller is (TokenReview) and which tenant namespaces they may manage (SubjectAccessReview).

Both reviews run with the UI's own ServiceAccount, which needs exactly three rights:
``create tokenreviews``, ``create subjectaccessreviews`` and ``list namespaces``. They only
*decide what to show*: every call that reads or changes a tenant's keys is then made with the
caller's own token, so even a wrong answer here could not widen anyone's access — Kubernetes
RBAC stays the single source of truth.

A namespace is a tenant namespace when it carries the ``penguinmails.io/tenant`` label. The
caller may *view* one when RBAC lets them list ``tenantapikeys`` there; *manage* adds create
and patch; *reveal* needs get and patch on ``secrets`` (reading the key and marking it seen).

Answers are cached briefly (``cache_seconds``): a page render asks the same questions many
times, and a revoked RoleBinding still takes effect within seconds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from pmkeys.api import vocabulary as v
from pmkeys.ui.errors import UiError, unavailable

logger = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class User:
    """An authenticated caller, as TokenReview described them."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Access:
    """What a user may do in one tenant namespace."""

    namespace: str
    tenant: str
    can_manage: bool = False
    can_reveal: bool = False


class InvalidToken(Exception):
    """The cluster does not accept the token (unknown, expired, malformed)."""


class TtlCache(Generic[K, T]):
    """A small thread-safe cache with a time to live and a size bound (oldest evicted first)."""

    def __init__(self, ttl: float, *, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> T | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: K, value: T) -> T:
        with self._lock:
            self._entries[key] = (self._clock() + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """TokenReview with the UI's credentials; remembers accepted tokens for ``cache_seconds``."""

    def __init__(self, api: client.ApiClient, *, cache_seconds: float = 30.0) -> None:
        self._auth = client.AuthenticationV1Api(api)
        self._cache: TtlCache[str, User] = TtlCache(cache_seconds)

    def authenticate(self, token: str) -> User:
        key = _token_key(token)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        user = self._review(token)
        return self._cache.put(key, user)

    def _review(self, token: str) -> User:
        review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        try:
            result = self._auth.create_token_review(review, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            logger.error("TokenReview failed with HTTP %s; does the UI's ServiceAccount have its RBAC?", exc.status)
            raise UiError(502, "kubernetes_unavailable", "the cluster could not check the token") from None
        except HTTPError:
            raise unavailable("checking the token") from None
        status = result.status
        if status is None or not status.authenticated or status.user is None:
            raise InvalidToken(status.error if status is not None and status.error else "token not accepted")
        info = status.user
        extra = tuple(sorted((k, tuple(vals or ())) for k, vals in (info.extra or {}).items()))
        return User(username=info.username or "", uid=info.uid or "", groups=tuple(info.groups or ()), extra=extra)


@dataclass(frozen=True)
class _Question:
    user: User
    verb: str
    group: str
    resource: str
    namespace: str


class Authorizer:
    """SubjectAccessReview questions about a user, and the tenant namespaces they may see."""

    def __init__(self, api: client.ApiClient, *, cache_seconds: float = 30.0, threads: int = 8) -> None:
        self._authz = client.AuthorizationV1Api(api)
        self._core = client.CoreV1Api(api)
        self._answers: TtlCache[_Question, bool] = TtlCache(cache_seconds, max_entries=65536)
        #: namespace → tenant, for namespaces known to be tenant namespaces.
        self._tenants: TtlCache[str, str] = TtlCache(cache_seconds, max_entries=65536)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sar")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- tenant namespaces ----------------------------------------------------------------
    def tenant_namespaces(self) -> dict[str, str]:
        """Namespace name → tenant id, for every namespace labelled as a tenant's (never cached:
        a namespace created a moment ago must show up)."""
        found = self._list_tenants(None)
        for namespace, tenant in found.items():
            self._tenants.put(namespace, tenant)
        return found

    def tenant_of(self, namespace: str) -> str | None:
        """The tenant owning ``namespace``, or None when it is not a tenant namespace.

        Positive answers are cached; a miss asks again (with a field selector, so this still
        needs only ``list``), so a new tenant namespace is usable at once.
        """
        cached = self._tenants.get(namespace)
        if cached is not None:
            return cached
        tenant = self._list_tenants(namespace).get(namespace)
        return None if tenant is None else self._tenants.put(namespace, tenant)

    def _list_tenants(self, namespace: str | None) -> dict[str, str]:
        selector = f"metadata.name={namespace}" if namespace else None
        try:
            listing = self._core.list_namespace(
                label_selector=v.TENANT_LABEL, field_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            logger.error(
                "listing namespaces failed with HTTP %s; does the UI's ServiceAccount have its RBAC?", exc.status
            )
            raise UiError(502, "kubernetes_unavailable", "the UI could not list tenant namespaces") from None
        except HTTPError:
            raise unavailable("listing tenant namespaces") from None
        return {ns.metadata.name: (ns.metadata.labels or {}).get(v.TENANT_LABEL, "") for ns in listing.items}

    # -- questions ------------------------------------------------------------------------
    def allowed(self, user: User, verb: str, resource: str, *, namespace: str, group: str = "") -> bool:
        question = _Question(user, verb, group, resource, namespace)
        cached = self._answers.get(question)
        if cached is not None:
            return cached
        return self._answers.put(question, self._ask(question))

    def _ask(self, q: _Question) -> bool:
        spec = client.V1SubjectAccessReviewSpec(
            user=q.user.username,
            uid=q.user.uid or None,
            groups=list(q.user.groups),
            extra={k: list(vals) for k, vals in q.user.extra} or None,
            resource_attributes=client.V1ResourceAttributes(
                namespace=q.namespace or None, verb=q.verb, group=q.group, resource=q.resource
            ),
        )
        try:
            review = self._authz.create_subject_access_review(
                client.V1SubjectAccessReview(spec=spec), _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            logger.error(
                "SubjectAccessReview failed with HTTP %s; does the UI's ServiceAccount have its RBAC?", exc.status
            )
            raise UiError(502, "kubernetes_unavailable", "the cluster could not check permissions") from None
        except HTTPError:
            raise unavailable("checking permissions") from None
        return bool(review.status and review.status.allowed)

    def can_view(self, user: User, namespace: str) -> bool:
        return self.allowed(user, "list", v.PLURAL, namespace=namespace, group=v.GROUP)

    # -- what the UI shows ----------------------------------------------------------------
    def namespaces_for(self, user: User) -> list[Access]:
        """The tenant namespaces ``user`` may view, sorted by name (with manage/reveal rights)."""
        tenants = self.tenant_namespaces()
        if self.allowed(user, "list", v.PLURAL, namespace="", group=v.GROUP):
            visible = sorted(tenants)
        else:
            names = sorted(tenants)
            verdicts = list(self._pool.map(lambda ns: self.can_view(user, ns), names))
            visible = [ns for ns, ok in zip(names, verdicts, strict=True) if ok]
        return list(self._pool.map(lambda ns: self._access(user, ns, tenants[ns]), visible))

    def access(self, user: User, namespace: str) -> Access | None:
        """The user's rights in ``namespace``, or None when it is not a tenant namespace they may view."""
        tenant = self.tenant_of(namespace)
        if tenant is None or not self.can_view(user, namespace):
            return None
        return self._access(user, namespace, tenant)

    def _access(self, user: User, namespace: str, tenant: str) -> Access:
        def can(verb: str, resource: str, group: str) -> bool:
            return self.allowed(user, verb, resource, namespace=namespace, group=group)

        manage = can("create", v.PLURAL, v.GROUP) and can("patch", v.PLURAL, v.GROUP)
        reveal = can("get", "secrets", "") and can("patch", "secrets", "")
        return Access(namespace=namespace, tenant=tenant, can_manage=manage, can_reveal=reveal)
