"""The pages in real headless Chromium (Debian's), against the real API server, OpenBao,
operator and UI process: sign in, create a key and read it from the show-once dialog, check it
with the verifier library, regenerate, revoke, filter; validation messages next to their field;
accessibility (labels, contrast) and a narrow screen.

Screenshots for docs/ui.md are taken on the way; with ``PMKEYS_UPDATE_SCREENSHOTS=1`` they are
written to docs/screenshots/ (the key in the show-once dialog is masked in the page first, and
the key is revoked before the test ends).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from pmkeys.config import VaultSettings, VerifierSettings
from pmkeys.keys.material import ApiKey, parse
from pmkeys.vault.records import KeyState
from pmkeys.verify import BlockingVerifier, Outcome
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.openbao import KV_MOUNT
from tests.kube import Kube, wait_for
from tests.ui.browser import SCREENSHOTS, check_accessible, fits_width, launch_args
from tests.ui.conftest import TenantUser, UiServer, wait_issued, wait_key
from tests.vaultview import VaultView, bcrypt_matches

pytestmark = [pytest.mark.integration]
DESKTOP = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(**launch_args())
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser, ui_server: UiServer) -> Iterator[BrowserContext]:
    ctx = browser.new_context(
        base_url=ui_server.url,
        viewport=DESKTOP,
        device_scale_factor=1,
        permissions=["clipboard-read", "clipboard-write"],
    )
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture(scope="module")
def verifier(env: LocalEnvironment) -> Iterator[BlockingVerifier]:
    """The verifier library as a Python service embeds it, with the verifier's own Vault role."""
    settings = VerifierSettings(
        vault=VaultSettings(
            addr=env.openbao.url,
            auth="kubernetes",
            role=bootstrap.service_account("verifier"),
            token_path=env.token_files["verifier"],
            kv_mount=KV_MOUNT,
            prefix=bootstrap.VAULT_PREFIX,
        ),
        kubeconfig=str(env.kubeconfig),
        usage_flush_seconds=1,
        cache_ttl=2,
    )
    with BlockingVerifier(settings) as blocking:
        yield blocking


@pytest.fixture
def shots(tmp_path: Path) -> Callable[[Page, str], None]:
    target = SCREENSHOTS if os.environ.get("PMKEYS_UPDATE_SCREENSHOTS") == "1" else tmp_path
    target.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str) -> None:
        page.screenshot(path=str(target / f"{name}.png"))

    return take


def sign_in(page: Page, user: TenantUser) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signin"))
    page.get_by_label("Access token").fill(user.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(rf"/ns/{user.namespace}/keys$"))


def read_show_once(page: Page, kube: Kube, *, mask: bool = True) -> tuple[str, ApiKey]:
    """The key in the show-once dialog, as an ApiKey (its repr shows only the prefix), registered
    for the leak scan. Expectations only look at elements without the key, and the key is masked
    in the page right away (``mask``), so a failure report cannot contain it."""
    warning = page.locator("#show-once-warning")
    expect(warning).to_be_visible(timeout=60_000)
    expect(warning).to_contain_text("you won't see it again")
    value = page.locator("#secret-value").inner_text().strip()
    kube.issued.add(value)
    key_id = page.locator("#secret-key-id").inner_text().strip()
    if mask:
        mask_key(page)
    return key_id, parse(value)


def mask_key(page: Page) -> None:
    page.evaluate("""() => {
        const el = document.getElementById('secret-value');
        el.textContent = el.textContent.slice(0, 8) + '•'.repeat(32);
    }""")


def close_show_once(page: Page) -> None:
    mask_key(page)
    done = page.get_by_role("button", name="Done")
    expect(done).to_be_disabled()
    page.get_by_label("I have stored this key somewhere safe").check()
    with page.expect_navigation():  # closing the dialog reloads the page with fresh status
        done.click()
    expect(page.locator("#show-once-done")).to_be_hidden()


def allowed(verifier: BlockingVerifier, key: ApiKey, scope: str = "send_email") -> Outcome:
    return verifier.verify(key.value, scope).reason


def seed_keys(user: TenantUser) -> None:
    """A few keys in different states, so the list looks like a tenant's."""
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=180)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for body in (
        {
            "name": "newsletter-sender",
            "displayName": "Newsletter sender",
            "tier": "pro",
            "scopes": ["send_email", "manage_contacts"],
            "rotationInterval": "90d",
            "expiresAt": later,
        },
        {
            "name": "analytics-export",
            "displayName": "BI export",
            "tier": "enterprise",
            "environment": "test",
            "scopes": ["read_analytics"],
        },
        {"name": "legacy-import", "displayName": "Legacy CRM import", "scopes": ["manage_contacts"]},
    ):
        assert user.http.post(user.keys_url(), json=body).status_code == 201
    for name in ("newsletter-sender", "analytics-export", "legacy-import"):
        wait_issued(user, name)
    user.http.post(user.keys_url(name="legacy-import", action="revoke"), json={"confirm": "legacy-import"})


