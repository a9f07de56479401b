"""The gateway's route map: parsing with helpful errors, segment matching, path normalisation,
and the refusal of paths upstreams may read differently."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pmkeys.api.vocabulary import Scope
from pmkeys.verify.routes import AmbiguousPath, RouteError, RouteMap, normalise_path, parse_route

ROUTES = RouteMap.parse(
    [
        "POST /v1/messages=send_email",
        "GET /v1/analytics=read_analytics",
        "* /v1/contacts=manage_contacts",
        "GET /v1/contacts/export=read_analytics",
        "GET /v1/me=*",
        "* /v1/messages/drafts=manage_contacts",
    ]
)


def scope(method: str, path: str) -> str | None:
    route = ROUTES.match(method, path)
    if route is None:
        return "unmapped"
    return route.scope.value if route.scope else "any"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/messages", "send_email"),
        ("post", "/v1/messages/123/attachments", "send_email"),
        ("GET", "/v1/messages", "unmapped"),
        ("POST", "/v1/messagesX", "unmapped"),
        ("GET", "/v1/analytics?from=2024-01-01", "read_analytics"),
        ("DELETE", "/v1/contacts/42", "manage_contacts"),
        ("GET", "/v1/contacts/export", "read_analytics"),  # longer prefix wins
        ("POST", "/v1/contacts/export", "manage_contacts"),  # method must match too
        ("GET", "/v1/me", "any"),
        ("POST", "/v1/messages/drafts/1", "manage_contacts"),
        ("GET", "/", "unmapped"),
    ],
)
def test_matching(method: str, path: str, expected: str) -> None:
    assert scope(method, path) == expected


@pytest.mark.parametrize(
    "path",
    ["/v1//analytics", "/v1/%61nalytics", "http://api.example/v1/analytics", "/v1/analytics/", "/v1/analytics?x=/../"],
)  # fmt: skip
def test_equivalent_spellings_match_the_same_route(path: str) -> None:
    assert scope("GET", path) == "read_analytics"


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/v1/./analytics", "dot segment"),
        ("/v1/messages/../analytics", "dot segment"),
        ("/v1/messages/%2e%2e/analytics", "dot segment"),
        ("/v1/messages/..%2F..%2Fv1%2Fanalytics", "encoded '/'"),
        ("/v1/messages/%2Fx", "encoded '/'"),
        ("/v1/messages%5C..%5Canalytics", "backslash"),
        ("/v1/messages\\x", "backslash"),
        ("/v1/messages/%252F", "double encoding"),
        ("/v1/contacts/42;x://h/v1/me", "path parameters"),
        ("/v1/contacts/42%3Bx", "path parameters"),
        ("//v1/analytics", "names a host"),
        ("v1/analytics", "starting with '/'"),
        ("*", "starting with '/'"),
        ("/v1/analytics#frag", "fragment"),
        ("/v1/a%zz", "invalid percent-escape"),
        ("/v1/a%00b", "control character"),
    ],
)
def test_ambiguous_paths_are_refused_not_resolved(path: str, named: str) -> None:
    with pytest.raises(AmbiguousPath) as caught:
        ROUTES.match("GET", path)
    assert named in str(caught.value)


def test_an_ambiguous_prefix_is_a_configuration_error() -> None:
    with pytest.raises(RouteError) as caught:
        parse_route("GET /v1/../admin=*")
    assert "dot segment" in str(caught.value)


def test_an_exact_method_beats_a_wildcard_for_the_same_prefix() -> None:
    routes = RouteMap.parse(["* /v1/x=send_email", "GET /v1/x=read_analytics"])
    assert routes.match("GET", "/v1/x").scope is Scope.READ_ANALYTICS
    assert routes.match("PUT", "/v1/x").scope is Scope.SEND_EMAIL


def test_root_prefix_covers_everything() -> None:
    assert RouteMap.parse(["* /=*"]).match("PATCH", "/anything/at/all") is not None


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ("POST /v1/messages", "expected 'METHOD /path/prefix=scope'"),
        ("/v1/messages=send_email", "expected 'METHOD /path/prefix=scope'"),
        ("FETCH /v1/messages=send_email", "method must be one of"),
        ("POST v1/messages=send_email", "must start with '/'"),
        ("POST /v1/messages=send_mail", "send_email, read_analytics, manage_contacts"),
    ],
)
def test_bad_entries_say_what_is_expected(entry: str, named: str) -> None:
    with pytest.raises(RouteError) as caught:
        parse_route(entry)
    assert named in str(caught.value)
    assert repr(entry) in str(caught.value)


def test_blank_entries_are_ignored() -> None:
    assert len(RouteMap.parse(["", "  ", "GET /x=*"])) == 1


@given(st.text(max_size=200))
def test_normalised_paths_are_absolute_and_free_of_dot_segments(raw: str) -> None:
    try:
        path = normalise_path(raw)
    except AmbiguousPath:
        return
    assert path.startswith("/")
    assert not path.startswith("//")
    segments = path.split("/")
    assert ".." not in segments[1:] and "." not in segments[1:]


@given(st.sampled_from(["GET", "POST", "PUT", "DELETE"]), st.text(alphabet="/.%a2e", max_size=40))
def test_matching_never_fails_on_odd_paths(method: str, raw: str) -> None:
    """Odd paths match a route, no route, or are refused as ambiguous; nothing else happens."""
    with contextlib.suppress(AmbiguousPath):
        ROUTES.match(method, raw)
