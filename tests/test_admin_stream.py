"""sipconf.admin.events.EventStream in process, over a real loopback socket
(aiohttp serving it, a raw client): a client that stops reading is dropped
when a write cannot complete in time, publishing never waits for it, and a
reading client gets a burst in order."""

from __future__ import annotations

import asyncio
import json
import socket
import time

from aiohttp import web

from sipconf.admin.events import EventStream
from sipconf.events import EventBus


async def serve(stream: EventStream) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/api/events", stream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def connect(port: int, *, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    return s


async def until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


async def test_a_client_that_stops_reading_is_dropped_by_the_write_timeout():
    bus = EventBus()
    drops: list[str] = []
    # a queue too big to fill here: only the write timeout can find the stalled client
    stream = EventStream(bus, on_drop=drops.append, queue_size=100_000, write_timeout=0.5)
    runner, port = await serve(stream)
    stalled = connect(port, rcvbuf=4096)
    try:
        await asyncio.sleep(0.05)
        stalled.send(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await until(lambda: len(stream.clients) == 1, 3)
        longest = 0.0
        for i in range(3000):  # ~400 kB: far more than the socket buffers hold
            t0 = time.perf_counter()
            bus.publish("talking", room="800", conference="1", participant=str(i), pad="x" * 80)
            longest = max(longest, time.perf_counter() - t0)
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the stream's writer run
        assert longest < 0.05, "publishing waited for a client"
        assert await until(lambda: drops == ["stalled"], 5), drops
        assert stream.clients == set()
    finally:
        stalled.close()
        stream.close()
        await runner.cleanup()


async def test_a_reading_client_gets_a_burst_in_order():
    bus = EventBus()
    drops: list[str] = []
    stream = EventStream(bus, on_drop=drops.append)
    runner, port = await serve(stream)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert await until(lambda: len(stream.clients) == 1, 3)
        for i in range(200):  # within one loop turn: a burst
            bus.publish("muted" if i % 2 else "unmuted", room="800", conference="1", participant=str(i))
        seen: list[dict] = []
        buffer = b""
        deadline = time.monotonic() + 5
        while len(seen) < 200 and time.monotonic() < deadline:
            buffer += await asyncio.wait_for(reader.read(65536), 5)
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.startswith(b"data: "):
                    seen.append(json.loads(line[6:]))
        assert [e["participant"] for e in seen] == [str(i) for i in range(200)]
        assert all(e["room"] == "800" and e["time"] for e in seen)
        assert drops == []
    finally:
        writer.close()
        stream.close()
        await runner.cleanup()
