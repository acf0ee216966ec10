"""BatchMixer.totals (what a conference recorder gets each tick) follows the
talk-detection path: when nobody talks, the totals are silence, not the last
tick's sum repeated."""

from __future__ import annotations

import numpy as np

from mixer import codecs
from mixer.codecs import VARIANT_OFFSETS
from mixer.conference import BatchMixer, make_beep

FRAME = 160


def test_totals_are_silence_when_nobody_talks_after_someone_did():
    pcm = [(4000 * np.sin(2 * np.pi * hz * np.arange(FRAME) / 8000)).astype(np.int16) for hz in (300, 500, 700)]
    m = BatchMixer(make_beep())
    m.set_layout([0, 0, 0], [3])
    for i, samples in enumerate(pcm):
        m.rx[i] = np.frombuffer(codecs.encode(samples, "PCMU"), np.uint8)
        m.variant[i] = VARIANT_OFFSETS[0][0]
    talking = np.array([0, 2])
    m.contrib_hook = lambda decoded: talking
    m.mix()
    assert np.abs(m.totals[0]).max() > 3000  # rows 0 and 2 summed
    talking = np.array([], dtype=np.intp)
    m.mix()
    assert not m.totals.any(), "the last tick's sum was left in the totals"