def test_key_lifecycle_in_the_browser(
    page: Page,
    admin: TenantUser,
    kube: Kube,
    vault: VaultView,
    verifier: BlockingVerifier,
    shots: Callable[[Page, str], None],
) -> None:
    seed_keys(admin)
    sign_in(page, admin)
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    check_accessible(page)

    # -- create through the form; the page waits for the operator, then shows the key once
    page.get_by_role("link", name="Create key").click()
    check_accessible(page)
    page.get_by_role("textbox", name="Name", exact=True).fill("checkout")
    page.get_by_label("Display name").fill("Checkout service")
    page.get_by_label("Read analytics").check()
    page.get_by_label("Tier").select_option("pro")
    page.get_by_label("Automatic rotation").select_option("90d")
    shots(page, "create-key")
    page.get_by_role("button", name="Create key").click()
    expect(page).to_have_url(re.compile(r"/keys/checkout$"))
    expect(page.locator("#progress")).to_be_visible()
    key_id, first = read_show_once(page, kube, mask=False)
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_contain_text(re.compile("Copied|Selected"))
    copied = page.evaluate("() => navigator.clipboard.readText()") == first.value
    assert copied, "the Copy button must put the key on the clipboard"
    mask_key(page)
    check_accessible(page)
    shots(page, "show-once")

    status = kube.status(admin.namespace, "checkout")
    assert key_id == status["keyId"] and status["phase"] == "Active"
    same_as_secret = first.value == kube.plaintext(admin.namespace, status["secretName"])
    assert same_as_secret, "the dialog must show the key the Secret holds"
    record = vault.record_for(first.value)
    assert record is not None and record.key_id == key_id
    matches = bcrypt_matches(first.value, record)
    assert matches, "the Vault record's bcrypt must match the key"
    assert allowed(verifier, first) is Outcome.ALLOWED
    assert allowed(verifier, first, "read_analytics") is Outcome.ALLOWED
    assert allowed(verifier, first, "manage_contacts") is Outcome.SCOPE_MISSING
    close_show_once(page)

    # -- a second reveal is refused, and the page explains
    page.get_by_role("button", name="Show key").click()
    refused = page.locator("#already-shown")
    expect(refused).to_be_visible()
    expect(refused).to_contain_text("shows each key only once")
    refused.get_by_role("button", name="Close").click()

    # -- regenerate with a grace period: the new key is shown once, the old keeps working
    page.get_by_role("button", name="Regenerate").click()
    page.get_by_label("1 hour").check()
    page.get_by_role("button", name="Regenerate key").click()
    new_id, second = read_show_once(page, kube)
    assert new_id != key_id
    differs = second != first
    assert differs, "regenerate must show a new key"
    assert allowed(verifier, second) is Outcome.ALLOWED
    assert allowed(verifier, first) is Outcome.ALLOWED, "the old key works during its grace period"
    old = vault.record_for(first.value)
    assert old is not None and old.state is KeyState.RETIRING
    spec = kube.get_key(admin.namespace, "checkout")["spec"]["rotation"]
    assert spec["gracePeriod"] == "1h" and spec["counter"] == 1
    close_show_once(page)

    # -- the detail page: usage (flushed by the verifier) and the audit trail, newest first
    wait_key(admin, "checkout", lambda k: k["usage"]["requests"] >= 3, what="usage flushed to status")
    page.reload()
    expect(page.locator("#usage-requests")).not_to_have_text("0")
    trail = page.locator("#audit-trail .audit-action")
    expect(trail.first).to_be_visible()
    assert {"create", "rotate", "reveal"} <= set(trail.all_inner_texts())
    expect(page.get_by_text("Previous keys still accepted")).to_be_visible()
    check_accessible(page)
    shots(page, "key-detail")

    # -- the list, and filtering it
    page.get_by_role("link", name="API keys").first.click()
    rows = page.locator("#keys-table tbody tr")
    expect(rows).to_have_count(4)
    expect(page.locator("tr[data-key=legacy-import] .pill")).to_have_text("Revoked")
    check_accessible(page)
    shots(page, "keys-list")
    page.get_by_role("searchbox", name="Name").fill("export")
    expect(page.locator("#keys-table tbody tr:visible")).to_have_count(1)
    expect(page.locator("tr[data-key=analytics-export]")).to_be_visible()
    expect(page.locator("#filter-count")).to_have_text("1 of 4 keys")
    assert "q=export" in page.url
    page.get_by_role("searchbox", name="Name").fill("")
    page.get_by_label("Status").select_option("Revoked")
    expect(page.locator("#keys-table tbody tr:visible")).to_have_count(1)
    expect(page.locator("tr[data-key=legacy-import]")).to_be_visible()
    page.reload()  # the server applies the same filter from the URL
    expect(page.locator("#keys-table tbody tr:visible")).to_have_count(1)
    page.get_by_label("Status").select_option("")
    expect(page.locator("#keys-table tbody tr:visible")).to_have_count(4)

    # -- revoke, confirmed by typing the name; the list shows it revoked
    page.get_by_role("link", name="Checkout service").click()
    page.get_by_role("button", name="Revoke").click()
    confirm = page.get_by_role("button", name="Revoke key")
    expect(confirm).to_be_disabled()
    page.get_by_label("to confirm").fill("checkou")
    expect(confirm).to_be_disabled()
    page.get_by_label("to confirm").fill("checkout")
    confirm.click()
    expect(page).to_have_url(re.compile(rf"/ns/{admin.namespace}/keys$"))
    expect(page.locator("tr[data-key=checkout] .pill")).to_have_text("Revoked")
    wait_for(lambda: allowed(verifier, second) is Outcome.REVOKED, what="the new key refused once revoked")
    assert allowed(verifier, first) is Outcome.REVOKED


