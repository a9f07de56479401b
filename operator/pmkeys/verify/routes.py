"""Which scope a request needs, from its method and path: the gateway endpoint's route map.

Configured as ``"METHOD /prefix=scope"`` entries (``PMKEYS_ROUTES``, Helm ``verifier.routes``):
``"POST /v1/messages=send_email"``, ``"GET /v1/analytics=read_analytics"``,
``"* /v1/contacts=manage_contacts"``, ``"GET /v1/me=*"``. ``METHOD`` may be ``*`` (any method);
scope ``*`` means any valid key, whatever its scopes.

Matching is by path *segment*: ``/v1/messages`` covers ``/v1/messages`` and
``/v1/messages/123`` but not ``/v1/messagesX``. The longest prefix wins; for equal prefixes an
exact method beats ``*``.

The path is taken from the raw request target and percent-decoded exactly once, segment by
segment. What upstreams disagree about is refused (:class:`AmbiguousPath`), never resolved:
the verifier must not decide for a path the upstream would route somewhere else. Refused are
encoded separators (``%2F``, ``%5C``) and a decoded ``%`` (``%252F``: decoded again by some
upstreams), a backslash, ``;`` (path parameters: ``/v1/contacts/42;x://h/v1/me``), dot segments
(``.``, ``..``, also encoded), control characters, a fragment, invalid escapes, and targets that
are neither a path nor an absolute URI with a scheme (``//host/path``, ``v1/x``, ``*``). What
every upstream agrees on is normalised: the query is dropped, ``//`` inside a path counts as
``/``, ``%61`` is ``a``, and ``http://host/v1/x`` is ``/v1/x``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from pmkeys.api.vocabulary import Scope

ANY = "*"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", ANY})
_SCOPES = ", ".join(s.value for s in Scope)


class RouteError(ValueError):
    """A route entry is malformed; the message quotes the entry and the expected format."""


class AmbiguousPath(ValueError):
    """A request path that upstreams may read differently; the message says what was found."""


_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: Characters that must not appear in a segment, raw or decoded.
_FORBIDDEN = re.compile(r"[\\;%#\x00-\x20\x7f]")
_FORBIDDEN_NAMES = {"\\": "a backslash", ";": "';' (path parameters)", "%": "an encoded '%' (double encoding)",
                    "#": "a fragment"}  # fmt: skip


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
    try:
        return Route(method, normalise_path(prefix), scope)
    except AmbiguousPath as exc:
        raise RouteError(f"routes entry {entry!r}: {exc}") from None


def normalise_path(raw: str) -> str:
    """The path of a raw request target, decoded once; :class:`AmbiguousPath` if upstreams may
    read it differently (see the module docstring)."""
    target = raw.split("?", 1)[0]
    absolute = _ABSOLUTE.match(target)
    if absolute:
        target = target[absolute.end() :] or "/"
    if not target.startswith("/"):
        raise AmbiguousPath("the request target must be a path starting with '/' or an absolute URI")
    if target.startswith("//"):
        raise AmbiguousPath("a request target starting with '//' names a host, not a path")
    if _ESCAPE.search(target):
        raise AmbiguousPath("the path has an invalid percent-escape")
    segments = []
    for raw_segment in target.split("/")[1:]:
        if _FORBIDDEN.search(raw_segment.replace("%", "")):
            raise AmbiguousPath(f"the path contains {_describe(raw_segment)}")
        segment = unquote(raw_segment)
        if "/" in segment:
            raise AmbiguousPath("the path contains an encoded '/'")
        if _FORBIDDEN.search(segment):
            raise AmbiguousPath(f"the path contains {_describe(segment)}")
        if segment in (".", ".."):
            raise AmbiguousPath("the path contains a dot segment ('.' or '..')")
        if segment:
            segments.append(segment)
    return "/" + "/".join(segments)


def _describe(segment: str) -> str:
    found = _FORBIDDEN.search(segment)
    char = found.group() if found else "?"
    return _FORBIDDEN_NAMES.get(char, "a control character or space")


class RouteMap:
    def __init__(self, routes: Iterable[Route] = ()) -> None:
        # Longest prefix first; for equal prefixes, an exact method before "*".
        self.routes = sorted(routes, key=lambda r: (-len(r.prefix), r.method == ANY))

    @classmethod
    def parse(cls, entries: Iterable[str]) -> RouteMap:
        return cls(parse_route(e) for e in entries if e.strip())

    def match(self, method: str, raw_path: str) -> Route | None:
        """The route for a raw request target; :class:`AmbiguousPath` if it is ambiguous."""
        method = method.upper()
        path = normalise_path(raw_path)
        return next((r for r in self.routes if r.covers(method, path)), None)

    def __len__(self) -> int:
        return len(self.routes)
