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
request meets them: :mod:`~pmkeys.verify.verifier` (the pipeline and its caches),
:mod:`~pmkeys.verify.gcra` and :mod:`~pmkeys.verify.ratelimit` (rate limits, local and in
Redis), :mod:`~pmkeys.verify.usage` (counting and flushing to status),
:mod:`~pmkeys.verify.watching` (revocation push), :mod:`~pmkeys.verify.service` (HTTP),
:mod:`~pmkeys.verify.routes` and :mod:`~pmkeys.verify.headers` (the gateway protocol).
"""

from pmkeys.verify.blocking import BlockingVerifier
from pmkeys.verify.decision import HTTP_STATUS, Decision, Outcome
from pmkeys.verify.verifier import Verifier

__all__ = ["HTTP_STATUS", "BlockingVerifier", "Decision", "Outcome", "Verifier"]
