"""Talk detection (mixer/talk.py), the mix sum restricted to the rows that
contribute (BatchMixer.contrib_hook) and the leave beep (Conference)."""

from __future__ import annotations

import numpy as np

from mixer import codecs
from mixer.codecs import VARIANT_OFFSETS
from mixer.conference import BatchMixer, Conference, make_beep
from mixer.talk import HANGOVER_TICKS, TalkDetector

FRAME = 160


def sine_frames(amplitude: float, n: int = 1, hz: float = 440.0) -> np.ndarray:
    t = np.arange(n * FRAME) / 8000
    return np.rint(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int32).reshape(n, FRAME)


def test_threshold_and_300_ms_hangover():
    detector = TalkDetector(-45.0)
    detector.set_rows([False, False])
    loud = sine_frames(3000)[0]       # about -21 dBFS
    quiet = sine_frames(100)[0]       # about -50 dBFS: below -45
    changed = detector.update(np.stack([loud, quiet]))
    assert changed.tolist() == [0] and detector.talking.tolist() == [True, False]
    for tick in range(HANGOVER_TICKS - 1):  # 280 ms of silence: still talking
        assert detector.update(np.stack([quiet, quiet])).tolist() == []
    assert detector.talking.tolist() == [True, False]
    assert detector.update(np.stack([quiet, quiet])).tolist() == [0]  # 300 ms: stopped
    assert detector.talking.tolist() == [False, False]


def test_threshold_is_rms_against_a_full_scale_sine():
    # a sine 44 dB below full scale talks at -45, one 46 dB below does not
    above = 32767 * 10 ** (-44 / 20)
    below = 32767 * 10 ** (-46 / 20)
    detector = TalkDetector(-45.0)
    detector.set_rows([False, False])
    detector.update(np.concatenate([sine_frames(above), sine_frames(below)]))
    assert detector.talking.tolist() == [True, False]


def test_muted_rows_never_talk_and_state_survives_a_new_layout():
    detector = TalkDetector(-45.0)
    detector.set_rows([False, False])
    frames = np.concatenate([sine_frames(5000), sine_frames(5000)])
    detector.update(frames, np.array([False, True]))
    assert detector.talking.tolist() == [True, False]
    detector.set_rows([True, False])
    assert detector.update(np.zeros((2, FRAME), np.int32)).tolist() == []  # hangover kept


def mixer_with(pcm_rows, groups, contributing=None) -> tuple[BatchMixer, np.ndarray]:
    m = BatchMixer(make_beep())
    m.set_layout([0] * len(pcm_rows), groups)
    for i, pcm in enumerate(pcm_rows):
        m.rx[i] = np.frombuffer(codecs.encode(pcm, "PCMU"), np.uint8)
        m.variant[i] = VARIANT_OFFSETS[0][0]
    if contributing is not None:
        m.contrib_hook = lambda decoded: contributing
    m.mix()
    return m, np.stack([codecs.decode(m.tx[i].tobytes(), "PCMU") for i in range(len(pcm_rows))])


def test_only_contributing_rows_are_summed():
    pcm = [sine_frames(4000, hz=hz)[0] for hz in (300, 500, 700, 900, 1100)]
    dense, heard_all = mixer_with(pcm, [3, 2])
    every, heard_every = mixer_with(pcm, [3, 2], np.arange(5))
    assert np.array_equal(heard_all, heard_every)  # all rows listed = the dense mix
    _, heard = mixer_with(pcm, [3, 2], np.array([0, 4]))  # row 0 talks in group 1, row 4 in group 2
    dec = [codecs.decode(codecs.encode(p, "PCMU"), "PCMU").astype(np.int32) for p in pcm]

    def close(a, b):
        return np.max(np.abs(a.astype(np.int32) - b.astype(np.int32))) < 300

    assert close(heard[0], np.zeros(FRAME))          # the talker alone in its group hears nobody
    assert close(heard[1], dec[0]) and close(heard[2], dec[0])  # the silent ones hear the talker only
    assert close(heard[3], dec[4]) and close(heard[4], np.zeros(FRAME))
    _, nobody = mixer_with(pcm, [3, 2], np.array([], dtype=np.intp))
    assert np.abs(nobody.astype(np.int32)).max() <= 8  # G.711 zero


class Member:
    def __init__(self) -> None:
        self.conference = None
        self.beep_frame = -1
        self.beep_end = -1


def test_leave_beep_for_everyone_left_not_when_sent_away():
    conf = Conference(beeps=(13, 13, 26))
    a, b, c = Member(), Member(), Member()
    for m in (a, b, c):
        conf.add(m)
    assert (a.beep_frame, a.beep_end) == (0, 13)  # join beep
    conf.remove(c)
    assert [(m.beep_frame, m.beep_end) for m in (a, b)] == [(13, 26), (13, 26)]
    assert c.beep_frame == -1 or c.conference is None
    a.beep_frame = b.beep_frame = -1
    conf.remove(b, beep=False)
    assert a.beep_frame == -1
    off = Conference(beeps=(13, 13, 13))  # leave beep off
    x, y = Member(), Member()
    off.add(x)
    off.add(y)
    x.beep_frame = -1
    off.remove(y)
    assert x.beep_frame == -1


