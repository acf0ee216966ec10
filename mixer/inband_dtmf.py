"""In-band DTMF: keypad digits found in the audio of calls that cannot send
RFC 4733 events (an offer without telephone-event, SPEC 12).

Per tick, every such call's 20 ms frame is analysed at once: one matrix
product gives the DFT value at each DTMF frequency for all rows (what a
Goertzel filter computes for one frequency, done for 8 frequencies x 3
points x all rows by BLAS). The ITU-T Q.24 rules then decide:

* frequency: each tone must be within 2.5 % of its nominal frequency (Q.24
  asks to accept +-1.5 % + 2 Hz and to reject +-3.5 %). The DFT is taken at
  f0 and at f0 +- 1.5 % so that an accepted tone off by 1.5 % loses no level,
  and the frequency itself is measured from the phase turn of the DFT value
  between two consecutive frames (a 20 ms frame alone cannot tell 1.5 %
  from 3.5 %);
* level: each tone above about -36 dBFS;
* twist: the high tone at most 6 dB above and 10 dB below the low one
  (Q.24's 4 and 8 dB, with the margin of the estimate's own error);
* purity: the two tones hold >= 70 % of the window's energy and each is 8 dB
  above the next tone of its group -- what speech and music do not do;
* duration: windows are 20 ms long, 10 ms apart, and a window only counts
  when the tones fill at least 14 ms of it (the purity rule); a digit is
  reported once three windows in a row carry it: a tone of 40 ms always is,
  one of 25 ms never (Q.24: accept 40 ms, reject under 23 ms); it ends
  after three windows without it, so a 40 ms pause separates two equal
  digits and a 10 ms drop-out does not.

The frames that look like a digit are also left out of the mix by the
engine, so that a caller typing tones is not heard by the others.

Knows nothing of SIP.
"""

from __future__ import annotations

import cmath
import math

import numpy as np

RATE = 8000
FRAME = 160
LOW = (697.0, 770.0, 852.0, 941.0)
HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")  # KEYS[low][high]

SPREAD = 0.015          # side points of each tone's DFT, relative
FREQ_TOLERANCE = 0.025  # relative; Q.24: accept 1.5 % + 2 Hz, reject 3.5 %
MIN_AMPLITUDE = 500.0   # peak amplitude of each tone (about -36 dBFS)
# Q.24 asks to accept a high tone 4 dB above / 8 dB below the low one; the
# rectangular 20 ms window lets the strong tone leak +-1.2 dB into the weak
# one's estimate, hence the 2 dB of margin.
TWIST_HIGH_DB = 6.0     # high tone above the low one, at most
TWIST_LOW_DB = 10.0     # high tone below the low one, at most
PURITY = 0.70          # share of the frame's energy in the two tones
GROUP_MARGIN_DB = 8.0   # each tone above the next tone of its group
WINDOWS = 3             # windows in a row (10 ms apart) that make a digit: >= 30 ms of tone
SUPPRESS_TICKS = 2      # frames still kept out of the mix after a tone-like frame


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


class FrameClassifier:
    """Batched per-frame analysis: which digit (if any) each frame looks like."""

    def __init__(self, frame: int = FRAME, rate: int = RATE) -> None:
        self.frame = frame
        self.rate = rate
        nominal = np.array(LOW + HIGH)
        # 8 tones x 3 points (f0 (1 - s), f0, f0 (1 + s)), tone-major
        self.freqs = (nominal[:, None] * np.array([1 - SPREAD, 1.0, 1 + SPREAD])[None, :]).reshape(-1)
        n = np.arange(frame)
        self._basis = np.exp(-2j * np.pi * np.outer(n, self.freqs) / rate).astype(np.complex64)
        self._min_energy = MIN_AMPLITUDE ** 2 * frame / 2
        self._twist_hi = 10 ** (TWIST_HIGH_DB / 10)
        self._twist_lo = 10 ** (-TWIST_LOW_DB / 10)
        self._margin = 10 ** (GROUP_MARGIN_DB / 10)

    def classify(self, frames: np.ndarray):
        """``frames``: (rows, frame) PCM. Returns (digit index 0-15 or -1 per
        row, the complex DFT values (rows, 24), the DFT point of the low tone
        and of the high tone per row)."""
        x = np.asarray(frames, dtype=np.float32)
        k = len(x)
        spectrum = x @ self._basis                      # (rows, 24)
        power = (spectrum.real ** 2 + spectrum.imag ** 2) * (2.0 / self.frame)
        per_point = power.reshape(k, 8, 3)
        best_point = per_point.argmax(axis=2)           # (rows, 8)
        tone_energy = np.take_along_axis(per_point, best_point[:, :, None], axis=2)[:, :, 0]
        low, high = tone_energy[:, :4], tone_energy[:, 4:]
        li = low.argmax(axis=1)
        hi = high.argmax(axis=1)
        rows = np.arange(k)
        el = low[rows, li]
        eh = high[rows, hi]
        low_second = np.partition(low, 2, axis=1)[:, 2]
        high_second = np.partition(high, 2, axis=1)[:, 2]
        total = np.einsum("ij,ij->i", x, x)
        valid = (
            (el >= self._min_energy) & (eh >= self._min_energy)
            & (eh <= el * self._twist_hi) & (eh >= el * self._twist_lo)
            & (el + eh >= PURITY * total)
            & (el >= low_second * self._margin) & (eh >= high_second * self._margin)
        )
        digit = np.where(valid, li * 4 + hi, -1)
        lp = li * 3 + best_point[rows, li]
        hp = (4 + hi) * 3 + best_point[rows, 4 + hi]
        return digit, spectrum, lp, hp


