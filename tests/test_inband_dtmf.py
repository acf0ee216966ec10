"""In-band DTMF detection (mixer/inband_dtmf.py) against the ITU-T Q.24 rules,
with noise, and the talk-off test: over a minute of real (synthesised)
speech in English and French and a minute of music-like signal, not one
false digit."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from mixer.inband_dtmf import HIGH, KEYS, LOW, detect

RATE = 8000
ALL = "1234567890*#ABCD"


def dtmf(digits: str, *, on: float = 0.1, off: float = 0.1, amplitude: float = 6000, deviation: float = 0.0,
         twist_db: float = 0.0, lead: float = 0.0137) -> np.ndarray:
    """Tones for ``digits`` (``lead`` s of silence first, so that tones do
    not start on a frame boundary)."""
    out = [np.zeros(int(lead * RATE))]
    for d in digits:
        row = next(i for i, keys in enumerate(KEYS) if d in keys)
        col = KEYS[row].index(d)
        t = np.arange(int(on * RATE)) / RATE
        low = amplitude * np.sin(2 * np.pi * LOW[row] * (1 + deviation) * t)
        high = amplitude * 10 ** (twist_db / 20) * np.sin(2 * np.pi * HIGH[col] * (1 + deviation) * t + 1.0)
        out += [low + high, np.zeros(int(off * RATE))]
    return np.concatenate(out)


def test_every_digit():
    assert detect(dtmf(ALL)) == ALL


@pytest.mark.parametrize("deviation", [-0.015, 0.015])
def test_frequency_within_1_5_percent_is_accepted(deviation):
    assert detect(dtmf(ALL, deviation=deviation)) == ALL


@pytest.mark.parametrize("deviation", [-0.035, 0.035, -0.05, 0.05])
def test_frequency_off_by_3_5_percent_is_rejected(deviation):
    assert detect(dtmf(ALL, deviation=deviation)) == ""


@pytest.mark.parametrize("twist_db", [4.0, -8.0])
def test_twist_within_limits_is_accepted(twist_db):
    assert detect(dtmf(ALL, twist_db=twist_db)) == ALL


@pytest.mark.parametrize("twist_db", [8.0, -12.0])
def test_twist_beyond_limits_is_rejected(twist_db):
    assert detect(dtmf(ALL, twist_db=twist_db)) == ""


@pytest.mark.parametrize("lead", [0.0, 0.003, 0.005, 0.0075, 0.01, 0.0137, 0.017])
def test_40_ms_tones_and_pauses_are_taken_25_ms_tones_never(lead):
    assert detect(dtmf(ALL, on=0.040, off=0.040, lead=lead)) == ALL
    assert detect(dtmf(ALL, on=0.025, off=0.050, lead=lead)) == ""  # Q.24: reject under 23 ms


def test_pause_separates_equal_digits_and_a_10_ms_dropout_does_not():
    assert detect(dtmf("1111", on=0.06, off=0.04)) == "1111"
    x = dtmf("5", on=0.2)
    x[800:880] = 0  # 10 ms drop-out in the middle of the tone
    assert detect(x) == "5"


def test_weak_tones_are_found_silence_and_hum_are_not():
    assert detect(dtmf(ALL, amplitude=700)) == ALL
    assert detect(dtmf(ALL, amplitude=200)) == ""  # about -44 dBFS: below the floor
    t = np.arange(RATE * 5) / RATE
    assert detect(3000 * np.sin(2 * np.pi * 697 * t)) == ""  # one tone alone is no digit


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_digits_with_10_db_of_noise(seed):
    x = dtmf(ALL * 2)
    tone_power = np.mean(x[np.abs(x) > 0] ** 2)
    noise = np.random.default_rng(seed).normal(0.0, np.sqrt(tone_power / 10), len(x))  # SNR 10 dB
    assert detect(x + noise) == ALL * 2


# -- talk-off ---------------------------------------------------------------------------------

SPEECH = {
    "en": ("Good morning everyone, thank you for joining the weekly planning call. Before we start, "
           "could everybody please check that their microphone is working? We have three items on the "
           "agenda today: the budget for the next quarter, the new office in Lyon, and the hiring plan. "
           "Marie, would you like to begin with the numbers? Sure. Revenue was up eleven percent compared "
           "with last year, mostly because of the two large contracts we signed in March. Costs, on the "
           "other hand, grew faster than expected: travel, licences and the move itself. I think we should "
           "review every recurring expense before the end of the month. Does anyone disagree? No? Then "
           "let us move on. Hello? Can you hear me? Sorry, my line dropped for a second. Yes, yes, go on."),
    "fr": ("Bonjour à tous, merci d'être présents pour la réunion de planification de la semaine. Avant de "
           "commencer, pouvez-vous vérifier que votre micro fonctionne? Nous avons trois sujets aujourd'hui: "
           "le budget du prochain trimestre, le nouveau bureau de Lyon et le plan de recrutement. Marie, "
           "veux-tu commencer par les chiffres? Bien sûr. Le chiffre d'affaires a progressé de onze pour cent "
           "par rapport à l'an dernier, surtout grâce aux deux grands contrats signés en mars. Les coûts, en "
           "revanche, ont augmenté plus vite que prévu: les déplacements, les licences et le déménagement. "
           "Allô? Vous m'entendez? Pardon, ma ligne a coupé une seconde. Oui, oui, vas-y, continue."),
}


def _speak(tmp_path: Path, voice: str, text: str, pitch: int, speed: int) -> np.ndarray:
    raw, tel = tmp_path / "raw.wav", tmp_path / "tel.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(raw), "--", text],
                   check=True, timeout=60)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(tel), "norm", "-3"],
                   check=True, timeout=60)
    with wave.open(str(tel)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="needs espeak-ng and sox")
def test_a_minute_of_speech_gives_no_digit(tmp_path):
    total = 0.0
    # voices, pitches and speeds: low and high voices put their harmonics
    # in different places of the DTMF bands
    for voice, pitch, speed in (("en", 30, 160), ("en", 80, 190), ("fr", 40, 170), ("fr", 90, 150),
                                ("en-us", 60, 175)):
        language = "fr" if voice == "fr" else "en"
        speech = _speak(tmp_path, voice, SPEECH[language], pitch, speed)
        total += len(speech) / RATE
        assert detect(speech) == "", (voice, pitch)
        # speech at a lower level too (what a quiet caller sends)
        assert detect(speech * 0.1) == "", (voice, pitch)
    assert total >= 60.0, total


def music(seconds: float, seed: int) -> np.ndarray:
    """Music-like signal: a melody over three-note chords of an equal-tempered
    scale (many notes fall within 1-2 % of a DTMF frequency: F5 = 698.5 Hz,
    F#6 = 1480 Hz...), instrument-like notes (harmonics, attack/decay, a
    little vibrato), a bass line and noise-burst drums."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * RATE))
    beat = 0.25
    n = int(beat * RATE)
    t = np.arange(n) / RATE
    env = (1 - np.exp(-t / 0.01)) * np.exp(-t / 0.4)
    scale = [0, 2, 4, 5, 7, 9, 11]

    def note(midi: int, harmonics, length: int) -> np.ndarray:
        hz = 440.0 * 2 ** ((midi - 69) / 12)
        tt = np.arange(length) / RATE
        vibrato = 1 + 0.004 * np.sin(2 * np.pi * 5.5 * tt)
        phase = 2 * np.pi * hz * np.cumsum(vibrato) / RATE
        return sum(a * np.sin(k * phase) for k, a in enumerate(harmonics, start=1) if k * hz < 3900)

    for i in range(int(seconds / beat)):
        start = i * n
        degree = rng.integers(0, 7)
        root = 60 + scale[degree] + 12 * rng.integers(0, 2)
        chord = [root, root + 4 - (degree in (1, 2, 5)), root + 7]
        timbre = [(1, 0.5, 0.33, 0.25), (1, 0.2, 0.1), (1, 0.6, 0.4, 0.3, 0.2)][i // 16 % 3]
        frame = sum(note(m, timbre, n) for m in chord) * env * 1500
        melody = 72 + scale[rng.integers(0, 7)] + 12 * rng.integers(0, 2)
        frame += note(melody, (1, 0.3, 0.15), n) * env * 2500
        frame += note(36 + scale[degree], (1, 0.5), n) * env * 2000
        if i % 2 == 0:
            frame[:400] += rng.normal(0, 3000, 400) * np.exp(-np.arange(400) / 80)
        out[start:start + n] += frame
    return np.clip(out, -32767, 32767)


def test_a_minute_of_music_gives_no_digit():
    assert detect(music(60.0, seed=7)) == ""
    assert detect(music(30.0, seed=8) * 0.2) == ""
