"""Attacks on the UI's sign-in, end to end against a real UI process and API server.

* Login CSRF by cookie tossing: a page on a sibling host (``evil.example.com`` next to
  ``keys.example.com``) can set a cookie for the parent domain under the name the sign-in
  nonce uses, then post the sign-in form with the attacker's own token: the victim's browser
  ends up signed in as the attacker, and whatever they do lands in the attacker's tenant. A
  ``__Host-`` cookie cannot be set from another host, and an Origin check refuses the post.
* Without ``Strict-Transport-Security`` the first plain-HTTP visit can be downgraded.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess, free_port
from tests.kube import Kube

pytestmark = pytest.mark.integration

EVIL = "https://evil.example.com"


@pytest.fixture
def start_ui(env: LocalEnvironment) -> Iterator[Callable[..., str]]:
    """``start_ui(**settings)`` starts a UI process and returns its base URL."""
    started: list[ServerProcess] = []

    def start(*, scheme: str = "http", **settings: str) -> str:
        port = free_port()
        url = f"{scheme}://127.0.0.1:{port}"
        ca = env.controlplane.ca_cert
        process = env.start_component(
            "ui", name=f"ui-attack-{port}", PMKEYS_BIND="127.0.0.1", PMKEYS_PORT=str(port), **settings
        )
        started.append(process)
        process.wait_ready(
            lambda: httpx.get(f"{url}/healthz", timeout=1, verify=str(ca)).status_code == 200, timeout=20
        )
        return url

    yield start
    for process in started:
        process.stop(grace=5)


@pytest.fixture
def attacker_token(kube: Kube, tenant: str) -> str:
    """A token the cluster accepts: the attacker's own ServiceAccount."""
    name = f"attacker-{secrets.token_hex(3)}"
    bootstrap.apply_manifests(
        kube.api, [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": tenant}}]
    )
    return bootstrap.token(kube.api, name, namespace=tenant, hours=1)


def signin_cookie(response: httpx.Response) -> tuple[str, str, str]:
    """(name, value, attributes) of the sign-in nonce cookie the form page sets."""
    for header in response.headers.get_list("set-cookie"):
        pair, _, attributes = header.partition(";")
        name, _, value = pair.partition("=")
        if "signin" in name:
            return name.strip(), value.strip(), attributes
    raise AssertionError(f"no sign-in cookie in {response.headers.get_list('set-cookie')}")


def session_cookies(response: httpx.Response) -> list[str]:
    return [h.split("=", 1)[0] for h in response.headers.get_list("set-cookie") if "session" in h.split("=", 1)[0]]


def test_ui_signin_cookie_cannot_be_tossed_from_a_sibling_host(
    start_ui: Callable[..., str], attacker_token: str
) -> None:
    url = start_ui(PMKEYS_SECURE_COOKIES="true")  # behind a TLS-terminating proxy
    with httpx.Client(base_url=url) as browser:
        name, _, attributes = signin_cookie(browser.get("/signin"))
        assert name.startswith("__Host-"), f"sign-in cookie {name!r} can be set by any host of the parent domain"
        assert "secure" in attributes.lower() and "path=/" in attributes.lower()
        assert "domain=" not in attributes.lower()

        # What a page on evil.example.com can plant for Domain=example.com, then post.
        tossed = "pmkeys_signin"
        nonce = secrets.token_urlsafe(16)
        post = browser.post(
            "/signin",
            data={"token": attacker_token, "csrf_token": nonce, "next": "/"},
            headers={"Cookie": f"{tossed}={nonce}"},
            follow_redirects=False,
        )
        assert post.status_code == 403, f"a tossed cookie signed the visitor in ({post.status_code})"
        assert session_cookies(post) == [], "no session may be created"


def test_ui_signin_posted_from_another_site_is_refused(start_ui: Callable[..., str], attacker_token: str) -> None:
    url = start_ui()
    with httpx.Client(base_url=url) as browser:
        _, nonce, _ = signin_cookie(browser.get("/signin"))
        form = {"token": attacker_token, "csrf_token": nonce, "next": "/"}
        cross = browser.post("/signin", data=form, headers={"Origin": EVIL}, follow_redirects=False)
        assert cross.status_code == 403, f"a sign-in posted from {EVIL} was accepted ({cross.status_code})"
        assert session_cookies(cross) == []
        assert "another site" in cross.text

        _, nonce, _ = signin_cookie(browser.get("/signin"))
        form["csrf_token"] = nonce
        own = browser.post("/signin", data=form, headers={"Origin": url}, follow_redirects=False)
        assert own.status_code == 303 and session_cookies(own), "the UI's own form still signs in"


def test_ui_served_over_tls_sends_hsts_and_host_prefixed_cookies(
    start_ui: Callable[..., str], env: LocalEnvironment
) -> None:
    pki = Path(env.controlplane.ca_cert).parent
    url = start_ui(
        scheme="https",
        PMKEYS_TLS_CERT_FILE=str(pki / "apiserver.crt"),
        PMKEYS_TLS_KEY_FILE=str(pki / "apiserver.key"),
    )
    with httpx.Client(base_url=url, verify=str(env.controlplane.ca_cert)) as browser:
        page = browser.get("/signin")
        hsts = page.headers.get("strict-transport-security", "")
        assert hsts.startswith("max-age=") and int(hsts.split("=")[1].split(";")[0]) >= 31536000, hsts
        name, _, attributes = signin_cookie(page)
        assert name.startswith("__Host-") and "secure" in attributes.lower()


def test_ui_on_plain_http_sends_no_hsts_and_plain_cookie_names(start_ui: Callable[..., str]) -> None:
    url = start_ui()
    page = httpx.get(f"{url}/signin")
    assert "strict-transport-security" not in page.headers, "HSTS over plain HTTP would lock local users out"
    name, _, attributes = signin_cookie(page)
    assert name == "pmkeys_signin" and "secure" not in attributes.lower()
