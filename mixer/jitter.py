"""A small timed jitter buffer for one G.711 stream.

G.711 is one byte per sample, so re-framing happens on the encoded bytes:
packets of any size (10-60 ms) are written at the sample position their RTP
timestamp gives, into a ring of 20 ms slots; every tick ``pop_into`` copies
out the frame that is due. Decoding is left to the batched mixer.

* Playout starts ``delay`` frames after the first packet's timestamp.
* Reordering within the ring (``slots`` frames) is absorbed.
* Duplicates rewrite the same bytes: harmless, nothing to track.
* A packet entirely before the playout point is too late: dropped. Three
  late packets in a row (sender clock slower than ours, or a stream restart
  with a lower timestamp) resynchronise the buffer on the newest packet.
* A packet too far ahead (beyond the ring) resynchronises too (timestamp
  jump, or a sender clock faster than ours).
* A missing frame after a received one is concealed once, by repeating the
  previous frame at half amplitude (``CONCEALED``); then silence.
"""

from __future__ import annotations

FRAME = 160  # samples (= bytes) per 20 ms at 8 kHz

# pop_into results, also indices into codecs.VARIANT_OFFSETS[codec]
READY, CONCEALED, SILENT = 0, 1, 2

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_LATE_STREAK_RESYNC = 3


class JitterBuffer:
    __slots__ = (
        "slots", "delay", "max_payload", "_silence", "_silence_frame", "_ring", "_ringmv", "_tags",
        "_play_ts", "_k", "_late_streak", "_missing",
        "late", "resyncs", "concealed", "received", "rejected", "_fast_max",
    )

    def __init__(self, silence_byte: int, *, slots: int = 8, delay: int = 2, max_payload: int = 6 * FRAME) -> None:
        if not 0 <= delay < slots:
            raise ValueError("delay must be smaller than slots")
        self.slots = slots
        self.delay = delay
        self.max_payload = max_payload
        # largest distance (samples) from the playout point at which a whole
        # frame lands in the ring; MediaEngine._receive_all stores such frames
        # itself (the fields it touches: _play_ts, _k, _tags, _ringmv,
        # _late_streak, received), exactly as put() would
        self._fast_max = (slots - 1) * FRAME if FRAME <= max_payload else -1
        self._silence = silence_byte
        self._silence_frame = bytes([silence_byte]) * FRAME
        self._ring = bytearray(self._silence_frame * slots)
        self._ringmv = memoryview(self._ring)
        self._tags = [-1] * slots  # frame number held by each slot
        self._play_ts: int | None = None  # RTP timestamp of the next frame to play
        self._k = 0  # frame number of the next frame to play
        self._late_streak = 0
        self._missing = 1  # frames missing since the last one played (1: nothing to conceal)
        self.late = 0
        self.resyncs = 0
        self.concealed = 0
        self.received = 0
        self.rejected = 0

    def reset(self, silence_byte: int | None = None) -> None:
        """Forget the stream (new SSRC, codec change)."""
        if silence_byte is not None and silence_byte != self._silence:
            self._silence = silence_byte
            self._silence_frame = bytes([silence_byte]) * FRAME
        self._play_ts = None
        self._tags = [-1] * self.slots
        self._late_streak = 0
        self._missing = 1

    def _resync(self, ts: int) -> None:
        self._play_ts = (ts - self.delay * FRAME) & _MASK
        self._tags = [-1] * self.slots
        self._late_streak = 0
        self.resyncs += 1

    def put(self, ts: int, payload, start: int = 0, end: int | None = None) -> bool:
        """Store payload[start:end] (G.711 bytes) whose first sample has RTP
        timestamp ``ts``. Returns False when the packet was not used."""
        if end is None:
            end = len(payload)
        n = end - start
        if n <= 0 or n > self.max_payload:
            self.rejected += 1
            return False
        play_ts = self._play_ts
        if play_ts is None:
            self._play_ts = play_ts = (ts - self.delay * FRAME) & _MASK
        d = ((ts - play_ts + _HALF) & _MASK) - _HALF  # signed distance in samples
        if d + n <= 0:
            self._late_streak += 1
            if self._late_streak < _LATE_STREAK_RESYNC:
                self.late += 1
                return False
            self._resync(ts)
            d = self.delay * FRAME
        elif d + n > self.slots * FRAME:
            self._resync(ts)
            d = self.delay * FRAME
        else:
            self._late_streak = 0
        if d < 0:  # partly late: keep the part still to be played
            start -= d
            d = 0
        self.received += 1
        frame = self._k + d // FRAME
        off = d % FRAME
        ring = self._ringmv
        tags = self._tags
        slots = self.slots
        while start < end:
            slot = frame % slots
            base = slot * FRAME
            m = FRAME - off
            if m > end - start:
                m = end - start
            if tags[slot] != frame:
                tags[slot] = frame
                if m != FRAME:
                    ring[base:base + FRAME] = self._silence_frame
            ring[base + off:base + off + m] = payload[start:start + m]
            start += m
            frame += 1
            off = 0
        return True

    def pop_into(self, dst, offset: int) -> int:
        """Write the frame due now (160 bytes) at dst[offset:]; advance one frame.

        Returns READY, CONCEALED (previous frame repeated; the caller plays it
        at half amplitude) or SILENT (nothing written; the caller mutes it)."""
        if self._play_ts is None:
            return SILENT
        k = self._k
        slot = k % self.slots
        self._k = k + 1
        self._play_ts = (self._play_ts + FRAME) & _MASK
        if self._tags[slot] == k:
            base = slot * FRAME
            dst[offset:offset + FRAME] = self._ringmv[base:base + FRAME]
            self._missing = 0
            return READY
        self._missing += 1
        if self._missing == 1:
            prev = (k - 1) % self.slots
            if self._tags[prev] == k - 1:
                base = prev * FRAME
                dst[offset:offset + FRAME] = self._ringmv[base:base + FRAME]
                self.concealed += 1
                return CONCEALED
        return SILENT

    def skip(self, frames: int) -> None:
        """The clock skipped ``frames`` ticks: let that much media time pass."""
        if self._play_ts is not None and frames > 0:
            self._k += frames
            self._play_ts = (self._play_ts + frames * FRAME) & _MASK
            self._missing = max(self._missing, 1) + frames

    @property
    def buffered_frames(self) -> int:
        """Frames stored at or after the playout point (for tests/stats)."""
        k = self._k
        return sum(1 for t in self._tags if t >= k)