class InbandDtmf:
    """One call's in-band detector state (the rules of Q.24 over windows).

    Windows are 20 ms long and 10 ms apart (each tick gives two: the second
    half of the last frame with the first half of this one, and this frame),
    so that a 40 ms tone always fills at least two whole windows whatever
    its alignment on the frames."""

    __slots__ = ("_turn", "_freqs", "_reported", "_prev", "_prev_spectrum", "_run", "_misses", "_suppress",
                 "last")

    def __init__(self, frame: int = FRAME, rate: int = RATE, freqs: np.ndarray | None = None) -> None:
        self._turn = 2 * math.pi * (frame // 2) / rate  # phase turn per Hz between windows
        self._freqs = FrameClassifier(frame, rate).freqs if freqs is None else freqs
        self._reported = -1      # digit reported and still sounding
        self._prev = -1          # digit of the last window
        self._prev_spectrum: np.ndarray | None = None
        self._run = 0            # windows in a row with the same digit, frequencies checked
        self._misses = 0         # windows in a row without the reported digit
        self._suppress = 0
        self.last = np.zeros(frame, dtype=np.float32)  # the last frame (first half of the next window)

    def step(self, digit: int, spectrum: np.ndarray, lp: int, hp: int) -> str | None:
        """One window's classification (a row of FrameClassifier.classify);
        the digit to report, if one starts here."""
        if digit < 0:
            self._prev = -1
            self._prev_spectrum = None
            self._run = 0
            # three windows without it (at least 10-15 ms of no tone): the
            # digit ended; a shorter drop-out (Q.24: up to 10 ms) is bridged
            self._misses += 1
            if self._misses >= 3:
                self._reported = -1
            if self._suppress:
                self._suppress -= 1
            return None
        self._suppress = 2 * SUPPRESS_TICKS
        out = None
        prev = self._prev_spectrum
        if digit == self._reported:
            self._misses = 0
        elif (prev is not None and self._prev == digit
              # the same DFT point in both windows: its constant phase term cancels
              and self._in_tolerance(complex(prev[lp]), complex(spectrum[lp]), float(self._freqs[lp]),
                                     LOW[digit // 4])
              and self._in_tolerance(complex(prev[hp]), complex(spectrum[hp]), float(self._freqs[hp]),
                                     HIGH[digit % 4])):
            self._run += 1
            if self._run >= WINDOWS:
                self._reported = digit
                self._misses = 0
                out = KEYS[digit // 4][digit % 4]
        else:
            self._run = 1
        self._prev = digit
        self._prev_spectrum = spectrum
        return out

    @property
    def suppressing(self) -> bool:
        """This call's audio looks like (or just was) a tone: keep it out of the mix."""
        return self._suppress > 0

    def _in_tolerance(self, before: complex, now: complex, point: float, nominal: float) -> bool:
        # The DFT value of a steady sine of frequency f, taken at ``point``,
        # turns by 2 pi f T between windows T apart; what it turns beyond
        # 2 pi point T gives f - point (unambiguous within +-50 Hz at 10 ms).
        if before == 0 or now == 0:
            return False
        turn = cmath.phase(now * before.conjugate())
        offset = _wrap(turn - self._turn * point) / self._turn
        return abs(point + offset - nominal) <= FREQ_TOLERANCE * nominal


def windows_of(states: list[InbandDtmf], frames: np.ndarray) -> np.ndarray:
    """(2 rows, frame) windows for one tick: per row, the window straddling
    the last and this frame, then this frame; each state's ``last`` becomes
    this frame."""
    k, frame = frames.shape
    half = frame // 2
    out = np.empty((k, 2, frame), dtype=np.float32)
    out[:, 1] = frames
    for i, state in enumerate(states):
        out[i, 0, :half] = state.last[half:]
        state.last[:] = frames[i]
    out[:, 0, half:] = frames[:, :half]
    return out.reshape(2 * k, frame)


def detect(samples: np.ndarray, frame: int = FRAME) -> str:
    """Every digit in a whole recording (tests, tools), tick by tick as the
    engine does."""
    classifier = FrameClassifier(frame)
    state = InbandDtmf(frame, freqs=classifier.freqs)
    n = len(samples) // frame
    frames = np.asarray(samples[: n * frame], dtype=np.float32).reshape(n, frame)
    out = []
    for i in range(n):
        windows = windows_of([state], frames[i:i + 1])
        digit, spectrum, lp, hp = classifier.classify(windows)
        for w in range(2):
            d = state.step(int(digit[w]), spectrum[w], int(lp[w]), int(hp[w]))
            if d:
                out.append(d)
    return "".join(out)
