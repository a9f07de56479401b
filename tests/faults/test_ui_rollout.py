"""A UI rollout keeps a signed-in user signed in, and sessions work on every replica.

Three UI processes share one Redis, as a Deployment's replicas would: a user signs in on the
first, is still signed in on the second (no sticky sessions), the first is replaced by a third
(a rollout), where the user's CSRF-protected form post still works; signing out on one replica
ends the session on all; with Redis down a page answers 503 naming the session store instead
of signing the user out. Then Redis itself is read the way an attacker with access to it would:
neither the user's Kubernetes token nor the session cookie appears in any key or value.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from pmkeys.ui.sessions import cookie_name
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess, free_port
from pmkeys_dev.redis import RedisServer
from tests import leakscan, report
from tests.kube import Kube
from tests.ui.conftest import new_user, ui_rbac  # noqa: F401  (ui_rbac: a fixture this module uses)

pytestmark = [pytest.mark.integration, pytest.mark.faults]
COOKIE = cookie_name(secure=False)


class Replicas:
    """``pmkeys ui`` processes as the UI's ServiceAccount, sessions in one Redis."""

    def __init__(self, env: LocalEnvironment, kubeconfig: Path, redis_url: str, prefix: str) -> None:
        self.env = env
        self.kubeconfig = kubeconfig
        self.redis_url = redis_url
        self.prefix = prefix
        self.running: list[tuple[str, ServerProcess]] = []

    def start(self) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = self.env.start_component(
            "ui",
            name=f"ui-rollout-{port}",
            ready_url=f"{url}/healthz",
            PMKEYS_KUBECONFIG=str(self.kubeconfig),
            PMKEYS_BIND="127.0.0.1",
            PMKEYS_PORT=str(port),
            PMKEYS_SESSION_REDIS_URL=self.redis_url,
            PMKEYS_SESSION_REDIS_PREFIX=self.prefix,
        )
        self.running.append((url, proc))
        return url

    def replace(self, url: str) -> str:
        """A rollout step: the new replica comes up, then the old one is stopped (SIGTERM)."""
        new = self.start()
        proc = next(p for u, p in self.running if u == url)
        proc.stop(grace=10)
        self.running.remove((url, proc))
        return new

    def stop_all(self) -> None:
        for _, proc in self.running:
            proc.stop(grace=10)
        self.running.clear()


@pytest.fixture
def session_redis(env: LocalEnvironment) -> Iterator[RedisServer]:
    server = RedisServer(workdir=env.workdir / f"ui-redis-{secrets.token_hex(3)}")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def replicas(
    env: LocalEnvironment,
    kube: Kube,
    ui_rbac: None,  # noqa: F811  (the fixture imported above, requested by name)
    session_redis: RedisServer,
    tmp_path: Path,
) -> Iterator[Replicas]:
    kubeconfig = env.kubeconfig_for_token(env.token_files["ui"].read_text(), tmp_path / "kubeconfig")
    started = Replicas(env, kubeconfig, session_redis.url, prefix=f"rollout-{secrets.token_hex(3)}")
    yield started
    logs = [(str(p.log_path), p.log_path.read_text(errors="replace")) for _, p in started.running]
    started.stop_all()
    findings = leakscan.scan(logs, kube.issued)
    assert not findings, "plaintext keys in UI logs: " + "; ".join(map(str, findings))


def browser(url: str, session: str | None) -> httpx.Client:
    """What a browser sends to whichever replica the Service picked: the session cookie."""
    cookies = {COOKIE: session} if session else {}
    return httpx.Client(base_url=url, cookies=cookies, timeout=30, follow_redirects=False)


def sign_in(url: str, token: str) -> str:
    with httpx.Client(base_url=url, timeout=30) as http:
        form = http.get("/signin")
        nonce = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert nonce, "the sign-in form has its CSRF field"
        answer = http.post("/signin", data={"token": token, "csrf_token": nonce.group(1), "next": "/"})
        assert answer.status_code == 303, f"sign-in answered {answer.status_code}"
        return answer.cookies[COOKIE]


def signed_in_as(url: str, session: str, username: str) -> bool:
    """The home page (following its redirects, as a browser does) shows the user, not sign-in."""
    with browser(url, session) as http:
        page = http.get("/", follow_redirects=True)
        return page.status_code == 200 and page.url.path != "/signin" and username in page.text


def csrf_of(url: str, session: str, namespace: str) -> str:
    with browser(url, session) as http:
        page = http.get(f"/ns/{namespace}/keys/new")
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert page.status_code == 200 and found, f"create form answered {page.status_code}"
        return found.group(1)


def test_ui_rollout_keeps_the_user_signed_in(
    replicas: Replicas, session_redis: RedisServer, kube: Kube, tenant: str
) -> None:
    user = new_user(kube, "http://unused", tenant)
    user.http.close()
    username = f"system:serviceaccount:{tenant}:{user.name}"
    violations: list[str] = []
    first, second = replicas.start(), replicas.start()
    session = sign_in(first, user.token)
    if not signed_in_as(first, session, username):
        violations.append("not signed in right after signing in")
    if not signed_in_as(second, session, username):
        violations.append("the session does not work on a second replica")
    third = replicas.replace(first)  # rollout: the replica the user signed in on is gone
    if not signed_in_as(third, session, username):
        violations.append("signed out by the rollout")
    token = csrf_of(second, session, tenant)
    with browser(third, session) as http:
        created = http.post(
            f"/ns/{tenant}/keys/new",
            data={"csrf_token": token, "name": "after-rollout", "environment": "live", "scopes": "send_email",
                  "tier": "starter", "rotationInterval": "0"},
        )  # fmt: skip
    if created.status_code != 303:
        violations.append(f"a form post on the new replica answered {created.status_code}")
    elif kube.get_key(tenant, "after-rollout")["spec"]["tenant"] != tenant:
        violations.append("the key created after the rollout is not the tenant's")
    stored = dump(session_redis.url, replicas.prefix)
    for secret, what in ((user.token, "Kubernetes token"), (session, "session cookie"), (token, "CSRF token")):
        if readable(secret, stored):
            violations.append(f"the {what} is readable in Redis")
    if not stored:
        violations.append("nothing in Redis: sessions are not kept there")
    with browser(second, session) as http:
        out = http.post("/signout", data={"csrf_token": token})
    if out.status_code != 303 or signed_in_as(third, session, username):
        violations.append("signing out on one replica did not end the session on another")
    again = sign_in(third, user.token)
    session_redis.kill()
    with browser(second, again) as http:
        down = http.get("/")
    if down.status_code != 503 or "session store" not in down.text:
        violations.append(f"with Redis down a page answered {down.status_code}, not 503 naming the session store")
    report.record(
        "UI rollout: replica replaced, sessions in Redis (3 replicas)",
        violations,
        "still signed in on every replica and after the rollout; sign-out ends it everywhere; "
        "Redis holds no token, cookie or CSRF token; Redis down: 503, not a sign-out",
    )
    assert not violations, violations


def dump(url: str, prefix: str) -> list[bytes]:
    """Every key and value under ``prefix`` in Redis, as raw bytes."""
    found: list[bytes] = []
    with redis.Redis.from_url(url) as r:
        for name in r.scan_iter(match=f"{prefix}:*"):
            found += [name, r.dump(name) or b""]
    return found


def readable(secret: str, stored: list[bytes]) -> bool:
    forms: list[Callable[[str], bytes]] = [str.encode, lambda s: base64.b64encode(s.encode())]
    return any(form(secret) in blob for form in forms for blob in stored)
