"""Conferences and the batched N-1 mix.

``BatchMixer`` does one tick for every participant of every conference with a
handful of numpy calls: rows of G.711 codes (one per participant, grouped by
conference) are decoded with one ``np.take``, summed per conference with one
``_sum_all`` (a sum over a view or rank by rank; ``np.add.reduceat`` for
large rooms), each row gets "conference total minus own", beeps and
prompts are added, everything is clipped to int16 and encoded with one more
``np.take``. Two-party calls are exact: A hears (A + B) - A = B.

An optional ``contrib_hook`` (the engine's talk detection and in-band DTMF,
SPEC 12) names the rows that go into the sum; the others (silent, muted,
typing tones) still hear the mix but add nothing to it. Those silent rows
all hear their room's whole total, so it is encoded once per (room, codec)
and copied to them as G.711 bytes; only the talkers (the total minus their
own frame) and rows with a beep or a prompt are encoded one by one. With 2
talkers in rooms of 10, the silent majority costs a byte copy, not a mix.

``Conference`` is membership plus the join-beep rule: when someone joins,
everyone already present gets the beep once (from the start of the beep; a
beep already sounding restarts). The newcomer does not get it: it is the
signal that *someone else* came in, and the newcomer is usually hearing a
prompt from call control at that moment (SPEC 6.5 leaves this open). With a
leave beep, everyone left hears it when a member leaves (SPEC 12).
"""

from __future__ import annotations

from array import array
from typing import Callable, Iterable, Sequence

import numpy as np

from .codecs import DECODE_VARIANTS, ENCODE_COMPACT, ENCODE_OFFSETS, ENCODE_SHIFT
from .jitter import FRAME

BEEP_DBFS = -10.0
MAX_RANKS = 8  # talkers in one group up to which the sum goes rank by rank (BatchMixer._sum_rows)
# Largest conference up to which everyone's sum goes rank by rank too
# (BatchMixer._sum_all): at 1,000 rows in rooms of 10, 90 µs a tick against
# 210 µs for np.add.reduceat (issue 15); beyond it, a rank per member costs more.
MAX_SUM_RANKS = 16


