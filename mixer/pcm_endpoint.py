"""A participant fed with PCM and yielding PCM: no RTP socket, no codec.

Browser participants (sipconf/admin/webrtc.py) reach us through aiortc,
which does ICE, DTLS-SRTP and Opus itself and hands over decoded audio. The
mixer must still own the one clock and the one mix, so such a participant
enters the engine like a G.722/Opus caller -- on the general path
(``wideband.WidebandMix``), at its conference's rate -- and differs only at
the two edges:

* in: ``feed()`` appends int16 mono samples at ``rate`` (whatever pace the
  browser sends at) to a small FIFO; each tick ``pull()`` takes exactly one
  20 ms frame out of it. The FIFO keeps a little prefill against jitter and
  drops its oldest audio when it has grown too long, so a sender whose clock
  runs faster than ours never builds up delay, and one that runs slower gets
  a frame of silence now and then (clock drift is absorbed here, at the
  edge, never by the mixer clock);
* out: the engine's send of the mixed frame becomes ``on_frame(frame)``,
  once per tick: the consumer (aiortc's outgoing track) is paced by the
  mixer tick, so there is one clock for everyone. The frame is the PCM
  itself (the identity "encoder"), or one Opus packet of it (``opus=True``,
  encoded by ``mixer.opus`` like an Opus phone's, and shared with them by
  the listeners who are not talking).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from .engine import PromptPlayer, _ignore
from .opus import OpusEncoder
from .wideband import OPUS_BITRATE, OPUS_COMPLEXITY

if TYPE_CHECKING:
    from .engine import MediaEngine

log = logging.getLogger(__name__)

__all__ = ["PCM_CODEC", "PcmEndpoint", "PcmFifo", "PcmStream"]

PCM_CODEC = "PCM"
OPUS_CODEC = "OPUS"   # wideband.WideStream's name for Opus
NATIVE_RATE = 48000   # what aiortc's Opus decoder gives and its encoder takes
PREFILL_FRAMES = 2    # 40 ms buffered before playing (after start or underflow)
MAX_FRAMES = 6        # beyond 120 ms buffered, the oldest audio is dropped back to the prefill
CAPACITY_FRAMES = 16  # the FIFO's size; a burst larger than this keeps only its newest audio


class PcmFifo:
    """int16 samples in, one frame per tick out; drift and jitter absorbed.

    Also the engine's ``jitter`` of the endpoint: ``skip(n)`` when the mixer
    clock skipped ticks."""

    __slots__ = ("frame", "_buf", "_len", "_playing", "received", "underflows", "dropped_samples")

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self._buf = np.zeros(frame * CAPACITY_FRAMES, dtype=np.int16)
        self._len = 0  # samples buffered, at the start of _buf
        self._playing = False
        self.received = 0          # frames fed
        self.underflows = 0        # ticks that found too little (silence played, prefill again)
        self.dropped_samples = 0   # dropped to keep the delay down (sender faster than us, or a burst)

    @property
    def buffered(self) -> int:
        return self._len

    def put(self, pcm: np.ndarray) -> None:
        n = len(pcm)
        cap = len(self._buf)
        if n >= cap:
            self.dropped_samples += self._len + n - cap
            self._buf[:] = pcm[n - cap:]
            self._len = cap
        else:
            if self._len + n > cap:
                drop = self._len + n - cap
                self._drop(drop)
            self._buf[self._len:self._len + n] = pcm
            self._len += n
        self.received += 1
        if self._len > MAX_FRAMES * self.frame:
            self._drop(self._len - PREFILL_FRAMES * self.frame)

    def _drop(self, n: int) -> None:
        keep = self._len - n
        self._buf[:keep] = self._buf[n:self._len]
        self._len = keep
        self.dropped_samples += n

    def pop_into(self, out: np.ndarray) -> int:
        """0: a frame of audio; 2: silence (not started, or ran dry)."""
        f = self.frame
        if not self._playing:
            if self._len < PREFILL_FRAMES * f:
                out[:] = 0
                return 2
            self._playing = True
        if self._len < f:
            self._playing = False
            self.underflows += 1
            out[:] = 0
            return 2
        out[:] = self._buf[:f]
        rest = self._len - f
        self._buf[:rest] = self._buf[f:self._len]
        self._len = rest
        return 0

    def skip(self, frames: int) -> None:
        if frames > 0 and self._len:
            self._drop(min(self._len, frames * self.frame))

    def reset(self, _silence=None) -> None:
        self._len = 0
        self._playing = False


class _Identity:
    """The 'encoder' of a PCM participant: the mixed frame as it is."""

    __slots__ = ()

    @staticmethod
    def encode(pcm: np.ndarray) -> np.ndarray:
        return pcm


class PcmStream:
    """The codec state ``WidebandMix`` expects of a member (see
    ``wideband.WideStream``): PCM in; out PCM, or Opus (``opus=True``)."""

    bad_payloads = 0
    fec_frames = 0
    plc_frames = 0

    def __init__(self, max_mix_rate: int, opus: bool = False) -> None:
        self.native = self.rate = min(NATIVE_RATE, max_mix_rate)
        self.frame = self.rate // 50
        self.step = self.frame
        self.jitter = PcmFifo(self.frame)
        self.encoder = None    # own encoder, made by WidebandMix when first needed
        self.own_prev = False  # WidebandMix: the own encoder fed the last frame sent
        self.own_hold = 0      # WidebandMix: ticks the own encoder is kept after talking
        # Opus out: the same codec name as an Opus phone's, so listeners who
        # are not talking share one encode with the Opus phones of their class
        self.codec = OPUS_CODEC if opus else PCM_CODEC

    def new_encoder(self):
        if self.codec == OPUS_CODEC:  # as an Opus phone's, so that states can be copied between them
            return OpusEncoder(self.rate, bitrate=OPUS_BITRATE, complexity=OPUS_COMPLEXITY)
        return _Identity()

    def pull(self, out: np.ndarray) -> int:
        return self.jitter.pop_into(out)


class PcmEndpoint(PromptPlayer):
    """One PCM participant, attached to the engine (``MediaEngine.attach``).

    Looks to the engine, its conferences and call control like an
    ``RtpEndpoint`` on the general path: ``conference``, beeps, prompts
    (``play``), mute, ``close``. ``on_frame`` receives the participant's
    mixed 20 ms frame once per tick: int16 samples at ``rate``, or with
    ``opus=True`` that frame as one mono Opus packet (bytes) -- a WebRTC
    peer then sends it as it is, without encoding it again (aiortc's own
    audio send path resamples to stereo and measures the level of every
    frame in pure Python: ~0.5 ms per frame, measured). ``on_timeout`` is
    called once when nothing has been fed for ``timeout`` seconds (0: never).
    """

    # RtpEndpoint's interface as the engine and WidebandMix read it
    __slots__ = ("_engine", "_loop", "_stream", "jitter", "rate", "frame", "on_frame", "on_timeout", "timeout",
                 "conference", "beep_frame", "beep_end", "muted", "talking", "on_hold", "closed", "codec",
                 "_codec_i", "_row", "_wide", "_first_tick", "_dest", "_sock", "_prompt", "_prompt_pos",
                 "_prompt_done", "_last_feed", "_timed_out", "inband", "frames_out")

    def __init__(self, engine: "MediaEngine", on_frame: Callable[[np.ndarray | bytes], None], *,
                 opus: bool = False, timeout: float = 0.0, on_timeout: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._loop = engine._loop
        self._stream = PcmStream(engine.max_mix_rate, opus)
        self.jitter = self._stream.jitter
        self.rate = self._stream.rate
        self.frame = self._stream.frame
        self.on_frame = on_frame
        self.on_timeout = on_timeout
        self.timeout = timeout
        self.conference = None
        self.beep_frame = -1
        self.beep_end = engine._mixer.join_end
        self.muted = False
        self.talking = False
        self.on_hold = False
        self.closed = False
        self.codec = PCM_CODEC
        self._codec_i = 0
        self._row = -1
        self._wide = None
        self._first_tick: int | None = None
        self._dest = PCM_CODEC   # never None: the mix sends to us from the first tick
        self._sock = None        # no socket: the engine hands the frame to _deliver instead
        self._prompt: np.ndarray | None = None
        self._prompt_pos = 0
        self._prompt_done: Callable[[], None] | None = None
        self._last_feed = time.monotonic()
        self._timed_out = False
        self.inband = None
        self.frames_out = 0

    # -- the two edges --------------------------------------------------------------------
    def feed(self, pcm: np.ndarray) -> None:
        """Samples from the participant: int16 mono at ``rate``, any length."""
        if self.closed:
            return
        self._last_feed = time.monotonic()
        self.jitter.put(pcm)

    def _deliver(self, frame: np.ndarray | bytes) -> None:
        """Called by the engine's tick with this participant's mixed frame."""
        self.frames_out += 1
        try:
            self.on_frame(frame)
        except Exception:  # the consumer's bug must not stop the mixer
            log.exception("PCM consumer failed")

    # -- what call control uses -----------------------------------------------------------
    def set_muted(self, muted: bool) -> None:
        self.muted = muted  # read by WidebandMix every tick

    def set_hold(self, on_hold: bool) -> None:
        self.on_hold = on_hold

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stop_playback()
        if self.conference is not None:
            self.conference.remove(self)
        self._engine._forget(self)
        # the owner (a browser session) holds us and these hold it: let it go
        # by reference counting, not at the next full collection (issue 15)
        self.on_frame = _ignore
        self.on_timeout = None

    # -- engine callbacks (and PromptPlayer._safe_call) -----------------------------------
    def _housekeeping(self, now: float) -> None:
        if (self.timeout and not self._timed_out and self.on_timeout is not None
                and now - self._last_feed >= self.timeout):
            self._timed_out = True
            self._loop.call_soon(self._safe_call, self.on_timeout)

