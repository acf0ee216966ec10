"""Spoken prompts and tones as int16 sample arrays at 8 kHz.

The prompts are WAV files shipped in ``mixer/prompts/<language>/<name>.wav``
and made by ``scripts/make-prompts``.  Nothing here knows about SIP.
"""

from __future__ import annotations

import re
import wave
from functools import lru_cache
from importlib import resources

import numpy as np

__all__ = [
    "LANGUAGES",
    "PROMPT_NAMES",
    "RATE_HZ",
    "load_prompt",
    "load_prompts",
    "make_beep",
    "make_waiting_music",
]

RATE_HZ = 8000
LANGUAGES: tuple[str, ...] = ("en", "fr")
PROMPT_NAMES: tuple[str, ...] = (
    "welcome",
    "enter_conference_id",
    "enter_pin",
    "invalid",
    "goodbye",
    "room_full",
    "first_participant",
    # in the conference (SPEC 12)
    "muted",
    "unmuted",
    "locked",
    "unlocked",
    "conference_locked",
    "not_allowed",
    "all_muted",
    "all_unmuted",
    "participant_removed",
    "waiting_for_moderator",
    "count_others_0",
    "count_others_1",
    "count_others_before",
    "count_others_after",
    "count_total_1",
    "count_total_before",
    "count_total_after",
    # recording notices (SPEC 13)
    "recording_started",
    "recording_stopped",
) + tuple(f"number_{n}" for n in range(100))

_RAMP_MS = 5
# Names end up in a file path: keep them to plain identifiers.
_SAFE_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def _prompts_dir():
    return resources.files(__package__ or "mixer") / "prompts"


def load_prompt(language: str, name: str) -> np.ndarray:
    """One prompt as int16 mono samples at 8 kHz.

    Raises ValueError for an unsafe name or a WAV that is not PCM,
    FileNotFoundError (naming the path and the prompts that exist) when the
    prompt is missing.  Stereo files are averaged to mono and other sample
    rates are resampled by linear interpolation, so a hand-made prompt works
    without a trip through sox.
    """
    for what, value in (("language", language), ("prompt name", name)):
        if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value):
            raise ValueError(f"bad {what} {value!r}: expected something like 'fr' or 'enter_pin'")
    path = _prompts_dir() / language / f"{name}.wav"
    if not path.is_file():
        folder = _prompts_dir() / language
        known = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise FileNotFoundError(
            f"no prompt {name!r} in language {language!r} ({path}); "
            f"available there: {known or 'none'}; languages: {list(LANGUAGES)}; "
            "remake them with scripts/make-prompts"
        )
    with path.open("rb") as handle:
        try:
            with wave.open(handle, "rb") as wav:
                width = wav.getsampwidth()
                channels = wav.getnchannels()
                rate = wav.getframerate()
                raw = wav.readframes(wav.getnframes())
        except (wave.Error, EOFError) as exc:
            raise ValueError(f"{path}: not a PCM WAV file ({exc})") from exc
    return _to_8k_mono_int16(raw, width, channels, rate, str(path))


def _to_8k_mono_int16(raw: bytes, width: int, channels: int, rate: int, where: str) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0
    else:
        raise ValueError(f"{where}: unsupported sample width {width * 8} bits")
    if channels < 1 or rate <= 0:
        raise ValueError(f"{where}: bad WAV header ({channels} channels, {rate} Hz)")
    samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels).mean(axis=1)
    if rate != RATE_HZ and len(samples) > 1:
        if rate > RATE_HZ:
            # Crude anti-aliasing before decimating: a moving average as long
            # as the rate ratio (zero at the new Nyquist for integer ratios).
            taps = max(1, round(rate / RATE_HZ))
            samples = np.convolve(samples, np.full(taps, 1.0 / taps), mode="same")
        count = max(1, round(len(samples) * RATE_HZ / rate))
        positions = np.arange(count) * (rate / RATE_HZ)
        samples = np.interp(positions, np.arange(len(samples)), samples)
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


@lru_cache(maxsize=None)
def _load_prompts_cached(language: str) -> tuple[tuple[str, np.ndarray], ...]:
    return tuple((name, load_prompt(language, name)) for name in PROMPT_NAMES)


def load_prompts(language: str) -> dict[str, np.ndarray]:
    """Every prompt of PROMPT_NAMES in one language, read once and cached.

    The arrays are shared and read-only; copy one before changing it.
    """
    prompts = dict(_load_prompts_cached(language))
    for samples in prompts.values():
        samples.flags.writeable = False
    return prompts


def make_beep(hz: int, ms: int, rate: int = RATE_HZ, level_dbfs: float = -10.0) -> np.ndarray:
    """An int16 sine of ``hz`` lasting ``ms`` at ``level_dbfs`` peak.

    5 ms raised-cosine ramps at each end avoid the click of a hard start or
    stop (shortened for beeps under 10 ms).
    """
    if rate <= 0 or ms < 0:
        raise ValueError(f"bad beep: {ms} ms at {rate} Hz")
    if not 0 < hz < rate / 2:
        raise ValueError(f"beep of {hz} Hz is not below the Nyquist frequency of {rate} Hz")
    count = round(rate * ms / 1000)
    amplitude = 32767.0 * 10.0 ** (level_dbfs / 20.0)
    t = np.arange(count) / rate
    tone = amplitude * np.sin(2.0 * np.pi * hz * t)
    ramp = min(round(rate * _RAMP_MS / 1000), count // 2)
    if ramp > 0:
        rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        tone[:ramp] *= rise
        tone[count - ramp:] *= rise[::-1]
    return np.clip(np.rint(tone), -32768, 32767).astype(np.int16)


def make_waiting_music(rate: int = RATE_HZ, level_dbfs: float = -24.0) -> np.ndarray:
    """Soft music for callers waiting for the moderator: a slow arpeggio of
    four chords (C, A minor, F, G), each note a sine with a gentle second
    harmonic and a decaying envelope, about 8 s long so that it loops. Made
    here rather than shipped: no licence question and nothing to remake.
    Quiet (``level_dbfs`` peak) so that it stays in the background."""
    chords = ((261.63, 329.63, 392.00), (220.00, 261.63, 329.63),
              (174.61, 220.00, 261.63), (196.00, 246.94, 293.66))
    note_s = 0.5
    n_note = round(rate * note_s)
    t = np.arange(n_note) / rate
    envelope = (1.0 - np.exp(-t / 0.02)) * np.exp(-t / 0.35)
    pieces = []
    for chord in chords:
        for hz in chord + (chord[1],):  # up and back: four notes per chord
            note = np.sin(2 * np.pi * hz * t) + 0.2 * np.sin(4 * np.pi * hz * t)
            pieces.append(note * envelope)
    music = np.concatenate(pieces)
    music *= 32767.0 * 10.0 ** (level_dbfs / 20.0) / np.abs(music).max()
    return np.rint(music).astype(np.int16)
