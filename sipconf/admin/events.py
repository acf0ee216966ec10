"""``GET /api/events``: the EventBus as Server-Sent Events (SPEC 13).

One subscriber on the EventBus encodes each event once
(``data: {json}\\n\\n``) and hands the same bytes to every connected client's
bounded queue. Publishing never waits: a client whose queue is full is
dropped (its connection aborted), as is one whose socket has not taken a
write for ``write_timeout`` seconds. Nothing is ever buffered without bound:
per client at most ``queue_size`` events, a small transport buffer and a
small kernel send buffer.

A comment line (``: keep-alive``) goes out every ``keepalive`` seconds so
proxies and browsers keep an idle stream open and a dead peer is noticed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Callable

from aiohttp import web

from ..events import EventBus

log = logging.getLogger("sipconf.admin")

QUEUE_SIZE = 256          # events waiting per client before it counts as too slow
KEEPALIVE_S = 15.0        # comment line on an idle stream
WRITE_TIMEOUT_S = 10.0    # a write that cannot complete in this long: the client is stalled
MAX_CLIENTS = 32          # streams at once (a console needs one)
SEND_BUFFER = 32 * 1024   # kernel send buffer of a stream's socket
TRANSPORT_HIGH_WATER = 16 * 1024
BATCH_BYTES = 8 * 1024    # events waiting together are written at once, up to this much


class _Client:
    __slots__ = ("queue", "transport", "host", "dropped")

    def __init__(self, transport: asyncio.Transport | None, host: str, queue_size: int) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(queue_size)
        self.transport = transport
        self.host = host
        self.dropped: str | None = None


class EventStream:
    def __init__(self, bus: EventBus, *, on_drop: Callable[[str], None], queue_size: int = QUEUE_SIZE,
                 keepalive: float = KEEPALIVE_S, write_timeout: float = WRITE_TIMEOUT_S,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.bus = bus
        self.on_drop = on_drop
        self.queue_size = queue_size
        self.keepalive = keepalive
        self.write_timeout = write_timeout
        self.max_clients = max_clients
        self.clients: set[_Client] = set()
        self._unsubscribe = bus.subscribe(self._publish)

    def close(self) -> None:
        self._unsubscribe()
        for client in list(self.clients):
            self._drop(client, None)

    # -- fan-out (called synchronously by EventBus.publish, maybe inside a tick) ------------

    def _publish(self, event: dict) -> None:
        if not self.clients:
            return
        data = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
        for client in tuple(self.clients):
            try:
                client.queue.put_nowait(data)
            except asyncio.QueueFull:
                self._drop(client, "queue_full")

    def _drop(self, client: _Client, reason: str | None) -> None:
        """Aborts the client's connection; its handler then ends."""
        if client.dropped is None:
            client.dropped = reason or "shutdown"
            if reason:
                self.on_drop(reason)
                log.info("event stream of %s dropped: %s", client.host, reason.replace("_", " "))
        self.clients.discard(client)
        if client.transport is not None and not client.transport.is_closing():
            client.transport.abort()
        try:
            client.queue.put_nowait(b"")  # wakes a handler waiting for an event
        except asyncio.QueueFull:
            pass  # its handler is blocked writing; the abort ends that write

    # -- one client -------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if len(self.clients) >= self.max_clients:
            self.on_drop("too_many_streams")
            raise web.HTTPServiceUnavailable(text=json.dumps({"error": "too many event streams"}),
                                             content_type="application/json")
        transport = request.transport
        client = _Client(transport, request.remote or "?", self.queue_size)
        if transport is not None:
            # Small buffers: a client that stops reading fills them quickly and
            # is then dropped, rather than the server holding megabytes for it.
            transport.set_write_buffer_limits(high=TRANSPORT_HIGH_WATER)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                except OSError:
                    pass
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        self.clients.add(client)
        try:
            await self._write(response, b"retry: 2000\n: connected\n\n")
            while client.dropped is None:
                try:
                    async with asyncio.timeout(self.keepalive):
                        data = await client.queue.get()
                except TimeoutError:
                    data = b": keep-alive\n\n"
                if not data or client.dropped is not None:
                    break
                # A burst (many talk changes in one tick) goes out as one write.
                while not client.queue.empty() and len(data) < BATCH_BYTES:
                    more = client.queue.get_nowait()
                    if not more:
                        break
                    data += more
                await self._write(response, data)
        except TimeoutError:
            self._drop(client, "stalled")
        except (ConnectionError, RuntimeError):
            pass  # the client went away (or was dropped): nothing more to send it
        finally:
            self.clients.discard(client)
        return response

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(self.write_timeout):
            await response.write(data)
