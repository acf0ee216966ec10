"""Recording end to end (SPEC 13): the real server, test phones over real UDP.

An ``auto_record`` conference, two callers with distinct tones: the file
(found by its name in ``[recording] directory``) is opened with PyAV, lasts as
long as the conference did and holds both tones (FFT), in each format. SIGTERM
mid-recording leaves a complete file. A directory that cannot be made, or a
disk that fills up mid-recording (a tiny tmpfs), stops the recording with a
log line while the callers go on hearing each other.
"""

from __future__ import annotations

import re
import struct
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

from mixer.sounds import load_prompt
from phone import TestPhone
from recording_support import can_mount, decode, tiny_tmpfs, tone_level
from support import PASSWORDS, free_port, office_config, wait_until

TONES = {"101": 440.0, "102": 660.0}


def recording_config(directory: Path, fmt: str, *, metrics_port: int = 0, extra_server: dict | None = None) -> str:
    text = office_config(server={"language": "en", "metrics_port": metrics_port, **(extra_server or {})},
                         conferences=(("1234", "4321"), ("5678", "8765")),
                         extra=f'\n[recording]\ndirectory = "{directory}"\nformat = "{fmt}"\n')
    # conference 1234 records itself from its first participant on
    return text.replace('id = "1234"\n  pin = "4321"\n', 'id = "1234"\n  pin = "4321"\n  auto_record = true\n', 1)


def caller(server, user: str) -> TestPhone:
    return TestPhone(("127.0.0.1", server.sip_port), user=user, password=PASSWORDS[user])


def joined(server, conference: str = "1234") -> int:
    return len(re.findall(rf"joined conference {conference} of room 800", server.log()))


def join(server, phone: TestPhone, conference: str = "1234", pin: str = "4321") -> None:
    before = joined(server, conference)
    answer = phone.call("800")
    assert answer.status == 200, answer
    assert phone.wait_for_rtp(5, timeout=3)
    time.sleep(0.2)
    phone.send_dtmf(f"{conference}#{pin}#")
    assert wait_until(lambda: joined(server, conference) > before, 10, interval=0.02), server.log()[-3000:]


def prompt_match(received: np.ndarray, prompt: np.ndarray) -> float:
    """Highest normalized cross-correlation of ``prompt`` anywhere in ``received``."""
    rx = received.astype(np.float64)
    p = prompt.astype(np.float64)
    if len(rx) < len(p):
        return 0.0
    n = 1 << (len(rx) + len(p)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(rx, n) * np.conj(np.fft.rfft(p, n)), n)[:len(rx) - len(p) + 1]
    energy = np.convolve(rx * rx, np.ones(len(p)), "valid")
    return float((corr / (np.linalg.norm(p) * np.sqrt(energy) + 1e-9)).max())


def recordings(directory: Path, fmt: str) -> list[Path]:
    return sorted(directory.glob(f"800-1234-*.{fmt}"))


def metric(port: int, name: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["ogg", "flac", "wav"])
def test_auto_record_holds_both_callers_for_the_whole_conference(make_server, tmp_path, fmt):
    directory = tmp_path / "recordings"  # created by the server
    metrics_port = free_port()
    server = make_server(recording_config(directory, fmt, metrics_port=metrics_port))
    a, b = caller(server, "101"), caller(server, "102")
    try:
        join(server, a)
        started = time.monotonic()
        assert "recording started" in server.log()
        join(server, b)
        time.sleep(4.8)  # a: "first participant" then the notice; b: "there is one other participant" (1.9 s), then the notice (2.1 s)
        notice = load_prompt("en", "recording_started")
        assert prompt_match(a.received_audio(), notice) > 0.8, "a did not hear the recording notice"
        assert prompt_match(b.received_audio(), notice) > 0.8, "b did not hear the recording notice"
        assert metric(metrics_port, "sipconf_recordings_active") == 1
        a.send_tone(TONES["101"])
        b.send_tone(TONES["102"])
        time.sleep(2.5)
        assert a.hears(TONES["102"]) and b.hears(TONES["101"])
        assert a.hangup().status == 200
        assert b.hangup().status == 200
        span = time.monotonic() - started
        assert wait_until(lambda: "recording stopped (conference ended)" in server.log(), 5), server.log()[-2000:]
        assert metric(metrics_port, "sipconf_recordings_active") == 0
        assert metric(metrics_port, "sipconf_recording_frames_dropped_total") == 0
    finally:
        a.close()
        b.close()
    files = recordings(directory, fmt)
    assert len(files) == 1, files
    assert re.fullmatch(rf"800-1234-\d{{8}}T\d{{6}}Z\.{fmt}", files[0].name)
    samples, rate = decode(files[0])
    assert rate == (48000 if fmt == "ogg" else 8000)
    duration = len(samples) / rate
    assert abs(duration - span) < 0.6, (duration, span)
    # the last 2 s before the hang-ups: both tones, at the level the phones send
    both = samples[int((duration - 2.4) * rate):int((duration - 0.4) * rate)]
    for hz in TONES.values():
        assert 6000 < tone_level(both, rate, hz) < 10000, (hz, tone_level(both, rate, hz))
    # before the tones: the callers' silence, no tone
    quiet = samples[:int(2.0 * rate)]
    assert tone_level(quiet, rate, TONES["101"]) < 300


