"""Which scope a request needs, from its method and path: the gateway endpoint's route map.

Configured as ``"METHOD /prefix=scope"`` entries (``PMKEYS_ROUTES``, Helm ``verifier.routes``):
``"POST /v1/messages=send_email"``, ``"GET /v1/analytics=read_analytics"``,
``"* /v1/contacts=manage_contacts"``, ``"GET /v1/me=*"``. ``METHOD`` may be ``*`` (any method);
scope ``*`` means any valid key, whatever its scopes.

Matching is by path *segment*: ``/v1/messages`` covers ``/v1/messages`` and
``/v1/messages/123`` but not ``/v1/messagesX``. The longest prefix wins; for equal prefixes an
exact method beats ``*``. Paths are normalised first (query dropped, percent-escapes decoded,
``//``, ``.`` and ``..`` resolved), so ``/v1//messages`` or ``/v1/x/../messages`` cannot slip past
the entry for ``/v1/messages``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from pmkeys.api.vocabulary import Scope

ANY = "*"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", ANY})
_SCOPES = ", ".join(s.value for s in Scope)


class RouteError(ValueError):
    """A route entry is malformed; the message quotes the entry and the expected format."""


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    prefix: str
    #: None: any valid key may use the route.
    scope: Scope | None

    def covers(self, method: str, path: str) -> bool:
        if self.method != ANY and self.method != method:
            return False
        if self.prefix == "/":
            return True
        return path == self.prefix or path.startswith(self.prefix + "/")


def parse_route(entry: str) -> Route:
    """``"POST /v1/messages=send_email"`` → :class:`Route`; errors say what was expected."""
    form = "expected 'METHOD /path/prefix=scope', e.g. 'POST /v1/messages=send_email'"
    target, sep, scope_text = entry.strip().rpartition("=")
    parts = target.split()
    if not sep or len(parts) != 2:
        raise RouteError(f"routes entry {entry!r}: {form}")
    method, prefix = parts[0].upper(), parts[1]
    if method not in _METHODS:
        raise RouteError(f"routes entry {entry!r}: method must be one of {', '.join(sorted(_METHODS))}")
    if not prefix.startswith("/"):
        raise RouteError(f"routes entry {entry!r}: the path prefix must start with '/'")
    scope_text = scope_text.strip()
    if scope_text == ANY:
        scope = None
    else:
        try:
            scope = Scope(scope_text)
        except ValueError:
            raise RouteError(
                f"routes entry {entry!r}: scope must be one of {_SCOPES}, or * for any valid key"
            ) from None
    return Route(method, normalise_path(prefix), scope)


def normalise_path(raw: str) -> str:
    """The path part of a request target, decoded and with dot segments resolved."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:  # absolute-form request target
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    path = unquote(path)
    if not path.startswith("/"):
        path = "/" + path
    normal = posixpath.normpath(path)
    if normal.startswith("//"):  # posixpath keeps a leading "//"
        normal = "/" + normal.lstrip("/")
    return normal


class RouteMap:
    def __init__(self, routes: Iterable[Route] = ()) -> None:
        # Longest prefix first; for equal prefixes, an exact method before "*".
        self.routes = sorted(routes, key=lambda r: (-len(r.prefix), r.method == ANY))

    @classmethod
    def parse(cls, entries: Iterable[str]) -> RouteMap:
        return cls(parse_route(e) for e in entries if e.strip())

    def match(self, method: str, raw_path: str) -> Route | None:
        method = method.upper()
        path = normalise_path(raw_path)
        return next((r for r in self.routes if r.covers(method, path)), None)

    def __len__(self) -> int:
        return len(self.routes)
