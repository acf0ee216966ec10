"""The jitter buffers of every G.711 stream, kept in arrays.

Same rules as ``jitter.JitterBuffer`` (see there: a ring of 20 ms slots per
stream, playout ``delay`` frames behind the first packet, late packets
dropped, three late in a row or one far ahead resynchronise, one frame of
concealment then silence), but the state of all streams lives in numpy
arrays, one row per stream (its *id*, for the life of the stream). So:

* the tick's pop for every participant is a few vectorised calls
  (``pop``) instead of a Python call per participant;
* the receive path lands whole packets in a block and places all the
  common ones at once (``fast`` then ``place``): the packet that is a plain
  20 ms frame on a slot boundary of the ring;
* anything else (an odd size, a reordered packet across a wrap, a resync)
  goes through ``put``, the exact per-packet rules, on one row.

``RowJitter`` is one stream's view with JitterBuffer's interface, for the
code that handles one endpoint at a time (the general receive path, the
wideband mix's G.711 members, tests).
"""

from __future__ import annotations

import numpy as np

from .jitter import CONCEALED, FRAME, READY, SILENT

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_LATE_STREAK_RESYNC = 3
_COUNTERS = ("late", "resyncs", "concealed", "received", "rejected")
#: Every per-stream array: (name, shape of one row given the slots, dtype,
#: the value of a new stream's row). ``ring`` and ``silence`` start with the
#: stream's silence byte instead (``open``).
_FIELDS = (
    ("ring", lambda slots: (slots, FRAME), np.uint8, 0),
    ("tags", lambda slots: (slots,), np.int64, -1),  # frame number held by each slot
    ("play_ts", lambda slots: (), np.int64, -1),  # RTP timestamp of the next frame; -1: no stream yet
    ("k", lambda slots: (), np.int64, 0),  # frame number to play next
    ("late_streak", lambda slots: (), np.int64, 0),
    ("missing", lambda slots: (), np.int64, 1),  # frames missing since the last one played
    ("silence", lambda slots: (), np.uint8, 0),
    # what ``fast`` checks a packet against: its payload type and the
    # stream's SSRC (-1: none yet); kept by the endpoint
    ("payload_type", lambda slots: (), np.int64, -1),
    ("ssrc", lambda slots: (), np.int64, -1),
    # monotonic time of the last packet ``place``d (the endpoint's liveness:
    # RTP timeout and re-latching)
    ("heard", lambda slots: (), np.float64, 0.0),
    *((name, lambda slots: (), np.int64, 0) for name in _COUNTERS),
)


