"""One loopback test with real UDP sockets on 127.0.0.1 driving the MediaEngine."""

import asyncio
import socket

import numpy as np

from mixer import codecs, rtp
from mixer.engine import MediaEngine

RATE = 8000


def tone(hz: float, n: int, start: int) -> np.ndarray:
    t = (np.arange(n) + start) / RATE
    return np.round(8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def dominant_hz(pcm: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / RATE)[np.argmax(spec)])


def band_energy(pcm: np.ndarray, hz: float) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    freqs = np.fft.rfftfreq(len(pcm), 1 / RATE)
    return float(spec[np.abs(freqs - hz) < 20].sum())


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def drain(s: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(s.recv(2048))
        except BlockingIOError:
            return out


def pcmu_endpoint(engine: MediaEngine, remote, on_digit=lambda d: None, on_timeout=lambda: None):
    """A PCMU endpoint with telephone-event 101 and a 30 s RTP timeout on a
    free port (what most tests here need)."""
    return engine.open_endpoint(0, codec="PCMU", payload_type=0, telephone_event_pt=101, remote=remote,
                                on_digit=on_digit, rtp_timeout=30, on_timeout=on_timeout)


async def test_two_endpoints_hear_each_other_dtmf_and_timeout():
    engine = MediaEngine("127.0.0.1", beep_ms=60)
    engine.start()
    a_sock, b_sock = udp(), udp()
    digits: list[str] = []
    timeouts: list[str] = []
    try:
        ep_a = pcmu_endpoint(engine, None, digits.append, lambda: timeouts.append("a"))
        ep_b = pcmu_endpoint(engine, b_sock.getsockname(), digits.append, lambda: timeouts.append("b"))
        ep_idle = engine.open_endpoint(0, codec="PCMA", payload_type=8, telephone_event_pt=None,
                                       remote=None, on_digit=digits.append, rtp_timeout=0.2,
                                       on_timeout=lambda: timeouts.append("idle"))
        assert ep_a.local_port % 2 == 0 and ep_a.local_port != ep_b.local_port
        conf = engine.new_conference()
        conf.add(ep_a)
        conf.add(ep_b)
        assert len(conf) == 2 and ep_a in conf and ep_idle not in conf

        a_dst = ("127.0.0.1", ep_a.local_port)
        b_dst = ("127.0.0.1", ep_b.local_port)
        ssrc_a, ssrc_b = 0x1111, 0x2222
        got = {"a": [], "b": []}
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(40):  # 800 ms of audio, paced at 20 ms from a fixed start like a phone's clock
            a_sock.sendto(rtp.build(0, i, i * 160, ssrc_a, codecs.encode(tone(440, 160, i * 160), "PCMU")), a_dst)
            b_sock.sendto(rtp.build(0, i, i * 160, ssrc_b, codecs.encode(tone(1250, 160, i * 160), "PCMU")), b_dst)
            if i == 5:  # junk and a foreign payload type: dropped silently
                a_sock.sendto(b"\x00junk", a_dst)
                a_sock.sendto(rtp.build(13, 99, 0, ssrc_a, b"\x00"), a_dst)
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
            got["a"] += drain(a_sock)
            got["b"] += drain(b_sock)
        # RFC 4733 digit '7': start, update, three end packets -> one digit
        for j, (end, dur) in enumerate([(False, 160), (False, 320), (True, 480), (True, 480), (True, 480)]):
            a_sock.sendto(rtp.build(101, 100 + j, 9000, ssrc_a, rtp.build_telephone_event(7, end, dur), marker=j == 0), a_dst)
        await asyncio.sleep(0.1)
        got["a"] += drain(a_sock)
        got["b"] += drain(b_sock)

        assert digits == ["7"]
        assert timeouts == ["idle"]  # only the endpoint that never received RTP
        assert engine.stats.packets_dropped >= 2
        for name, own, other in (("a", 440, 1250), ("b", 1250, 440)):
            pkts = [rtp.parse(p) for p in got[name]]
            assert len(pkts) > 20
            assert all(p is not None and p.payload_type == 0 for p in pkts)
            assert pkts[0].marker and not any(p.marker for p in pkts[1:])
            assert len({p.ssrc for p in pkts}) == 1
            seqs = [p.seq for p in pkts]
            assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
            assert all(b.timestamp - a.timestamp >= 160 for a, b in zip(pkts, pkts[1:]))
            pcm = np.concatenate([codecs.decode(raw[p.payload_start:p.payload_end], "PCMU")
                                  for raw, p in zip(got[name], pkts)])[-2400:]
            assert abs(dominant_hz(pcm) - other) < 20, name
            assert band_energy(pcm, own) < 0.01 * band_energy(pcm, other), name
        # b was sent to its SDP address before RTP arrived; a only after latching
        assert ep_a.latched == a_sock.getsockname()
    finally:
        await engine.close()
        a_sock.close()
        b_sock.close()
    assert engine.stats.participants == 0


async def test_connected_socket_follows_the_latch_and_the_port_stays_exclusive():
    """After latching, a call's RTP goes through a socket connected to the
    latched address (same port, SO_REUSEPORT only for that bind): packets
    still leave from the SDP port, a third address is still dropped, a
    phone that moves after 1 s of silence is latched again and the
    connected socket follows it, and no other socket can take the port."""
    import socket as socketlib

    engine = MediaEngine("127.0.0.1")
    engine.start()
    phone, third, moved, other = udp(), udp(), udp(), udp()
    try:
        ep = pcmu_endpoint(engine, phone.getsockname())
        ep_other = pcmu_endpoint(engine, other.getsockname())
        conf = engine.new_conference()
        conf.add(ep)
        conf.add(ep_other)
        port = ("127.0.0.1", ep.local_port)
        other_port = ("127.0.0.1", ep_other.local_port)
        loop = asyncio.get_running_loop()

        async def stream(sock, first: int, count: int, hz: float, ssrc: int) -> None:
            start = loop.time()
            for i in range(first, first + count):
                sock.sendto(rtp.build(0, i, i * 160, ssrc, codecs.encode(tone(hz, 160, i * 160), "PCMU")), port)
                other.sendto(rtp.build(0, i, i * 160, 0x99, codecs.encode(np.zeros(160, np.int16), "PCMU")),
                             other_port)
                await asyncio.sleep(max(0.0, start + (i - first + 1) * 0.02 - loop.time()))

        def heard_by_other() -> np.ndarray:
            parts = [codecs.decode(raw[12:], "PCMU") for raw in drain(other)]
            return np.concatenate(parts) if parts else np.zeros(0, np.int16)

        await stream(phone, 0, 20, 440, 0xA)
        assert ep.latched == phone.getsockname()
        assert ep._conn is not None and ep._conn.getpeername() == phone.getsockname()
        got = []
        for _ in range(50):
            try:
                got.append(phone.recvfrom(2048))
            except BlockingIOError:
                break
        assert got and {addr for _, addr in got} == {port}  # still from the port in the SDP
        # the port is ours alone: a plain bind is refused while the connected socket exists
        probe = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_DGRAM)
        try:
            try:
                probe.bind(port)
                bound = True
            except OSError:
                bound = False
            assert not bound
        finally:
            probe.close()
        # a third address while the phone talks: dropped, not heard
        heard_by_other()
        dropped = ep.dropped
        start = loop.time()
        for i in range(20, 45):
            phone.sendto(rtp.build(0, i, i * 160, 0xA, codecs.encode(np.zeros(160, np.int16), "PCMU")), port)
            third.sendto(rtp.build(0, i, i * 160, 0xC, codecs.encode(tone(1800, 160, i * 160), "PCMU")), port)
            other.sendto(rtp.build(0, i, i * 160, 0x99, codecs.encode(np.zeros(160, np.int16), "PCMU")), other_port)
            await asyncio.sleep(max(0.0, start + (i - 19) * 0.02 - loop.time()))
        assert ep.dropped - dropped >= 20
        assert band_energy(heard_by_other()[800:], 1800) < 1e4  # (a heard tone: > 1e6)
        assert ep.latched == phone.getsockname()
        # the phone goes quiet; 1.2 s later it speaks from another address
        await asyncio.sleep(1.2)
        drain(other)
        await stream(moved, 100, 30, 700, 0xB)
        assert ep.latched == moved.getsockname()
        assert ep._conn is not None and ep._conn.getpeername() == moved.getsockname()
        assert band_energy(heard_by_other(), 700) > 1e6
        assert drain(moved)  # our packets now go to the new address
    finally:
        await engine.close()
        for s in (phone, third, moved, other):
            s.close()


