"""G.711 tables must be bit-exact with an independent implementation (FFmpeg via PyAV)."""

import fractions
import warnings

import av
import numpy as np
import pytest

from mixer import codecs

ALL_CODES = np.arange(256, dtype=np.uint8)
ALL_CODES_I = ALL_CODES.astype(np.int64)
ALL_PCM = np.arange(65536, dtype=np.uint16).view(np.int16)


def av_decode(codec_name: str, payload: bytes) -> np.ndarray:
    ctx = av.CodecContext.create(codec_name, "r")
    ctx.format = "s16"
    ctx.layout = "mono"
    ctx.sample_rate = 8000
    out = []
    for frame in ctx.decode(av.Packet(payload)):
        out.append(frame.to_ndarray().reshape(-1))
    return np.concatenate(out).astype(np.int16)


def av_encode(codec_name: str, pcm: np.ndarray) -> np.ndarray:
    ctx = av.CodecContext.create(codec_name, "w")
    ctx.format = "s16"
    ctx.layout = "mono"
    ctx.sample_rate = 8000
    ctx.time_base = fractions.Fraction(1, 8000)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 8000
    frame.pts = 0
    data = b"".join(bytes(p) for p in ctx.encode(frame))
    data += b"".join(bytes(p) for p in ctx.encode(None))
    return np.frombuffer(data, dtype=np.uint8)


CASES = [
    ("pcm_mulaw", "PCMU", codecs.ULAW_DECODE, codecs.ULAW_ENCODE),
    ("pcm_alaw", "PCMA", codecs.ALAW_DECODE, codecs.ALAW_ENCODE),
]


@pytest.mark.parametrize("av_name,name,dec,enc", CASES)
def test_decode_table_matches_ffmpeg_for_all_256_codes(av_name, name, dec, enc):
    ref = av_decode(av_name, ALL_CODES.tobytes())
    assert ref.shape == (256,)
    assert dec.dtype == np.int16
    np.testing.assert_array_equal(dec, ref)


def g191_ulaw_compress(x: int) -> int:
    """Scalar port of ITU-T G.191 STL g711.c ulaw_compress (the ITU reference)."""
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i, segno = absno >> 6, 1
    while i:
        segno += 1
        i >>= 1
    out = ((8 - segno) << 4) | (15 - ((absno >> segno) & 15))
    return out | 0x80 if x >= 0 else out


def g191_alaw_compress(x: int) -> int:
    """Scalar port of ITU-T G.191 STL g711.c alaw_compress."""
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


@pytest.mark.parametrize("ref_fn,enc", [(g191_ulaw_compress, codecs.ULAW_ENCODE), (g191_alaw_compress, codecs.ALAW_ENCODE)])
def test_encode_table_bit_exact_with_itu_reference_for_all_65536_inputs(ref_fn, enc):
    ref = np.array([ref_fn(int(v)) for v in ALL_PCM], dtype=np.uint8)
    np.testing.assert_array_equal(enc[ALL_PCM.view(np.uint16)], ref)


@pytest.mark.parametrize("av_name,name,dec,enc", CASES)
def test_encode_agrees_with_ffmpeg_except_at_decision_levels(av_name, name, dec, enc):
    """FFmpeg picks the nearest reconstruction level; G.711 has its own
    decision levels. Everywhere else the two must agree, and where they
    disagree both answers are the two levels around the input."""
    ref = av_encode(av_name, ALL_PCM)
    assert ref.shape == (65536,)
    mine = enc[ALL_PCM.view(np.uint16)]
    bad = np.nonzero(mine != ref)[0]
    assert len(bad) < 0.02 * 65536
    x = ALL_PCM[bad].astype(np.int32)
    a, b = dec[mine[bad]].astype(np.int32), dec[ref[bad]].astype(np.int32)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    assert np.all((lo <= x) & (x <= hi)), "a disagreement outside the bracketing levels"
    levels = np.unique(dec.astype(np.int32))
    # adjacent levels: nothing strictly between them
    assert np.all(np.searchsorted(levels, hi) - np.searchsorted(levels, lo) == 1)


@pytest.mark.parametrize("av_name,name,dec,enc", CASES)
def test_decode_matches_audioop_when_available(av_name, name, dec, enc):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    tolin = audioop.ulaw2lin if name == "PCMU" else audioop.alaw2lin
    np.testing.assert_array_equal(dec, np.frombuffer(tolin(ALL_CODES.tobytes(), 2), dtype=np.int16))
    if name == "PCMA":  # audioop's A-law encoder is the same algorithm as G.191
        ref = np.frombuffer(audioop.lin2alaw(ALL_PCM.tobytes(), 2), dtype=np.uint8)
        np.testing.assert_array_equal(enc[ALL_PCM.view(np.uint16)], ref)


@pytest.mark.parametrize("av_name,name,dec,enc", CASES)
def test_round_trip_and_silence(av_name, name, dec, enc):
    # Every code decodes to a value that encodes back to itself (µ-law's two
    # zeros, 0x7F and 0xFF, both encode to 0xFF).
    back = enc[dec.view(np.uint16)]
    differ = ALL_CODES[back != ALL_CODES]
    assert set(differ.tolist()) <= {0x7F}
    assert codecs.SILENCE_BYTE[name] == enc[0]
    pcm = (np.sin(np.arange(160) * 0.3) * 8000).astype(np.int16)
    assert np.array_equal(codecs.decode(codecs.encode(pcm, name), name), dec[enc[pcm.view(np.uint16)]])


def test_batch_tables_are_consistent_with_plain_tables():
    for ci, (dec, enc) in enumerate([(codecs.ULAW_DECODE, codecs.ULAW_ENCODE), (codecs.ALAW_DECODE, codecs.ALAW_ENCODE)]):
        full, half, silent = codecs.VARIANT_OFFSETS[ci]
        np.testing.assert_array_equal(codecs.DECODE_VARIANTS[full + ALL_CODES_I], dec)
        np.testing.assert_array_equal(codecs.DECODE_VARIANTS[half + ALL_CODES_I], dec.astype(np.int32) >> 1)
        assert not codecs.DECODE_VARIANTS[silent + ALL_CODES_I].any()
        idx = ALL_PCM.astype(np.int64) + codecs.ENCODE_OFFSETS[ci]
        np.testing.assert_array_equal(codecs.ENCODE_BOTH[idx], enc[ALL_PCM.view(np.uint16)])
        # the compact table gives the same code for every sample
        np.testing.assert_array_equal(codecs.ENCODE_COMPACT[idx >> codecs.ENCODE_SHIFT], enc[ALL_PCM.view(np.uint16)])


def test_unknown_codec_rejected():
    with pytest.raises(ValueError):
        codecs.codec_index("G729")