@pytest.mark.integration
def test_conference_without_auto_record_is_not_recorded(make_server, tmp_path):
    directory = tmp_path / "recordings"
    server = make_server(recording_config(directory, "ogg"))
    a = caller(server, "101")
    try:
        join(server, a, "5678", "8765")
        time.sleep(0.5)
        assert a.hangup().status == 200
        time.sleep(0.3)
    finally:
        a.close()
    assert "recording started" not in server.log()
    assert not directory.exists() or not list(directory.iterdir())


def _ogg_last_page_is_end_of_stream(path: Path) -> bool:
    data = path.read_bytes()
    last = data.rfind(b"OggS")
    return last >= 0 and data[last + 5] & 0x04 != 0


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["wav", "ogg"])
def test_sigterm_mid_recording_leaves_a_complete_file(make_server, tmp_path, fmt):
    directory = tmp_path / "recordings"
    server = make_server(recording_config(directory, fmt))
    a, b = caller(server, "101"), caller(server, "102")
    try:
        join(server, a)
        started = time.monotonic()
        a.send_tone(TONES["101"])
        join(server, b)
        b.send_tone(TONES["102"])
        time.sleep(2.5)
        assert server.stop() == 0
        span = time.monotonic() - started
    finally:
        a.close()
        b.close()
    files = recordings(directory, fmt)
    assert len(files) == 1, files
    if fmt == "wav":
        # a finalized WAV header: its sizes match the data written
        with wave.open(str(files[0]), "rb") as w:
            frames = w.getnframes()
        assert frames * 2 + 44 <= files[0].stat().st_size
        assert abs(frames / 8000 - span) < 0.8, (frames / 8000, span)
        riff = struct.unpack("<I", files[0].read_bytes()[4:8])[0]
        assert riff == files[0].stat().st_size - 8
    else:
        assert _ogg_last_page_is_end_of_stream(files[0]), "no end-of-stream page: the file was not finished"
    samples, rate = decode(files[0])
    assert abs(len(samples) / rate - span) < 0.8, (len(samples) / rate, span)
    tail = samples[-int(1.5 * rate):]
    assert tone_level(tail, rate, TONES["101"]) > 5000 and tone_level(tail, rate, TONES["102"]) > 5000
    assert "recording stopped (server shutdown)" in server.log()


@pytest.mark.integration
def test_directory_that_cannot_be_made_stops_the_recording_and_the_call_goes_on(make_server, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    server = make_server(recording_config(blocker / "recordings", "ogg"))
    a, b = caller(server, "101"), caller(server, "102")
    try:
        join(server, a)
        assert wait_until(lambda: re.search(r"recording \S+ stopped: ", server.log()), 5), server.log()[-2000:]
        join(server, b)
        a.send_tone(TONES["101"])
        b.send_tone(TONES["102"])
        time.sleep(2.0)
        assert a.hears(TONES["102"]) and b.hears(TONES["101"])
        assert len(re.findall(r"mixer\.record: recording \S+ stopped", server.log())) == 1
        assert server.alive()
    finally:
        a.close()
        b.close()


def fill(disk: Path) -> None:
    """Use up every free byte of ``disk``."""
    with open(disk / "filler", "wb", buffering=0) as f:
        block = b"\0" * 4096
        try:
            while f.write(block):
                pass
        except OSError:
            pass


@pytest.mark.integration
@pytest.mark.skipif(not can_mount(), reason="mounting a tiny tmpfs needs root")
def test_disk_full_mid_recording_stops_it_and_the_calls_keep_hearing_each_other(make_server, tmp_path):
    with tiny_tmpfs(tmp_path / "disk", "1m") as disk:
        server = make_server(recording_config(disk, "wav"))
        a, b = caller(server, "101"), caller(server, "102")
        try:
            join(server, a)
            a.send_tone(TONES["101"])
            join(server, b)
            b.send_tone(TONES["102"])
            time.sleep(3.0)  # b's notice is over
            assert "No space left" not in server.log()
            fill(disk)  # the disk is full now, mid-recording
            assert wait_until(lambda: "No space left on device" in server.log(), 10), server.log()[-3000:]
            failed_at = time.monotonic()
            time.sleep(2.5)
            # the calls went on: each hears the other after the failure
            assert a.hears(TONES["102"], seconds=1.0) and b.hears(TONES["101"], seconds=1.0)
            # and both were told: "recording stopped"
            stopped = load_prompt("en", "recording_stopped")
            for phone, own in ((a, "101"), (b, "102")):
                heard = phone.received_audio(since=failed_at - 0.3)
                # the other's tone is in it too: take it out of the match by a notch
                other = TONES["102" if own == "101" else "101"]
                assert prompt_match(_notch(heard, other), _notch(stopped, other)) > 0.6, own
            assert len(re.findall(r"mixer\.record: recording \S+ stopped", server.log())) == 1
            assert server.alive()
        finally:
            a.close()
            b.close()
            server.stop()


def _notch(samples: np.ndarray, hz: float, width: float = 30.0) -> np.ndarray:
    """``samples`` without the band around ``hz`` (FFT zeroing)."""
    spectrum = np.fft.rfft(samples.astype(np.float64))
    freqs = np.fft.rfftfreq(len(samples), 1 / 8000)
    spectrum[(freqs > hz - width) & (freqs < hz + width)] = 0
    return np.fft.irfft(spectrum, len(samples))
