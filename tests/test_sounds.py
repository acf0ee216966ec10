import wave
from pathlib import Path

import numpy as np
import pytest

from mixer import sounds
from mixer.sounds import LANGUAGES, PROMPT_NAMES, load_prompt, load_prompts, make_beep

PROMPTS_DIR = Path(sounds.__file__).parent / "prompts"


def test_prompt_names_and_languages():
    assert set(PROMPT_NAMES) >= {
        "welcome", "enter_conference_id", "enter_pin", "invalid",
        "goodbye", "room_full", "first_participant",
        # SPEC 12
        "muted", "unmuted", "locked", "unlocked", "conference_locked", "not_allowed", "all_muted",
        "all_unmuted", "participant_removed", "waiting_for_moderator", "count_others_0", "count_others_1",
        "count_others_before", "count_others_after", "count_total_1", "count_total_before",
        "count_total_after",
    } | {f"number_{n}" for n in range(100)}
    assert set(PROMPT_NAMES) >= {"recording_started", "recording_stopped"}  # SPEC 13 notices
    assert len(set(PROMPT_NAMES)) == len(PROMPT_NAMES)
    assert set(LANGUAGES) == {"en", "fr"}


@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize("name", PROMPT_NAMES)
def test_prompt_file_is_8k_mono_16bit(language, name):
    path = PROMPTS_DIR / language / f"{name}.wav"
    assert path.is_file(), f"{path} missing: run scripts/make-prompts"
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 1
        assert wav.getframerate() == 8000
        assert wav.getsampwidth() == 2
        assert wav.getcomptype() == "NONE"


@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize("name", PROMPT_NAMES)
def test_prompt_loads_and_is_speech_sized(language, name):
    samples = load_prompt(language, name)
    assert samples.dtype == np.int16
    assert samples.ndim == 1
    seconds = len(samples) / 8000
    assert 0.3 <= seconds <= 8.0
    rms = np.sqrt(np.mean(samples.astype(np.float64) ** 2))
    assert rms > 500  # far above silence/dither; speech at -3 dBFS peak
    peak = np.abs(samples.astype(np.int32)).max()
    assert 16000 < peak <= 32767  # normalised near -3 dBFS, not clipped


def test_languages_differ():
    assert not np.array_equal(load_prompt("en", "goodbye"), load_prompt("fr", "goodbye"))


def test_load_prompts_has_every_prompt_and_is_cached():
    first = load_prompts("fr")
    assert set(first) == set(PROMPT_NAMES)
    second = load_prompts("fr")
    assert all(first[name] is second[name] for name in PROMPT_NAMES)
    assert np.array_equal(first["goodbye"], load_prompt("fr", "goodbye"))


def test_missing_prompt_and_language_are_clear_errors():
    with pytest.raises(FileNotFoundError, match="no_such_prompt"):
        load_prompt("en", "no_such_prompt")
    with pytest.raises(FileNotFoundError, match="'de'"):
        load_prompt("de", "welcome")
    with pytest.raises(ValueError):
        load_prompt("../en", "welcome")
    with pytest.raises(ValueError):
        load_prompt("en", "../../x")


def test_resampling_of_other_formats():
    # 16 kHz stereo, 1 s of a 440 Hz tone -> 8000 mono samples, same pitch.
    rate = 16000
    t = np.arange(rate) / rate
    tone = (10000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    stereo = np.repeat(tone, 2).tobytes()
    out = sounds._to_8k_mono_int16(stereo, 2, 2, rate, "test")
    assert out.dtype == np.int16 and len(out) == 8000
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    assert abs(np.argmax(spectrum) * 8000 / len(out) - 440) <= 1
    assert 8000 < np.abs(out.astype(np.int32)).max() <= 10001


@pytest.mark.parametrize("hz,ms", [(1000, 250), (425, 100), (440, 20), (1400, 333)])
def test_beep_length_and_pitch(hz, ms):
    beep = make_beep(hz, ms)
    assert beep.dtype == np.int16
    assert len(beep) == round(8000 * ms / 1000)
    spectrum = np.abs(np.fft.rfft(beep.astype(np.float64), n=8000 * 4))
    peak_hz = np.argmax(spectrum) * 8000 / (8000 * 4)
    assert abs(peak_hz - hz) <= 1000 / ms + 1  # within one FFT bin of the tone


def test_beep_level_and_ramps():
    beep = make_beep(1000, 250, level_dbfs=-10.0).astype(np.int32)
    expected_peak = 32767 * 10 ** (-10 / 20)
    assert abs(np.abs(beep).max() - expected_peak) < 0.01 * expected_peak
    # Starts and ends at (nearly) zero: no click.
    assert abs(beep[0]) <= 1 and abs(beep[-1]) < 0.05 * expected_peak
    # The ramp lasts 5 ms (40 samples): quiet at first, full after.
    assert np.abs(beep[:10]).max() < 0.2 * expected_peak
    assert np.abs(beep[40:80]).max() > 0.95 * expected_peak


def test_beep_other_rate_and_errors():
    beep = make_beep(1000, 250, rate=16000)
    assert len(beep) == 4000
    with pytest.raises(ValueError):
        make_beep(5000, 100)  # above Nyquist at 8 kHz
    with pytest.raises(ValueError):
        make_beep(1000, -1)
