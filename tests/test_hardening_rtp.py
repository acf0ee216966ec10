"""RTP hostility (issue #6): junk, truncated and oversized packets, wrong-SSRC
floods and packets from a third address after latching never reach the mix
and never disturb the call's audio timing; a phone that vanishes is hung up
after rtp_timeout even while junk keeps arriving at its port."""

from __future__ import annotations

import random
import re
import socket
import struct
import threading
import time

import numpy as np
import pytest

from phone import TestPhone
from support import PASSWORDS, SIPP, office_config, wait_until

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")


def config(rtp_timeout: int) -> str:
    return office_config(server={"rtp_timeout": rtp_timeout, "language": "en"}, trunk=False, room_numbers=())


def join(server, user: str, tone: float, local_ip: str = "127.0.0.1") -> TestPhone:
    phone = TestPhone(("127.0.0.1", server.sip_port), user=user, password=PASSWORDS[user], local_ip=local_ip)
    before = len(re.findall("joined conference 1234", server.log()))
    answer = phone.call("800")
    assert answer.status == 200, answer
    assert phone.wait_for_rtp(5, timeout=3)
    time.sleep(0.3)
    phone.send_dtmf("1234#4321#")
    phone.send_tone(tone)
    assert wait_until(lambda: len(re.findall("joined conference 1234", server.log())) > before, 15)
    return phone


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, b0: int = 0x80) -> bytes:
    return struct.pack("!BBHII", b0, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def hostile_packets(pt: int) -> list[bytes]:
    """One round of everything nasty, aimed at a call whose codec is ``pt``."""
    rng = random.Random(7)
    return [
        b"",                                                    # empty
        b"\x80",                                                # truncated header
        rng.randbytes(11),                                      # shorter than a header
        rng.randbytes(172),                                     # random junk of a frame's size
        b"\x00" * 172,                                          # RTP version 0
        rtp(pt, 1, 160, 0xDEADBEEF, b"\xff" * 1400),            # oversized, right PT, foreign SSRC
        rtp(pt, 2, 320, 0xDEADBEEF, rng.randbytes(160)),        # a frame from a third address
        rtp(pt, 3, 480, rng.getrandbits(32), b"\x00" * 160),    # wrong SSRC flood, loud
        rtp(pt | 0x80, 4, 640, 0xDEADBEEF, b"\x00" * 160),      # marker set
        rtp(pt, 5, 800, 0xDEADBEEF, b"\x00" * 4, b0=0x9F),      # 15 CSRCs announced, none there
        rtp(pt, 6, 960, 0xDEADBEEF, b"\x00\x00\xff\xff", b0=0x90),  # extension longer than the packet
        rtp(pt, 7, 1120, 0xDEADBEEF, b"\x00" * 20 + b"\xff", b0=0xA0),  # padding longer than the packet
        rtp(101, 8, 1280, 0xDEADBEEF, b"\x01\x80\x03\x20"),      # a DTMF "1" end from the attacker
        rtp(13, 9, 1440, 0xDEADBEEF, b"\x00"),                  # comfort noise PT, not negotiated
        rng.randbytes(2000),                                    # bigger than the receive buffer
    ]


class Blaster:
    """Sends hostile packets from its own socket (a third address) until stopped."""

    def __init__(self, target: tuple[str, int], pt: int, source_ip: str = "127.0.0.21", *,
                 junk_only: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source_ip, 0))
        self.target = target
        self.packets = hostile_packets(pt)
        if junk_only:  # nothing that is RTP of this call (which may re-latch after 1 s of silence)
            self.packets = [p for p in self.packets if len(p) < 12 or p[0] & 0xC0 != 0x80
                            or p[1] & 0x7F not in (pt, 101)]
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 30  # bounded whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            for packet in self.packets:
                try:
                    self.sock.sendto(packet, self.target)
                    self.sent += 1
                except OSError:
                    pass
            time.sleep(0.002)  # ~7,000 packets/s

    def __enter__(self) -> "Blaster":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def timing_ok(phone: TestPhone, since: float, until: float) -> tuple[int, list[str]]:
    """Packets received from the server in [since, until) and what was wrong with their sequence."""
    headers = [h for h in list(phone.rtp_headers) if since <= h.arrival < until]
    problems = []
    for prev, cur in zip(headers, headers[1:]):
        if cur.ssrc != prev.ssrc:
            problems.append(f"SSRC changed {prev.ssrc:#x} -> {cur.ssrc:#x}")
        if (cur.seq - prev.seq) & 0xFFFF != 1:
            problems.append(f"seq {prev.seq} -> {cur.seq}")
        if (cur.ts - prev.ts) & 0xFFFFFFFF != 160:
            problems.append(f"ts {prev.ts} -> {cur.ts}")
    return len(headers), problems


