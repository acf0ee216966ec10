#!/usr/bin/env python3
"""Mixer tick cost per participant, plain RTP vs SRTP, in process with real
loopback sockets (SPEC 11).

N endpoints of a real MediaEngine in conferences of 10, one client UDP
socket per endpoint sending one 20 ms G.711 packet per tick (SRTP-protected
for the SRTP run, with the endpoint's keys). Only ``MediaEngine._tick``
(receive every packet, mix, send every packet, protect/unprotect included)
is timed; building and draining the clients' packets is not. The two
variants alternate in rounds (paired), and the best round of each is kept,
so a busy machine hurts both alike.

  scripts/bench_srtp_tick.py [-n 200] [--ticks 250] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pylibsrtp import Policy, Session  # noqa: E402

from mixer.engine import MediaEngine  # noqa: E402
from mixer.srtp import SrtpCounters, SrtpStream  # noqa: E402

ROOM = 10
SUITE = "AES_CM_128_HMAC_SHA1_80"


async def run(n: int, ticks: int, srtp: bool) -> float:
    engine = MediaEngine("127.0.0.1")
    counters = SrtpCounters()
    clients, endpoints, sessions = [], [], []
    try:
        for i in range(n):
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.bind(("127.0.0.1", 0))
            client.setblocking(False)
            ep = engine.open_endpoint(0, codec="PCMA", payload_type=8, telephone_event_pt=101,
                                      remote=client.getsockname(), on_digit=lambda d: None,
                                      rtp_timeout=3600, on_timeout=lambda: None)
            if srtp:
                k_in, k_out = os.urandom(30), os.urandom(30)
                SrtpStream(SUITE, k_in, k_out, counters).attach(ep)
                sessions.append(Session(Policy(key=k_in, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                                               srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)))
            clients.append(client)
            endpoints.append(ep)
        for r in range(0, n, ROOM):
            conference = engine.new_conference()
            for ep in endpoints[r:r + ROOM]:
                conference.add(ep)
        header = struct.Struct("!BBHII")
        payload = b"\xd5" * 160
        ssrcs = [0x10000 + i for i in range(n)]
        spent = 0.0
        measured = 0
        for t in range(ticks + 20):
            # the clients' packets of this tick (not timed)
            for i, client in enumerate(clients):
                packet = header.pack(0x80, 8, t & 0xFFFF, t * 160, ssrcs[i]) + payload
                if srtp:
                    packet = sessions[i].protect(packet)
                client.sendto(packet, ("127.0.0.1", endpoints[i].local_port))
            start = time.perf_counter()
            engine._tick(t)
            if t >= 20:  # after latching and the jitter buffers' start
                spent += time.perf_counter() - start
                measured += 1
            for client in clients:
                try:
                    while True:
                        client.recv(2048)
                except BlockingIOError:
                    pass
        if counters.dropped:
            raise RuntimeError(f"{counters.dropped} SRTP packets failed")
        stats = engine.stats
        if stats.packets_dropped or stats.packets_in < n * ticks:
            raise RuntimeError(f"packets in {stats.packets_in}, dropped {stats.packets_dropped}: not a clean run")
        return spent / measured / n * 1e6
    finally:
        await engine.close()
        for client in clients:
            client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="participants (default 200)")
    parser.add_argument("--ticks", type=int, default=250, help="timed ticks per round (default 250)")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (default 3)")
    args = parser.parse_args()
    plain, secure = [], []
    for _ in range(args.rounds):
        plain.append(asyncio.run(run(args.n, args.ticks, False)))
        secure.append(asyncio.run(run(args.n, args.ticks, True)))
    print(f"{args.n} participants, {args.ticks} ticks x {args.rounds} paired rounds; µs per participant-tick "
          f"(receive + mix + send, in MediaEngine._tick)")
    print(f"  plain RTP: best {min(plain):.2f}  all {' '.join(f'{x:.2f}' for x in plain)}")
    print(f"  SRTP     : best {min(secure):.2f}  all {' '.join(f'{x:.2f}' for x in secure)}")
    print(f"  SRTP adds {min(secure) - min(plain):.2f} µs per participant-tick (one unprotect + one protect)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
