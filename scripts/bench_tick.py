#!/usr/bin/env python3
"""CPU time of ``MediaEngine._tick`` per participant, on real loopback sockets.

N endpoints in rooms of 10 (``--codec``: all PCMA by default, so this is the
G.711 fast path; g722/opus: the general path), one sender socket streaming
one pre-encoded 20 ms packet per endpoint per tick (only ``--talkers`` per
room talk, the others send silence), the engine's tick called directly
(no event loop, no SIP) and its process CPU time summed. Run it with
PYTHONPATH pointing at two checkouts, alternately, to compare versions:

  PYTHONPATH=/path/a python scripts/bench_tick.py -n 750
  PYTHONPATH=/path/b python scripts/bench_tick.py -n 750
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time

import numpy as np

from mixer import codecs, rtp
from mixer.engine import MediaEngine

ROOM = 10


def payloads(codec: str, talks: bool, count: int) -> tuple[int, int, list[bytes]]:
    """(payload type, timestamp step, packets' payloads) encoded once."""
    rate = {"pcma": 8000, "g722": 16000, "opus": 48000}[codec]
    n = rate // 50
    t = np.arange(n * count) / rate
    pcm = (6000 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.int16)
    if not talks:
        pcm[:] = 0
    frames = [np.ascontiguousarray(pcm[i * n:(i + 1) * n]) for i in range(count)]
    if codec == "pcma":
        return 8, 160, [codecs.encode(f, "PCMA") for f in frames]
    if codec == "g722":
        from mixer.g722 import G722Encoder
        enc = G722Encoder()
        return 9, 160, [enc.encode(f) for f in frames]
    from mixer.opus import OpusEncoder
    enc = OpusEncoder(48000)
    return 111, 960, [enc.encode(f) for f in frames]


async def bench(n: int, codec: str, talkers: int, ticks: int) -> float:
    engine = MediaEngine("127.0.0.1")
    engine._loop = asyncio.get_running_loop()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sender.bind(("127.0.0.1", 0))
    sender.setblocking(False)
    cname = codec.upper() if codec != "pcma" else "PCMA"
    talk = payloads(codec, True, 50)
    hush = payloads(codec, False, 50)
    pt, step = talk[0], talk[1]
    eps = []
    try:
        for i in range(n):
            eps.append(engine.open_endpoint(0, codec=cname, payload_type=pt, telephone_event_pt=101,
                                            remote=sender.getsockname(), on_digit=lambda d: None,
                                            rtp_timeout=3600, on_timeout=lambda: None))
        for r in range(0, n, ROOM):
            conf = engine.new_conference()
            for ep in eps[r:r + ROOM]:
                conf.add(ep)
        dests = [("127.0.0.1", ep.local_port) for ep in eps]
        cpu = 0.0
        for k in range(ticks + 10):
            for i, dest in enumerate(dests):
                src = talk if i % ROOM < talkers else hush
                sender.sendto(rtp.build(pt, k, k * step, 0x1000 + i, src[2][k % 50]), dest)
            while True:  # what the server sends back is drained, not timed
                try:
                    sender.recv(4096)
                except BlockingIOError:
                    break
            t = time.process_time()
            engine._tick(k)
            if k >= 10:  # warm-up: latching, layout, first encodes
                cpu += time.process_time() - t
        return cpu / ticks / n * 1e6
    finally:
        for ep in eps:
            ep.close()
        sender.close()
        engine._rx_poll.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=750, help="participants (default 750)")
    parser.add_argument("--codec", choices=("pcma", "g722", "opus"), default="pcma")
    parser.add_argument("--talkers", type=int, default=ROOM, help="talkers per room of 10 (default: all)")
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.runs):
        us = asyncio.run(bench(args.n, args.codec, args.talkers, args.ticks))
        print(f"{args.codec} n={args.n} talkers/room={args.talkers}: {us:.2f} µs CPU per participant-tick")


if __name__ == "__main__":
    main()
