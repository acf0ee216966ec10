import numpy as np
import pytest

from mixer import codecs
from mixer.codecs import MUTED_OFFSET, VARIANT_OFFSETS
from mixer.conference import BatchMixer, Conference, frames_of, make_beep

U, A = 0, 1
rng = np.random.default_rng(7)


def load(mixer: BatchMixer, pcm_rows, codec_rows, muted=()):
    """Encode each row's PCM into the mixer input; return what it decodes to."""
    for i, (pcm, c) in enumerate(zip(pcm_rows, codec_rows)):
        enc = codecs.ULAW_ENCODE if c == U else codecs.ALAW_ENCODE
        mixer.rx[i] = enc[np.asarray(pcm, np.int16).view(np.uint16)]
        mixer.variant[i] = MUTED_OFFSET if i in muted else VARIANT_OFFSETS[c][0]
    dec = [(codecs.ULAW_DECODE if c == U else codecs.ALAW_DECODE)[mixer.rx[i]].astype(np.int64)
           for i, c in enumerate(codec_rows)]
    return dec


def decode_tx(mixer: BatchMixer, codec_rows):
    return [(codecs.ULAW_DECODE if c == U else codecs.ALAW_DECODE)[mixer.tx[i]].astype(np.int64)
            for i, c in enumerate(codec_rows)]


def expected(codes, values):
    enc = codecs.ULAW_ENCODE if codes == U else codecs.ALAW_ENCODE
    return enc[np.clip(values, -32768, 32767).astype(np.int16).view(np.uint16)]


def test_n_minus_one_each_hears_the_clipped_sum_of_the_others():
    codec_rows = [U, A, U, U, A, U, A]
    groups = [4, 1, 2]  # conference of 4, a lone caller, a conference of 2
    m = BatchMixer(make_beep())
    m.set_layout(codec_rows, groups)
    loud = [rng.integers(-30000, 30000, 160) for _ in codec_rows]  # forces clipping
    dec = load(m, loud, codec_rows)
    m.mix()
    bounds = [(0, 4), (4, 5), (5, 7)]
    for lo, hi in bounds:
        for i in range(lo, hi):
            others = sum((dec[j] for j in range(lo, hi) if j != i), np.zeros(160, np.int64))
            np.testing.assert_array_equal(m.tx[i], expected(codec_rows[i], others), err_msg=f"row {i}")
    assert (m.tx[4] == codecs.ALAW_SILENCE).all()  # alone: hears nothing


@pytest.mark.parametrize("groups", [
    [5, 5, 5],        # all the same size: one sum over a (groups, size, frame) view
    [4, 1, 7, 2, 3],  # mixed sizes up to MAX_SUM_RANKS: rank by rank
    [20, 3, 1],       # a room larger than MAX_SUM_RANKS: np.add.reduceat
])
def test_every_sum_plan_gives_each_row_the_others_and_the_room_its_total(groups):
    from mixer.conference import MAX_SUM_RANKS
    plans = {"view": all(g == groups[0] for g in groups), "ranks": max(groups) <= MAX_SUM_RANKS}
    n = sum(groups)
    codec_rows = [int(c) for c in rng.integers(0, 2, n)]
    m = BatchMixer(make_beep())
    m.set_layout(codec_rows, groups)
    assert bool(m._sum_size) == plans["view"]
    assert bool(m._sum_ranks) == (plans["ranks"] and not plans["view"])
    for _ in range(2):  # the second tick must not keep anything of the first
        dec = load(m, [rng.integers(-12000, 12000, 160) for _ in range(n)], codec_rows)
        m.mix()
        lo = 0
        for g, size in enumerate(groups):
            total = sum((dec[j] for j in range(lo, lo + size)), np.zeros(160, np.int64))
            np.testing.assert_array_equal(m.totals[g], total)
            for i in range(lo, lo + size):
                np.testing.assert_array_equal(m.tx[i], expected(codec_rows[i], total - dec[i]), err_msg=f"row {i}")
            lo += size


