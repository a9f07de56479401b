"""Server-side sessions for the web pages, each with its own CSRF token.

The browser holds only a random session id (256 bits) in an HttpOnly, SameSite=Strict cookie
(Secure behind TLS); the user's bearer token stays on the server, in this store, because every
Kubernetes call is made with it. Sessions end after ``idle_seconds`` without a request, after
``lifetime_seconds`` in any case, and at sign-out. The store lives in the process: with more
than one UI replica, use sticky sessions (documented in docs/ui.md) — a lost session only means
signing in again.

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
    id: str
    user: User
    token: str = field(repr=False)
    csrf: str = field(repr=False)
    created: float
    last_seen: float
    #: When the token was last confirmed by TokenReview.
    checked: float


class SessionStore:
    def __init__(
        self,
        *,
        idle_seconds: float = 1800,
        lifetime_seconds: float = 8 * 3600,
        max_sessions: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.lifetime_seconds = lifetime_seconds
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, user: User, token: str) -> Session:
        now = self._clock()
        session = Session(new_token(), user, token, new_token(), created=now, last_seen=now, checked=now)
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (its idle timer restarted), or None."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > self.idle_seconds or now - session.created > self.lifetime_seconds:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            self._sessions.move_to_end(session_id)
            return session

    def mark_checked(self, session: Session) -> None:
        session.checked = self._clock()

    def needs_check(self, session: Session, every: float) -> bool:
        return self._clock() - session.checked > every

    def delete(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(session_id, None)
