"""G.722 (ITU-T, RFC 3551 4.5.2) through PyAV's FFmpeg codec.

16 kHz audio, 64 kbit/s: one byte per two samples, so 20 ms is 160 bytes and
the RTP clock runs at 8000 (an RFC 1890 mistake kept for compatibility). That
also means G.722 payloads re-frame on byte boundaries exactly like G.711, so
the byte jitter buffer of ``jitter.py`` (and the engine's receive fast path)
holds G.722 as it is; only decoding differs.
"""

from __future__ import annotations

import av
import numpy as np
from av.audio.frame import AudioFrame

__all__ = ["G722Decoder", "G722Encoder", "RATE", "FRAME_BYTES", "SILENCE_BYTE"]

RATE = 16000
FRAME_SAMPLES = 320  # 20 ms at 16 kHz
FRAME_BYTES = 160
#: the encoding of silence from a fresh encoder (fills partial jitter slots)
SILENCE_BYTE = 0xFA


class G722Decoder:
    __slots__ = ("_ctx", "_last", "frame")

    def __init__(self) -> None:
        ctx = av.CodecContext.create("g722", "r")
        ctx.sample_rate = RATE
        ctx.layout = "mono"
        ctx.open()
        self._ctx = ctx
        self.frame = FRAME_SAMPLES
        self._last = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def decode(self, payload, out: np.ndarray) -> bool:
        """160 bytes -> 320 samples in ``out``; False (``out`` untouched) when
        FFmpeg refuses the payload."""
        try:
            frames = self._ctx.decode(av.Packet(bytes(payload)))
        except (av.FFmpegError, ValueError):
            return False
        n = 0
        for f in frames:
            # the plane's bytes directly: to_ndarray() stacks planes (~5 µs more)
            pcm = np.frombuffer(f.planes[0], dtype=np.int16, count=f.samples)
            m = min(len(pcm), FRAME_SAMPLES - n)
            out[n:n + m] = pcm[:m]
            n += m
        if n == 0:
            return False
        if n < FRAME_SAMPLES:
            out[n:] = 0
        self._last[:] = out
        return True

    def conceal(self, out: np.ndarray, next_payload=None) -> bool:
        """A lost frame: the previous one at half amplitude (what the G.711
        path does), then silence."""
        np.right_shift(self._last, 1, out=out)
        self._last[:] = 0
        return True


class G722Encoder:
    __slots__ = ("_ctx", "_pts", "frame", "_frame", "_plane")

    def __init__(self) -> None:
        ctx = av.CodecContext.create("g722", "w")
        ctx.sample_rate = RATE
        ctx.format = "s16"
        ctx.layout = "mono"
        ctx.open()
        self._ctx = ctx
        self._pts = 0
        self.frame = FRAME_SAMPLES
        # one frame, refilled per call: G.722 encodes synchronously (no
        # look-ahead), so FFmpeg is done with the samples when encode returns;
        # building a frame per call cost ~15 µs of the ~45
        self._frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        self._frame.sample_rate = RATE
        self._plane = self._frame.planes[0]

    def encode(self, pcm: np.ndarray) -> bytes:
        """320 int16 samples -> 160 bytes."""
        self._plane.update(np.ascontiguousarray(pcm, dtype=np.int16))
        f = self._frame
        f.pts = self._pts
        self._pts += FRAME_SAMPLES
        packets = self._ctx.encode(f)
        return bytes(packets[0]) if len(packets) == 1 else b"".join(bytes(p) for p in packets)
