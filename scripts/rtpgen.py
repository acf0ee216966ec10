#!/usr/bin/env python3
"""A light RTP load generator: G.711, G.722 or Opus packets, 20 ms, to many server ports.

One SIPp process streaming RTP tops out around 400-500 participants on one
core; this one sends one prebuilt packet per call per 20 ms round from a
single UDP socket (only the SSRC is patched per call), on a drift-free
schedule, counts what comes back per call and per second, and reports its
own CPU time so that a saturated generator is never mistaken for a server
limit.

Library use (scripts/loadtest, tests): ``read_pcap_rtp``, ``speech_alaw``,
``RtpGenerator``. Command line: ``rtpgen.py --write-alaw FILE`` writes the
speech of SIPp's g711a.pcap as raw A-law (SIPp ``rtp_stream`` input);
``rtpgen.py --follow ports.log --seconds S --out report.json`` streams to
every call that room_join_rtpgen.xml logs ("join <port>" .. "bye <port>");
``--ports P ...`` streams to fixed server ports. ``--srtp`` (with
scripts/sipp/room_join_rtpgen_srtp.xml): SRTP, AES_CM_128_HMAC_SHA1_80,
protected with the scenario's fixed offer key (``SRTP_OFFER_KEY``) and
unprotected with each call's answer key ("join <port> <key>"); packets that
fail to unprotect are counted as ``srtp_failures``, not as received, and per
server port in ``srtp_failed_ports`` with the first bad packet's sequence
number and a verdict (``diagnose_srtp_failure``: "roc+1" when the stream
wrapped before we heard it). ``first_rx``: wall time and sequence number of
each call's first packet back.
``--codec g722|opus`` sends that codec instead of A-law: the same speech,
upsampled and encoded *once at start* by PyAV into a loop of packets
(encoding per packet would measure the generator); ``--talkers N``: only the
first N calls to join talk, the others send encoded silence (a listener's
packets).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

SIPP_PCAPS = Path("/usr/share/sip-tester")
G711A_PCAP = SIPP_PCAPS / "g711a.pcap"
FRAME = 160  # samples (and bytes) of 20 ms of G.711
_LINK_HEADER = {0: 4, 1: 14, 113: 16}
#: the SDES key of room_join_rtpgen_srtp.xml's offers (base64 in the scenario)
SRTP_OFFER_KEY = b"sipconf-loadtest-srtp-key-0123"  # pcap linktype -> layer-2 header size (null, Ethernet, Linux SLL)
# Answers are read every 2 ms on a timer, not by sleeping in epoll on the
# socket. A process asleep on a socket is woken by each datagram sent to it,
# and on loopback the sender pays for that wake-up inside its sendto (about
# 1 µs more per packet here, issue 15). The generator drains faster than one
# Python sender sends, so it fell asleep after nearly every answer, and the
# server paid a wake-up per packet while the faster C floor, which the
# generator could not keep up with, mostly did not: the measurement charged
# the server for the generator's idleness. Real phones are other machines.
# 2 ms of answers (100 datagrams at 1,000 calls) fit the 4 MiB buffer easily.
RX_EVERY = 0.002


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


def _srtp_session(key: bytes, *, outbound: bool):
    from pylibsrtp import Policy, Session
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND,
                    srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    return Session(policy)


def diagnose_srtp_failure(packet: bytes, key: bytes) -> str:
    """Why an SRTP packet protected with ``key`` (AES_CM_128_HMAC_SHA1_80)
    fails to unprotect in a fresh inbound session, for the report (never on
    the hot path). A receiver that first hears a stream assumes its rollover
    counter (ROC) is 0 (RFC 3711 3.3.1); if the sender's sequence number
    wrapped past 65535 before that first packet arrived, the sender's ROC
    is 1 and every packet fails authentication for the rest of the call.
    Test it: prime a fresh session with a packet of the same SSRC at
    sequence 65535 (made with the same key), so that libsrtp guesses ROC 1
    for the small sequence number that follows.

    Returns "ok" (it unprotects: the failure was transient, e.g. a replay),
    "roc+1" (it authenticates only with the rollover counter one higher),
    "short", or "bad key or corrupt" (neither)."""
    from pylibsrtp import Error
    if len(packet) < 12 + 10:
        return "short"
    try:
        _srtp_session(key, outbound=False).unprotect(packet)
        return "ok"
    except Error:
        pass
    ssrc = packet[8:12]
    seq = struct.unpack_from("!H", packet, 2)[0]
    if seq < 0x7FFF:  # libsrtp guesses ROC+1 below 65535 - 2^15
        primer = bytearray(12 + FRAME)
        struct.pack_into("!BBHI", primer, 0, 0x80, packet[1] & 0x7F, 0xFFFF, 0)
        primer[8:12] = ssrc
        rx = _srtp_session(key, outbound=False)
        rx.unprotect(_srtp_session(key, outbound=True).protect(bytes(primer)))
        try:
            rx.unprotect(packet)
            return "roc+1"
        except Error:
            pass
    return "bad key or corrupt"


#: (payload type, RTP timestamp units per 20 ms) per codec
CODECS = {"pcma": (8, 160), "g722": (9, 160), "opus": (111, 960)}


def alaw_to_pcm(audio: bytes):
    """A-law bytes -> int16 samples at 8 kHz (numpy, at start only)."""
    import numpy as np
    a = np.frombuffer(audio, dtype=np.uint8).astype(np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def encoded_loop(codec: str, pcm8k, *, silence: bool = False) -> list[bytes]:
    """The 8 kHz speech as a loop of 20 ms G.722 or Opus payloads, encoded
    once here with PyAV (Opus: in-band FEC on, like a softphone)."""
    import av
    import numpy as np
    from av.audio.frame import AudioFrame
    rate = 16000 if codec == "g722" else 48000
    factor = rate // 8000
    pcm = np.repeat(pcm8k.astype(np.float64), factor)  # a crude upsampling is enough for a load
    k = np.ones(2 * factor) / (2 * factor)
    pcm = np.convolve(pcm, k, mode="same").astype(np.int16)
    if silence:
        pcm = np.zeros(rate * 2, dtype=np.int16)
    ctx = av.CodecContext.create("g722" if codec == "g722" else "libopus", "w")
    ctx.sample_rate = rate
    ctx.format = "s16"
    ctx.layout = "mono"
    if codec == "opus":
        ctx.bit_rate = 32000
        ctx.options = {"fec": "1", "packet_loss": "10", "application": "voip", "frame_duration": "20"}
    ctx.open()
    n = rate // 50
    out = []
    for i in range(len(pcm) // n):
        f = AudioFrame.from_ndarray(pcm[i * n:(i + 1) * n].reshape(1, -1), format="s16", layout="mono")
        f.sample_rate = rate
        f.pts = i * n
        out += [bytes(p) for p in ctx.encode(f)]
    return out


def frames_of(audio: bytes) -> list[bytes]:
    n = len(audio) // FRAME
    return [audio[i * FRAME:(i + 1) * FRAME] for i in range(n)]


class RtpGenerator:
    """Streams 20 ms G.711 packets to the server RTP ports of many calls.

    One UDP socket for every call: the server latches each call's endpoint
    onto it and sends the mix back there; answers are told apart by their
    source port (the call's server port). Each round (every 20 ms from a
    monotonic start) one packet goes to every active call: one header and
    payload per round, only the SSRC patched per call. A late round is sent
    at once, never skipped, so counts stay exact. Received packets are
    counted per call and per second (``bins``), the generator's own CPU per
    second too, so that the caller can pick its steady window afterwards.

    Calls come from ``add``/``remove`` or from SIPp's log (``follow``):
    "join <port>" starts streaming ``start_delay`` s later (after SIPp's
    own DTMF source has been quiet long enough for the server to latch onto
    us), "bye <port>" stops it.
    """

    def __init__(self, host: str = "127.0.0.1", *, audio: bytes | None = None, payload_type: int = 8,
                 bind: str = "127.0.0.1", start_delay: float = 1.2, srtp: bool = False, codec: str = "pcma",
                 talkers: int | None = None, rx_every: float = RX_EVERY) -> None:
        self.host = host
        # > 0: read answers on a timer, every rx_every s; 0: block in epoll and
        # wake on each answer (see RX_EVERY)
        self.rx_every = rx_every
        # SRTP: one outbound session (one stream per call's SSRC), one inbound per call
        self.srtp = srtp
        self._srtp_tx = _srtp_session(SRTP_OFFER_KEY, outbound=True) if srtp else None
        self._srtp_rx: dict[int, object] = {}  # server port -> inbound session
        self._srtp_keys: dict[int, bytes] = {}  # server port -> its answer key (for the diagnosis)
        self.srtp_failures = 0
        self.srtp_failed_ports: dict[int, int] = {}  # server port -> packets that failed to unprotect
        self._srtp_first_bad: dict[int, bytes] = {}  # server port -> its first failing packet
        speech = audio if audio is not None else speech_alaw()
        if codec == "pcma":
            frames = frames_of(speech)
            quiet = [bytes([0xD5]) * FRAME]
        else:
            frames = encoded_loop(codec, alaw_to_pcm(speech))
            quiet = encoded_loop(codec, alaw_to_pcm(speech), silence=True)
            payload_type = CODECS[codec][0]
        if not frames:
            raise ValueError("no audio")
        self.frames = frames
        self.quiet = quiet  # what a listener (not a talker) sends
        self.talkers = talkers  # None: everybody talks
        self.ts_step = CODECS[codec][1]
        self.payload_type = payload_type
        self.start_delay = start_delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.bind((bind, 0))
        self.sock.setblocking(False)
        self.local = self.sock.getsockname()
        self._pending: list[tuple[float, int]] = []  # (start at, port)
        self._active: dict[int, bytes] = {}          # port -> SSRC bytes
        self._started = 0                            # calls that have started streaming
        self._talking: set[int] = set()              # ports that send speech
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.first_rx: dict[int, tuple[float, int]] = {}  # port -> (wall time, RTP seq) of its first packet back
        self.bins: dict[int, list[int]] = {}         # port -> packets received in each second since t0
        self.sent_bins: list[int] = []               # packets sent in each second since t0
        self.cpu_bins: list[float] = []              # own CPU seconds used in each second since t0
        self.joined: dict[int, float] = {}           # port -> when streaming started (monotonic)
        self.ended: dict[int, float] = {}
        self.sent = self.received = self.send_errors = 0
        self.late_rounds = 0
        self.max_round_late = 0.0
        self._log = None
        self._log_tail = b""

    def close(self) -> None:
        self.sock.close()
        if self._log is not None:
            self._log.close()

    def add(self, port: int, delay: float | None = None, key: bytes | None = None) -> None:
        if self.srtp:
            if key is None:
                raise ValueError(f"SRTP: no key for port {port}")
            self._srtp_rx[port] = _srtp_session(key, outbound=False)
            self._srtp_keys[port] = key
        self._pending.append((time.monotonic() + (self.start_delay if delay is None else delay), port))

    def remove(self, port: int) -> None:
        self._pending = [(t, p) for t, p in self._pending if p != port]
        if self._active.pop(port, None) is not None:
            self.ended[port] = time.monotonic()

    def follow(self, log_path: str | os.PathLike) -> None:
        self._log_path = Path(log_path)

    def _read_log(self) -> None:
        if self._log is None:
            path = getattr(self, "_log_path", None)
            if path is None or not path.exists():
                return
            self._log = open(path, "rb")
        data = self._log.read()
        if not data:
            return
        lines = (self._log_tail + data).split(b"\n")
        self._log_tail = lines.pop()
        for line in lines:
            words = line.split()
            if self.srtp and len(words) >= 3 and words[-3] == b"join" and words[-2].isdigit():
                import base64
                self.add(int(words[-2]), key=base64.b64decode(words[-1]))
            elif len(words) >= 2 and words[-1].isdigit():
                if words[-2] == b"join":
                    self.add(int(words[-1]))
                elif words[-2] == b"bye":
                    self.remove(int(words[-1]))

    def _bin(self, bins: list, second: int):
        while len(bins) <= second:
            bins.append(0)
        return bins

    def run(self, until: float, *, stop_when_idle_after: float | None = None) -> dict:
        """Stream until monotonic time ``until`` (or, with
        ``stop_when_idle_after``, once every call has ended after that time)."""
        sock = self.sock
        recv_into = sock.recvfrom_into
        sendto = sock.sendto
        rxbuf = bytearray(2048)
        pack_into = struct.pack_into
        frames = self.frames
        nframes = len(frames)
        quiet = self.quiet
        nquiet = len(quiet)
        step = self.ts_step
        talking = self._talking
        host = self.host
        t0 = self.t0
        bins = self.bins
        sent_bins = self.sent_bins
        cpu_bins = self.cpu_bins
        poller = select.epoll()
        poller.register(sock.fileno(), select.EPOLLIN)
        seq0 = random.getrandbits(16)
        ts0 = random.getrandbits(32)
        start = time.monotonic()
        r = 0
        last_second = -1
        cpu_before = time.process_time()
        dests: list[tuple[tuple[str, int], bytes]] = []
        changed = True
        srtp = self.srtp
        rx_every = self.rx_every
        protect = self._srtp_tx.protect if srtp else None
        rx_sessions = self._srtp_rx
        try:
            while True:
                due = start + r * 0.02
                # drain answers until the round is due
                while True:
                    now = time.monotonic()
                    wait = due - now
                    second = int(now - t0)
                    if second != last_second:
                        cpu_now = time.process_time()
                        self._bin(cpu_bins, second)[second] += cpu_now - cpu_before
                        cpu_before = cpu_now
                        last_second = second
                        self._bin(sent_bins, second)
                    if wait <= 0:
                        events = poller.poll(0)
                    elif rx_every:
                        # asleep on a timer, not on the socket: the server's
                        # sendto does not have to wake this process (see RX_EVERY)
                        time.sleep(min(wait, rx_every))
                        events = poller.poll(0)
                    else:
                        events = poller.poll(wait)
                    if events:
                        second = int(time.monotonic() - t0)
                        got = 0
                        while True:
                            try:
                                n, addr = recv_into(rxbuf)
                            except (BlockingIOError, InterruptedError):
                                break
                            except OSError:
                                break
                            if srtp:
                                session = rx_sessions.get(addr[1])
                                try:
                                    session.unprotect(bytes(rxbuf[:n]))
                                except Exception:  # pylibsrtp.Error, or no session for that port
                                    self._srtp_failed(addr[1], rxbuf[:n])
                                    continue
                            got += 1
                            b = bins.get(addr[1])
                            if b is None:  # the call's first packet back (once per call)
                                b = bins[addr[1]] = []
                                self.first_rx[addr[1]] = (time.time(), struct.unpack_from("!H", rxbuf, 2)[0])
                            if len(b) <= second:
                                b.extend([0] * (second + 1 - len(b)))
                            b[second] += 1
                        self.received += got
                    if wait <= 0:
                        break
                now = time.monotonic()
                if now >= until:
                    break
                late = now - due
                if late > 0.02:
                    self.late_rounds += 1
                if late > self.max_round_late:
                    self.max_round_late = late
                self._read_log()
                if self._pending:
                    ready = [(t, p) for t, p in self._pending if t <= now]
                    if ready:
                        self._pending = [(t, p) for t, p in self._pending if t > now]
                        for _, port in ready:
                            self._active[port] = struct.pack("!I", random.getrandbits(32))
                            self.joined[port] = now
                            if self.talkers is None or self._started < self.talkers:
                                talking.add(port)
                            self._started += 1
                        changed = True
                if changed or len(dests) != len(self._active):
                    dests = [((host, port), ssrc, port in talking) for port, ssrc in self._active.items()]
                    changed = False
                if (stop_when_idle_after is not None and now >= stop_when_idle_after
                        and not self._active and not self._pending):
                    break
                if dests:
                    # two packets per round (speech, a listener's silence), built once;
                    # only the SSRC is patched per call
                    talk = bytearray(12) + frames[r % nframes]
                    hush = bytearray(12) + quiet[r % nquiet]
                    for pkt in (talk, hush):
                        pack_into("!BBHI", pkt, 0, 0x80, self.payload_type, (seq0 + r) & 0xFFFF,
                                  (ts0 + r * step) & 0xFFFFFFFF)
                    errors = 0
                    for dest, ssrc, talks in dests:
                        pkt = talk if talks else hush
                        pkt[8:12] = ssrc
                        try:
                            sendto(protect(bytes(pkt)) if srtp else pkt, dest)
                        except OSError:
                            errors += 1
                    n = len(dests) - errors
                    self.sent += n
                    self.send_errors += errors
                    second = int(time.monotonic() - t0)
                    self._bin(sent_bins, second)[second] += n
                r += 1
        finally:
            poller.close()
            cpu_now = time.process_time()
            second = int(time.monotonic() - t0)
            self._bin(cpu_bins, second)[second] += cpu_now - cpu_before
        return self.report()

    def _srtp_failed(self, port: int, packet) -> None:
        """Count a packet that did not unprotect, per server port (the
        report names the failing calls), and keep each port's first one."""
        self.srtp_failures += 1
        self.srtp_failed_ports[port] = self.srtp_failed_ports.get(port, 0) + 1
        if port not in self._srtp_first_bad:
            self._srtp_first_bad[port] = bytes(packet)

    def srtp_diagnosis(self) -> dict[str, dict]:
        """Per failing server port: packets failed, the first bad packet's
        SSRC and sequence number, and ``diagnose_srtp_failure``'s verdict."""
        out = {}
        for port, count in sorted(self.srtp_failed_ports.items()):
            packet = self._srtp_first_bad[port]
            key = self._srtp_keys.get(port)
            seq, ssrc = struct.unpack_from("!HI", packet, 2) if len(packet) >= 12 else (None, None)
            out[str(port)] = {"failed": count, "received": sum(self.bins.get(port, ())),
                              "first_bad_seq": seq, "ssrc": ssrc,
                              "verdict": diagnose_srtp_failure(packet, key) if key else "no key for this port"}
        return out

    def report(self) -> dict:
        return {"t0": self.t0, "t0_wall": self.t0_wall,
                "first_rx": {str(k): list(v) for k, v in self.first_rx.items()}, "local": list(self.local), "sent": self.sent, "received": self.received,
                "send_errors": self.send_errors, "late_rounds": self.late_rounds,
                "max_round_late": self.max_round_late, "srtp": self.srtp, "srtp_failures": self.srtp_failures,
                "srtp_failed_ports": self.srtp_diagnosis() if self.srtp else {},
                "cpu_bins": self.cpu_bins, "sent_bins": self.sent_bins,
                "bins": {str(k): v for k, v in self.bins.items()},
                "joined": {str(k): v for k, v in self.joined.items()},
                "ended": {str(k): v for k, v in self.ended.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-alaw", metavar="FILE", help="write g711a.pcap's speech as raw A-law and exit")
    parser.add_argument("--follow", metavar="LOG", help="SIPp log of 'join <port>' / 'bye <port>' lines")
    parser.add_argument("--ports", metavar="P", type=int, nargs="*", default=[], help="server RTP ports to stream to")
    parser.add_argument("--host", default="127.0.0.1", help="the server's RTP address")
    parser.add_argument("--bind", default="127.0.0.1", help="our address")
    parser.add_argument("--seconds", type=float, default=10.0, help="stop after this long (max 3600)")
    parser.add_argument("--start-delay", type=float, default=1.2,
                        help="seconds from 'join' to the first packet (the server relatches after 1 s)")
    parser.add_argument("--srtp", action="store_true",
                        help="SRTP (SDES keys: the scenario's offer key out, 'join <port> <key>' in)")
    parser.add_argument("--out", metavar="FILE", help="write the JSON report here (default: stdout)")
    parser.add_argument("--codec", choices=sorted(CODECS), default="pcma", help="what to send (default pcma)")
    parser.add_argument("--talkers", type=int, default=None,
                        help="only the first N calls talk, the others send silence (default: all talk)")
    parser.add_argument("--rx-every", type=float, default=RX_EVERY * 1000, metavar="MS",
                        help=f"read answers every MS ms (default {RX_EVERY * 1000:g}); 0: wake on each answer")
    args = parser.parse_args(argv)
    if args.write_alaw:
        Path(args.write_alaw).write_bytes(speech_alaw())
        return 0
    if not args.follow and not args.ports:
        parser.error("--follow, --ports or --write-alaw")
    if args.srtp and args.ports:
        parser.error("--srtp needs --follow (each call's key comes from the log)")
    gen = RtpGenerator(args.host, bind=args.bind, start_delay=args.start_delay, srtp=args.srtp, codec=args.codec,
                       talkers=args.talkers, rx_every=max(0.0, args.rx_every) / 1000)
    stop = {"now": False}

    def on_signal(*_):
        stop["now"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for port in args.ports:
            gen.add(port, 0)
        if args.follow:
            gen.follow(args.follow)
        try:
            report = gen.run(time.monotonic() + min(args.seconds, 3600.0))
        except KeyboardInterrupt:
            report = gen.report()
        text = json.dumps(report)
        if args.out:
            Path(args.out).write_text(text)
        else:
            print(text)
    finally:
        gen.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
