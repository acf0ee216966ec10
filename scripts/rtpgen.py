#!/usr/bin/env python3
"""A light RTP load generator: G.711 packets, 20 ms, to many server ports.

One SIPp process streaming RTP tops out around 400-500 participants on one
core; this one sends prebuilt packets from raw UDP sockets (one per call, so
that the server's latching sees one source per call) on a drift-free 20 ms
schedule, counts what comes back, and reports its own CPU time so that a
saturated generator is never mistaken for a server limit.

Library use (scripts/loadtest, tests): ``read_pcap_rtp``, ``speech_alaw``,
``RtpGenerator``. Command line: ``rtpgen.py --write-alaw FILE`` writes the
speech of SIPp's g711a.pcap as raw A-law (SIPp ``rtp_stream`` input);
``rtpgen.py --targets FILE --seconds S`` streams to the ``host port`` lines
of FILE and prints one JSON line of counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import select
import socket
import struct
import sys
import time
from pathlib import Path

SIPP_PCAPS = Path("/usr/share/sip-tester")
G711A_PCAP = SIPP_PCAPS / "g711a.pcap"
FRAME = 160  # samples (and bytes) of 20 ms of G.711
_LINK_HEADER = {0: 4, 1: 14, 113: 16}  # pcap linktype -> layer-2 header size (null, Ethernet, Linux SLL)


def read_pcap_rtp(path: str | os.PathLike) -> list[tuple[float, bytes]]:
    """(capture time, RTP packet) of every UDP/IPv4 packet of a classic pcap."""
    data = Path(path).read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    l2 = _LINK_HEADER.get(linktype, 14)
    out = []
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        offset += 16
        frame = data[offset:offset + caplen]
        offset += caplen
        ip = frame[l2:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0x0F) * 4:]
        out.append((sec + frac / (1e9 if nano else 1e6), bytes(udp[8:])))
    return out


def speech_alaw(path: str | os.PathLike = G711A_PCAP) -> bytes:
    """The A-law payload of SIPp's g711a.pcap (7 s of speech, 30 ms packets)."""
    payload = bytearray()
    for _, rtp in read_pcap_rtp(path):
        if len(rtp) > 12 and rtp[1] & 0x7F == 8:
            payload += rtp[12:]
    return bytes(payload)


def frames_of(audio: bytes) -> list[bytes]:
    n = len(audio) // FRAME
    return [audio[i * FRAME:(i + 1) * FRAME] for i in range(n)]


class RtpGenerator:
    """Streams 20 ms G.711 packets from one UDP socket per target.

    ``targets``: (host, port) of each call's server RTP port. Packets are
    built once per frame of audio (the header's seq/timestamp words are
    patched in place), sent on a schedule from a monotonic start; late
    rounds are sent at once, never skipped, so the count stays exact.
    """

    def __init__(self, targets: list[tuple[str, int]], *, audio: bytes | None = None, payload_type: int = 8,
                 bind: str = "127.0.0.1", sockets: list[socket.socket] | None = None) -> None:
        self.targets = list(targets)
        frames = frames_of(audio if audio is not None else speech_alaw())
        if not frames:
            raise ValueError("no audio")
        self.frames = frames
        self.payload_type = payload_type
        if sockets is None:
            sockets = []
            for _ in self.targets:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                s.bind((bind, 0))
                s.setblocking(False)
                sockets.append(s)
        self.sockets = sockets
        self.sent = 0
        self.received = 0
        self.send_errors = 0
        self.late_rounds = 0
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def close(self) -> None:
        for s in self.sockets:
            s.close()

    def run(self, seconds: float, *, offset_frames: int = 0) -> dict:
        """Stream for ``seconds`` (bounded); returns counts and own CPU."""
        n = len(self.targets)
        ssrcs = [random.getrandbits(32) for _ in range(n)]
        seq0 = [random.getrandbits(16) for _ in range(n)]
        ts0 = [random.getrandbits(32) for _ in range(n)]
        bufs = [bytearray(12 + FRAME) for _ in range(n)]
        for i, b in enumerate(bufs):
            struct.pack_into("!BBHII", b, 0, 0x80, 0x80 | self.payload_type, seq0[i], ts0[i], ssrcs[i])
        pack_into = struct.pack_into
        frames = self.frames
        nframes = len(frames)
        rounds = int(seconds * 50)
        socks = self.sockets
        dests = self.targets
        rxbuf = bytearray(2048)
        poller = select.epoll()
        fd_to_sock = {}
        for s in socks:
            poller.register(s.fileno(), select.EPOLLIN)
            fd_to_sock[s.fileno()] = s
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        sent = errors = received = late = 0
        try:
            for r in range(rounds):
                due = start + r * 0.02
                # receive until the round is due (drain what came back)
                while True:
                    wait = due - time.monotonic()
                    for fd, _ in poller.poll(max(wait, 0)):
                        s = fd_to_sock[fd]
                        while True:
                            try:
                                s.recv_into(rxbuf)
                            except (BlockingIOError, InterruptedError):
                                break
                            except OSError:
                                break
                            received += 1
                    if wait <= 0:
                        break
                if time.monotonic() - due > 0.02:
                    late += 1
                payload = frames[(r + offset_frames) % nframes]
                for i in range(n):
                    b = bufs[i]
                    pack_into("!HI", b, 2, (seq0[i] + r) & 0xFFFF, (ts0[i] + r * FRAME) & 0xFFFFFFFF)
                    if r == 1:
                        b[1] &= 0x7F  # marker only on the first packet
                    b[12:] = payload
                    try:
                        socks[i].sendto(b, dests[i])
                        sent += 1
                    except OSError:
                        errors += 1
            # the last round's answers
            end = time.monotonic() + 0.1
            while time.monotonic() < end:
                for fd, _ in poller.poll(0.02):
                    s = fd_to_sock[fd]
                    while True:
                        try:
                            s.recv_into(rxbuf)
                        except OSError:
                            break
                        received += 1
        finally:
            poller.close()
        wall = time.monotonic() - start
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        self.sent += sent
        self.received += received
        self.send_errors += errors
        self.late_rounds += late
        self.cpu_s += (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        self.wall_s += wall
        return {"targets": n, "seconds": wall, "sent": sent, "received": received, "send_errors": errors,
                "late_rounds": late, "cpu_s": self.cpu_s, "cpu_share": self.cpu_s / wall if wall else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-alaw", metavar="FILE", help="write g711a.pcap's speech as raw A-law and exit")
    parser.add_argument("--targets", metavar="FILE", help="lines 'host port', one per call")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to stream (max 3600)")
    args = parser.parse_args(argv)
    if args.write_alaw:
        Path(args.write_alaw).write_bytes(speech_alaw())
        return 0
    if not args.targets:
        parser.error("--targets or --write-alaw")
    targets = []
    for line in Path(args.targets).read_text().splitlines():
        if line.strip():
            host, port = line.split()[:2]
            targets.append((host, int(port)))
    gen = RtpGenerator(targets)
    try:
        print(json.dumps(gen.run(min(args.seconds, 3600.0))))
    finally:
        gen.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