def test_validation_messages_next_to_their_field(page: Page, admin: TenantUser) -> None:
    sign_in(page, admin)
    page.goto(f"/ns/{admin.namespace}/keys/new")
    page.get_by_role("textbox", name="Name", exact=True).fill("over-limit")
    page.get_by_label("Send email").uncheck()
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#scopes-error")).to_contain_text("at least 1")
    expect(page.locator("#error-summary")).to_be_focused()
    kept = page.get_by_role("textbox", name="Name", exact=True).input_value()
    assert kept == "over-limit", "the form keeps what was typed"

    page.get_by_label("Send email").check()
    page.get_by_label("Custom limit").fill("500")
    page.get_by_role("button", name="Create key").click()
    error = page.locator("#rateLimit-error")
    expect(error).to_contain_text("rateLimit must not exceed the tier's ceiling")  # the CRD's CEL message
    expect(page.get_by_label("Custom limit")).to_have_attribute("aria-invalid", "true")
    check_accessible(page)

    page.get_by_label("Custom limit").fill("")
    page.get_by_role("button", name="Create key").click()
    expect(page).to_have_url(re.compile(r"/keys/over-limit$"))
    page.goto(f"/ns/{admin.namespace}/keys/new")
    page.get_by_role("textbox", name="Name", exact=True).fill("over-limit")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#name-error")).to_contain_text("already exists")


def test_sign_in_refuses_bad_tokens_and_pages_need_a_session(page: Page, ui_server: UiServer) -> None:
    page.goto("/ns/anything/keys")
    expect(page).to_have_url(re.compile(r"/signin\?next="))
    page.get_by_label("Access token").fill("not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("did not accept this token")
    check_accessible(page)


def test_viewer_and_other_tenants(
    page: Page, admin: TenantUser, make_user: Callable[..., TenantUser], namespace_factory: Callable[..., str]
) -> None:
    assert admin.http.post(admin.keys_url(), json={"name": "shared", "scopes": ["send_email"]}).status_code == 201
    wait_issued(admin, "shared")
    viewer = make_user(admin.namespace, role="viewer")
    sign_in(page, viewer)
    expect(page.locator("tr[data-key=shared]")).to_be_visible()
    expect(page.get_by_role("link", name="Create key")).to_have_count(0)
    page.get_by_role("link", name="shared").click()
    expect(page.get_by_role("button", name="Revoke")).to_have_count(0)

    stranger_ns = namespace_factory("stranger", prefix="stranger")
    response = page.goto(f"/ns/{stranger_ns}/keys")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="You don't have access to this")).to_be_visible()


def test_narrow_screen(browser: Browser, ui_server: UiServer, admin: TenantUser) -> None:
    for name in ("mobile-a", "mobile-b"):
        assert admin.http.post(admin.keys_url(), json={"name": name, "scopes": ["send_email"]}).status_code == 201
    wait_issued(admin, "mobile-b")
    ctx = browser.new_context(base_url=ui_server.url, viewport={"width": 390, "height": 844})
    try:
        page = ctx.new_page()
        sign_in(page, admin)
        expect(page.locator("tr[data-key=mobile-a]")).to_be_visible()
        assert fits_width(page), "the key list must not scroll sideways on a phone"
        page.get_by_role("link", name="mobile-a").click()
        assert fits_width(page), "the key detail must not scroll sideways on a phone"
        page.goto(f"/ns/{admin.namespace}/keys/new")
        assert fits_width(page), "the create form must not scroll sideways on a phone"
    finally:
        ctx.close()