class BatchJitter:
    """Jitter buffers for any number of streams, grown as streams open."""

    def __init__(self, *, slots: int = 8, delay: int = 2, max_payload: int = 6 * FRAME,
                 capacity: int = 64) -> None:
        if not 0 <= delay < slots:
            raise ValueError("delay must be smaller than slots")
        self.slots = slots
        self.delay = delay
        self.max_payload = max_payload
        # a whole frame at distance 0..fast_max from the playout point lands
        # in the ring without a resync: what ``fast`` accepts
        self.fast_max = (slots - 1) * FRAME
        self._free: list[int] = []
        self._capacity = 0
        self._grow(capacity)

    # -- streams --------------------------------------------------------------------------------
    def _grow(self, capacity: int) -> None:
        old = self._capacity
        for name, shape, dtype, fill in _FIELDS:
            grown = np.full((capacity, *shape(self.slots)), fill, dtype=dtype)
            if old:
                grown[:old] = getattr(self, name)
            setattr(self, name, grown)
        self._free.extend(range(capacity - 1, old - 1, -1))
        self._capacity = capacity
        self._ring_flat = self.ring.reshape(capacity * self.slots, FRAME)
        self._tags_flat = self.tags.reshape(-1)
        self._ringmv = memoryview(self.ring.reshape(-1))

    def open(self, silence_byte: int) -> int:
        """A new stream's id (reused after ``close``)."""
        if not self._free:
            self._grow(2 * self._capacity)
        j = self._free.pop()
        for name, _shape, _dtype, fill in _FIELDS:
            getattr(self, name)[j] = fill
        self.ring[j] = silence_byte
        self.silence[j] = silence_byte
        return j

    def close(self, j: int) -> None:
        self.play_ts[j] = -1
        self._free.append(j)

    # -- one stream (JitterBuffer's rules) -----------------------------------------------------------
    def reset(self, j: int, silence_byte: int | None = None) -> None:
        """Forget the stream (new SSRC, codec change)."""
        if silence_byte is not None:
            self.silence[j] = silence_byte
        self.play_ts[j] = -1
        self.tags[j] = -1
        self.late_streak[j] = 0
        self.missing[j] = 1

    def _resync(self, j: int, ts: int) -> None:
        self.play_ts[j] = (ts - self.delay * FRAME) & _MASK
        self.tags[j] = -1
        self.late_streak[j] = 0
        self.resyncs[j] += 1

    def put(self, j: int, ts: int, payload, start: int = 0, end: int | None = None) -> bool:
        """Store payload[start:end] (G.711 bytes) whose first sample has RTP
        timestamp ``ts``. Returns False when the packet was not used."""
        if end is None:
            end = len(payload)
        n = end - start
        if n <= 0 or n > self.max_payload:
            self.rejected[j] += 1
            return False
        play_ts = int(self.play_ts[j])
        if play_ts < 0:
            play_ts = (ts - self.delay * FRAME) & _MASK
            self.play_ts[j] = play_ts
        d = ((ts - play_ts + _HALF) & _MASK) - _HALF  # signed distance in samples
        if d + n <= 0:
            self.late_streak[j] += 1
            if self.late_streak[j] < _LATE_STREAK_RESYNC:
                self.late[j] += 1
                return False
            self._resync(j, ts)
            d = self.delay * FRAME
        elif d + n > self.slots * FRAME:
            self._resync(j, ts)
            d = self.delay * FRAME
        else:
            self.late_streak[j] = 0
        if d < 0:  # partly late: keep the part still to be played
            start -= d
            d = 0
        self.received[j] += 1
        frame = int(self.k[j]) + d // FRAME
        off = d % FRAME
        ring = self._ringmv
        tags = self.tags[j]
        slots = self.slots
        row = j * slots * FRAME
        silence = int(self.silence[j])
        while start < end:
            slot = frame % slots
            base = row + slot * FRAME
            m = min(FRAME - off, end - start)
            if tags[slot] != frame:
                tags[slot] = frame
                if m != FRAME:
                    self.ring[j, slot] = silence
            ring[base + off:base + off + m] = payload[start:start + m]
            start += m
            frame += 1
            off = 0
        return True

    def pop_into(self, j: int, dst, offset: int) -> int:
        """One stream's ``JitterBuffer.pop_into``: the frame due now at dst[offset:]."""
        status, src = self._advance(np.array([j], dtype=np.intp))
        st = int(status[0])
        if st != SILENT:
            dst[offset:offset + FRAME] = self._ring_flat[src[0]]
        return st

    def skip(self, j: int, frames: int) -> None:
        """The clock skipped ``frames`` ticks: let that much media time pass."""
        if self.play_ts[j] >= 0 and frames > 0:
            self.k[j] += frames
            self.play_ts[j] = (int(self.play_ts[j]) + frames * FRAME) & _MASK
            self.missing[j] = max(int(self.missing[j]), 1) + frames

    def buffered_frames(self, j: int) -> int:
        return int(np.count_nonzero(self.tags[j] >= self.k[j]))

    # -- every stream at once --------------------------------------------------------------------
    def fast(self, ids: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Which of these whole 20 ms frames (stream ids, RTP timestamps as
        int64) land on a slot of their ring without any of ``put``'s special
        cases: the stream has started, and the frame is due now or within
        the ring, on a frame boundary (no wrap-around in that range)."""
        play = self.play_ts[ids]
        d = ts - play
        return (play >= 0) & (d >= 0) & (d <= self.fast_max) & (d % FRAME == 0)

    def place(self, ids: np.ndarray, ts: np.ndarray, payloads: np.ndarray, now: float) -> None:
        """Store frames that ``fast`` accepted: what ``put`` does for them
        (ids may repeat: the later packet wins a slot, as it would one by one)."""
        frame = self.k[ids] + (ts - self.play_ts[ids]) // FRAME
        slot = frame % self.slots
        self.tags[ids, slot] = frame
        self.ring[ids, slot] = payloads
        self.late_streak[ids] = 0
        self.heard[ids] = now
        self.received += np.bincount(ids, minlength=self._capacity)

    def pop(self, ids: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Advance every stream in ``ids`` (distinct) by one frame; the frame
        due now of row i goes to ``out[i]`` (rows whose status is SILENT get
        an arbitrary frame: the caller mutes them). Returns the statuses
        (READY, CONCEALED, SILENT) per row, as ``JitterBuffer.pop_into``."""
        status, src = self._advance(ids)
        np.take(self._ring_flat, src, axis=0, out=out, mode="clip")
        return status

    def _advance(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``pop`` without the copy: the statuses, and the row of ``_ring_flat``
        each stream's frame comes from."""
        play = self.play_ts[ids]
        active = play >= 0
        k = self.k[ids]
        slots = self.slots
        slot = k % slots
        row0 = ids * slots
        ready = self._tags_flat[row0 + slot] == k
        ready &= active
        missing = self.missing[ids] + 1
        missing[ready] = 0
        prev = (k - 1) % slots
        # one frame of concealment, right after a frame that was played
        conceal = (missing == 1) & active & (self._tags_flat[row0 + prev] == k - 1)
        src = row0 + np.where(ready, slot, prev)
        status = np.full(len(ids), SILENT, dtype=np.intp)
        status[ready] = READY
        status[conceal] = CONCEALED
        live = ids[active]
        self.k[live] += 1
        self.play_ts[live] = (play[active] + FRAME) & _MASK
        self.missing[live] = missing[active]
        if conceal.any():
            self.concealed[ids[conceal]] += 1
        return status, src

    def skip_all(self, frames: int) -> None:
        """Every stream's ``skip``."""
        if frames <= 0:
            return
        live = self.play_ts >= 0
        self.k[live] += frames
        self.play_ts[live] = (self.play_ts[live] + frames * FRAME) & _MASK
        self.missing[live] = np.maximum(self.missing[live], 1) + frames


class RowJitter:
    """One stream of a BatchJitter, with JitterBuffer's interface."""

    __slots__ = ("batch", "id")

    def __init__(self, batch: BatchJitter, j: int) -> None:
        self.batch = batch
        self.id = j

    @property
    def slots(self) -> int:
        return self.batch.slots

    @property
    def delay(self) -> int:
        return self.batch.delay

    def put(self, ts: int, payload, start: int = 0, end: int | None = None) -> bool:
        return self.batch.put(self.id, ts, payload, start, end)

    def pop_into(self, dst, offset: int) -> int:
        return self.batch.pop_into(self.id, dst, offset)

    def reset(self, silence_byte: int | None = None) -> None:
        self.batch.reset(self.id, silence_byte)

    def skip(self, frames: int) -> None:
        self.batch.skip(self.id, frames)

    @property
    def buffered_frames(self) -> int:
        return self.batch.buffered_frames(self.id)

    @property
    def started(self) -> bool:
        return bool(self.batch.play_ts[self.id] >= 0)

    def __getattr__(self, name: str):
        if name in _COUNTERS:  # late, resyncs, concealed, received, rejected
            return int(getattr(self.batch, name)[self.id])
        raise AttributeError(name)
