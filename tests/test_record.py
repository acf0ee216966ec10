"""mixer/record.py on its own: files PyAV reads back with the right length and
content, rate changes, a full queue dropping and counting, write failures."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from mixer.record import FORMATS, Recorder
from recording_support import can_mount, decode, sine, tiny_tmpfs, tone_level
from support import wait_until


def push_tone(recorder: Recorder, hz: float, ticks: int, rate: int = 8000, first_tick: int = 0) -> None:
    n = rate // 50
    for i in range(ticks):
        recorder.push(sine(hz, n, rate, start=(first_tick + i) * n), rate, first_tick + i)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_holds_the_pushed_audio(tmp_path, fmt):
    path = tmp_path / f"a.{fmt}"
    recorder = Recorder(str(path), fmt, file_rate=8000, drain_interval=0.02).start()
    push_tone(recorder, 440, 100)  # 2 s
    # int32 blocks too (the mixer's unclipped totals): clipped, not wrapped
    loud = np.full(160, 50000, dtype=np.int32)
    recorder.push(loud, 8000, 100)
    recorder.stop()
    assert recorder.join(5)
    assert recorder.error is None
    samples, rate = decode(path)
    assert rate == (48000 if fmt == "ogg" else 8000)
    assert abs(len(samples) / rate - 2.02) < 0.03, len(samples) / rate
    body = samples[int(0.2 * rate):int(1.8 * rate)]
    assert 7000 < tone_level(body, rate, 440) < 9000
    assert tone_level(body, rate, 1000) < 200
    # the clipped block is at full scale, positive (Opus is lossy: near it)
    assert samples[-int(0.01 * rate):].max() > (20000 if fmt == "ogg" else 32000)


def test_rate_change_is_resampled_into_the_file(tmp_path):
    for fmt in ("ogg", "wav"):
        path = tmp_path / f"r.{fmt}"
        recorder = Recorder(str(path), fmt, file_rate=8000 if fmt == "wav" else None, drain_interval=0.02).start()
        push_tone(recorder, 440, 50, rate=8000)
        push_tone(recorder, 1200, 50, rate=16000, first_tick=50)
        push_tone(recorder, 700, 50, rate=8000, first_tick=100)
        recorder.stop()
        assert recorder.join(5) and recorder.error is None
        samples, rate = decode(path)
        assert abs(len(samples) / rate - 3.0) < 0.05, (fmt, len(samples) / rate)
        second = (lambda a, b: samples[int(a * rate):int(b * rate)])
        assert tone_level(second(0.2, 0.8), rate, 440) > 6000, fmt
        assert tone_level(second(1.2, 1.8), rate, 1200) > 6000, fmt
        assert tone_level(second(2.2, 2.8), rate, 700) > 6000, fmt
        assert tone_level(second(1.2, 1.8), rate, 440) < 300, fmt


def test_full_queue_drops_and_counts_and_the_timeline_stays_true(tmp_path):
    """The worker is held up (a slow disk); pushes beyond the queue's size are
    dropped and counted at once, never waited for, and become silence."""
    path = tmp_path / "slow.wav"
    recorder = Recorder(str(path), "wav", file_rate=8000, queue_ticks=10, drain_interval=0.01)
    release = threading.Event()
    entered = threading.Event()
    write = recorder._write

    def slow_write(pcm, rate):
        entered.set()
        assert release.wait(10)
        write(pcm, rate)

    recorder._write = slow_write
    recorder.start()
    push_tone(recorder, 440, 1)  # tick 0: the worker takes it and blocks
    assert entered.wait(5)
    push_tone(recorder, 440, 30, first_tick=1)  # ticks 1..30: 10 queued, 20 dropped
    assert recorder.frames_dropped == 20
    release.set()
    assert wait_until(lambda: not recorder._queue, 5)
    # later ticks after a hole: the hole is silence, the file as long as the span
    push_tone(recorder, 440, 10, first_tick=40)
    recorder.stop()
    assert recorder.join(5) and recorder.error is None
    assert recorder.frames_dropped == 20
    assert recorder.frames_written == 50  # ticks 0..49: 21 pushed and kept, 29 of silence
    samples, rate = decode(path)
    assert len(samples) == 50 * 160
    assert np.abs(samples[11 * 160:40 * 160]).max() == 0  # dropped 11..30 and missing 31..39
    assert tone_level(samples[:11 * 160], rate, 440) > 6000


def test_push_costs_no_wait_when_stopped_or_failed(tmp_path):
    recorder = Recorder(str(tmp_path / "x.wav"), "wav", file_rate=8000).start()
    recorder.stop()
    assert recorder.join(5)
    push_tone(recorder, 440, 5)  # after stop: ignored
    assert recorder.frames_dropped == 0 and recorder.frames_written == 0


def test_unwritable_directory_fails_at_start_with_one_log_line(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    ended = []
    recorder = Recorder(str(blocker / "sub" / "x.ogg"), "ogg", on_end=ended.append).start()
    assert recorder.join(5)
    assert recorder.error and ended == [recorder]
    assert not recorder.active
    push_tone(recorder, 440, 3)
    lines = [r for r in caplog.records if r.name == "mixer.record"]
    assert len(lines) == 1 and "stopped" in lines[0].getMessage()


@pytest.mark.skipif(not can_mount(), reason="mounting a tiny tmpfs needs root")
def test_full_disk_mid_recording_stops_with_one_log_line(tmp_path, caplog):
    with tiny_tmpfs(tmp_path / "disk", "16k") as disk:
        ended = threading.Event()
        recorder = Recorder(str(disk / "x.wav"), "wav", file_rate=8000, drain_interval=0.01,
                            on_end=lambda r: ended.set()).start()
        for second in range(5):  # 5 s of WAV = 80 kB into 16 kB
            push_tone(recorder, 440, 50, first_tick=50 * second)
            if ended.wait(0.05):
                break
        assert ended.wait(5), "the recording did not stop on a full disk"
        assert recorder.error and "space" in recorder.error.lower()
        assert not recorder.active
        push_tone(recorder, 440, 5, first_tick=1000)  # pushes after the failure return at once
        lines = [r for r in caplog.records if r.name == "mixer.record"]
        assert len(lines) == 1, [r.getMessage() for r in lines]


async def test_engine_hands_the_conference_mix_to_its_recorder_and_survives_a_broken_one():
    """MediaEngine.set_recorder: the recorder gets the conference's full mix
    (everyone's input) each tick; a push that raises detaches the recorders
    and the tick still sends."""
    from mixer.codecs import encode
    from mixer.engine import MIX_RATE, MediaEngine

    engine = MediaEngine("127.0.0.1")
    endpoints = [engine.open_endpoint(0, codec="PCMU", payload_type=0, telephone_event_pt=None, remote=None,
                                      on_digit=lambda d: None, rtp_timeout=3600.0, on_timeout=lambda: None)
                 for _ in range(3)]
    conference = engine.new_conference()
    for endpoint in endpoints[:2]:
        conference.add(endpoint)  # the third is alone: not in the recording

    class Tap:
        def __init__(self):
            self.blocks = []

        def push(self, pcm, rate, tick):
            self.blocks.append((pcm.copy(), rate, tick))

    tap = Tap()
    engine.set_recorder(conference, tap)
    try:
        engine._tick(0)
        for tick in range(1, 30):
            for endpoint, hz in zip(endpoints, (440, 660, 880)):
                # one 20 ms G.711 frame straight into each jitter buffer (what a packet does)
                payload = encode(sine(hz, 160, 8000, start=tick * 160), "PCMU")
                endpoint.jitter.put(tick * 160, memoryview(payload), 0, 160)
            engine._tick(tick)
        assert [rate for _, rate, _ in tap.blocks] == [MIX_RATE] * 30
        assert [t for _, _, t in tap.blocks] == list(range(30))
        # the last 200 ms (past the jitter buffers' delay): both members, never the outsider
        mixed = np.concatenate([pcm for pcm, _, _ in tap.blocks[-10:]]).astype(np.float64)
        assert 7000 < tone_level(mixed, 8000, 440) < 9000
        assert 7000 < tone_level(mixed, 8000, 660) < 9000
        assert tone_level(mixed, 8000, 880) < 200  # not in the conference, not in its recording

        class Broken:
            def push(self, pcm, rate, tick):
                raise RuntimeError("bug")

        engine.set_recorder(conference, Broken())
        engine._tick(30)  # does not raise: the rest of the tick (packing, sending) ran
        engine._tick(31)
        assert conference.recorder is None and engine._taps == []
    finally:
        await engine.close()


def test_an_existing_file_is_never_overwritten(tmp_path):
    taken = tmp_path / "800-1234-20261130T224408Z.wav"
    taken.write_bytes(b"earlier recording")
    paths = []
    for _ in range(2):
        recorder = Recorder(str(taken), "wav", file_rate=8000).start()
        push_tone(recorder, 440, 5)
        recorder.stop()
        assert recorder.join(5) and recorder.error is None
        paths.append(Path(recorder.path).name)
    assert paths == ["800-1234-20261130T224408Z-2.wav", "800-1234-20261130T224408Z-3.wav"]
    assert taken.read_bytes() == b"earlier recording"