async def test_srtp_call_on_the_connected_socket_unprotects_protects_and_drops_tampered():
    """An SRTP call gets the connected socket too, with the SRTP functions
    around it: its audio is heard, what it receives unprotects with the
    answer's key, and a tampered packet is dropped and counted."""
    import os

    from pylibsrtp import Policy, Session

    from mixer.srtp import SrtpCounters, SrtpStream

    phone_key, our_key = os.urandom(30), os.urandom(30)
    engine = MediaEngine("127.0.0.1")
    engine.start()
    phone, other = udp(), udp()
    counters = SrtpCounters()
    try:
        ep = pcmu_endpoint(engine, phone.getsockname())
        SrtpStream("AES_CM_128_HMAC_SHA1_80", phone_key, our_key, counters).attach(ep)
        ep_other = pcmu_endpoint(engine, other.getsockname())
        conf = engine.new_conference()
        conf.add(ep)
        conf.add(ep_other)
        tx = Session(Policy(key=phone_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        rx = Session(Policy(key=our_key, ssrc_type=Policy.SSRC_ANY_INBOUND))
        port = ("127.0.0.1", ep.local_port)
        other_port = ("127.0.0.1", ep_other.local_port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(40):
            packet = tx.protect(rtp.build(0, i, i * 160, 0xA, codecs.encode(tone(440, 160, i * 160), "PCMU")))
            if i == 30:  # a tampered copy first: dropped, the real one still counts
                phone.sendto(packet[:20] + bytes([packet[20] ^ 0xFF]) + packet[21:], port)
            phone.sendto(packet, port)
            other.sendto(rtp.build(0, i, i * 160, 0x99, codecs.encode(np.zeros(160, np.int16), "PCMU")), other_port)
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
        assert ep._conn is not None and ep._conn.getpeername() == phone.getsockname()
        assert counters.dropped == 1
        heard = np.concatenate([codecs.decode(raw[12:], "PCMU") for raw in drain(other)])
        assert band_energy(heard[1600:], 440) > 1e6
        back = drain(phone)
        assert len(back) >= 20
        plain = [rx.unprotect(p) for p in back]  # raises if any is not protected with our key
        assert all(p[0] == 0x80 for p in plain)
    finally:
        await engine.close()
        phone.close()
        other.close()


async def test_connected_g711_packets_are_placed_together_and_odd_ones_in_order():
    """Once latched and connected, a G.711 call's packets are read into the
    landing block and placed all at once (BatchJitter.place records when);
    a stream with anything else in a tick -- telephone-event, a new SSRC --
    has every packet of that tick handled one by one, in order: the digit
    is reported, the new SSRC's audio is heard, the other call's audio never
    stops."""
    engine = MediaEngine("127.0.0.1")
    engine.start()
    a_sock, b_sock = udp(), udp()
    digits: list[str] = []
    try:
        eps = [pcmu_endpoint(engine, s.getsockname(), digits.append) for s in (a_sock, b_sock)]
        conf = engine.new_conference()
        for ep in eps:
            conf.add(ep)
        dst = [("127.0.0.1", ep.local_port) for ep in eps]
        loop = asyncio.get_running_loop()
        start = loop.time()
        heard_b: list[bytes] = []
        for i in range(60):
            ssrc_a = 0xA if i < 40 else 0xAA  # a new stream from the same phone at 800 ms
            a_sock.sendto(rtp.build(0, i, i * 160 + (0 if i < 40 else 50_000), ssrc_a,
                                    codecs.encode(tone(440, 160, i * 160), "PCMU")), dst[0])
            if i == 25:  # a keypad digit between two audio packets of the same tick
                for j, end in enumerate((False, True, True, True)):
                    a_sock.sendto(rtp.build(101, 1000 + j, 4000, ssrc_a, rtp.build_telephone_event(5, end, 160 * (j + 1)),
                                            marker=j == 0), dst[0])
            b_sock.sendto(rtp.build(0, i, i * 160, 0xB, codecs.encode(np.zeros(160, np.int16), "PCMU")), dst[1])
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
            heard_b += drain(b_sock)
            drain(a_sock)
            if i == 20:
                assert all(ep._conn is not None and ep._conn.fileno() in engine._land_get for ep in eps)
                placed_at = [float(engine._jitter.heard[ep._jid]) for ep in eps]
                assert all(t > 0 for t in placed_at)  # the batched path carries both calls
        assert digits == ["5"]
        assert int(engine._jitter.ssrc[eps[0]._jid]) == 0xAA
        assert all(float(engine._jitter.heard[ep._jid]) > t for ep, t in zip(eps, placed_at))
        pcm = np.concatenate([codecs.decode(raw[12:], "PCMU") for raw in heard_b])
        # b hears a's tone before the digit, around it and after the new SSRC
        for lo, hi in ((10, 24), (24, 38), (46, 58)):
            part = pcm[lo * 160:hi * 160]
            assert abs(dominant_hz(part) - 440) < 20 and band_energy(part, 440) > 1e6, (lo, hi)
    finally:
        await engine.close()
        a_sock.close()
        b_sock.close()


async def test_a_full_landing_block_keeps_each_stream_in_order():
    """More datagrams in a tick than the landing block holds (ticks were
    missed): the block is placed and refilled, never bypassed, so a
    telephone-event burst read over several rounds keeps its order and each
    key press is one digit (reordered behind its own end packets, a start
    packet would count the digit twice)."""
    engine = MediaEngine("127.0.0.1")
    engine.start()
    phone, other = udp(), udp()
    digits: list[str] = []
    try:
        ep = pcmu_endpoint(engine, phone.getsockname(), digits.append)
        dst = ("127.0.0.1", ep.local_port)
        silence = codecs.encode(np.zeros(160, np.int16), "PCMU")
        for i in range(10):  # latch, and get the connected socket
            phone.sendto(rtp.build(0, i, i * 160, 0x5, silence), dst)
            await asyncio.sleep(0.02)
        assert ep._conn is not None and ep._conn.fileno() in engine._land_get
        engine._set_landing(2)
        seq = 100
        for k, event in enumerate((1, 2, 3, 11, 4)):  # "123#4"
            ts = 10_000 + k * 2000
            burst = [(False, 160), (False, 320), (True, 480), (True, 480), (True, 480)]
            for j, (end, duration) in enumerate(burst):  # back to back: read over several rounds of one tick
                phone.sendto(rtp.build(101, seq, ts, 0x5, rtp.build_telephone_event(event, end, duration),
                                       marker=j == 0), dst)
                seq += 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.7)  # past the detector's stale_after: a reopened event would show
        assert digits == ["1", "2", "3", "#", "4"]
        assert engine._land_capacity == 2
    finally:
        await engine.close()
        phone.close()
        other.close()


async def test_an_overloaded_tick_still_lets_the_event_loop_run():
    """Ticks that take longer than 20 ms are due again at once; the event
    loop must still get a turn between them, or signalling (SIP, digits,
    hang-ups) stops while the mixer is overloaded and the overload never
    ends."""
    import time as timelib

    engine = MediaEngine("127.0.0.1")
    engine.start()
    phone = udp()
    try:
        ep = pcmu_endpoint(engine, phone.getsockname())
        conf = engine.new_conference()
        conf.add(ep)

        class SlowTap:  # each of 120 ticks takes 30 ms: the mixer is overloaded
            left = 120  # (then fast again: starved, the test would never get its turn to fail)

            def push(self, pcm, rate, tick):
                if self.left > 0:
                    self.left -= 1
                    timelib.sleep(0.03)

        tap = SlowTap()
        engine.set_recorder(conf, tap)
        await asyncio.sleep(0.1)
        turns = []
        for _ in range(5):  # plain event-loop callbacks, as SIP and digits are
            assert tap.left > 0  # still overloaded: we got a turn during the overload
            before = engine.stats.ticks
            ran = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(ran.set_result, None)
            await asyncio.wait_for(ran, 2.0)
            turns.append(engine.stats.ticks - before)
        assert max(turns) <= 4, turns  # a few loop iterations, each may run one tick
        assert engine.stats.ticks_skipped > 0  # it was overloaded all along
    finally:
        await engine.close()
        phone.close()
