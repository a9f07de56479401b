"""Verify PenguinMails API keys: the library Python services embed, and the HTTP service
(``pmkeys verifier``) that gateways call.

::

    from pmkeys.config import VerifierSettings
    from pmkeys.verify import Verifier

    async with Verifier.from_settings(VerifierSettings()) as verifier:
        decision = await verifier.verify(presented_key, "send_email", client=peer_ip)
        if not decision.allowed:
            return reply(decision.status, decision.message)  # 401 / 403 / 429 / 503

Synchronous code uses :class:`BlockingVerifier` the same way. The modules, in the order a
request meets them: :mod:`~pmkeys.verify.service` (the HTTP wiring: lifespan, routes, server),
:mod:`~pmkeys.verify.sizelimits` (413/431 before anything runs), :mod:`~pmkeys.verify.gateway`,
:mod:`~pmkeys.verify.routes` and :mod:`~pmkeys.verify.headers` (the gateway protocol),
:mod:`~pmkeys.verify.verifier` (the pipeline, top to bottom), :mod:`~pmkeys.verify.peppers`,
:mod:`~pmkeys.verify.cache`, :mod:`~pmkeys.verify.flights` (one Vault read per key at a time),
:mod:`~pmkeys.verify.gcra` and :mod:`~pmkeys.verify.ratelimit` (rate limits, local and in
Redis), :mod:`~pmkeys.verify.usage` (counting and flushing to status),
:mod:`~pmkeys.verify.watching` and :mod:`~pmkeys.verify.objects` (revocation push),
:mod:`~pmkeys.verify.connections` (Redis and Kubernetes), :mod:`~pmkeys.verify.metrics`.
Around them: :mod:`~pmkeys.verify.lifecycle` (start, stop, readiness),
:mod:`~pmkeys.verify.possession` (bcrypt once for the fleet), :mod:`~pmkeys.verify.preloading`
(proven keys cached before a replica is ready), :mod:`~pmkeys.verify.draining` (SIGTERM drains).
"""

from pmkeys.verify.blocking import BlockingVerifier
from pmkeys.verify.decision import HTTP_STATUS, Decision, Outcome
from pmkeys.verify.verifier import Verifier

__all__ = ["HTTP_STATUS", "BlockingVerifier", "Decision", "Outcome", "Verifier"]
