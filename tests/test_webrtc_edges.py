"""The two media edges of a browser participant (sipconf/admin/webrtc.py):
aiortc's decoded frames into mono at the mix rate, and the mixer's frames
out as what aiortc's sender takes."""

import asyncio
import fractions

import av
import numpy as np
import pytest

from mixer.opus import OpusDecoder
from sipconf.admin.webrtc import MixTrack, _InEdge


def _stereo_frame(hz: float, n: int = 960, start: int = 0) -> av.AudioFrame:
    t = (np.arange(n) + start) / 48000
    left = np.round(6000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    inter = np.stack([left, left], axis=1).reshape(1, -1)  # what aiortc's Opus decoder gives
    frame = av.AudioFrame.from_ndarray(inter, format="s16", layout="stereo")
    frame.sample_rate = 48000
    return frame


def _dominant(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize("rate", [48000, 16000, 8000])
def test_in_edge_downmixes_and_resamples(rate):
    edge = _InEdge()
    out = [edge.mono(_stereo_frame(700, start=k * 960), rate) for k in range(20)]
    assert all(o.dtype == np.int16 and o.shape == (rate // 50,) for o in out)
    x = np.concatenate(out[5:])
    assert abs(_dominant(x, rate) - 700) < 15
    assert 3500 < np.sqrt(np.mean(x.astype(np.float64) ** 2)) < 4800  # 6000/sqrt(2): downmix keeps the level


def test_in_edge_other_layouts_through_pyav():
    edge = _InEdge()
    t = np.arange(441) / 22050
    pcm = np.round(6000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = 22050
    got = [edge.mono(frame, 48000) for _ in range(10)]
    x = np.concatenate([g for g in got if g is not None])
    assert len(x) > 48000 * 0.15 and abs(_dominant(x, 48000) - 500) < 20


async def test_mix_track_hands_over_opus_packets_and_pcm_frames_in_order():
    from mixer.opus import OpusEncoder

    track = MixTrack(48000)
    enc = OpusEncoder(48000)
    t = np.arange(960) / 48000
    pcm = np.round(6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    for _ in range(3):
        track.push(enc.encode(pcm))
    packets = [await track.recv() for _ in range(3)]
    assert all(isinstance(p, av.Packet) for p in packets)
    assert [p.pts for p in packets] == [0, 960, 1920] and packets[0].time_base == fractions.Fraction(1, 48000)
    dec = OpusDecoder(48000)
    out = np.zeros(960, np.int16)
    for p in packets:
        assert dec.decode(bytes(p), out)  # the mixer's Opus, as it is
    assert abs(_dominant(out, 48000) - 440) < 15
    # PCM frames (opus=False endpoints) become AudioFrames at the track's rate
    track.push(pcm)
    frame = await track.recv()
    assert isinstance(frame, av.AudioFrame) and frame.sample_rate == 48000 and frame.samples == 960
    # recv waits for the mixer tick's push (paced by it), and ends when stopped
    waiter = asyncio.get_running_loop().create_task(track.recv())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    track.push(b"\xf8\xff\xfe")
    assert isinstance(await asyncio.wait_for(waiter, 1), av.Packet)
    # a consumer that falls behind loses the oldest frames, never grows a backlog
    for k in range(20):
        track.push(bytes([0xF8, k]))
    backlog = []
    while track._queue:
        backlog.append(bytes(await track.recv())[1])
    assert backlog == list(range(15, 20))
    track.stop()
    with pytest.raises(Exception):
        await asyncio.wait_for(track.recv(), 1)
