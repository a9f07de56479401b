"""Through the UI: the signed-in user is the actor, reveals and sign-ins (failed ones too) are
recorded with the client address, the trail is readable (page, JSON, CSV) only by those who
may view the namespace, and it outlives a restart of the UI."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import httpx
import pytest

from pmkeys_dev.environment import LocalEnvironment
from tests.audit.trail import dump, wait_record
from tests.kube import Kube, wait_for
from tests.ui.conftest import TenantUser, UiServer, reveal, wait_issued

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator")]


def _browser(ui_server: UiServer, token: str) -> tuple[httpx.Client, httpx.Response]:
    browser = httpx.Client(base_url=ui_server.url, timeout=30)
    form = browser.get("/signin")
    nonce = form.text.split('name="csrf_token" value="')[1].split('"')[0]
    return browser, browser.post("/signin", data={"token": token, "csrf_token": nonce, "next": "/"})


def _sign_in(ui_server: UiServer, token: str) -> httpx.Response:
    browser, answer = _browser(ui_server, token)
    browser.close()
    return answer


def _trail(user: TenantUser, **params: str) -> list[dict[str, object]]:
    response = user.http.get(f"/api/v1/namespaces/{user.namespace}/audit", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


def test_a_key_made_and_revealed_through_the_ui_names_the_signed_in_user(
    kube: Kube, env: LocalEnvironment, admin: TenantUser, ui_server: UiServer
) -> None:
    bob = f"system:serviceaccount:{admin.namespace}:{admin.name}"
    auditor = env.postgres.component_dsn("auditor")
    created = admin.http.post(admin.keys_url(), json={"name": "shop", "scopes": ["send_email"]})
    assert created.status_code == 201, created.text
    key_id = wait_issued(admin, "shop")["keyId"]
    (create,) = wait_record(auditor, admin.namespace, "create")
    assert create["actor"]["username"] == bob and create["key_id"] == key_id

    revealed_id, _ = reveal(kube, admin, "shop")
    assert revealed_id == key_id
    again = admin.http.post(admin.keys_url(name="shop", action="reveal"))
    assert again.status_code == 409
    reveals = wait_record(auditor, admin.namespace, "reveal", count=2)
    assert [(r["outcome"], r["actor"]["username"]) for r in reveals] == [("success", bob), ("denied", bob)]
    assert reveals[0]["key_id"] == key_id and reveals[0]["source_address"] == "127.0.0.1"
    assert reveals[0]["actor"]["source"] == "ui"

    # The JSON API, the CSV export and the key page show it.
    shown = _trail(admin, action="reveal")
    assert [(r["action"], r["outcome"], r["actor"]) for r in shown] == [
        ("reveal", "denied", bob),
        ("reveal", "success", bob),
    ]
    assert {r["action"] for r in _trail(admin, actor=bob)} >= {"create", "reveal"}
    assert _trail(admin, actor="somebody-else") == []
    exported = admin.http.get(admin.keys_url(name="shop", action="audit"), params={"format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {(r["action"], r["actor"], r["key_id"]) for r in rows} >= {("create", bob, key_id), ("reveal", bob, key_id)}

    browser, _ = _browser(ui_server, admin.token)
    try:
        detail = browser.get(f"/ns/{admin.namespace}/keys/shop").text
        trail = detail.split('id="audit-trail"')[1].split("</ol>")[0]
        assert trail.count('class="audit-action">reveal<') == 2 and 'class="audit-action">create<' in trail
        assert f'class="audit-actor">{bob}<' in trail
        assert "Kubernetes Events" in detail
        page = browser.get(f"/ns/{admin.namespace}/audit", params={"action": "create"}).text
        listed = page.split('id="audit-trail"')[1].split("</ol>")[0]
        assert 'class="audit-action">create<' in listed and "reveal" not in listed
    finally:
        browser.close()


def test_sign_ins_and_failed_sign_ins_are_recorded(
    env: LocalEnvironment, admin: TenantUser, ui_server: UiServer
) -> None:
    auditor = env.postgres.component_dsn("auditor")
    from pmkeys.audit import store

    reader = store.AuditReader(auditor)
    before = {r.seq for r in reader.query(store.Query(actions=("sign_in", "sign_in_failed"), limit=1000))}
    assert _sign_in(ui_server, "not-a-token-the-cluster-knows").status_code == 401
    assert _sign_in(ui_server, admin.token).status_code == 303

    def new_records() -> list[dict[str, object]] | None:
        found = reader.query(store.Query(actions=("sign_in", "sign_in_failed"), limit=1000))
        fresh = sorted((r for r in found if r.seq not in before), key=lambda r: r.seq)
        return [r.data for r in fresh] if len(fresh) >= 2 else None

    failed, ok = wait_for(new_records, what="sign-in records")
    assert (failed["action"], failed["outcome"], failed["source_address"]) == ("sign_in_failed", "failure", "127.0.0.1")
    assert "not-a-token" not in str(failed)
    assert (ok["action"], ok["actor"]["username"]) == (
        "sign_in",
        f"system:serviceaccount:{admin.namespace}:{admin.name}",
    )


def test_another_tenant_cannot_read_the_trail_and_it_survives_a_ui_restart(
    env: LocalEnvironment, admin: TenantUser, make_user: Callable[..., TenantUser], ui_server: UiServer,
    namespace_factory: Callable[..., str],
) -> None:  # fmt: skip
    created = admin.http.post(admin.keys_url(), json={"name": "kept", "scopes": ["send_email"]})
    assert created.status_code == 201
    wait_issued(admin, "kept")
    wait_record(env.postgres.component_dsn("auditor"), admin.namespace, "create")
    other = make_user(namespace_factory("other-tenant"))
    assert other.http.get(f"/api/v1/namespaces/{admin.namespace}/audit").status_code == 403
    assert other.http.get(f"/api/v1/namespaces/{admin.namespace}/keys/kept/audit").status_code == 403

    before = _trail(admin)
    ui_server.process.stop()
    ui_server.process.start()
    ui_server.process.wait_ready(
        lambda: httpx.get(f"{ui_server.url}/healthz", timeout=1).status_code == 200, timeout=60
    )
    assert _trail(admin) == before, dump(env.postgres.component_dsn("auditor"), admin.namespace)


def test_a_filter_no_record_can_match_is_refused_naming_the_field(admin: TenantUser) -> None:
    # PostgreSQL text holds no NUL; such a filter once reached the store and answered 503.
    for path in (f"/api/v1/namespaces/{admin.namespace}/audit", f"/api/v1/namespaces/{admin.namespace}/keys/k/audit"):
        response = admin.http.get(path, params={"actor": "alice\x00"})
        assert response.status_code == 422, response.text
        fields = response.json()["error"]["fields"]
        assert [f["field"] for f in fields] == ["actor"]
        assert "NUL" in fields[0]["message"]
