"""G.711 (µ-law / A-law) as lookup tables, built once with numpy.

Decoding is a 256-entry table (code -> int16), encoding a 65536-entry table
indexed by the uint16 view of an int16 sample (or by ``sample + 32768``).
The tables are bit-exact with the ITU-T reference implementation of G.711
(ITU-T G.191 Software Tool Library, ``g711.c``). Decoding also equals FFmpeg
(``pcm_mulaw``/``pcm_alaw``, what aiortc uses) and ``audioop``. Encoding differs
from FFmpeg on ~1% of inputs: FFmpeg rounds to the *nearest* reconstruction
level, whereas G.711 defines its own decision levels; and ``audioop`` (Sun
``g711.c``) negates negative samples where G.191 takes their one's complement,
which moves 508 negative µ-law inputs by one level.

For the mixer there are also *batch* tables that fold per-row choices into
the index so that one ``np.take`` does everything for all participants:

* ``DECODE_VARIANTS``: 5 x 256 int32, rows = µ-law, A-law, µ-law halved,
  A-law halved (packet-loss concealment), zero (silence / not heard).
* ``ENCODE_BOTH``: 2 x 65536 uint8, rows = µ-law, A-law, indexed by
  ``codec_row * 65536 + sample + 32768`` after clipping; ``ENCODE_COMPACT``
  is every fourth entry of it (G.711 ignores a sample's two low bits), for
  that index shifted right by ``ENCODE_SHIFT``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CODECS",
    "ULAW_DECODE",
    "ALAW_DECODE",
    "ULAW_ENCODE",
    "ALAW_ENCODE",
    "ULAW_SILENCE",
    "ALAW_SILENCE",
    "SILENCE_BYTE",
    "DECODE_VARIANTS",
    "ENCODE_BOTH",
    "VARIANT_OFFSETS",
    "ENCODE_OFFSETS",
    "ENCODE_COMPACT",
    "ENCODE_SHIFT",
    "codec_index",
    "decode",
    "encode",
]

CODECS = ("PCMU", "PCMA")

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


def _build_ulaw_decode() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_decode() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _segment(values: np.ndarray, ends: tuple[int, ...]) -> np.ndarray:
    """Index of the first segment end >= value (8 when above all)."""
    return np.searchsorted(np.asarray(ends), values, side="left")


_SEG_ENDS = (0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF)
_ALAW_SEG_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _linear_inputs() -> np.ndarray:
    """All int16 values, ordered by their uint16 bit pattern (index = uint16 view)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> np.ndarray:
    x = _linear_inputs()
    neg = x < 0
    # ITU-T G.191 takes the one's complement of negative samples (~x >> 2),
    # which is what makes x and -x-1 mirror images.
    mag = np.where(neg, ~x, x) >> 2  # 14-bit magnitude
    mask = np.where(neg, 0x7F, 0xFF)
    mag = np.minimum(mag, _ULAW_CLIP >> 2) + (_ULAW_BIAS >> 2)
    seg = _segment(mag, tuple(e >> 2 for e in _SEG_ENDS))
    uval = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    out = np.where(seg >= 8, 0x7F ^ mask, uval ^ mask)
    return out.astype(np.uint8)


def _build_alaw_encode() -> np.ndarray:
    pcm = _linear_inputs() >> 3  # 13-bit
    neg = pcm < 0
    mask = np.where(neg, 0x55, 0xD5)
    mag = np.where(neg, -pcm - 1, pcm)
    seg = _segment(mag, _ALAW_SEG_ENDS)
    aval = (seg << 4) | np.where(seg < 2, (mag >> 1) & 0x0F, (mag >> np.maximum(seg, 1)) & 0x0F)
    out = np.where(seg >= 8, 0x7F ^ mask, aval ^ mask)
    return out.astype(np.uint8)


ULAW_DECODE: np.ndarray = _build_ulaw_decode()
ALAW_DECODE: np.ndarray = _build_alaw_decode()
ULAW_ENCODE: np.ndarray = _build_ulaw_encode()
ALAW_ENCODE: np.ndarray = _build_alaw_encode()
for _t in (ULAW_DECODE, ALAW_DECODE, ULAW_ENCODE, ALAW_ENCODE):
    _t.setflags(write=False)

ULAW_SILENCE = int(ULAW_ENCODE[0])  # 0xFF
ALAW_SILENCE = int(ALAW_ENCODE[0])  # 0xD5
SILENCE_BYTE = {"PCMU": ULAW_SILENCE, "PCMA": ALAW_SILENCE}


def codec_index(codec: str) -> int:
    try:
        return CODECS.index(codec.upper())
    except ValueError:
        raise ValueError(f"unsupported codec {codec!r} (supported: {', '.join(CODECS)})") from None


# Batch tables -------------------------------------------------------------

VARIANT_FRAME, VARIANT_CONCEALED, VARIANT_SILENT = 0, 1, 2
_ZERO_ROW = 4
DECODE_VARIANTS: np.ndarray = np.concatenate(
    [
        ULAW_DECODE.astype(np.int32),
        ALAW_DECODE.astype(np.int32),
        ULAW_DECODE.astype(np.int32) >> 1,
        ALAW_DECODE.astype(np.int32) >> 1,
        np.zeros(256, dtype=np.int32),
    ]
)
DECODE_VARIANTS.setflags(write=False)
#: VARIANT_OFFSETS[codec_index][status] -> offset into DECODE_VARIANTS,
#: status being VARIANT_FRAME / VARIANT_CONCEALED / VARIANT_SILENT.
VARIANT_OFFSETS: tuple[tuple[int, int, int], ...] = (
    (0, 2 * 256, _ZERO_ROW * 256),
    (256, 3 * 256, _ZERO_ROW * 256),
)
MUTED_OFFSET = _ZERO_ROW * 256

# Index = clipped sample + ENCODE_OFFSETS[codec_index]
ENCODE_BOTH: np.ndarray = np.concatenate(
    [np.roll(ULAW_ENCODE, -32768), np.roll(ALAW_ENCODE, -32768)]
)  # reordered so that index 0 is sample -32768
ENCODE_BOTH.setflags(write=False)
ENCODE_OFFSETS = (32768, 65536 + 32768)

# The same, a quarter of the size: G.711 looks only at the top 14 bits of a
# sample (µ-law quantizes 14-bit linear, A-law 13-bit), so the index
# ``(clipped sample + ENCODE_OFFSETS[codec_index]) >> ENCODE_SHIFT`` reaches
# every code. 32 KiB stays in the L1 cache where the 128 KiB table does not:
# the mixer's per-tick encode of every row is about a fifth faster.
ENCODE_SHIFT = 2
ENCODE_COMPACT: np.ndarray = np.ascontiguousarray(ENCODE_BOTH[::1 << ENCODE_SHIFT])
ENCODE_COMPACT.setflags(write=False)


def decode(payload: bytes | np.ndarray, codec: str) -> np.ndarray:
    """Decode G.711 bytes to int16 (convenience; the mixer batches instead)."""
    table = ULAW_DECODE if codec_index(codec) == 0 else ALAW_DECODE
    return table[np.frombuffer(payload, dtype=np.uint8)]


def encode(pcm: np.ndarray, codec: str) -> bytes:
    """Encode int16 samples to G.711 bytes (convenience)."""
    table = ULAW_ENCODE if codec_index(codec) == 0 else ALAW_ENCODE
    return table[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()
