"""UI sessions in Redis, sealed so that whoever reads Redis learns nothing usable.

A session record holds the user's Kubernetes bearer token, so the store must not become a
second place a token can be read from. Each record is:

* filed under ``<prefix>:ui:session:<SHA-256 of the session id>``: the id itself (the cookie's
  value) is never written, and the hash cannot be turned back into it;
* sealed with AES-256-GCM under a key derived from the session id (HKDF-SHA256), with the Redis
  key as associated data (a record moved to another name does not open). Only a request that
  presents the cookie can open its own record; a dump, a replica, a backup or ``MONITOR`` on
  Redis shows hashes and ciphertext;
* given a Redis expiry equal to the idle timeout (capped by the lifetime), renewed on use, so
  Redis forgets idle sessions by itself.

Why Redis and not a self-contained encrypted cookie (which needs no store at all): sign-out,
and a token that TokenReview stops accepting, must end the session on every replica at once.
A cookie that carries the sealed token stays usable until it expires wherever a copy of it
went, and sealing it needs a server key shared by every replica — one more secret to create,
distribute and rotate. Redis is already part of any installation with several replicas (the
verifier's shared rate limits), deletion ends a session everywhere, and the key that opens a
record exists only in the browser that owns it.

A Redis failure is an error (503 ``session_store_unavailable``), not a sign-out.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import redis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pmkeys.ui.errors import UiError
from pmkeys.ui.identity import User
from pmkeys.ui.sessions import Session

_INFO = b"pmkeys ui session v1"
_NONCE = 12


def record_name(prefix: str, session_id: str) -> str:
    return f"{prefix}:ui:session:{hashlib.sha256(session_id.encode()).hexdigest()}"


def _key(session_id: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(session_id.encode())


def seal(session: Session, name: str) -> bytes:
    record = {
        "user": {
            "username": session.user.username,
            "uid": session.user.uid,
            "groups": list(session.user.groups),
            "extra": [[k, list(vs)] for k, vs in session.user.extra],
        },
        "token": session.token,
        "csrf": session.csrf,
        "created": session.created,
        "last_seen": session.last_seen,
        "checked": session.checked,
    }
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(_key(session.id)).encrypt(nonce, json.dumps(record).encode(), name.encode())


def unseal(session_id: str, name: str, sealed: bytes) -> Session | None:
    """The session in ``sealed``, or None if it does not open with this id."""
    try:
        plain = AESGCM(_key(session_id)).decrypt(sealed[:_NONCE], sealed[_NONCE:], name.encode())
    except Exception:  # InvalidTag, truncated data: not a session this id can open
        return None
    record: dict[str, Any] = json.loads(plain)
    user = record["user"]
    return Session(
        session_id,
        User(
            user["username"],
            uid=user["uid"],
            groups=tuple(user["groups"]),
            extra=tuple((k, tuple(vs)) for k, vs in user["extra"]),
        ),
        record["token"],
        record["csrf"],
        created=record["created"],
        last_seen=record["last_seen"],
        checked=record["checked"],
    )


class RedisBackend:
    def __init__(self, url: str, *, prefix: str = "pmkeys", timeout: float = 2.0) -> None:
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def load(self, session_id: str) -> Session | None:
        name = record_name(self.prefix, session_id)
        sealed = self._call(self._redis.get, name)
        return None if sealed is None else unseal(session_id, name, sealed)

    def save(self, session: Session, *, ttl: float) -> None:
        name = record_name(self.prefix, session.id)
        self._call(self._redis.set, name, seal(session, name), px=int(ttl * 1000))

    def delete(self, session_id: str) -> None:
        self._call(self._redis.delete, record_name(self.prefix, session_id))

    def __len__(self) -> int:
        return sum(1 for _ in self._redis.scan_iter(match=f"{self.prefix}:ui:session:*", count=1000))

    def close(self) -> None:
        self._redis.close()

    @staticmethod
    def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            detail = f"the session store (Redis) did not answer ({type(exc).__name__}); retry"
            raise UiError(503, "session_store_unavailable", detail) from None
