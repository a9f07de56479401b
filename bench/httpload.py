"""A lean HTTP/1.1 load client for the benchmarks: keep-alive connections on asyncio streams.

httpx's async client spends about a millisecond of CPU per request in its pool and its
protocol layers; on the 2-core machine, where the bench shares the cores with the servers it
measures, that capped traffic near 250 requests/s and made the bench, not the verifier, the
bottleneck. This client writes each request as bytes and reads a response by its
``Content-Length``: a few tens of microseconds per request. It speaks just enough HTTP for
the verifier (every answer has a ``Content-Length``); a connection the server closed before
answering is replaced and the request sent once more on the new one, as browsers and most
clients do for a request the server never read.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
#: Status reported when no answer came (refused, reset, or the server closed before answering).
NO_ANSWER = 599


class Pool:
    """Up to ``size`` keep-alive connections to ``host:port``; one request at a time on each."""

    def __init__(self, host: str, port: int, *, size: int, headers: dict[str, str] | None = None) -> None:
        self.host, self.port, self.size = host, port, size
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._head = f"Host: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
        self._idle: list[Connection] = []
        self._slots = asyncio.Semaphore(size)
        #: Why requests got no answer, by exception name (what a 599 stood for).
        self.failures: dict[str, int] = {}

    async def post(self, path: str, body: Any, *, timeout: float = 30) -> int:
        """POST ``body`` as JSON; the answer's status (:data:`NO_ANSWER` if none came)."""
        data = json.dumps(body).encode()
        request = f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(data)}\r\n\r\n".encode() + data
        async with self._slots:
            for attempt in range(2):
                reused = attempt == 0 and bool(self._idle)  # the second try: a new connection
                try:
                    connection = self._idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
                except OSError as exc:
                    return self._failed(exc)
                try:
                    status, keep = await asyncio.wait_for(self._exchange(connection, request), timeout)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    connection[1].close()
                    if reused and attempt == 0:
                        continue  # closed while idle: once more on a new connection
                    return self._failed(exc)
                if keep:
                    self._idle.append(connection)
                else:
                    connection[1].close()
                return status
        return NO_ANSWER

    def _failed(self, exc: BaseException) -> int:
        name = type(exc).__name__
        self.failures[name] = self.failures.get(name, 0) + 1
        return NO_ANSWER

    @staticmethod
    async def _exchange(
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
    ) -> tuple[int, bool]:
        """Send ``request``, read the answer: (status, whether the connection stays open)."""
        reader, writer = connection
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, closing = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                closing = True
        if length:
            await reader.readexactly(length)
        return status, not closing

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
