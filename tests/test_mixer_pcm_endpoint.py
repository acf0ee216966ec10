"""PcmEndpoint: a participant fed PCM and yielding PCM (browser participants),
mixed with a G.711 RTP endpoint over real loopback sockets through the one
mixer clock, and the FIFO's jitter/drift rules."""

import asyncio

import numpy as np

from mixer import codecs, rtp
from mixer.engine import MediaEngine
from mixer.pcm_endpoint import MAX_FRAMES, PREFILL_FRAMES, PcmEndpoint, PcmFifo
from test_mixer_engine import drain, udp


def tone(hz: float, n: int, start: int, rate: int, amp: float = 8000) -> np.ndarray:
    t = (np.arange(n) + start) / rate
    return np.round(amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spec)])


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0


async def _run(engine, phone_sock, ep_rtp, pcm_ep, ticks: int, *, phone_hz: float, pcm_hz: float):
    """``ticks`` x 20 ms: the phone sends a tone over RTP, the PCM side is fed a tone."""
    dst = ("127.0.0.1", ep_rtp.local_port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    got = []
    for i in range(ticks):
        phone_sock.sendto(rtp.build(0, i, i * 160, 0x1234, codecs.encode(tone(phone_hz, 160, i * 160, 8000), "PCMU")),
                          dst)
        pcm_ep.feed(tone(pcm_hz, pcm_ep.frame, i * pcm_ep.frame, pcm_ep.rate))
        await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
        got.extend(drain(phone_sock))
    return got


def _heard_by_phone(packets: list[bytes]) -> np.ndarray:
    parsed = [(p, rtp.parse(p)) for p in packets]
    return np.concatenate([codecs.decode(p[h.payload_start:h.payload_end], "PCMU") for p, h in parsed])


async def test_pcm_participant_and_phone_hear_each_other_one_frame_per_tick():
    engine = MediaEngine("127.0.0.1", beep_ms=20)
    engine.start()
    sock = udp()
    frames: list[np.ndarray] = []
    talk: list[tuple[object, bool]] = []
    engine.on_talk = talk.extend
    try:
        ep = engine.open_endpoint(0, codec="PCMU", payload_type=0, telephone_event_pt=101,
                                  remote=sock.getsockname(), on_digit=lambda d: None, rtp_timeout=30,
                                  on_timeout=lambda: None)
        pcm = PcmEndpoint(engine, frames.append)
        engine.attach(pcm)
        assert pcm.rate == 48000 and pcm.frame == 960
        conf = engine.new_conference()
        conf.add(ep)
        conf.add(pcm)
        ticks_before = engine.stats.ticks
        got = await _run(engine, sock, ep, pcm, 60, phone_hz=600, pcm_hz=1500)
        ticks = engine.stats.ticks - ticks_before
        # one mixed frame per mixer tick, at the PCM rate (no second clock)
        assert abs(len(frames) - ticks) <= 2
        assert all(f.shape == (960,) and f.dtype == np.int16 for f in frames)
        heard_pcm = np.concatenate(frames[-25:])
        assert abs(dominant_hz(heard_pcm, 48000) - 600) < 10
        assert rms(heard_pcm) > 1000
        heard_phone = _heard_by_phone(got[-25:])
        assert abs(dominant_hz(heard_phone, 8000) - 1500) < 20  # 48 kHz in, resampled for the G.711 listener
        assert rms(heard_phone) > 1000

        # SPEC 12 talk state on the general path too: both talk, reported once
        assert pcm.talking and ep.talking
        assert [t for e, t in talk if e is pcm] == [True]
        # muted: the phone no longer hears the PCM participant, who still hears the phone
        pcm.set_muted(True)
        frames.clear()
        got = await _run(engine, sock, ep, pcm, 40, phone_hz=600, pcm_hz=1500)
        assert rms(_heard_by_phone(got[-10:])) < 50
        assert abs(dominant_hz(np.concatenate(frames[-10:]), 48000) - 600) < 10
        assert not pcm.talking and [t for e, t in talk if e is pcm] == [True, False]  # muted is quiet

        # closed: out of the engine and the conference, no more frames
        pcm.close()
        await asyncio.sleep(0.1)
        n = len(frames)
        await asyncio.sleep(0.1)
        assert len(frames) == n and pcm not in conf and engine.stats.participants == 1
    finally:
        await engine.close()
        sock.close()


async def test_pcm_participant_at_a_capped_mix_rate_and_prompts():
    """max_mix_rate 16000: the PCM edge works at 16 kHz; a prompt reaches it."""
    engine = MediaEngine("127.0.0.1", max_mix_rate=16000)
    engine.start()
    frames: list[np.ndarray] = []
    done = asyncio.Event()
    try:
        pcm = PcmEndpoint(engine, frames.append)
        engine.attach(pcm)
        assert pcm.rate == 16000 and pcm.frame == 320
        pcm.play(tone(700, 8000 // 2, 0, 8000), on_done=done.set)  # 0.5 s prompt at 8 kHz
        await asyncio.wait_for(done.wait(), 3)
        heard = np.concatenate(frames)
        assert abs(dominant_hz(heard, 16000) - 700) < 15 and rms(heard) > 1000
    finally:
        await engine.close()


async def test_pcm_participant_times_out_when_nothing_is_fed():
    engine = MediaEngine("127.0.0.1")
    engine.start()
    timeouts = []
    try:
        pcm = PcmEndpoint(engine, lambda f: None, timeout=0.2, on_timeout=lambda: timeouts.append(1))
        engine.attach(pcm)
        for _ in range(50):
            if timeouts:
                break
            await asyncio.sleep(0.02)
        assert timeouts == [1]
    finally:
        await engine.close()


def test_fifo_prefill_underflow_and_drift():
    f = PcmFifo(10)
    out = np.zeros(10, dtype=np.int16)
    assert f.pop_into(out) == 2  # nothing yet
    f.put(np.full(10, 1, np.int16))
    assert f.pop_into(out) == 2 and not out.any()  # prefill not reached
    f.put(np.full(10, 2, np.int16))
    assert f.pop_into(out) == 0 and (out == 1).all()
    assert f.pop_into(out) == 0 and (out == 2).all()
    assert f.pop_into(out) == 2 and f.underflows == 1  # ran dry: silence, then prefill again
    f.put(np.full(10, 3, np.int16))
    assert f.pop_into(out) == 2
    # a sender faster than the tick: the delay is cut back to the prefill, dropping the oldest
    for k in range(MAX_FRAMES + 3):
        f.put(np.full(10, 10 + k, np.int16))
    assert f.buffered <= MAX_FRAMES * 10 and f.dropped_samples > 0
    assert f.pop_into(out) == 0
    last = 10 + MAX_FRAMES + 2
    # what is left is the newest audio, in order
    rest = [int(out[0])]
    while f.pop_into(out) == 0:
        rest.append(int(out[0]))
    assert rest == sorted(rest) and rest[-1] == last and len(rest) <= MAX_FRAMES
    # 10 ms pieces are re-framed into 20 ms frames
    g = PcmFifo(10)
    for k in range(2 * PREFILL_FRAMES):
        g.put(np.full(5, k, np.int16))
    assert g.pop_into(out) == 0 and list(out) == [0] * 5 + [1] * 5
    g.skip(1)
    assert g.buffered == 0


async def test_closed_pcm_participant_lets_its_owner_go_without_the_gc():
    """A browser session holds its PcmEndpoint and gives it its own bound
    methods: once closed, the endpoint drops them, so the session is freed
    by reference counting (issue 15: no cycles left to the full collections)."""
    import gc
    import weakref

    class Session:
        def __init__(self, engine: MediaEngine) -> None:
            self.frames = 0
            self.endpoint = PcmEndpoint(engine, self.on_frame, timeout=30, on_timeout=self.on_timeout)
            engine.attach(self.endpoint)

        def on_frame(self, frame) -> None:
            self.frames += 1

        def on_timeout(self) -> None:
            pass

    engine = MediaEngine("127.0.0.1")
    engine.start()
    gc.disable()
    try:
        session = Session(engine)
        await asyncio.sleep(0.1)  # a few ticks in the engine
        ref = weakref.ref(session)
        session.endpoint.close()
        del session
        await asyncio.sleep(0.05)
        assert ref() is None, [type(r).__name__ for r in gc.get_referrers(ref())]
    finally:
        gc.enable()
        await engine.close()