def test_two_party_call_has_no_gain_change():
    m = BatchMixer(make_beep())
    m.set_layout([U, U], [2])
    a, b = rng.integers(-20000, 20000, 160), rng.integers(-20000, 20000, 160)
    load(m, [a, b], [U, U])
    rx = m.rx.copy()
    m.mix()
    # the bytes B sent are exactly the bytes A receives, and vice versa
    np.testing.assert_array_equal(m.tx[0], rx[1])
    np.testing.assert_array_equal(m.tx[1], rx[0])


def test_muted_participant_is_not_heard():
    m = BatchMixer(make_beep())
    m.set_layout([U, U, U], [3])
    dec = load(m, [rng.integers(-5000, 5000, 160) for _ in range(3)], [U] * 3, muted={2})
    m.mix()
    np.testing.assert_array_equal(m.tx[0], expected(U, dec[1]))
    np.testing.assert_array_equal(m.tx[1], expected(U, dec[0]))


def test_concealed_frame_is_half_amplitude():
    m = BatchMixer(make_beep())
    m.set_layout([U, U], [2])
    load(m, [np.zeros(160), np.full(160, 8000)], [U, U])
    m.variant[1] = VARIANT_OFFSETS[U][1]
    m.mix()
    out = codecs.ULAW_DECODE[m.tx[0]]
    assert abs(int(out[0]) - 4000) < 200


class Member:
    def __init__(self):
        self.conference = None
        self.beep_frame = -1


def test_join_beeps_every_present_participant_once():
    beep = make_beep(1000, 250)
    assert abs(np.abs(beep).max() - 32767 * 10 ** (-10 / 20)) < 200  # about -10 dBFS
    n_frames = len(frames_of(beep))
    conf = Conference()
    a, b, c = Member(), Member(), Member()
    conf.add(a)
    assert a.beep_frame == -1  # alone: nobody to notify, newcomer gets none
    conf.add(b)
    assert (a.beep_frame, b.beep_frame) == (0, -1)
    # run the beep like the engine does: it ends by itself after n_frames ticks
    m = BatchMixer(beep)
    m.set_layout([U, U], [2])
    load(m, [np.zeros(160)] * 2, [U, U])
    heard = []
    for _ in range(n_frames + 5):
        rows = [i for i, x in enumerate((a, b)) if x.beep_frame >= 0]
        idx = [x.beep_frame for x in (a, b) if x.beep_frame >= 0]
        m.mix(rows, idx)
        heard.append(codecs.ULAW_DECODE[m.tx].astype(np.int64))
        for x in (a, b):
            if x.beep_frame >= 0:
                x.beep_frame = x.beep_frame + 1 if x.beep_frame + 1 < n_frames else -1
    a_out = np.concatenate([h[0] for h in heard])
    b_out = np.concatenate([h[1] for h in heard])
    assert not b_out.any()
    assert np.count_nonzero(a_out[: len(beep)]) > 0.7 * len(beep)  # 1 kHz at 8 kHz: every 4th sample is 0
    assert not a_out[n_frames * 160:].any()  # once, not repeated
    dec_beep = codecs.ULAW_DECODE[codecs.ULAW_ENCODE[beep.view(np.uint16)]]
    np.testing.assert_array_equal(a_out[: len(beep)], dec_beep)
    # third joins: both present are beeped, re-adding is a no-op
    conf.add(c)
    assert (a.beep_frame, b.beep_frame, c.beep_frame) == (0, 0, -1)
    a.beep_frame = b.beep_frame = -1
    conf.add(c)
    assert (a.beep_frame, b.beep_frame) == (-1, -1)
    assert len(conf) == 3 and c in conf


def test_remove_is_immediate_and_idempotent_and_moves_between_conferences():
    changes = []
    c1, c2 = Conference(lambda: changes.append(1)), Conference()
    a = Member()
    c1.add(a)
    c2.add(a)
    assert a not in c1 and a in c2 and len(c1) == 0
    c2.remove(a)
    c2.remove(a)
    assert len(c2) == 0 and a.conference is None
    assert changes == [1, 1]


def test_layout_validation():
    m = BatchMixer(make_beep())
    with pytest.raises(ValueError):
        m.set_layout([U, U], [1])
    m.set_layout([], [])
    assert m.mix().shape == (0, 160)
