"""Graceful drain: on SIGTERM a verifier leaves the rotation first and stops serving last.

Kubernetes sends SIGTERM to a terminating pod and, at the same time, removes it from the
Service's endpoints. The two race: kube-proxy on every node, and gateways that resolve
endpoints themselves (nginx upstreams, Envoy clusters), keep sending new connections and
requests to the old address for a moment (typically 1 to 3 s, longer on a busy API server). A
process that stops accepting at SIGTERM answers those with connection errors: 0.1 to 0.9 %, the
non-2xx ``bench/verifier_restart.py`` measured during every replacement.

So the first SIGTERM starts a drain instead of a shutdown:

1. ``/readyz`` answers 503 (check ``serving``), so whatever still looks at readiness steps away;
2. for ``drain_seconds`` every request is still answered, each with ``Connection: close`` so
   keep-alive clients (gateways) open their next connection to the endpoints as they are now,
   not to this pod;
3. then uvicorn's own graceful shutdown runs (no new connections, in-flight requests finish
   within its 10 s, the lifespan flushes usage).

A second SIGTERM (or SIGINT, as before) stops at once. Before the verifier is serving — still
starting, never ready — there is nothing to drain and SIGTERM stops at once too. The drain
lives in the process rather than in a ``preStop`` hook so it holds wherever the verifier runs
(a pod, systemd behind a load balancer, the benchmarks) and needs no shell or ``sleep`` binary in
the image; the chart sets ``terminationGracePeriodSeconds`` above ``drain_seconds`` plus the
graceful shutdown, so the kubelet's SIGKILL never cuts it short.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import Any

import uvicorn

logger = logging.getLogger(__name__)
#: Seconds uvicorn waits for in-flight requests after the drain (its graceful shutdown).
GRACEFUL_SHUTDOWN_SECONDS = 10
_CLOSE = (b"connection", b"close")


class Drain:
    """Whether this process is draining, and since when (monotonic seconds)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.since: float | None = None
        #: The application has started serving (set by its lifespan): only then is there
        #: anything to drain.
        self.armed = False

    @property
    def draining(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        self.since = time.monotonic()

    def over(self) -> bool:
        return self.since is not None and time.monotonic() - self.since >= self.seconds


class DrainingServer(uvicorn.Server):
    """uvicorn's server with the first SIGTERM turned into a drain (see the module docstring);
    the application reads ``drain`` for its readiness and its responses."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = self.drain
        if sig == signal.SIGTERM and drain.seconds > 0 and drain.armed and not drain.draining:
            # Re-raised after the shutdown like any captured signal (the exit status says SIGTERM).
            self._captured_signals.append(sig)
            drain.begin()
            logger.info("SIGTERM: out of readiness, serving %.0f s more, then stopping", self.drain.seconds)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain.over() and not self.should_exit:
            logger.info("drain over; stopping")
            self.should_exit = True
        return await super().on_tick(counter)


def closing_while_draining(app: Any, drain: Drain) -> Any:
    """``app`` with ``Connection: close`` on every HTTP response while ``drain`` is on, so
    keep-alive clients move to the endpoints as they are now (uvicorn closes the connection
    after such a response)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not drain.draining:
            await app(scope, receive, send)
            return

        async def closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
            await send(message)

        await app(scope, receive, closing)

    return wrapped