def test_many_talkers_in_one_group_take_the_zeroing_path():
    pcm = [sine_frames(1000, hz=200 + 100 * i)[0] for i in range(12)]
    _, dense = mixer_with(pcm, [12])
    _, ranked = mixer_with(pcm, [12], np.arange(12))  # 12 ranks: > MAX_RANKS
    assert np.array_equal(dense, ranked)
    _, some = mixer_with(pcm, [12], np.arange(0, 12, 1)[:-1])  # 11 talk, the last is silent
    dec = [codecs.decode(codecs.encode(p, "PCMU"), "PCMU").astype(np.int64) for p in pcm]
    expected_last = np.clip(sum(dec[:11]), -32768, 32767)
    assert np.max(np.abs(some[11].astype(np.int64) - expected_last)) < 600


def test_silent_rows_share_one_encode_and_hear_exactly_what_their_own_mix_would_be():
    """BatchMixer._mix_some: the silent rows' group total is encoded once per
    (group, codec) and copied; talkers and rows with a beep or a prompt are
    encoded one by one. Every row must get exactly the G.711 bytes of its own
    N-1 mix, whatever the codecs, talkers, beeps and prompts (random cases,
    including a group with more talkers than MAX_RANKS, no talker at all and
    a lone caller)."""
    from mixer.conference import MAX_RANKS
    rng = np.random.default_rng(11)
    groups = [10, 10, 1, 3, MAX_RANKS + 4, 2]
    n = sum(groups)
    starts = np.concatenate([[0], np.cumsum(groups)[:-1]])
    group_of = np.repeat(np.arange(len(groups)), groups)
    for case in range(12):
        codec_rows = [0] * n if case % 3 == 0 else [int(c) for c in rng.integers(0, 2, n)]
        m = BatchMixer(make_beep())
        m.set_layout(codec_rows, groups)
        pcm = rng.integers(-9000, 9000, (n, FRAME))
        for i, c in enumerate(codec_rows):
            enc = codecs.ULAW_ENCODE if c == 0 else codecs.ALAW_ENCODE
            m.rx[i] = enc[pcm[i].astype(np.int16).view(np.uint16)]
            m.variant[i] = VARIANT_OFFSETS[c][0]
        dec = [(codecs.ULAW_DECODE if c == 0 else codecs.ALAW_DECODE)[m.rx[i]].astype(np.int64)
               for i, c in enumerate(codec_rows)]
        if case == 1:
            talkers = np.array([], dtype=np.intp)
        elif case == 2:  # every row of the big group talks: more ranks than MAX_RANKS
            big = int(starts[4])
            talkers = np.arange(big, big + groups[4])
        else:
            talkers = np.flatnonzero(rng.random(n) < 0.25)
        # a tick with as many other talkers first: the kept rank plan must follow the change
        others = np.sort(rng.permutation(np.setdiff1d(np.arange(n), talkers))[: len(talkers)])
        m.contrib_hook = lambda decoded, t=others: t
        m.mix()
        m.contrib_hook = lambda decoded, t=talkers: t
        # from case 6 on the beeps and prompts go to talkers only (a moderator
        # who talks and hears a prompt), where they add no row to encode alone
        chosen = talkers if case >= 6 and len(talkers) >= 4 else np.arange(n)
        beep_rows = sorted(int(r) for r in rng.choice(chosen, 4, replace=False))
        beep_frames = [int(f) for f in rng.integers(0, len(m.beep_frames), 4)]
        prompt_rows = [int(r) for r in rng.choice(chosen, 2, replace=False)]
        prompts = [(r, rng.integers(-3000, 3000, int(rng.integers(40, FRAME + 1)))) for r in prompt_rows]
        m.mix(beep_rows, beep_frames, iter(prompts))
        talking = set(talkers.tolist())
        for i in range(n):
            g = group_of[i]
            heard = sum((dec[j] for j in range(starts[g], starts[g] + groups[g]) if j in talking and j != i),
                        np.zeros(FRAME, np.int64))
            if i in beep_rows:
                heard = heard + m.beep_frames[beep_frames[beep_rows.index(i)]]
            for r, p in prompts:
                if r == i:
                    heard[: len(p)] += p
            enc = codecs.ULAW_ENCODE if codec_rows[i] == 0 else codecs.ALAW_ENCODE
            want = enc[np.clip(heard, -32768, 32767).astype(np.int16).view(np.uint16)]
            np.testing.assert_array_equal(m.tx[i], want, err_msg=f"case {case}, row {i}")
        for g in range(len(groups)):
            total = sum((dec[j] for j in range(starts[g], starts[g] + groups[g]) if j in talking),
                        np.zeros(FRAME, np.int64))
            np.testing.assert_array_equal(m.totals[g], total, err_msg=f"case {case}, group {g}")
