"""The JSON API against the real API server, OpenBao and operator: every action, RBAC and
tenant isolation, reveal-once, and malformed input answered with 422 naming the field.

Plaintext keys are compared as booleans (never as assertion operands) so a failing test
cannot print one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from pmkeys.api import vocabulary as v
from pmkeys.keys.material import ApiKey
from pmkeys.vault.records import KeyState
from tests.builders import key
from tests.kube import Kube, wait_for
from tests.ui.conftest import VIEWER_ROLE, TenantUser, UiServer, reveal, secret_annotations, wait_issued, wait_key
from tests.vaultview import VaultView, bcrypt_matches

pytestmark = [pytest.mark.integration]


def create(user: TenantUser, name: str, **fields: object) -> httpx.Response:
    body = {"name": name, "scopes": ["send_email"], **fields}
    return user.http.post(user.keys_url(), json=body)


def created_and_issued(user: TenantUser, name: str, **fields: object) -> dict:
    response = create(user, name, **fields)
    assert response.status_code == 201, response.text
    return wait_issued(user, name)


def works_in_vault(vault: VaultView, key: ApiKey, *, key_id: str) -> bool:
    record = vault.record_for(key.value)
    return (
        record is not None
        and record.key_id == key_id
        and bcrypt_matches(key.value, record)
        and record.usable_at(dt.datetime.now(dt.UTC))
    )


def error_fields(response: httpx.Response) -> list[str]:
    return [f["field"] for f in response.json()["error"]["fields"]]


# -- the happy path ----------------------------------------------------------------------
def test_create_then_reveal_once_then_409(admin: TenantUser, kube: Kube, vault: VaultView) -> None:
    response = create(
        admin,
        "billing",
        displayName="Billing",
        tier="pro",
        environment="test",
        scopes=["send_email", "read_analytics"],
        rotationInterval="90d",
    )
    assert response.status_code == 201
    body = response.json()
    summary = (body["name"], body["namespace"], body["tier"], body["rateLimit"])
    assert summary == ("billing", admin.namespace, "pro", 300)
    assert kube.get_key(admin.namespace, "billing")["spec"]["tenant"] == admin.namespace

    issued = wait_issued(admin, "billing")
    key_id, plaintext = reveal(kube, admin, "billing")
    assert key_id == issued["keyId"]
    same_as_secret = plaintext.value == kube.plaintext(admin.namespace, issued["secretName"])
    assert same_as_secret, "the revealed key must be the Secret's key"
    assert plaintext.environment == "test"
    assert works_in_vault(vault, plaintext, key_id=key_id), "the revealed key must match its Vault record"
    assert v.REVEALED_ANNOTATION in secret_annotations(kube, admin.namespace, issued["secretName"])

    again = admin.http.post(admin.keys_url(name="billing", action="reveal"))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_revealed"
    assert "apiKey" not in again.json()
    assert again.headers["cache-control"] == "no-store"


def test_concurrent_reveals_show_the_key_once(admin: TenantUser, kube: Kube) -> None:
    created_and_issued(admin, "raced")
    url = admin.keys_url(name="raced", action="reveal")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: admin.http.post(url), range(4)))
    for answer in answers:
        if answer.status_code == 200:
            kube.issued.add(answer.json()["apiKey"])
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]


def test_get_list_and_filter(admin: TenantUser, kube: Kube) -> None:
    created_and_issued(admin, "zeta-mailer", displayName="Zeta mailer")
    created_and_issued(admin, "alpha-crm", scopes=["manage_contacts"])
    revoked = admin.http.post(admin.keys_url(name="alpha-crm", action="revoke"), json={"confirm": "alpha-crm"})
    assert revoked.status_code == 200
    wait_key(admin, "alpha-crm", lambda k: k["phase"] == "Revoked", what="alpha-crm revoked")

    everything = admin.http.get(admin.keys_url()).json()["items"]
    assert [k["name"] for k in everything] == ["zeta-mailer", "alpha-crm"], "revoked keys come last"
    zeta = everything[0]
    for column in (
        "displayPrefix",
        "environment",
        "scopes",
        "tier",
        "rateLimit",
        "phase",
        "createdAt",
        "usage",
        "nextRotationAt",
        "expiresAt",
    ):
        assert column in zeta
    assert zeta["displayPrefix"].startswith("pm_live_") and zeta["displayName"] == "Zeta mailer"

    by_name = admin.http.get(admin.keys_url(), params={"name": "MAILER"}).json()["items"]
    assert [k["name"] for k in by_name] == ["zeta-mailer"]
    by_status = admin.http.get(admin.keys_url(), params={"status": "Revoked"}).json()["items"]
    assert [k["name"] for k in by_status] == ["alpha-crm"]
    bad_status = admin.http.get(admin.keys_url(), params={"status": "Sleeping"})
    assert bad_status.status_code == 422 and error_fields(bad_status) == ["status"]


def test_regenerate_with_grace_keeps_old_key_working(admin: TenantUser, kube: Kube, vault: VaultView) -> None:
    first = created_and_issued(admin, "rotating")
    old_id, old_key = reveal(kube, admin, "rotating")

    response = admin.http.post(admin.keys_url(name="rotating", action="regenerate"), json={"gracePeriod": "1h"})
    assert response.status_code == 202
    result = response.json()
    assert (result["previousKeyId"], result["counter"], result["gracePeriod"]) == (first["keyId"], 1, "1h")
    spec = kube.get_key(admin.namespace, "rotating")["spec"]
    assert spec["rotation"]["gracePeriod"] == "1h" and spec["rotation"]["counter"] == 1

    second = wait_issued(admin, "rotating", other_than=old_id)
    new_id, new_key = reveal(kube, admin, "rotating")
    assert new_id == second["keyId"] != old_id
    differs = new_key != old_key
    assert differs, "regenerate must issue a different key"
    assert works_in_vault(vault, new_key, key_id=new_id)
    old_record = vault.record_for(old_key.value)
    assert old_record is not None and old_record.state is KeyState.RETIRING
    remaining = old_record.not_after - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=55) < remaining <= dt.timedelta(hours=1)
    assert [p["keyId"] for p in second["previousKeys"]] == [old_id]


def test_regenerate_now_revokes_the_old_key(admin: TenantUser, kube: Kube, vault: VaultView) -> None:
    created_and_issued(admin, "hard-swap")
    old_id, old_key = reveal(kube, admin, "hard-swap")
    response = admin.http.post(admin.keys_url(name="hard-swap", action="regenerate"), json={"gracePeriod": "0"})
    assert response.status_code == 202
    wait_issued(admin, "hard-swap", other_than=old_id)
    wait_for(
        lambda: (r := vault.record_for(old_key.value)) is not None and r.state is KeyState.REVOKED,
        what="old key revoked at once",
    )


def test_revoke_needs_the_name_and_is_final(admin: TenantUser, kube: Kube) -> None:
    created_and_issued(admin, "doomed")
    wrong = admin.http.post(admin.keys_url(name="doomed", action="revoke"), json={"confirm": "doom"})
    assert wrong.status_code == 422 and error_fields(wrong) == ["confirm"]
    assert kube.get_key(admin.namespace, "doomed")["spec"]["revoked"] is False

    done = admin.http.post(admin.keys_url(name="doomed", action="revoke"), json={"confirm": "doomed"})
    assert done.status_code == 200 and done.json()["revoked"] is True
    wait_key(admin, "doomed", lambda k: k["phase"] == "Revoked", what="phase Revoked")
    twice = admin.http.post(admin.keys_url(name="doomed", action="revoke"), json={"confirm": "doomed"})
    assert twice.status_code == 200

    shown = admin.http.post(admin.keys_url(name="doomed", action="reveal"))
    assert shown.status_code == 409 and shown.json()["error"]["code"] == "revoked"
    regenerated = admin.http.post(admin.keys_url(name="doomed", action="regenerate"), json={"gracePeriod": "0"})
    assert regenerated.status_code == 409 and regenerated.json()["error"]["code"] == "revoked"


def test_audit_trail_newest_first(admin: TenantUser) -> None:
    first = created_and_issued(admin, "audited")
    admin.http.post(admin.keys_url(name="audited", action="regenerate"), json={"gracePeriod": "0"})
    wait_issued(admin, "audited", other_than=first["keyId"])

    def trail() -> list[dict] | None:
        items = admin.http.get(admin.keys_url(name="audited", action="events")).json()["items"]
        return items if {"KeyIssued", "KeyRotated"} <= {e["reason"] for e in items} else None

    events = wait_for(trail, what="KeyIssued and KeyRotated events")
    times = [e["time"] for e in events]
    assert times == sorted(times, reverse=True)
    reasons = [e["reason"] for e in events]
    assert reasons.index("KeyRotated") < reasons.index("KeyIssued"), "newest first"


def test_unknown_key_is_404(admin: TenantUser) -> None:
    calls = [
        ("GET", "", None),
        ("GET", "events", None),
        ("POST", "reveal", None),
        ("POST", "regenerate", {"gracePeriod": "1h"}),
        ("POST", "revoke", {"confirm": "ghost"}),
    ]
    for method, action, body in calls:
        response = admin.http.request(method, admin.keys_url(name="ghost", action=action), json=body)
        assert response.status_code == 404, (method, action)
        assert response.json()["error"]["code"] == "not_found"


# -- malformed input ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "ok"}, "scopes"),
        ({"name": "ok", "scopes": []}, "scopes"),
        ({"name": "ok", "scopes": ["send_sms"]}, "scopes"),
        ({"name": "Not_A_Name", "scopes": ["send_email"]}, "name"),
        ({"scopes": ["send_email"]}, "name"),
        ({"name": "ok", "scopes": ["send_email"], "tier": "gold"}, "tier"),
        ({"name": "ok", "scopes": ["send_email"], "environment": "prod"}, "environment"),
        ({"name": "ok", "scopes": ["send_email"], "rateLimit": 0}, "rateLimit"),
        ({"name": "ok", "scopes": ["send_email"], "rateLimit": "fast"}, "rateLimit"),
        ({"name": "ok", "scopes": ["send_email"], "expiresAt": "2001-01-01T00:00:00Z"}, "expiresAt"),
        ({"name": "ok", "scopes": ["send_email"], "expiresAt": "tomorrow"}, "expiresAt"),
        ({"name": "ok", "scopes": ["send_email"], "colour": "blue"}, "colour"),
        ({"name": "ok", "scopes": ["send_email", "send_email"]}, "scopes"),
        ({"name": "ok", "scopes": ["send_email"], "rotationInterval": "3 weeks"}, "rotationInterval"),
        ({"name": "x" * 254, "scopes": ["send_email"]}, "name"),
    ],
)
def test_malformed_create_is_422_naming_the_field(admin: TenantUser, body: dict, field: str) -> None:
    response = admin.http.post(admin.keys_url(), json=body)
    assert response.status_code == 422
    assert field in error_fields(response)


def test_api_server_validation_is_passed_on_with_field_names(admin: TenantUser, kube: Kube) -> None:
    """A rule that lives only in the CRD (the CEL tier ceiling) comes back from the API server
    as 422 naming the API's field, with the CRD's message."""
    over = create(admin, "greedy", tier="starter", rateLimit=500)
    assert over.status_code == 422 and error_fields(over) == ["rateLimit"]
    assert "rateLimit must not exceed the tier's ceiling" in over.json()["error"]["fields"][0]["message"]
    assert kube.key_gone(admin.namespace, "greedy")
    assert create(admin, "modest", tier="pro", rateLimit=250).status_code == 201


def test_other_malformed_requests(admin: TenantUser) -> None:
    not_json = admin.http.post(admin.keys_url(), content=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422 and error_fields(not_json) == ["body"]
    created_and_issued(admin, "subject")
    bad_grace = admin.http.post(admin.keys_url(name="subject", action="regenerate"), json={"gracePeriod": "2h"})
    assert bad_grace.status_code == 422 and error_fields(bad_grace) == ["gracePeriod"]
    no_confirm = admin.http.post(admin.keys_url(name="subject", action="revoke"), json={})
    assert no_confirm.status_code == 422 and error_fields(no_confirm) == ["confirm"]
    bad_name = admin.http.get(admin.keys_url(name="UPPER"))
    assert bad_name.status_code == 422 and error_fields(bad_name) == ["name"]
    bad_ns = admin.http.get("/api/v1/namespaces/Not_Valid/keys")
    assert bad_ns.status_code == 422 and error_fields(bad_ns) == ["namespace"]
    taken = create(admin, "subject")
    assert taken.status_code == 409 and error_fields(taken) == ["name"]


# -- who may do what ---------------------------------------------------------------------
def test_tenant_isolation(
    make_user: Callable[..., TenantUser], namespace_factory: Callable[..., str], kube: Kube
) -> None:
    ns_a, ns_b = namespace_factory("iso-a", prefix="iso-a"), namespace_factory("iso-b", prefix="iso-b")
    alice, bob = make_user(ns_a), make_user(ns_b)
    response = bob.http.post(bob.keys_url(), json={"name": "bobs-key", "scopes": ["send_email"]})
    assert response.status_code == 201
    bobs = wait_issued(bob, "bobs-key")

    me = alice.http.get("/api/v1/me").json()
    assert [n["namespace"] for n in me["namespaces"]] == [ns_a]
    attempts = [
        ("GET", alice.keys_url(ns_b), None),
        ("POST", alice.keys_url(ns_b), {"name": "intruder", "scopes": ["send_email"]}),
        ("GET", alice.keys_url(ns_b, "bobs-key"), None),
        ("GET", alice.keys_url(ns_b, "bobs-key", "events"), None),
        ("POST", alice.keys_url(ns_b, "bobs-key", "reveal"), None),
        ("POST", alice.keys_url(ns_b, "bobs-key", "regenerate"), {"gracePeriod": "0"}),
        ("POST", alice.keys_url(ns_b, "bobs-key", "revoke"), {"confirm": "bobs-key"}),
        ("GET", f"/api/v1/namespaces/{ns_b}", None),
    ]
    for method, url, body in attempts:
        answer = alice.http.request(method, url, json=body)
        assert answer.status_code in (403, 404), (method, url, answer.status_code)

    # Nothing of Bob's changed, and his key was not revealed to anyone.
    assert kube.key_gone(ns_b, "intruder")
    after = kube.get_key(ns_b, "bobs-key")
    assert after["spec"]["revoked"] is False and after["spec"]["rotation"]["counter"] == 0
    assert after["status"]["keyId"] == bobs["keyId"]
    assert v.REVEALED_ANNOTATION not in secret_annotations(kube, ns_b, bobs["secretName"])
    # Even a namespace that does not exist looks the same as someone else's.
    assert alice.http.get(alice.keys_url("no-such-namespace")).status_code == 403


def test_token_without_rights_gets_403(make_user: Callable[..., TenantUser], tenant: str, ui_server: UiServer) -> None:
    nobody = make_user(tenant, role=None)
    me = nobody.http.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["namespaces"] == []
    assert nobody.http.get(nobody.keys_url()).status_code == 403
    created = nobody.http.post(nobody.keys_url(), json={"name": "nope", "scopes": ["send_email"]})
    assert created.status_code == 403 and created.json()["error"]["code"] == "forbidden"

    with httpx.Client(base_url=ui_server.url) as anonymous:
        assert anonymous.get("/api/v1/me").status_code == 401
        bogus = anonymous.get("/api/v1/me", headers={"Authorization": "Bearer not-a-token"})
        assert bogus.status_code == 401 and bogus.headers["www-authenticate"] == "Bearer"


def test_viewer_sees_but_cannot_change_or_reveal(
    make_user: Callable[..., TenantUser], admin: TenantUser, kube: Kube
) -> None:
    created_and_issued(admin, "watched")
    viewer = make_user(admin.namespace, role="viewer")
    me = viewer.http.get("/api/v1/me").json()
    assert me["namespaces"] == [
        {"namespace": admin.namespace, "tenant": admin.namespace, "canManage": False, "canReveal": False}
    ]
    assert [k["name"] for k in viewer.http.get(viewer.keys_url()).json()["items"]] == ["watched"]
    assert viewer.http.get(viewer.keys_url(name="watched", action="events")).status_code == 200
    assert viewer.http.post(viewer.keys_url(), json={"name": "mine", "scopes": ["send_email"]}).status_code == 403
    assert viewer.http.post(viewer.keys_url(name="watched", action="reveal")).status_code == 403
    revoke = viewer.http.post(viewer.keys_url(name="watched", action="revoke"), json={"confirm": "watched"})
    assert revoke.status_code == 403
    assert kube.get_key(admin.namespace, "watched")["spec"]["revoked"] is False
    # The viewer's failed reveal did not burn the key: the admin can still see it once.
    reveal(kube, admin, "watched")


def test_keys_made_with_kubectl_show_up(admin: TenantUser, kube: Kube) -> None:
    kube.create_key(key("gitops-managed", admin.namespace, tier="enterprise"))
    found = wait_issued(admin, "gitops-managed")
    assert found["tier"] == "enterprise" and found["rateLimit"] == 1000


# -- sessions (the pages' way in) --------------------------------------------------------
def signed_in(ui_server: UiServer, user: TenantUser) -> tuple[httpx.Client, str]:
    browser = httpx.Client(base_url=ui_server.url, timeout=30)
    form = browser.get("/signin")
    nonce = form.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = browser.post("/signin", data={"token": user.token, "csrf_token": nonce, "next": "/"})
    assert response.status_code == 303
    page = browser.get(f"/ns/{user.namespace}/keys")
    assert page.status_code == 200
    csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    return browser, csrf


def test_session_cookie_flags_and_csrf(ui_server: UiServer, admin: TenantUser) -> None:
    browser = httpx.Client(base_url=ui_server.url, timeout=30)
    browser.get("/signin")
    forged = browser.post("/signin", data={"token": admin.token, "csrf_token": "guess", "next": "/"})
    assert forged.status_code == 403 and not any(c.name == "pmkeys_session" for c in browser.cookies.jar)
    browser.close()

    browser, csrf = signed_in(ui_server, admin)
    try:
        cookie = next(c for c in browser.cookies.jar if c.name == "pmkeys_session")
        assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "strict"
        url = admin.keys_url()
        body = {"name": "via-cookie", "scopes": ["send_email"]}
        assert browser.get(url).status_code == 200, "reading needs no CSRF token"
        refused = browser.post(url, json=body)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf"
        wrong = browser.post(url, json=body, headers={"X-CSRF-Token": "x" * 43})
        assert wrong.status_code == 403
        cross_site = browser.post(url, json=body, headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
        assert cross_site.status_code == 403
        assert browser.post(url, json=body, headers={"X-CSRF-Token": csrf}).status_code == 201

        out = browser.post("/signout", data={"csrf_token": csrf})
        assert out.status_code == 303
        assert browser.get(url).status_code == 401, "the session ends at sign-out"
    finally:
        browser.close()


def test_session_ends_when_the_token_is_no_longer_accepted(ui_server: UiServer, admin: TenantUser, kube: Kube) -> None:
    browser, _ = signed_in(ui_server, admin)
    try:
        kube.core.delete_namespaced_service_account(admin.name, admin.namespace)
        wait_for(
            lambda: browser.get(admin.keys_url()).status_code == 401,
            timeout=40,
            what="session refused once its ServiceAccount is gone",
        )
        page = browser.get(f"/ns/{admin.namespace}/keys")
        assert page.status_code == 303 and page.headers["location"].startswith("/signin")
    finally:
        browser.close()


def test_home_page_lists_every_tenant_of_the_user(
    ui_server: UiServer, make_user: Callable[..., TenantUser], namespace_factory: Callable[..., str], kube: Kube
) -> None:
    first, second = namespace_factory("multi-a", prefix="multi-a"), namespace_factory("multi-b", prefix="multi-b")
    user = make_user(first)
    browser, _ = signed_in(ui_server, user)
    try:
        home = browser.get("/")
        assert home.status_code == 303 and home.headers["location"] == f"/ns/{first}/keys", "one tenant: go there"
        kube.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"{user.name}-also", "namespace": second},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": VIEWER_ROLE},
                "subjects": [{"kind": "ServiceAccount", "name": user.name, "namespace": first}],
            }
        )
        chooser = wait_for(lambda: (r := browser.get("/")).status_code == 200 and r, what="the tenant chooser")
        assert f"/ns/{first}/keys" in chooser.text and f"/ns/{second}/keys" in chooser.text
        assert "Read-only access" in chooser.text
    finally:
        browser.close()


def test_detail_page_without_rights_on_events(
    ui_server: UiServer, admin: TenantUser, make_user: Callable[..., TenantUser], kube: Kube
) -> None:
    created_and_issued(admin, "quiet")
    reader = make_user(admin.namespace, role=None)
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "keys-only", "namespace": admin.namespace},
            "rules": [{"apiGroups": [v.GROUP], "resources": [v.PLURAL], "verbs": ["get", "list"]}],
        }
    )
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "keys-only", "namespace": admin.namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "keys-only"},
            "subjects": [{"kind": "ServiceAccount", "name": reader.name, "namespace": admin.namespace}],
        }
    )
    wait_for(
        lambda: (
            reader.http.get(reader.keys_url(name="quiet", action="events")).status_code == 403
            and reader.http.get(reader.keys_url(name="quiet")).status_code == 200
        ),
        what="keys-only role in effect",
    )
    browser, _ = signed_in(ui_server, reader)
    try:
        page = browser.get(f"/ns/{admin.namespace}/keys/quiet")
        assert page.status_code == 200
        assert "does not allow reading this key's Events" in page.text
    finally:
        browser.close()


def test_openapi_document_is_published(ui_server: UiServer) -> None:
    doc = httpx.get(f"{ui_server.url}/api/v1/openapi.json").json()
    paths = doc["paths"]
    assert "/api/v1/namespaces/{namespace}/keys/{name}/reveal" in paths
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert paths["/api/v1/namespaces/{namespace}/keys"]["post"]["responses"]["422"]["content"]["application/json"][
        "schema"
    ]["$ref"].endswith("/ErrorBody")


def test_security_headers(ui_server: UiServer) -> None:
    page = httpx.get(f"{ui_server.url}/signin")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