def test_hostile_rtp_never_reaches_the_mix_or_timing(make_server):
    server = make_server(config(30))
    a = join(server, "101", 440.0)
    b = join(server, "102", 660.0)
    try:
        time.sleep(1.0)  # past the "first participant" prompt and the beep
        assert a.tone_level(660.0) > 1500 and b.tone_level(440.0) > 1500
        target = a.remote_rtp  # the server's RTP port for a's call
        with Blaster(target, a.answer_pt) as blaster:
            time.sleep(0.5)
            start = time.monotonic()
            time.sleep(2.0)
            end = time.monotonic()
            # While the flood goes on: both still hear each other, nothing else.
            for phone, other, own in ((a, 660.0, 440.0), (b, 440.0, 660.0)):
                assert phone.tone_level(other, seconds=1.5) > 1500, "lost the other party"
                assert phone.tone_level(own, seconds=1.5) < 300, "hears itself"
            audio = b.received_audio(since=start)
            spectrum = np.abs(np.fft.rfft(audio.astype(float)))
            freqs = np.fft.rfftfreq(len(audio), 1 / 8000)
            band = (freqs > 100) & ((freqs < 400) | (freqs > 480))
            # The junk frames (random, silent, 0xff) from the third address never
            # reach b, and a's stream is not chopped (clicks spread over the
            # spectrum): what b hears is a's 440 Hz and little else.
            assert spectrum[band].max() < spectrum[np.abs(freqs - 440) < 5].max() * 0.05
        assert blaster.sent > 5000
        for phone in (a, b):
            count, problems = timing_ok(phone, start, end)
            seconds = end - start
            assert abs(count - 50 * seconds) <= 1 + 0.02 * 50 * seconds, (count, seconds)
            assert not problems, problems[:5]
        # The attacker's DTMF "1" never reached a's IVR (a is in the conference,
        # but a digit would be logged) and it never took a's media.
        assert a.rtp_source == tuple(target)
        assert a.rtp_packets_received > 0
        assert "Traceback" not in server.log()
    finally:
        a.close()
        b.close()


def test_relatch_only_after_latched_source_silent_for_1_s(make_server):
    """mixer/engine.py: a new source address takes over the call's media only
    after the latched one has been silent for RELATCH_AFTER (1 s)."""
    server = make_server(config(30))
    a = join(server, "101", 440.0)
    mover = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mover.bind(("127.0.0.22", 0))
    mover.settimeout(0.2)
    try:
        target = a.remote_rtp
        ssrc, seq, ts = 0x1234, 0, 0

        def send_burst(n: int) -> None:
            nonlocal seq, ts
            for _ in range(n):
                mover.sendto(rtp(a.answer_pt, seq, ts, ssrc, b"\xff" * 160), target)
                seq += 1
                ts += 160
                time.sleep(0.02)

        def server_sends_to_mover() -> bool:
            try:
                while True:
                    data = mover.recv(2048)
                    if len(data) >= 12:
                        return True
            except OSError:
                return False

        send_burst(25)  # while a is alive: ignored
        assert not server_sends_to_mover()
        a.stop_audio()  # a goes quiet (a phone that moved network, say)
        time.sleep(1.3)
        send_burst(10)
        assert server_sends_to_mover(), "no re-latch after 1 s of silence"
    finally:
        mover.close()
        a.close(hangup=True)


def test_vanished_phone_hung_up_after_rtp_timeout_despite_junk(make_server):
    server = make_server(config(2))
    a = join(server, "101", 440.0)
    try:
        target = a.remote_rtp
        call_id = a.call_id
        a.stop_audio()  # vanishes: no more RTP of its own ...
        # ... while junk keeps arriving at its port. (Valid RTP of the call's
        # payload type from a new address would re-latch after 1 s of silence:
        # that is a phone that moved, and it keeps the call up by design.)
        with Blaster(target, a.answer_pt, junk_only=True):
            assert wait_until(lambda: f"call {call_id}: ended: no RTP for 2 s" in server.log(), 8), \
                server.log()[-2000:]
    finally:
        a.close(hangup=False)
