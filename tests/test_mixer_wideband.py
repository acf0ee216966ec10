"""The wideband pieces of the mixer: resampling, Opus FEC/PLC, the talking
rule, and (over real loopback sockets, in process) shared listener encodes."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from mixer import rtp
from mixer.engine import MediaEngine
from mixer.g722 import G722Decoder, G722Encoder
from mixer.opus import OpusDecoder, OpusEncoder
from mixer.resample import Resampler, resample_once
from mixer.wideband import TALK_RMS, OpusJitter, WideStream, talking_rows


def sine(hz: float, rate: int, n: int, amp: float = 10000.0) -> np.ndarray:
    return amp * np.sin(2 * np.pi * hz * np.arange(n) / rate)


def run(r: Resampler, x: np.ndarray) -> np.ndarray:
    f = r.frame_in
    return np.concatenate([r.process(x[i * f:(i + 1) * f].reshape(1, -1))[0] for i in range(len(x) // f)])


def peak(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    w = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[(f >= lo) & (f <= hi)].max())


def test_downsampling_does_not_fold_6_khz_into_the_narrow_band():
    for rate in (16000, 48000):
        y = run(Resampler(rate, 8000), sine(6000, rate, rate))[2000:]
        assert peak(y, 8000, 0, 4000) < 10000 / 100  # >= 40 dB down anywhere in 0-4 kHz
        y = run(Resampler(rate, 8000), sine(1000, rate, rate))[2000:]
        assert abs(peak(y, 8000, 900, 1100) / 10000 - 1) < 0.03  # the narrow band passes


def test_upsampling_keeps_the_tone_and_adds_no_image():
    y = run(Resampler(8000, 48000), sine(3000, 8000, 8000))[10000:]
    assert abs(peak(y, 48000, 2900, 3100) / 10000 - 1) < 0.05
    assert peak(y, 48000, 4500, 24000) < 10000 / 300  # image at 5 kHz and above removed
    y = run(Resampler(16000, 48000), sine(6000, 16000, 16000))[10000:]
    assert abs(peak(y, 48000, 5900, 6100) / 10000 - 1) < 0.05


def test_resampler_rows_are_independent_streams():
    r = Resampler(16000, 8000, rows=2)
    a, b = sine(500, 16000, 3200), sine(1500, 16000, 3200)
    y = np.concatenate([r.process(np.stack([a[i * 320:(i + 1) * 320], b[i * 320:(i + 1) * 320]]))
                        for i in range(10)], axis=1)
    assert peak(y[0, 400:], 8000, 1400, 1600) < 50 and peak(y[1, 400:], 8000, 400, 600) < 50


def test_resample_once_is_time_aligned():
    x = np.zeros(800, np.int16)
    x[400] = 20000
    y = resample_once(x, 8000, 16000)
    assert len(y) == 1600 and abs(int(np.argmax(y)) - 800) <= 1


def test_talking_rule_is_a_level_threshold():
    rows = np.stack([np.zeros(320), sine(300, 16000, 320, amp=TALK_RMS * 1.6),
                     sine(300, 16000, 320, amp=TALK_RMS * 1.2)]).astype(np.int16)
    assert talking_rows(rows).tolist() == [False, True, False]  # RMS = amp / sqrt(2)
    assert talking_rows(np.zeros((0, 160), np.int16)).shape == (0,)


def _sweep(rate: int, frames: int) -> list[np.ndarray]:
    n = rate // 50
    t = np.arange(n * frames) / rate
    x = (8000 * np.sin(2 * np.pi * (300 * t + 400 * t * t))).astype(np.int16)  # a rising chirp: PLC cannot guess it
    return [x[i * n:(i + 1) * n] for i in range(frames)]


def test_opus_fec_rebuilds_a_lost_frame_better_than_plc():
    frames = _sweep(16000, 60)
    enc = OpusEncoder(16000, bitrate=32000, loss_percent=20)
    packets = [enc.encode(np.ascontiguousarray(f)) for f in frames]
    lost = 40
    errors = {}
    for mode in ("fec", "plc", "none"):
        dec = OpusDecoder(16000)
        out = np.zeros(320, np.int16)
        ref = np.zeros(320, np.int16)
        for i, p in enumerate(packets[:lost + 1]):
            if i == lost:
                break
            dec.decode(p, out)
        if mode == "fec":
            dec.conceal(out, packets[lost + 1])
        elif mode == "plc":
            dec.conceal(out, None)
        else:
            dec.decode(packets[lost], out)
        ref_dec = OpusDecoder(16000)
        for p in packets[:lost + 1]:
            ref_dec.decode(p, ref)
        errors[mode] = float(np.sqrt(np.mean((out.astype(float) - ref.astype(float)) ** 2)))
    assert errors["none"] == 0.0
    assert errors["fec"] < errors["plc"] / 2, errors


def _rtp_opus_stream(ws: WideStream, packets, lost: set[int]) -> list[int]:
    out = np.zeros(ws.frame, np.int16)
    statuses = []
    for i, p in enumerate(packets):
        if i not in lost:
            ws.jitter.put(i * 960, p)
        if i >= 2:  # playout starts two frames behind the first packet
            statuses.append(ws.pull(out))
    return statuses


def test_wide_stream_uses_fec_when_the_next_packet_is_there_else_plc_then_silence():
    enc = OpusEncoder(48000, loss_percent=20)
    packets = [enc.encode(np.ascontiguousarray(f)) for f in _sweep(48000, 40)]
    ws = WideStream("OPUS", 48000)
    statuses = _rtp_opus_stream(ws, packets, lost={10})
    assert ws.fec_frames == 1 and ws.plc_frames == 0 and statuses.count(1) == 1
    ws = WideStream("OPUS", 48000)
    statuses = _rtp_opus_stream(ws, packets[:20], lost=set(range(10, 20)))  # DTX / a long gap
    assert ws.fec_frames == 0 and 1 <= ws.plc_frames <= 5 and statuses[-1] == 2


def test_opus_jitter_rejects_what_is_not_opus_and_reorders():
    j = OpusJitter()
    assert not j.put(0, b"")
    assert not j.put(0, b"\x03\xff")  # a code-3 TOC without its frame count byte
    enc = OpusEncoder(48000)
    p = [enc.encode(np.zeros(960, np.int16)) for _ in range(3)]
    assert j.put(960, p[1]) and j.put(0, p[0]) and j.put(1920, p[2])  # out of order
    # playout starts two frames before the first packet received (ts 960)
    assert j.pop() == (None, p[0])
    assert [j.pop() for _ in range(3)] == [(p[0], 0), (p[1], 0), (p[2], 0)]
    j2 = OpusJitter()
    j2.put(0, p[0]), j2.put(1920, p[2])
    j2.pop(), j2.pop()
    assert j2.pop()[0] == p[0]
    missing, nxt = j2.pop()
    assert missing is None and nxt == p[2]  # the next packet, for its FEC


def test_g722_round_trip_keeps_6_khz():
    enc, dec = G722Encoder(), G722Decoder()
    x = sine(6000, 16000, 16000, amp=8000).astype(np.int16)
    out = np.zeros(320, np.int16)
    y = []
    for i in range(50):
        assert dec.decode(enc.encode(x[i * 320:(i + 1) * 320]), out)
        y.append(out.copy())
    y = np.concatenate(y)[3200:].astype(float)
    assert peak(y, 16000, 5900, 6100) > 6000


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _drain(s: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(s.recv(4096))
        except BlockingIOError:
            return out


async def test_silent_listeners_share_one_encode_talkers_get_their_own():
    """Four G.722 listeners and one G.722 talker over loopback: the listeners
    receive byte-identical payloads every tick (one shared encode of the
    N-mix), the talker a different one (N-1: not itself)."""
    engine = MediaEngine("127.0.0.1", beep_ms=20)
    engine.start()
    socks = [_udp() for _ in range(5)]
    try:
        eps = [engine.open_endpoint(0, codec="G722", payload_type=9, telephone_event_pt=None,
                                    remote=s.getsockname(), on_digit=lambda d: None, rtp_timeout=30,
                                    on_timeout=lambda: None) for s in socks]
        conf = engine.new_conference()
        for ep in eps:
            conf.add(ep)
        encs = [G722Encoder() for _ in socks]
        tone = sine(2000, 16000, 320 * 60, amp=8000).astype(np.int16)
        mixes = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(60):
            for k, (s, ep) in enumerate(zip(socks, eps)):
                pcm = tone[i * 320:(i + 1) * 320] if k == 0 else np.zeros(320, np.int16)
                s.sendto(rtp.build(9, i, i * 160, 0x100 + k, encs[k].encode(pcm)), ("127.0.0.1", ep.local_port))
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
            hit = engine.conference_mix(conf)
            mixes.append((hit[0], hit[1].copy()))
        await asyncio.sleep(0.1)
        got = [[p[12:] for p in _drain(s)] for s in socks]
        assert engine.conference_mix(conf)[0] == 16000
        n = min(len(g) for g in got)
        assert n > 40
        tail = slice(n - 20, n)  # the talker is talking by now
        for k in (2, 3, 4):
            assert got[k][tail] == got[1][tail]  # one shared encode
        assert got[0][tail] != got[1][tail]  # the talker's own N-1
        dec = G722Decoder()
        heard = {k: [] for k in (0, 1)}
        for k in (0, 1):
            dec = G722Decoder()
            out = np.zeros(320, np.int16)
            for p in got[k][:n]:
                dec.decode(p, out)
                heard[k].append(out.copy())
        listener = np.concatenate(heard[1][-20:]).astype(float)
        talker = np.concatenate(heard[0][-20:]).astype(float)
        assert peak(listener, 16000, 1900, 2100) > 4000  # the listener hears the talker
        assert peak(talker, 16000, 1900, 2100) < 200  # the talker does not hear itself
        rate, full = mixes[-1]  # what a recorder reads each tick: the N-mix
        assert rate == 16000 and len(full) == 320 and peak(full.astype(float), 16000, 1900, 2100) > 4000
    finally:
        await engine.close()
        for s in socks:
            s.close()


class _Member:
    """What WidebandMix reads of an RtpEndpoint."""

    def __init__(self, codec: str) -> None:
        self._stream = WideStream(codec, 48000)
        self.jitter = self._stream.jitter
        self._codec_i = 0
        self._variants = (0, 512, 1024)
        self.on_hold = self.closed = self.muted = False
        self.beep_frame = -1
        self.beep_end = 13  # the join beep's frames (SPEC 12: a leave beep follows them)
        self._dest = ("127.0.0.1", 9)
        self._prompt = None
        self._prompt_pos = 0


def _highpass_peaks(x: np.ndarray, rate: int) -> np.ndarray:
    """Peak per 10 ms above 2.5 kHz: a click stands out, tones below do not."""
    m = np.arange(201) - 100
    fc = 2500 / rate
    hp = -2 * fc * np.sinc(2 * fc * m) * np.kaiser(201, 8.0)
    hp[100] += 1.0
    y = np.convolve(x.astype(np.float64), hp, mode="valid")
    n = rate // 100
    return np.abs(y[: len(y) // n * n]).reshape(-1, n).max(axis=1)


@pytest.mark.parametrize("codec", ["G722", "OPUS"])
def test_switching_between_shared_and_own_encoder_does_not_click(codec):
    """A listener who starts talking leaves the shared N-mix encoder for an
    own N-1 one and comes back after talking: what their phone decodes has
    no click at either switch (the own encoder is warmed up on the shared
    encoder's last frames; the way back waits for OWN_HOLD_TICKS)."""
    from mixer.conference import make_beep
    from mixer.wideband import OWN_HOLD_TICKS, WidebandMix
    rate = 16000 if codec == "G722" else 48000
    n = rate // 50
    members = [_Member(codec) for _ in range(3)]
    wm = WidebandMix(make_beep())
    wm.set_members(members)
    encs = [G722Encoder() if codec == "G722" else OpusEncoder(48000) for _ in members]
    ticks = 120
    t = np.arange(n * ticks) / rate
    src = [(6000 * np.sin(2 * np.pi * 470 * t)).astype(np.int16), np.zeros(n * ticks, np.int16),
           (3000 * np.sin(2 * np.pi * 1900 * t)).astype(np.int16)]
    src[2][: n * 40] = 0  # member 2 talks from tick 40 to tick 60
    src[2][n * 60:] = 0
    got = []
    step = 160 if codec == "G722" else 960
    for k in range(ticks):
        for i, m in enumerate(members):
            m.jitter.put(k * step, encs[i].encode(np.ascontiguousarray(src[i][k * n:(k + 1) * n])))
        wm.tick(0, lambda ep, p: got.append(p) if ep is members[2] else None, lambda ep: None)
    dec = G722Decoder() if codec == "G722" else OpusDecoder(48000)
    out = np.zeros(n, np.int16)
    heard = []
    for p in got:
        assert dec.decode(p, out)
        heard.append(out.copy())
    peaks = _highpass_peaks(np.concatenate(heard), rate)
    quiet = np.median(peaks[20:])
    around = np.concatenate([peaks[2 * 40 - 4:2 * 40 + 8], peaks[2 * (60 + OWN_HOLD_TICKS) - 4:2 * (60 + OWN_HOLD_TICKS) + 8]])
    assert around.max() < max(5 * quiet, 150), (around.round(), quiet)
    assert members[2]._stream.own_prev is False  # back on the shared stream


@pytest.mark.parametrize("codec", ["G722", "OPUS"])
def test_a_prompt_to_the_only_listener_of_its_codec_does_not_click(codec):
    """A prompt on joining (e.g. SPEC 12's "there are N other participants")
    puts a listener on its own encoder from its first packet; when it ends,
    the way back to the shared stream waits OWN_HOLD_TICKS and, the shared
    encoder having had nobody to encode for, starts it from the own
    encoder's state (a fresh G.722 encoder clicked at ~5,000)."""
    from mixer.conference import make_beep
    from mixer.wideband import OWN_HOLD_TICKS, WidebandMix
    rate = 16000 if codec == "G722" else 48000
    n = rate // 50
    talker, listener = _Member(codec), _Member(codec)
    wm = WidebandMix(make_beep())
    wm.set_members([talker, listener])
    enc = G722Encoder() if codec == "G722" else OpusEncoder(48000)
    silent = G722Encoder() if codec == "G722" else OpusEncoder(48000)
    ticks = 100
    t = np.arange(n * ticks) / rate
    tone = (6000 * np.sin(2 * np.pi * 470 * t)).astype(np.int16)
    ramp = np.minimum(1.0, np.minimum(np.arange(160 * 20), np.arange(160 * 20)[::-1]) / 80)  # 10 ms ramps
    prompt = np.round(4000 * ramp * np.sin(2 * np.pi * 700 * np.arange(160 * 20) / 8000)).astype(np.int16)
    got = []
    step = 160 if codec == "G722" else 960
    done = []
    for k in range(ticks):
        if k == 0:
            listener._prompt, listener._prompt_pos = prompt, 0
        talker.jitter.put(k * step, enc.encode(np.ascontiguousarray(tone[k * n:(k + 1) * n])))
        listener.jitter.put(k * step, silent.encode(np.zeros(n, np.int16)))

        def prompt_done(ep):
            ep._prompt = None
            done.append(k)

        wm.tick(0, lambda ep, p: got.append(p) if ep is listener else None, prompt_done)
    assert done  # the prompt played to its end
    dec = G722Decoder() if codec == "G722" else OpusDecoder(48000)
    out = np.zeros(n, np.int16)
    heard = []
    for p in got:
        assert dec.decode(p, out)
        heard.append(out.copy())
    peaks = _highpass_peaks(np.concatenate(heard), rate)
    quiet = np.median(peaks[10:])
    back = done[0] + OWN_HOLD_TICKS  # the tick it returns to the shared stream
    around = np.concatenate([peaks[2 * done[0] - 6:2 * done[0] + 10], peaks[2 * back - 6:2 * back + 10]])
    assert around.max() < max(5 * quiet, 150), (around.round(), quiet)
    assert listener._stream.own_prev is False  # back on the shared stream


async def test_conference_mix_of_a_g711_room_is_the_8k_total():
    engine = MediaEngine("127.0.0.1")
    engine.start()
    socks = [_udp() for _ in range(2)]
    try:
        eps = [engine.open_endpoint(0, codec="PCMA", payload_type=8, telephone_event_pt=None,
                                    remote=s.getsockname(), on_digit=lambda d: None, rtp_timeout=30,
                                    on_timeout=lambda: None) for s in socks]
        conf = engine.new_conference()
        for ep in eps:
            conf.add(ep)
        from mixer import codecs
        tone = sine(1500, 8000, 160 * 30, amp=8000).astype(np.int16)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(30):
            socks[0].sendto(rtp.build(8, i, i * 160, 7, codecs.encode(tone[i * 160:(i + 1) * 160], "PCMA")),
                            ("127.0.0.1", eps[0].local_port))
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
        rate, full = engine.conference_mix(conf)  # read while the talker still talks
        assert rate == 8000 and len(full) == 160
        assert peak(full.astype(float), 8000, 1400, 1600) > 4000
    finally:
        await engine.close()
        for s in socks:
            s.close()
