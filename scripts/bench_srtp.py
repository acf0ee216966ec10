#!/usr/bin/env python3
"""SRTP cost per packet, in process, without sockets (SPEC 11).

Measures, for one 172-byte G.711 RTP packet (20 ms):
  - protect + unprotect as sipconf does it (mixer/srtp.py: libsrtp through
    pylibsrtp's cffi binding, in place in preallocated buffers, no Python
    object per packet), the receive wrapper fed by a socket stand-in;
  - the same through pylibsrtp's Session.protect/unprotect (bytes in, bytes
    out: two copies and two objects per call), for comparison;
for both suites. Figures are the best of several runs, µs per packet.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixer.srtp import SUITES, SrtpCounters, SrtpStream  # noqa: E402

N = 20000
RUNS = 5


def best(fn, n: int = N) -> float:
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        fn(n)
        times.append(time.perf_counter() - t)
    return min(times) / n * 1e6


def bench(suite: str) -> dict[str, float]:
    key_a, key_b = os.urandom(30), os.urandom(30)
    counters = SrtpCounters()
    sender = SrtpStream(suite, key_b, key_a, counters)    # protects with key_a
    header = struct.Struct("!BBHII")
    plain = bytearray(172)
    plain[12:] = b"\xd5" * 160
    protected = []

    class Wire:
        """A socket stand-in: sendto keeps the packet, recvfrom_into replays them."""
        def __init__(self):
            self.i = 0

        def sendto(self, data, dest):
            protected.append(bytes(data))
            return len(data)

        def recvfrom_into(self, buf):
            data = protected[self.i]
            self.i += 1
            n = len(data)
            buf[:n] = data
            return n, ("127.0.0.1", 4000)

    wire = Wire()
    send = sender.sender(wire.sendto)
    seq = [0]

    def protect(n: int) -> None:
        for _ in range(n):
            header.pack_into(plain, 0, 0x80, 0, seq[0] & 0xFFFF, seq[0] * 160 & 0xFFFFFFFF, 0x1234)
            seq[0] += 1
            send(plain, None)

    rxbuf = bytearray(2048)

    send_us = best(protect)
    # unprotect: each run a fresh pair of streams and packets from sequence 0
    # (a receiver joining after the sender's sequence wrapped would guess the
    # wrong rollover counter, RFC 3711 3.3.1)
    unprotect_runs = []
    for _ in range(RUNS):
        pair_tx = SrtpStream(suite, key_b, key_a, counters)
        pair_rx = SrtpStream(suite, key_a, key_b, counters)
        send = pair_tx.sender(wire.sendto)
        recv = pair_rx.receiver(wire.recvfrom_into, rxbuf)
        protected.clear()
        seq[0] = 0
        for _ in range(N):
            header.pack_into(plain, 0, 0x80, 0, seq[0] & 0xFFFF, seq[0] * 160 & 0xFFFFFFFF, 0x1234)
            seq[0] += 1
            send(plain, None)
        wire.i = 0
        t = time.perf_counter()
        for _ in range(N):
            recv(rxbuf)
        unprotect_runs.append(time.perf_counter() - t)
    recv_us = min(unprotect_runs) / N * 1e6
    assert counters.dropped == 0, "bench packets failed to unprotect"

    # pylibsrtp's bytes API
    from pylibsrtp import Policy, Session
    profile = SUITES[suite]
    tx = Session(Policy(key=key_a, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    packets = []
    seq2 = [0]

    def api_protect(n: int) -> None:
        for _ in range(n):  # uses the current ``tx``
            header.pack_into(plain, 0, 0x80, 0, seq2[0] & 0xFFFF, seq2[0] * 160 & 0xFFFFFFFF, 0x5678)
            seq2[0] += 1
            packets.append(tx.protect(bytes(plain)))

    api_protect_us = best(api_protect)
    api_unprotect_runs = []
    for _ in range(RUNS):
        tx = Session(Policy(key=key_a, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
        rx = Session(Policy(key=key_a, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
        packets.clear()
        seq2[0] = 0
        api_protect(N)
        t = time.perf_counter()
        for p in packets:
            rx.unprotect(p)
        api_unprotect_runs.append(time.perf_counter() - t)
    return {"protect": send_us, "unprotect": recv_us, "api_protect": api_protect_us,
            "api_unprotect": min(api_unprotect_runs) / N * 1e6}


def main() -> int:
    print(f"SRTP per 172-byte G.711 packet, best of {RUNS} x {N} (µs)")
    print(f"{'suite':<26} {'protect':>8} {'unprotect':>10} {'pair':>6}   {'pylibsrtp bytes API: protect':>28} {'unprotect':>10} {'pair':>6}")
    for suite in SUITES:
        r = bench(suite)
        print(f"{suite:<26} {r['protect']:8.2f} {r['unprotect']:10.2f} {r['protect'] + r['unprotect']:6.2f}   "
              f"{r['api_protect']:28.2f} {r['api_unprotect']:10.2f} {r['api_protect'] + r['api_unprotect']:6.2f}")
    print("(sipconf's figures include the wrappers' own Python call and the packet copy into the send buffer;"
          " the stand-in socket's copy is in the unprotect figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
