"""The TenantApiKey watch lists in pages, and a paged list misses no object (real API server,
OpenBao, operator).

What a user notices if it did: a key whose object fell on a later page would be refused as
revoked (once a namespace is listed, a record without its object is refused).
"""

from __future__ import annotations

import asyncio

import pytest

from pmkeys import listwatch
from pmkeys.verify import Verifier
from pmkeys_dev.environment import LocalEnvironment
from tests.kube import Kube
from tests.verifier.conftest import issue, settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator"), pytest.mark.asyncio(loop_scope="session")]


async def test_every_key_passes_when_its_namespace_is_listed_in_pages_of_two(
    env: LocalEnvironment, kube: Kube, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [issue(kube, tenant, f"page{n}", tenant=tenant)[0] for n in range(5)]
    monkeypatch.setattr(listwatch, "LIST_PAGE", 2)
    verifier = Verifier.from_settings(settings(env, namespaces=[tenant]))
    await verifier.start()
    try:
        for _ in range(400):
            if verifier.ready:
                break
            await asyncio.sleep(0.05)
        assert verifier.ready, verifier.readiness()
        for api_key in keys:
            decision = await verifier.verify(api_key, "send_email")
            assert decision.allowed, f"{decision.reason}: an object on a later page was not listed"
    finally:
        await verifier.close()
