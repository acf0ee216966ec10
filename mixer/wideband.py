"""The general media path: conferences with a G.722 or Opus participant.

A conference where everyone talks G.711 stays on ``conference.BatchMixer``
(the fast path, untouched). As soon as a wideband participant is in, the
engine hands the whole conference to a ``WidebandMix``:

* every participant has a *mix rate*: 8 kHz for G.711, 16 kHz for G.722,
  48 kHz for Opus, capped by ``max_mix_rate``; the conference's rate is the
  highest of them (``rate``);
* per rate class r, the frames of the participants of that class are summed
  (``S_r``); each class b then hears ``M_b = S_b + sum(resample(S_a -> b))``:
  resampling happens at the edges of the classes, once per rate pair per
  conference (resampling is linear, so resampling the class sum equals
  summing the resampled talkers), not once per talker or listener;
* a participant who is talking hears ``M_b - own`` (N-1) through their own
  encoder; everyone else of a class and codec hears the same N-mix ``M_b``,
  encoded once per (codec, beep frame) per tick and sent to all of them;
* a class's path does not depend on which other classes exist, so when a
  G.722 caller joins a G.711 room, the G.711 participants keep hearing
  each other sample for sample as before (no click, no gap, no added delay):
  the rate "switch" only adds the new class's contribution.

Decode failures are concealed and counted (``bad_payloads``), never raised.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from .codecs import DECODE_VARIANTS, ENCODE_BOTH, ENCODE_OFFSETS, MUTED_OFFSET
from .g722 import SILENCE_BYTE as G722_SILENCE, G722Decoder, G722Encoder
from .jitter import FRAME, JitterBuffer
from .opus import OpusDecoder, OpusEncoder, samples_in
from .resample import Resampler, resample_once
from .talk import TalkDetector

__all__ = ["CODEC_RATE", "RTP_STEP", "WIDEBAND", "OpusJitter", "WideStream", "WidebandMix", "talking_rows"]

#: audio rate of each codec (G.722's RTP clock is 8000, its audio 16 kHz)
CODEC_RATE = {"PCMU": 8000, "PCMA": 8000, "G722": 16000, "OPUS": 48000}
#: RTP timestamp units per 20 ms
RTP_STEP = {"PCMU": 160, "PCMA": 160, "G722": 160, "OPUS": 960}
WIDEBAND = ("G722", "OPUS")
MIX_RATES = (8000, 16000, 48000)

#: a frame whose RMS is above this (about -40 dBFS) counts as talking
TALK_RMS = 330.0
#: what the bridge's Opus encoders use: 32 kbit/s is transparent for speech
#: at 48 kHz; complexity 5 of 10 (each step up costs CPU per encode, and a
#: bridge runs one encoder per talker plus one per listening codec group)
OPUS_BITRATE = 32000
OPUS_COMPLEXITY = 5
#: A listener who starts talking moves from the shared encoder to an own
#: one. The phone's decoder has followed the shared encoder's state (G.722 is
#: ADPCM: a fresh or stale encoder state is a loud click), so the own
#: encoder takes that state: Opus copies it (``OpusEncoder.copy_state_from``);
#: G.722 (FFmpeg's state is out of reach) first encodes, and throws away,
#: the shared encoder's last frames: driven by the same input, the two
#: ADPCM states converge.
_WARM_FRAMES = 3
#: ...and keeps the own encoder this many ticks after the last talking frame,
#: so that the way back to the shared stream comes after the inputs of both
#: encoders have been alike (the talker quiet) for a while.
OWN_HOLD_TICKS = 15
_PLC_FRAMES = 5  # Opus frames concealed by PLC before plain silence (DTX, long loss)


def talking_rows(pcm: np.ndarray) -> np.ndarray:
    """Which rows of (rows, samples) frames are talking: RMS above TALK_RMS.

    Deliberately simple (no hangover); a talker gets their own N-1 encode,
    everyone else shares the N-mix. Replaceable by a better detector."""
    if pcm.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    p = pcm.astype(np.float32)
    return np.einsum("ij,ij->i", p, p) > (TALK_RMS * TALK_RMS) * pcm.shape[1]


class OpusJitter:
    """Timed jitter buffer for Opus packets (whole packets, 20/40/60 ms).

    Same interface as ``jitter.JitterBuffer`` for the engine (``put``,
    ``reset``, ``skip``, ``_play_ts``, ``_fast_max`` = -1 so the engine's
    G.711 receive fast path never takes an Opus packet). ``pop`` returns the
    packet due now, or None with the next packet (for FEC)."""

    __slots__ = ("slots", "delay", "_ring", "_play_ts", "_k", "_late_streak", "_fast_max",
                 "late", "resyncs", "received", "rejected", "concealed")
    STEP = 960

    def __init__(self, *, slots: int = 8, delay: int = 2) -> None:
        self.slots = slots
        self.delay = delay
        self._fast_max = -1
        self._ring: list = [None] * slots  # (frame number, payload, part) per slot
        self._play_ts: int | None = None
        self._k = 0
        self._late_streak = 0
        self.late = self.resyncs = self.received = self.rejected = self.concealed = 0

    def reset(self, silence_byte: int | None = None) -> None:
        self._play_ts = None
        self._ring = [None] * self.slots
        self._late_streak = 0

    def _resync(self, ts: int) -> None:
        self._play_ts = (ts - self.delay * self.STEP) & 0xFFFFFFFF
        self._ring = [None] * self.slots
        self._late_streak = 0
        self.resyncs += 1

    def put(self, ts: int, payload, start: int = 0, end: int | None = None) -> bool:
        if end is None:
            end = len(payload)
        data = bytes(payload[start:end])
        if not data:
            self.rejected += 1
            return False
        n = samples_in(data)
        if n <= 0 or n % self.STEP:
            self.rejected += 1  # not Opus, or 2.5/5/10 ms frames (not taken)
            return False
        frames = n // self.STEP
        if self._play_ts is None:
            self._play_ts = (ts - self.delay * self.STEP) & 0xFFFFFFFF
        d = ((ts - self._play_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        if d < 0 or d % self.STEP:
            self._late_streak += 1
            if self._late_streak < 3:
                self.late += 1
                return False
            self._resync(ts)
            d = self.delay * self.STEP
        elif d // self.STEP + frames > self.slots:
            self._resync(ts)
            d = self.delay * self.STEP
        else:
            self._late_streak = 0
        self.received += 1
        k = self._k + d // self.STEP
        for part in range(frames):
            self._ring[(k + part) % self.slots] = (k + part, data, part)
        return True

    def pop(self):
        """(payload, part) due now, or (None, next payload or None)."""
        if self._play_ts is None:
            return None, None
        k = self._k
        self._k = k + 1
        self._play_ts = (self._play_ts + self.STEP) & 0xFFFFFFFF
        slot = self._ring[k % self.slots]
        if slot is not None and slot[0] == k:
            return slot[1], slot[2]
        nxt = self._ring[(k + 1) % self.slots]
        if nxt is not None and nxt[0] == k + 1 and nxt[2] == 0:
            return None, nxt[1]
        return None, None

    def skip(self, frames: int) -> None:
        if self._play_ts is not None and frames > 0:
            self._k += frames
            self._play_ts = (self._play_ts + frames * self.STEP) & 0xFFFFFFFF

    @property
    def buffered_frames(self) -> int:
        return sum(1 for s in self._ring if s is not None and s[0] >= self._k)


class WideStream:
    """One G.722 or Opus participant's codec state (decoder, own encoder,
    jitter buffer), chosen when the call is set up."""

    def __init__(self, codec: str, max_mix_rate: int) -> None:
        self.codec = codec
        self.native = CODEC_RATE[codec]
        self.rate = min(self.native, max_mix_rate)
        self.frame = self.rate // 50
        self.step = RTP_STEP[codec]
        self.bad_payloads = 0
        self.fec_frames = 0
        self.plc_frames = 0
        self._lost = 0
        self._native_buf = np.zeros(self.native // 50, dtype=np.int16)
        if codec == "OPUS":
            # libopus decodes/encodes at the mix rate itself: no resampler
            self.native = self.rate
            self.jitter = OpusJitter()
            self.decoder = OpusDecoder(self.rate)
            self._carry = np.zeros(0, dtype=np.int16)
            self._part_buf = np.zeros(self.frame * 3, dtype=np.int16)
        else:
            self.jitter = JitterBuffer(G722_SILENCE)
            self.decoder = G722Decoder()
            self._codes = bytearray(FRAME)
        # G.722 under an 8 kHz cap: 16 kHz audio at the edges of an 8 kHz mix
        self.down = Resampler(self.native, self.rate) if self.native != self.rate else None
        self.encoder = None  # own encoder (a _SharedEncoder), made when first needed
        self.own_prev = False  # the own encoder fed the last packet sent
        self.own_hold = 0  # ticks the own encoder is kept after talking stopped

    def new_encoder(self):
        if self.codec == "OPUS":
            return OpusEncoder(self.rate, bitrate=OPUS_BITRATE, complexity=OPUS_COMPLEXITY)
        return G722Encoder()

    def pull(self, out: np.ndarray) -> int:
        """This tick's frame at ``rate`` into ``out`` (int16): 0 decoded,
        1 concealed (loss, FEC/PLC, or a payload that failed to decode),
        2 nothing (silence written)."""
        if self.codec == "OPUS":
            return self._pull_opus(out)
        st = self.jitter.pop_into(self._codes, 0)
        dst = self._native_buf if self.down is not None else out
        if st == 0:
            if not self.decoder.decode(self._codes, dst):
                self.bad_payloads += 1
                self.decoder.conceal(dst)
                st = 1
        elif st == 1:
            self.decoder.conceal(dst)
        else:
            out[:] = 0
            return 2
        if self.down is not None:
            out[:] = np.clip(np.rint(self.down.process(dst.reshape(1, -1))[0]), -32768, 32767)
        return st

    def _pull_opus(self, out: np.ndarray) -> int:
        payload, info = self.jitter.pop()
        if payload is not None:
            part = info
            if part == 0 and not self._decode_all(payload):
                self.bad_payloads += 1
                return self._conceal(out, None)
            if (part + 1) * self.frame <= len(self._carry):
                out[:] = self._carry[part * self.frame:(part + 1) * self.frame]
                self._lost = 0
                return 0
            return self._conceal(out, None)
        if self.jitter._play_ts is None or not len(self._carry) and not self._lost:
            out[:] = 0  # nothing played yet (playout starts a little before the first packet)
            return 2
        return self._conceal(out, info)

    def _decode_all(self, payload: bytes) -> bool:
        """Decode a whole packet (20-60 ms) into ``_carry``."""
        dec = self.decoder
        n = dec._lib.opus_decode(dec._st, payload, len(payload), dec._ptr, len(dec._pcm), 0)
        if n <= 0:
            self._carry = self._carry[:0]
            return False
        self._carry = dec._pcm[:n].copy()
        return True

    def _conceal(self, out: np.ndarray, next_payload: bytes | None) -> int:
        """A missing frame: FEC from the next packet when it is here (libopus
        falls back to PLC itself when that packet has no FEC data), else PLC
        for a few frames, then silence (DTX: the sender stopped on purpose)."""
        self._lost += 1
        if next_payload is not None:
            self.decoder.conceal(out, next_payload)
            self.fec_frames += 1
            return 1
        if self._lost > _PLC_FRAMES:
            out[:] = 0
            return 2
        self.decoder.conceal(out, None)
        self.plc_frames += 1
        return 1


class _SharedEncoder:
    """An encoder (the shared one of a codec and rate, or a talker's own)
    with the last frames it encoded, to warm another encoder up with."""

    __slots__ = ("encoder", "up", "history", "last_tick")

    def __init__(self, stream: WideStream) -> None:
        self.encoder = stream.new_encoder()
        self.up = Resampler(stream.rate, 16000) if stream.codec == "G722" and stream.rate != 16000 else None
        self.history: deque = deque(maxlen=_WARM_FRAMES)
        self.last_tick = -2  # WidebandMix tick of its last encode

    def warm_from(self, other: "_SharedEncoder", codec: str) -> None:
        """Take ``other``'s encoder state (the one a phone's decoder follows)."""
        if codec == "OPUS":
            self.encoder.copy_state_from(other.encoder)
        else:
            for pcm in other.history:
                self.encoder.encode(pcm)

    def encode(self, out: np.ndarray) -> bytes:
        pcm = _up_to_native(self.up, np.clip(np.rint(out), -32768, 32767).astype(np.int16))
        self.history.append(pcm)
        return self.encoder.encode(pcm)


def _up_to_native(up: Resampler | None, pcm: np.ndarray) -> np.ndarray:
    if up is None:
        return pcm
    return np.clip(np.rint(up.process(pcm.reshape(1, -1).astype(np.float32))[0]), -32768, 32767).astype(np.int16)


class WidebandMix:
    """The per-tick mix of one conference (or of one lone endpoint) that has
    a wideband participant. Members are RtpEndpoints (duck-typed: ``jitter``,
    ``_stream``, ``_variants``, ``_codec_i``, ``on_hold``, ``beep_frame``,
    ``_prompt``...)."""

    def __init__(self, beep: np.ndarray, talk_threshold_dbfs: float = -45.0) -> None:
        self._beep8 = beep
        # SPEC 12 talk state (API, events) per rate class, as the batch path's;
        # changes of the last tick in talk_changes, for the engine to report
        self.talk_threshold_dbfs = talk_threshold_dbfs
        self._talk: dict[int, TalkDetector] = {}
        self.talk_changes: list = []
        self._tick = 0
        self._beeps: dict[int, np.ndarray] = {}
        self._res: dict[tuple[int, int], Resampler] = {}
        self._shared: dict[tuple, _SharedEncoder] = {}
        self._prompts: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.members: list = []
        self.rate = 8000
        self.full_mix = np.zeros(160, dtype=np.float32)
        self.classes: dict[int, list] = {}
        # totals since start, read by the engine after each tick
        self.bad_payloads = 0
        self.fec_frames = 0
        self.plc_frames = 0

    def set_members(self, members: list) -> None:
        self.members = members
        classes: dict[int, list] = {}
        for ep in members:
            rate = ep._stream.rate if ep._stream is not None else 8000
            classes.setdefault(rate, []).append(ep)
        self.classes = classes
        self.rate = max(classes) if classes else 8000
        self._pcm = {r: np.zeros((len(m), r // 50), dtype=np.int16) for r, m in classes.items()}
        self._talk = {}
        for r, m in classes.items():
            detector = self._talk[r] = TalkDetector(self.talk_threshold_dbfs, r // 50)
            detector.set_rows([getattr(ep, "talking", False) for ep in m])
        # drop resamplers and shared encoders of rates no longer present (a
        # class that comes back starts with a silent history: it is new audio)
        self._res = {k: v for k, v in self._res.items() if k[0] in classes and k[1] in classes}
        self._shared = {k: v for k, v in self._shared.items() if k[1] in classes}
        self.full_mix = np.zeros(self.rate // 50, dtype=np.float32)

    def beep_frames(self, rate: int) -> np.ndarray:
        frames = self._beeps.get(rate)
        if frames is None:
            pcm = self._beep8 if rate == 8000 else resample_once(self._beep8, 8000, rate)
            n = rate // 50
            count = -(-len(pcm) // n)
            frames = np.zeros((count, n), dtype=np.float32)
            frames.reshape(-1)[:len(pcm)] = pcm
            self._beeps[rate] = frames
        return frames

    def _prompt_at(self, pcm: np.ndarray, rate: int) -> np.ndarray:
        if rate == 8000:
            return pcm
        key = (id(pcm), rate)
        hit = self._prompts.get(key)
        if hit is None or hit[0] is not pcm:
            if len(self._prompts) > 64:
                self._prompts.clear()
            hit = (pcm, resample_once(pcm, 8000, rate))
            self._prompts[key] = hit
        return hit[1]

    def _contributing(self, eps: list) -> np.ndarray:
        """Rows whose audio goes into the mix (hold takes one out). The one
        place a mute/moderator mask joins the wideband path."""
        return np.fromiter((not (ep.on_hold or ep.muted) for ep in eps), dtype=bool, count=len(eps))

    def tick(self, n_beep: int, send: Callable[[object, bytes], None],
             prompt_done: Callable[[object], None]) -> int:
        """Pull, mix, encode and ``send(ep, payload)`` for every member;
        returns the number of frames concealed."""
        self._tick += 1
        concealed = 0
        sums: dict[int, np.ndarray] = {}
        talking: dict[int, np.ndarray] = {}
        for rate, eps in self.classes.items():
            pcm = self._pcm[rate]
            g711 = []
            for i, ep in enumerate(eps):
                stream = ep._stream
                if stream is None:
                    g711.append(i)
                    continue
                before = (stream.bad_payloads, stream.fec_frames, stream.plc_frames)
                if stream.pull(pcm[i]) == 1:
                    concealed += 1
                self.bad_payloads += stream.bad_payloads - before[0]
                self.fec_frames += stream.fec_frames - before[1]
                self.plc_frames += stream.plc_frames - before[2]
            if g711:
                codes = np.empty((len(g711), FRAME), dtype=np.uint8)
                offs = np.empty((len(g711), 1), dtype=np.uint16)
                for j, i in enumerate(g711):
                    ep = eps[i]
                    st = ep.jitter.pop_into(codes[j], 0)
                    if st == 1:
                        concealed += 1
                    offs[j, 0] = MUTED_OFFSET if ep.on_hold else ep._variants[st]
                pcm[g711] = np.take(DECODE_VARIANTS, codes.astype(np.uint16) | offs)
            contrib = self._contributing(eps)
            if not contrib.all():
                pcm[~contrib] = 0
            sums[rate] = pcm.sum(axis=0, dtype=np.int32).astype(np.float32)
            talking[rate] = talking_rows(pcm)
            detector = self._talk[rate]
            for r in detector.update(pcm).tolist():  # muted and on-hold rows are zero here: quiet
                ep = eps[r]
                ep.talking = bool(detector.talking[r])
                self.talk_changes.append((ep, ep.talking))
        mixes: dict[int, np.ndarray] = {}
        for b in self.classes:
            m = sums[b].copy()
            for a in self.classes:
                if a != b:
                    r = self._res.get((a, b))
                    if r is None:
                        r = self._res[(a, b)] = Resampler(a, b)
                    m += r.process(sums[a].reshape(1, -1))[0]
            mixes[b] = m
        self.full_mix = mixes[self.rate]
        for b, eps in self.classes.items():
            self._send_class(b, eps, mixes[b], talking[b], n_beep, send, prompt_done)
        return concealed

    def _send_class(self, rate: int, eps: list, mix: np.ndarray, talking: np.ndarray, n_beep: int,
                    send, prompt_done) -> None:
        pcm = self._pcm[rate]
        beeps = self.beep_frames(rate)
        shared_beep: dict[object, int] = {}  # codec -> the beep frame its shared encode carries
        listeners: list[tuple[object, object, int]] = []  # (endpoint, codec, beep frame)
        own: list[tuple[int, object, int]] = []  # (row, endpoint, beep frame)
        for i, ep in enumerate(eps):
            b = ep.beep_frame
            if b >= 0:
                b2 = b + 1
                ep.beep_frame = b2 if b2 < ep.beep_end else -1  # join beep, or leave beep (SPEC 12)
            if ep.on_hold or ep._dest is None or ep.closed:
                continue
            stream = ep._stream
            hold = 0
            if stream is not None:
                if talking[i] or ep._prompt is not None:  # a prompt (SPEC 12 counts...) too:
                    stream.own_hold = OWN_HOLD_TICKS       # back to the shared encoder only once in step
                elif stream.own_hold:
                    stream.own_hold -= 1
                hold = stream.own_hold
            if not talking[i] and ep._prompt is None and not hold:
                # one shared encode per codec and rate; a listener whose beep
                # differs from the first one's (the newcomer) is encoded alone
                codec = stream.codec if stream is not None else ep._codec_i
                if shared_beep.setdefault(codec, b) == b:
                    listeners.append((ep, codec, b))
                    continue
            own.append((i, ep, b))
        # own encodes first: one that starts now takes the shared encoder's
        # state as it was after the last tick (see _encode_own)
        for i, ep, b in own:
            out = mix - pcm[i]
            if 0 <= b < len(beeps):
                out = out + beeps[b]
            prompt = ep._prompt
            if prompt is not None:
                out = self._add_prompt(ep, out, rate, prompt, prompt_done)
            send(ep, self._encode_own(ep, out, rate))
        payloads: dict[object, bytes] = {}
        for ep, codec, b in listeners:
            payload = payloads.get(codec)
            if payload is None:
                out = mix + beeps[b] if 0 <= b < len(beeps) else mix
                payload = payloads[codec] = self._encode_shared((codec, rate), ep._stream, ep, out)
            if ep._stream is not None:
                ep._stream.own_prev = False
            send(ep, payload)

    def _add_prompt(self, ep, out: np.ndarray, rate: int, prompt: np.ndarray, prompt_done) -> np.ndarray:
        pos = ep._prompt_pos
        ratio = rate // 8000
        src = self._prompt_at(prompt, rate)
        piece = src[pos * ratio:(pos + FRAME) * ratio]
        out = out.copy()
        out[:len(piece)] += piece
        ep._prompt_pos = pos + FRAME
        if pos + FRAME >= len(prompt):
            prompt_done(ep)
        return out

    @staticmethod
    def _g711(ep, out: np.ndarray) -> bytes:
        idx = np.clip(np.rint(out), -32768, 32767).astype(np.int32) + ENCODE_OFFSETS[ep._codec_i]
        return ENCODE_BOTH[idx].tobytes()

    def _encode_shared(self, key: tuple, stream: WideStream | None, ep, out: np.ndarray) -> bytes:
        if stream is None:
            return self._g711(ep, out)
        enc = self._shared.get(key)
        if enc is None:
            enc = self._shared[key] = _SharedEncoder(stream)
        if enc.last_tick != self._tick - 1 and stream.own_prev and stream.encoder is not None:
            # the shared stream did not run last tick (nobody else listens in
            # this codec) and this listener comes back from its own encoder:
            # start the shared one from the state its decoder follows
            enc.warm_from(stream.encoder, stream.codec)
        enc.last_tick = self._tick
        return enc.encode(out)

    def _encode_own(self, ep, out: np.ndarray, rate: int) -> bytes:
        stream = ep._stream
        if stream is None:
            return self._g711(ep, out)
        enc = stream.encoder
        if enc is None:
            enc = stream.encoder = _SharedEncoder(stream)
        if not stream.own_prev:
            stream.own_prev = True
            shared = self._shared.get((stream.codec, rate))
            if shared is not None:  # the phone has been decoding the shared stream
                enc.warm_from(shared, stream.codec)
        return enc.encode(out)


def check_codec(codec: str) -> None:
    """ValueError unless the engine can carry ``codec``."""
    if codec.upper() not in CODEC_RATE:
        raise ValueError(f"unsupported codec {codec!r} (supported: PCMU, PCMA, G722, OPUS)")


def wide_stream(codec: str, max_mix_rate: int) -> WideStream | None:
    """Codec state for a G.722/Opus call; None for G.711 (the batch tables)."""
    check_codec(codec)
    name = codec.upper()
    return WideStream(name, max_mix_rate) if name in WIDEBAND else None