def make_beep(hz: int = 1000, ms: int = 250, rate: int = 8000, dbfs: float = BEEP_DBFS) -> np.ndarray:
    """A sine at ``hz`` for ``ms`` (peak ``dbfs``), with 5 ms ramps against clicks."""
    n = max(1, int(rate * ms / 1000))
    t = np.arange(n) / rate
    amp = 32767 * 10 ** (dbfs / 20)
    x = amp * np.sin(2 * np.pi * hz * t)
    ramp = min(n // 2, rate // 200)
    if ramp:
        env = np.linspace(0.0, 1.0, ramp, endpoint=False)
        x[:ramp] *= env
        x[n - ramp:] *= env[::-1]
    return np.round(x).astype(np.int16)


def frames_of(pcm: np.ndarray) -> np.ndarray:
    """Split int16 PCM into (n, 160) int32 frames, zero-padding the last one."""
    n = -(-len(pcm) // FRAME)
    out = np.zeros((n, FRAME), dtype=np.int32)
    out.reshape(-1)[: len(pcm)] = pcm
    return out


class BatchMixer:
    """Per-tick mixing state for a fixed layout of rows (participants).

    Callers fill ``rx`` (uint8 codes, one row per participant; ``rx_flat`` is
    a writable 1-D memoryview of it) and ``variant`` (offset into
    ``codecs.DECODE_VARIANTS`` per row: codec x normal/concealed/muted), then
    call ``mix``; the result is ``tx`` (uint8 codes) and ``tx_flat``.
    """

    def __init__(self, beep: np.ndarray, leave_beep: np.ndarray | None = None) -> None:
        # join beep frames, then the leave beep's (if any): one table, so a
        # row's beep is one index whichever it is
        join = frames_of(beep)
        self.join_end = len(join)
        self.beep_frames = join if leave_beep is None else np.concatenate([join, frames_of(leave_beep)])
        # Optional: called with the decoded frames (rows, 160) before the sum;
        # returns the rows that contribute to the sum (sorted), or None for all
        # (SPEC 12: silent, muted and DTMF-typing participants are left out).
        self.contrib_hook: Callable[[np.ndarray], np.ndarray | None] | None = None
        self.set_layout([], [])

    def set_layout(self, codec_rows: Sequence[int], group_sizes: Sequence[int]) -> None:
        """``codec_rows[i]``: codec index of row i; rows are grouped by
        conference in order, ``group_sizes`` giving each group's size (a
        participant in no conference is a group of one: hears nothing)."""
        n = len(codec_rows)
        if sum(group_sizes) != n or any(s <= 0 for s in group_sizes):
            raise ValueError("group sizes must be positive and cover every row")
        self.n = n
        self.rx = np.zeros((n, FRAME), dtype=np.uint8)
        self.rx_flat = memoryview(self.rx.reshape(-1))
        self.variant = array("H", [DECODE_VARIANTS.shape[0] - 256] * n)  # muted
        self._variant_np = np.frombuffer(self.variant, dtype=np.uint16).reshape(n, 1) if n else np.zeros((0, 1), np.uint16)
        self.variant_flat = self._variant_np.reshape(-1)  # ``variant`` as a writable 1-D array
        self._idx = np.zeros((n, FRAME), dtype=np.uint16)
        self._dec = np.zeros((n, FRAME), dtype=np.int32)
        self._out = np.zeros((n, FRAME), dtype=np.int32)
        sizes = np.asarray(group_sizes, dtype=np.intp)
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp) if n else np.zeros(0, np.intp)
        self._set_sum_plan(sizes)
        self._talker_plan: tuple[np.ndarray, list | None] | None = None  # _sum_talkers' ranks, per layout
        self._group_of_row = np.repeat(np.arange(len(sizes), dtype=np.intp), sizes)
        self._totals = np.zeros((len(sizes), FRAME), dtype=np.int32)
        self._enc_off = np.asarray([ENCODE_OFFSETS[c] for c in codec_rows], dtype=np.int32).reshape(n, 1)
        # the shared encode of the silent rows (_mix_some): each group's total
        # once per codec in use, row r copying line _shared_line[r]
        used = sorted({ENCODE_OFFSETS[c] for c in codec_rows})
        slot = {off: i for i, off in enumerate(used)}
        self._shared_offsets = used
        self._shared = np.zeros((len(used) * len(sizes), FRAME), dtype=np.int32)
        self._shared_codes = np.zeros((len(used) * len(sizes), FRAME), dtype=np.uint8)
        self._shared_line = (np.asarray([slot[ENCODE_OFFSETS[c]] for c in codec_rows], dtype=np.intp) * len(sizes)
                             + self._group_of_row)
        self.tx = np.zeros((n, FRAME), dtype=np.uint8)
        self.tx_flat = memoryview(self.tx.reshape(-1))

    def mix(
        self,
        beep_rows: Sequence[int] = (),
        beep_frames: Sequence[int] = (),
        extra: Iterable[tuple[int, np.ndarray]] = (),
    ) -> np.ndarray:
        """One tick. ``beep_rows[i]`` gets beep frame ``beep_frames[i]``;
        ``extra`` yields (row, int16 samples <= 160) to add (prompts)."""
        if self.n == 0:
            return self.tx
        np.bitwise_or(self.rx, self._variant_np, out=self._idx)
        np.take(DECODE_VARIANTS, self._idx, out=self._dec, mode="wrap")  # indices always valid; wrap is the fastest unbuffered mode
        contributing = self.contrib_hook(self._dec) if self.contrib_hook is not None else None
        if contributing is not None:
            self._mix_some(contributing, beep_rows, beep_frames, extra)
            return self.tx
        out = self._out
        self._sum_all()
        np.take(self._totals, self._group_of_row, axis=0, out=out, mode="clip")
        np.subtract(out, self._dec, out=out)
        if beep_rows:
            out[list(beep_rows)] += self.beep_frames[list(beep_frames)]
        for row, pcm in extra:
            out[row, : len(pcm)] += pcm
        np.clip(out, -32768, 32767, out=out)
        np.add(out, self._enc_off, out=out)
        np.right_shift(out, ENCODE_SHIFT, out=out)
        np.take(ENCODE_COMPACT, out, out=self.tx, mode="wrap")  # indices always valid; wrap is the fastest mode
        return self.tx

    def _set_sum_plan(self, sizes: np.ndarray) -> None:
        """How ``_sum_all`` adds each group's rows for this layout: all
        groups the same size -- one sum over a (groups, size, frame) view;
        up to MAX_SUM_RANKS members -- rank by rank (the first row of every
        group, then the second of the groups that have one...); larger
        groups -- ``np.add.reduceat``."""
        self._sum_size = 0
        self._sum_ranks: list[tuple[np.ndarray, np.ndarray | None]] = []
        if not len(sizes):
            return
        largest = int(sizes.max())
        if int(sizes.min()) == largest:
            self._sum_size = largest
        elif largest <= MAX_SUM_RANKS:
            everyone = np.arange(len(sizes), dtype=np.intp)
            for r in range(largest):
                groups = everyone[sizes > r]
                self._sum_ranks.append((self._starts[groups] + r, None if len(groups) == len(sizes) else groups))

    def _sum_all(self) -> None:
        """Every group's total of every row's decoded frame (``_set_sum_plan``)."""
        totals = self._totals
        if self._sum_size:
            self._dec.reshape(len(totals), self._sum_size, FRAME).sum(axis=1, out=totals)
        elif self._sum_ranks:
            dec = self._dec
            first, _ = self._sum_ranks[0]
            np.take(dec, first, axis=0, out=totals, mode="clip")
            for rows, groups in self._sum_ranks[1:]:
                if groups is None:
                    totals += dec[rows]
                else:
                    totals[groups] += dec[rows]
        else:
            np.add.reduceat(self._dec, self._starts, axis=0, out=totals)

    def _mix_some(self, rows: np.ndarray, beep_rows: Sequence[int], beep_frames: Sequence[int],
                  extra: Iterable[tuple[int, np.ndarray]]) -> None:
        """The tick when only ``rows`` contribute (talk detection): their
        frames are summed per group (``_sum_talkers``); every other row hears
        its group's whole total, which is encoded once per (group, codec) and
        copied to those rows; the talkers (total minus own frame) and the
        rows with a beep or a prompt are encoded one by one. The result is
        the same as encoding every row's own mix."""
        self._sum_talkers(rows)
        totals = self._totals
        shared = self._shared
        groups = len(totals)
        for i, offset in enumerate(self._shared_offsets):  # one codec in most layouts
            line = shared[i * groups:(i + 1) * groups]
            np.clip(totals, -32768, 32767, out=line)
            line += offset
        np.right_shift(shared, ENCODE_SHIFT, out=shared)
        np.take(ENCODE_COMPACT, shared, out=self._shared_codes, mode="wrap")
        tx = self.tx
        np.take(self._shared_codes, self._shared_line, axis=0, out=tx, mode="clip")
        extra = list(extra)
        own = rows
        if beep_rows or extra:
            own = np.union1d(rows, np.fromiter([*beep_rows, *(r for r, _ in extra)], dtype=np.intp))
        if not len(own):
            return
        out = totals[self._group_of_row[own]]
        if own is not rows:  # beeps or prompts, perhaps for talkers only (then own == rows, but they still count)
            if len(rows):
                out[np.searchsorted(own, rows)] -= self._dec[rows]
            if beep_rows:
                out[np.searchsorted(own, beep_rows)] += self.beep_frames[list(beep_frames)]
            for row, pcm in extra:
                out[int(np.searchsorted(own, row)), : len(pcm)] += pcm
        else:
            out -= self._dec[rows]
        np.clip(out, -32768, 32767, out=out)
        out += self._enc_off[own]
        np.right_shift(out, ENCODE_SHIFT, out=out)
        tx[own] = ENCODE_COMPACT[out]

    def _sum_talkers(self, rows: np.ndarray) -> None:
        """Each group's total of the frames of ``rows`` alone (the saving
        when few talk; no talker: silence, which a recorder reads too).

        ``np.add.reduceat`` costs per group, talking or not, so the few
        talkers of each group are added rank by rank instead (first talker of
        every group, then the second...: one fancy-indexed add per rank);
        with many talkers in one group, the silent rows are zeroed and the
        usual sum runs."""
        totals = self._totals
        if not len(rows):
            totals.fill(0)
            return
        dec = self._dec
        plan = self._talker_plan
        if plan is None or len(plan[0]) != len(rows) or not np.array_equal(plan[0], rows):
            plan = self._talker_plan = (rows.copy(), self._rank_plan(rows))
        ranks = plan[1]
        if ranks is not None:
            totals.fill(0)
            for these, groups in ranks:
                totals[groups] += dec[these]
        else:
            keep = np.zeros((self.n, 1), dtype=np.int32)
            keep[rows] = 1
            np.multiply(dec, keep, out=dec)
            self._sum_all()

    def _rank_plan(self, rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """(rows, their groups) of each rank of talkers (the first talker of
        every group, then the second...), or None beyond MAX_RANKS. Kept
        while the same rows talk, as they do for many ticks in a row."""
        group_of_row = self._group_of_row
        groups = group_of_row[rows]
        change = np.diff(groups, prepend=-1) != 0
        rank = np.arange(len(rows)) - np.flatnonzero(change)[np.cumsum(change) - 1]
        ranks = int(rank.max()) + 1
        if ranks > MAX_RANKS:
            return None
        plan = []
        for r in range(ranks):
            these = rows[rank == r]
            plan.append((these, group_of_row[these]))
        return plan

    @property
    def totals(self) -> np.ndarray:
        """Per conference (group) of the last tick: the sum of everyone's
        decoded input, int32, not clipped (what a recorder of the conference gets)."""
        return self._totals

    def decoded(self) -> np.ndarray:
        """Decoded input of the last tick (tests)."""
        return self._dec


class Conference:
    """A set of endpoints that hear each other.

    Members need two attributes: ``conference`` (the Conference they are in,
    or None) and ``beep_frame`` (next beep frame to play, -1 when none); with
    ``beeps`` also ``beep_end`` (the frame where their beep stops).

    ``beeps`` = (join beep end, leave beep start, leave beep end) in the
    mixer's beep table, or None: no leave beep. With a leave beep, everyone
    left hears it when a member leaves (SPEC 12).
    """

    def __init__(self, on_change: Callable[[], None] | None = None,
                 beeps: tuple[int, int, int] | None = None) -> None:
        self._members: list = []
        self._on_change = on_change or (lambda: None)
        self._beeps = beeps

    def add(self, endpoint) -> None:
        if getattr(endpoint, "closed", False):
            raise ValueError("endpoint is closed")
        if endpoint.conference is self:
            return
        if endpoint.conference is not None:
            endpoint.conference.remove(endpoint)
        for member in self._members:
            member.beep_frame = 0
            if self._beeps is not None:
                member.beep_end = self._beeps[0]
        self._members.append(endpoint)
        endpoint.conference = self
        self._on_change()

    def remove(self, endpoint, beep: bool = True) -> None:
        """``beep=False``: no leave beep (everyone is being sent away)."""
        if endpoint.conference is not self:
            return
        self._members.remove(endpoint)
        endpoint.conference = None
        if beep and self._beeps is not None and self._beeps[2] > self._beeps[1]:
            for member in self._members:
                member.beep_frame, member.beep_end = self._beeps[1], self._beeps[2]
        self._on_change()

    @property
    def members(self) -> tuple:
        return tuple(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, endpoint) -> bool:
        return getattr(endpoint, "conference", None) is self

    def __iter__(self):
        return iter(tuple(self._members))
