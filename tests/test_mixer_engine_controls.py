"""The engine's SPEC 12 side over real loopback UDP: talk changes reported once
per change, a muted talker out of the mix at once (not after the 300 ms
hangover), the leave beep, and in-band digits read from the audio."""

from __future__ import annotations

import asyncio

import numpy as np

from mixer import codecs, rtp
from mixer.engine import MediaEngine
from test_mixer_engine import band_energy, drain, tone, udp


def dtmf_pcm(n: int, start: int, low: float = 770.0, high: float = 1477.0) -> np.ndarray:  # "6"
    t = (np.arange(n) + start) / 8000
    return np.round(5000 * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))).astype(np.int16)


async def test_talk_mute_leave_beep_and_inband_digits():
    engine = MediaEngine("127.0.0.1", beep_ms=60, leave_beep_hz=500, leave_beep_ms=100)
    engine.start()
    talk: list[tuple[str, bool]] = []
    digits: list[str] = []
    a_sock, b_sock = udp(), udp()
    try:
        ep_a = engine.open_endpoint(0, codec="PCMU", payload_type=0, telephone_event_pt=None,  # in-band
                                    remote=None, on_digit=digits.append, rtp_timeout=30, on_timeout=lambda: None)
        ep_b = engine.open_endpoint(0, codec="PCMU", payload_type=0, telephone_event_pt=101,
                                    remote=b_sock.getsockname(), on_digit=digits.append, rtp_timeout=30,
                                    on_timeout=lambda: None)
        names = {id(ep_a): "a", id(ep_b): "b"}
        engine.on_talk = lambda changes: talk.extend((names[id(ep)], on) for ep, on in changes)
        conf = engine.new_conference()
        conf.add(ep_a)
        conf.add(ep_b)
        a_dst = ("127.0.0.1", ep_a.local_port)
        b_dst = ("127.0.0.1", ep_b.local_port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        got_b: list[tuple[int, bytes]] = []

        async def stream(first: int, count: int, pcm_of) -> None:
            for i in range(first, first + count):
                a_sock.sendto(rtp.build(0, i, i * 160, 0xA, codecs.encode(pcm_of(i), "PCMU")), a_dst)
                b_sock.sendto(rtp.build(0, i, i * 160, 0xB, codecs.encode(np.zeros(160, np.int16), "PCMU")),
                              b_dst)
                await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
                got_b.extend((i, p) for p in drain(b_sock))

        def heard_by_b(first: int) -> np.ndarray:
            parts = [codecs.decode(raw[rtp.parse(raw).payload_start:], "PCMU") for i, raw in got_b if i >= first]
            return np.concatenate(parts)

        await stream(0, 30, lambda i: tone(440, 160, i * 160))
        assert ("a", True) in talk and ("b", True) not in talk  # b sends digital silence
        assert band_energy(heard_by_b(15), 440) > 0
        ep_a.set_muted(True)
        await stream(30, 5, lambda i: tone(440, 160, i * 160))  # a keeps talking, muted
        muted = heard_by_b(32)
        assert np.abs(muted.astype(np.int32)).max() < 50  # out at once, the hangover notwithstanding
        ep_a.set_muted(False)
        await stream(35, 25, lambda i: dtmf_pcm(160, i * 160))  # 500 ms of "6" typed in the audio
        await asyncio.sleep(0.05)
        assert digits == ["6"]
        assert talk == [("a", True), ("a", False)]  # muted, then typing tones: not talking (after 300 ms)
        assert np.abs(heard_by_b(40).astype(np.int32)).max() < 50  # the tone was not heard by b
        got_b.clear()
        third = engine.open_endpoint(0, codec="PCMU", payload_type=0, telephone_event_pt=101, remote=None,
                                     on_digit=digits.append, rtp_timeout=30, on_timeout=lambda: None)
        conf.add(third)
        await stream(60, 5, lambda i: np.zeros(160, np.int16))
        got_b.clear()
        conf.remove(third)  # b hears the 500 Hz leave beep
        await stream(65, 10, lambda i: np.zeros(160, np.int16))
        assert band_energy(heard_by_b(65), 500) > 10 * band_energy(heard_by_b(65), 1000)
        third.close()
    finally:
        await engine.close()
        a_sock.close()
        b_sock.close()


async def test_a_burst_of_talk_changes_is_reported_in_order_over_several_callbacks():
    """200 participants start talking in the same tick and stop together:
    on_talk gets every change once, in order per participant, at most
    TALK_REPORT_CHUNK per callback (so a burst cannot hold up the next tick)."""
    from mixer.engine import TALK_REPORT_CHUNK

    engine = MediaEngine("127.0.0.1")
    engine.start()
    sender = udp()
    calls: list[list[tuple[int, bool]]] = []
    eps = []
    try:
        for _ in range(200):
            eps.append(engine.open_endpoint(0, codec="PCMU", payload_type=0, telephone_event_pt=101,
                                            remote=sender.getsockname(), on_digit=lambda d: None,
                                            rtp_timeout=30, on_timeout=lambda: None))
        index = {id(ep): i for i, ep in enumerate(eps)}
        engine.on_talk = lambda changes: calls.append([(index[id(ep)], on) for ep, on in changes])
        for r in range(0, 200, 10):
            conf = engine.new_conference()
            for ep in eps[r:r + 10]:
                conf.add(ep)
        dests = [("127.0.0.1", ep.local_port) for ep in eps]
        loud = codecs.encode(tone(440, 160, 0), "PCMU")
        quiet = codecs.encode(np.zeros(160, np.int16), "PCMU")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(45):  # 10 ticks of tone, then 700 ms of silence (past the 300 ms hangover)
            payload = loud if i < 10 else quiet
            for k, dest in enumerate(dests):
                sender.sendto(rtp.build(0, i, i * 160, 0x100 + k, payload), dest)
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
            drain(sender)
        await asyncio.sleep(0.1)
        assert TALK_REPORT_CHUNK < 200
        assert calls and max(len(c) for c in calls) <= TALK_REPORT_CHUNK
        assert len(calls) >= 2 * -(-200 // TALK_REPORT_CHUNK)  # each burst spread over several callbacks
        per_participant: dict[int, list[bool]] = {}
        for call in calls:
            for i, on in call:
                per_participant.setdefault(i, []).append(on)
        assert per_participant == {i: [True, False] for i in range(200)}
    finally:
        await engine.close()
        sender.close()
