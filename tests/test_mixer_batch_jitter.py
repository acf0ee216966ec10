"""BatchJitter keeps JitterBuffer's rules, for every stream at once.

The reference is ``mixer.jitter.JitterBuffer`` (tested on its own in
test_mixer_jitter.py). Random streams -- jitter, loss, duplicates,
reordering, odd packet sizes, timestamp jumps and the 32-bit wrap, resets
and skipped ticks -- are fed to one JitterBuffer per stream and to one
BatchJitter holding all of them, the way the engine feeds it: each tick's
packets are split into the common ones (``fast`` then ``place``, all at
once) and the rest (``put``, one by one, in arrival order, for every packet
of a stream that had an uncommon one that tick), then ``pop`` for all. Every
tick's status and frame must be the same.
"""

import random

import numpy as np
import pytest

from mixer.batch_jitter import BatchJitter, RowJitter
from mixer.jitter import CONCEALED, FRAME, READY, SILENT, JitterBuffer

SIL = 0xD5


def packets_of_a_tick(rng: random.Random, state: dict) -> list[tuple[int, bytes]]:
    """What one stream delivers in one tick: usually one 20 ms packet, with
    the usual network and phone trouble thrown in."""
    out = []
    roll = rng.random()
    size = state["size"]
    if roll < 0.05:
        return out  # lost
    if roll < 0.08:
        state["ts"] = (state["ts"] + rng.choice([8000, -4000, 1 << 31, 480])) & 0xFFFFFFFF  # jump
    if roll < 0.10:
        state["size"] = size = rng.choice([80, 160, 160, 240, 480])
    count = 2 if rng.random() < 0.1 else 1  # a burst after a delay
    for _ in range(count):
        ts = state["ts"]
        payload = bytes(rng.randrange(256) for _ in range(size))
        out.append((ts, payload))
        state["ts"] = (ts + size) & 0xFFFFFFFF
    if rng.random() < 0.05:
        out.append(out[-1])  # duplicate
    if len(out) > 1 and rng.random() < 0.3:
        out.reverse()  # reordered
    if rng.random() < 0.03 and state["held"] is None:
        state["held"] = out.pop(0)  # arrives a few ticks late
    elif state["held"] is not None and rng.random() < 0.4:
        out.append(state["held"])
        state["held"] = None
    return out


@pytest.mark.parametrize("seed", range(12))
def test_batch_jitter_plays_what_jitter_buffers_play(seed):
    rng = random.Random(seed)
    streams = 6
    batch = BatchJitter(capacity=2)  # grows while streams open
    refs = [JitterBuffer(SIL) for _ in range(streams)]
    ids = np.array([batch.open(SIL) for _ in range(streams)], dtype=np.intp)
    states = [{"ts": rng.choice([0, 0xFFFFF000, rng.randrange(1 << 32)]), "size": FRAME, "held": None}
              for _ in range(streams)]
    out = np.zeros((streams, FRAME), dtype=np.uint8)
    seen = {READY: 0, CONCEALED: 0, SILENT: 0}
    placed = 0
    for tick in range(400):
        if rng.random() < 0.01:  # the clock skipped ticks
            frames = rng.randrange(1, 4)
            for s in range(streams):
                refs[s].skip(frames)
            batch.skip_all(frames)
        arrivals = []
        for s in range(streams):
            if rng.random() < 0.005:  # a new SSRC
                refs[s].reset()
                batch.reset(int(ids[s]))
            arrivals += [(s, ts, p) for ts, p in packets_of_a_tick(rng, states[s])]
        rng.shuffle(arrivals)
        for s, ts, p in arrivals:
            refs[s].put(ts, p)
        if arrivals:
            rows = np.array([s for s, _, _ in arrivals], dtype=np.intp)
            ts = np.array([t for _, t, _ in arrivals], dtype=np.int64)
            whole = np.array([len(p) == FRAME for _, _, p in arrivals])
            fast = whole & batch.fast(ids[rows], ts)
            slow_streams = set(rows[~fast].tolist())
            fast &= ~np.isin(rows, list(slow_streams))
            for i, (s, t, p) in enumerate(arrivals):
                if not fast[i]:
                    batch.put(int(ids[s]), t, p)
            chosen = np.flatnonzero(fast)
            if len(chosen):
                payloads = np.array([np.frombuffer(arrivals[i][2], np.uint8) for i in chosen])
                batch.place(ids[rows[chosen]], ts[chosen], payloads, float(tick))
                placed += len(chosen)
        statuses = batch.pop(ids, out)
        for s in range(streams):
            frame = bytearray(FRAME)
            want = refs[s].pop_into(frame, 0)
            assert statuses[s] == want, (tick, s)
            seen[want] += 1
            if want != SILENT:
                assert bytes(out[s]) == bytes(frame), (tick, s)
    for s in range(streams):
        for name in ("late", "resyncs", "concealed", "received", "rejected"):
            assert getattr(RowJitter(batch, int(ids[s])), name) == getattr(refs[s], name), (s, name)
    # the run went through every case and mostly through the vectorised path
    assert all(seen.values()) and placed > 500


def test_row_jitter_has_the_jitter_buffer_interface():
    batch = BatchJitter()
    j = batch.open(SIL)
    row, ref = RowJitter(batch, j), JitterBuffer(SIL, delay=batch.delay)
    data = bytes(range(200)) * 4
    for i in range(4):
        assert row.put(i * 160, data, i * 160, (i + 1) * 160) == ref.put(i * 160, data, i * 160, (i + 1) * 160)
    assert row.buffered_frames == ref.buffered_frames == 4
    for _ in range(7):
        a, b = np.zeros(FRAME, np.uint8), bytearray(FRAME)  # numpy and bytes destinations both work
        st = row.pop_into(a, 0)
        assert st == ref.pop_into(b, 0)
        if st != SILENT:
            assert bytes(a) == bytes(b)
    row.reset(0xFF)
    assert not row.started and row.received == 4


def test_closed_ids_are_reused_fresh():
    batch = BatchJitter(capacity=1)
    a = batch.open(SIL)
    batch.put(a, 1000, bytes(160))
    batch.close(a)
    b = batch.open(0xFF)
    assert b == a and batch.play_ts[b] == -1 and batch.received[b] == 0 and batch.silence[b] == 0xFF
    c = batch.open(SIL)  # grows
    assert c != b and len(batch.play_ts) >= 2
