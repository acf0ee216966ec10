"""Connection limits of the admin HTTP port, below aiohttp.

aiohttp parses HTTP; it does not cap connections per address nor count the
clients that never finish their request headers (slowloris). Each accepted
connection goes through ``GuardedProtocol``, a thin wrapper around aiohttp's
own protocol object that:

- refuses (aborts at once) a connection beyond ``per_address`` open ones
  from the same address, or beyond ``total`` open ones overall;
- aborts a connection whose first request's headers are not complete within
  ``header_timeout`` seconds (later idle keep-alive connections are closed by
  aiohttp's own ``keepalive_timeout``, which http.py sets short).

Every refusal is counted by reason (``count``) for /metrics.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable


class ConnectionGuard:
    def __init__(self, *, per_address: int, total: int, header_timeout: float,
                 count: Callable[[str], None]) -> None:
        self.per_address = per_address
        self.total = total
        self.header_timeout = header_timeout
        self.count = count
        self.open: dict[str, int] = {}
        self.open_total = 0

    def admit(self, host: str) -> bool:
        if self.open.get(host, 0) >= self.per_address:
            self.count("connections_per_address")
            return False
        if self.open_total >= self.total:
            self.count("connections_total")
            return False
        self.open[host] = self.open.get(host, 0) + 1
        self.open_total += 1
        return True

    def release(self, host: str) -> None:
        left = self.open.get(host, 0) - 1
        if left > 0:
            self.open[host] = left
        else:
            self.open.pop(host, None)
        self.open_total -= 1

    def protocol_factory(self, make_inner: Callable[[], asyncio.Protocol]) -> Callable[[], "GuardedProtocol"]:
        return lambda: GuardedProtocol(self, make_inner())


class GuardedProtocol(asyncio.Protocol):
    """Forwards every protocol call to aiohttp's handler once admitted.

    ``requests`` is raised by the admin middleware (reached through
    ``request.transport.get_protocol()``) when a request's headers are in."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner: asyncio.Protocol | None = inner
        self.host: str | None = None
        self.requests = 0
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        self._transport = transport  # type: ignore[assignment]
        if not self.guard.admit(host):
            self.inner = None
            transport.abort()  # type: ignore[attr-defined]
            return
        self.host = host
        self._deadline = asyncio.get_running_loop().call_later(self.guard.header_timeout, self._too_slow)
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        self._deadline = None
        if self.requests == 0 and self._transport is not None and not self._transport.is_closing():
            self.guard.count("header_timeout")
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.host is not None:
            self.guard.release(self.host)
            self.host = None
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.connection_lost(exc)

    def __getattr__(self, name: str) -> Any:
        # Anything else aiohttp or asyncio may ask of the protocol.
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)
