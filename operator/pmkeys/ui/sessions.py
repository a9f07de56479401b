"""Sessions for the web pages, each with its own CSRF token, shared by every UI replica.

The browser holds only a random session id (256 bits) in an HttpOnly, SameSite=Strict cookie
(Secure behind TLS); the user's bearer token stays on the server side, because every Kubernetes
call is made with it. Sessions end after ``idle_seconds`` without a request, after
``lifetime_seconds`` in any case, and at sign-out.

Where they live: in the process (:class:`MemoryBackend`, one replica, a restart signs everyone
out) or in Redis (:class:`pmkeys.ui.redis_sessions.RedisBackend`), the store the product already
runs for the verifier's shared limits. With Redis a session survives a rollout and works on
any replica, no sticky sessions needed. Redis never sees a token: each record is sealed with a
key derived from the session id, which only the browser has, and is filed under a hash of that
id — see that module for why this beats a self-contained cookie. Times are wall-clock seconds,
the same on every replica.

State-changing requests authenticated by the cookie must carry the session's CSRF token (a
form field or the ``X-CSRF-Token`` header); the comparison is constant-time.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pmkeys.ui.identity import User

COOKIE = "pmkeys_session"
#: With the Secure flag the cookie gets the ``__Host-`` prefix: host-only, path /, HTTPS only.
SECURE_COOKIE = "__Host-pmkeys_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def cookie_name(*, secure: bool) -> str:
    return SECURE_COOKIE if secure else COOKIE


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


@dataclass
class Session:
    id: str = field(repr=False)
    user: User
    token: str = field(repr=False)
    csrf: str = field(repr=False)
    created: float
    last_seen: float
    #: When the token was last confirmed by TokenReview.
    checked: float


class SessionBackend(Protocol):
    """Where sessions are kept; ``ttl`` is how long the backend may keep one unused."""

    def load(self, session_id: str) -> Session | None: ...
    def save(self, session: Session, *, ttl: float) -> None: ...
    def delete(self, session_id: str) -> None: ...
    def __len__(self) -> int: ...


class MemoryBackend:
    """Sessions in this process only (one UI replica); the oldest make room past ``max_sessions``."""

    def __init__(self, *, max_sessions: int = 10000) -> None:
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def save(self, session: Session, *, ttl: float) -> None:
        with self._lock:
            self._sessions[session.id] = session
            self._sessions.move_to_end(session.id)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)


class SessionStore:
    def __init__(
        self,
        *,
        idle_seconds: float = 1800,
        lifetime_seconds: float = 8 * 3600,
        max_sessions: int = 10000,
        clock: Callable[[], float] = time.time,
        backend: SessionBackend | None = None,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock
        self._backend: SessionBackend = backend if backend is not None else MemoryBackend(max_sessions=max_sessions)

    def __len__(self) -> int:
        return len(self._backend)

    def create(self, user: User, token: str) -> Session:
        now = self._clock()
        session = Session(new_token(), user, token, new_token(), created=now, last_seen=now, checked=now)
        self._save(session, now)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (its idle timer restarted), or None."""
        if not session_id:
            return None
        now = self._clock()
        session = self._backend.load(session_id)
        if session is None:
            return None
        if now - session.last_seen > self.idle_seconds or now - session.created > self.lifetime_seconds:
            self._backend.delete(session_id)
            return None
        session.last_seen = now
        self._save(session, now)
        return session

    def mark_checked(self, session: Session) -> None:
        now = self._clock()
        session.checked = now
        self._save(session, now)

    def needs_check(self, session: Session, every: float) -> bool:
        return self._clock() - session.checked > every

    def delete(self, session_id: str | None) -> None:
        if session_id:
            self._backend.delete(session_id)

    def _save(self, session: Session, now: float) -> None:
        ttl = min(self.idle_seconds, self.lifetime_seconds - (now - session.created))
        self._backend.save(session, ttl=max(ttl, 1.0))
