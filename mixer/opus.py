"""Opus (RFC 6716 / RFC 7587) through the system libopus, by ctypes.

Why not PyAV's codec contexts (PyAV carries libopus too): its decoder has no way to ask
libopus for the in-band FEC copy of a lost frame (``opus_decode`` with
``decode_fec=1`` on the *next* packet), and SPEC 10 wants FEC when the next
packet carries it. One library then does both directions of a stream, and a
direct call costs a fraction of a PyAV frame/packet round trip.

Streams are mono, 20 ms frames; the decoder and encoder run at the rate the
conference mixes at for this participant (libopus decodes and encodes at 8,
12, 16, 24 or 48 kHz natively, so a capped mix rate needs no resampler).
The RTP clock stays 48 kHz whatever the internal rate (RFC 7587 4.1).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import numpy as np

__all__ = ["OpusDecoder", "OpusEncoder", "OpusError", "RTP_CLOCK", "available", "samples_in"]

RTP_CLOCK = 48000
_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_SET_COMPLEXITY = 4010
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
_SET_DTX = 4016
_MAX_PACKET = 1500


class OpusError(RuntimeError):
    """libopus is missing or refused an operation."""


def _candidates() -> list[str]:
    """The system libopus first (Debian libopus0), else the copy PyAV's
    wheel bundles (PyAV is a dependency anyway)."""
    names = [n for n in (ctypes.util.find_library("opus"), "libopus.so.0") if n]
    try:
        import av
        libs = Path(av.__file__).resolve().parent.parent / "av.libs"
        names += sorted(str(p) for p in libs.glob("libopus*.so*"))
    except ImportError:
        pass
    return names


def _load() -> ctypes.CDLL | None:
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p,
                                    ctypes.c_int, ctypes.c_int]
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_encoder_create.restype = ctypes.c_void_p
        lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_encode.restype = ctypes.c_int32
        lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int32]
        lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_encoder_ctl.restype = ctypes.c_int
        lib.opus_encoder_get_size.restype = ctypes.c_int
        lib.opus_encoder_get_size.argtypes = [ctypes.c_int]
        lib.opus_packet_get_nb_samples.restype = ctypes.c_int
        lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
        return lib
    return None


_lib = _load()


def available() -> bool:
    return _lib is not None


def _need() -> ctypes.CDLL:
    if _lib is None:
        raise OpusError("libopus not found (Debian: apt-get install libopus0)")
    return _lib


class OpusDecoder:
    """One stream's decoder: ``decode`` a packet, ``conceal`` a lost frame
    (FEC from the next packet when given, PLC otherwise)."""

    __slots__ = ("rate", "frame", "_st", "_pcm", "_ptr", "_lib")

    def __init__(self, rate: int) -> None:
        lib = _need()
        err = ctypes.c_int(0)
        st = lib.opus_decoder_create(rate, 1, ctypes.byref(err))
        if not st or err.value != 0:
            raise OpusError(f"opus_decoder_create({rate}) failed: {err.value}")
        self._lib = lib
        self._st = st
        self.rate = rate
        self.frame = rate // 50
        # room for 120 ms: a peer may send longer packets than 20 ms; we keep
        # the first 20 ms of such a frame (the mixer's unit)
        self._pcm = np.zeros(rate * 120 // 1000, dtype=np.int16)
        self._ptr = self._pcm.ctypes.data

    def decode(self, payload: bytes, out: np.ndarray) -> bool:
        """Decode into ``out`` (``frame`` int16 samples); False when the
        payload is not valid Opus (``out`` untouched)."""
        n = self._lib.opus_decode(self._st, payload, len(payload), self._ptr, len(self._pcm), 0)
        if n <= 0:
            return False
        m = min(n, self.frame)
        out[:m] = self._pcm[:m]
        if m < self.frame:
            out[m:] = 0
        return True

    def conceal(self, out: np.ndarray, next_payload: bytes | None = None) -> bool:
        """A lost frame: the FEC copy in ``next_payload`` (RFC 7587 4.3) if it
        carries one, else packet-loss concealment."""
        lib = self._lib
        if next_payload:
            n = lib.opus_decode(self._st, next_payload, len(next_payload), self._ptr, self.frame, 1)
            if n == self.frame:
                out[:] = self._pcm[:n]
                return True
        n = lib.opus_decode(self._st, None, 0, self._ptr, self.frame, 0)
        if n != self.frame:
            out[:] = 0
            return False
        out[:] = self._pcm[:n]
        return True

    def __del__(self) -> None:
        if getattr(self, "_st", None):
            self._lib.opus_decoder_destroy(self._st)
            self._st = None


class OpusEncoder:
    """One 20 ms mono encoder with in-band FEC on (``useinbandfec=1``)."""

    __slots__ = ("rate", "frame", "_st", "_buf", "_bufp", "_lib")

    def __init__(self, rate: int, *, bitrate: int = 0, fec: bool = True, loss_percent: int = 10,
                 dtx: bool = False, complexity: int = 5) -> None:
        lib = _need()
        err = ctypes.c_int(0)
        st = lib.opus_encoder_create(rate, 1, _APPLICATION_VOIP, ctypes.byref(err))
        if not st or err.value != 0:
            raise OpusError(f"opus_encoder_create({rate}) failed: {err.value}")
        self._lib = lib
        self._st = st
        self.rate = rate
        self.frame = rate // 50
        # variadic: no argtypes, so the handle must be passed as a pointer
        # explicitly (a bare int would be truncated to 32 bits)
        handle = ctypes.c_void_p(st)
        if bitrate:
            lib.opus_encoder_ctl(handle, _SET_BITRATE, ctypes.c_int(bitrate))
        # complexity 10 (the default) costs ~4x complexity 5 per frame for
        # little audible gain on speech; a bridge encodes many streams
        lib.opus_encoder_ctl(handle, _SET_COMPLEXITY, ctypes.c_int(complexity))
        lib.opus_encoder_ctl(handle, _SET_INBAND_FEC, ctypes.c_int(1 if fec else 0))
        lib.opus_encoder_ctl(handle, _SET_PACKET_LOSS_PERC, ctypes.c_int(loss_percent))
        lib.opus_encoder_ctl(handle, _SET_DTX, ctypes.c_int(1 if dtx else 0))
        self._buf = ctypes.create_string_buffer(_MAX_PACKET)
        self._bufp = ctypes.addressof(self._buf)

    def copy_state_from(self, other: "OpusEncoder") -> None:
        """Continue exactly where ``other`` is (same rate and settings): a
        decoder that followed ``other``'s packets follows ours without a
        glitch. libopus keeps an encoder in one block of memory (the size
        opus_encoder_get_size gives, what opus_encoder_init fills in
        caller-owned memory) whose only pointers lead to static tables, so
        a byte copy is a valid state."""
        if other.rate != self.rate:
            raise ValueError("encoders of different rates")
        ctypes.memmove(self._st, other._st, self._lib.opus_encoder_get_size(1))

    def encode(self, pcm: np.ndarray) -> bytes:
        """``frame`` int16 samples (C-contiguous) -> one packet. A DTX encoder
        may return 1-2 bytes for silence (send it or not: RFC 7587 allows both)."""
        n = self._lib.opus_encode(self._st, pcm.ctypes.data, self.frame, self._bufp, _MAX_PACKET)
        if n < 0:
            raise OpusError(f"opus_encode failed: {n}")
        return self._buf.raw[:n]

    def __del__(self) -> None:
        if getattr(self, "_st", None):
            self._lib.opus_encoder_destroy(self._st)
            self._st = None


def samples_in(payload: bytes, rate: int = RTP_CLOCK) -> int:
    """Samples (at ``rate``) a packet holds, or a negative libopus error."""
    return _need().opus_packet_get_nb_samples(payload, len(payload), rate)
