#!/usr/bin/env python3
"""Mix cost per 20 ms tick, without sockets.

"mix" = batched decode + N-1 mix + beep + clip + encode (BatchMixer.mix);
"tick" = mix plus the rest of a real tick's work (every row's jitter pop
from the batched buffers and its decode variant, RTP header packing and
payload copy per participant), still without any system call.

``--codec g722|opus|mixed`` measures the general path instead: a
``wideband.WidebandMix`` tick per room of 10 (jitter pop, decode, rate-class
sums and resampling, talking rule, shared N-mix encode for listeners, own
N-1 encodes for talkers), payloads pre-encoded once, nothing sent.
``--talkers K``: K talkers per room (others send encoded silence; default 2).
``mixed`` rooms hold 4 PCMA, 3 G.722 and 3 Opus participants.

Then talk detection (SPEC 12): the mix without it (as before), with it and
everyone talking, and with it and 2 talkers per room of 10 (the others send
quiet noise under -45 dBFS and are left out of the sum).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixer import codecs  # noqa: E402
from mixer.codecs import VARIANT_OFFSETS  # noqa: E402
from mixer.conference import BatchMixer, make_beep  # noqa: E402
from mixer.batch_jitter import BatchJitter  # noqa: E402
from mixer.jitter import FRAME, JitterBuffer  # noqa: E402
from mixer.rtp import HEADER_SIZE, RtpSender  # noqa: E402
from mixer.talk import TalkDetector  # noqa: E402

ROOM = 10
TICKS = 500
REPEATS = 10


def bench(n: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    codec_rows = [i % 2 for i in range(n)]  # half PCMU, half PCMA
    mixer = BatchMixer(make_beep())
    mixer.set_layout(codec_rows, [ROOM] * (n // ROOM))
    pcm = rng.integers(-8000, 8000, (n, TICKS * FRAME)).astype(np.int16)
    payload = [codecs.encode(pcm[i], "PCMU" if codec_rows[i] == 0 else "PCMA") for i in range(n)]
    beep_n = len(mixer.beep_frames)
    beep_rows = list(range(0, n, ROOM * 2))  # a join in every other room ...
    # --- mix only
    for i in range(n):
        mixer.rx[i] = np.frombuffer(payload[i][:FRAME], np.uint8)
        mixer.variant[i] = VARIANT_OFFSETS[codec_rows[i]][0]
    t = time.perf_counter()
    for k in range(TICKS):
        mixer.mix(beep_rows, [k % beep_n] * len(beep_rows))
    mix_us = (time.perf_counter() - t) / TICKS * 1e6
    # --- full tick work without I/O
    jitter = BatchJitter(capacity=n)
    ids = np.array([jitter.open(0xFF) for _ in range(n)], dtype=np.intp)
    senders = [RtpSender(c * 8, 1234 + i, 0) for i, c in enumerate(codec_rows)]
    row_variants = np.array([VARIANT_OFFSETS[c] for c in codec_rows], dtype=np.uint16).reshape(-1)
    variant_base = np.arange(n, dtype=np.intp) * 3
    frames = np.frombuffer(b"".join(payload), np.uint8).reshape(n, TICKS, FRAME)
    tx = mixer.tx_flat
    elapsed = 0.0
    for k in range(TICKS):
        # arrivals (not timed: that is the receive path)
        ts = np.full(n, k * FRAME, dtype=np.int64)
        if k == 0:
            for i in range(n):
                jitter.put(int(ids[i]), 0, frames[i, 0])
        else:
            jitter.place(ids, ts, frames[:, k], 0.0)
        t = time.perf_counter()
        status = jitter.pop(ids, mixer.rx)
        np.take(row_variants, variant_base + status, out=mixer.variant_flat, mode="clip")
        mixer.mix(beep_rows, [k % beep_n] * len(beep_rows))
        for row in range(n):
            buf = senders[row].next_header(k * FRAME)
            buf[HEADER_SIZE:] = tx[row * FRAME:(row + 1) * FRAME]
        elapsed += time.perf_counter() - t
    tick_us = elapsed / TICKS * 1e6
    return mix_us, tick_us


class _Endpoint:
    """What WidebandMix reads of an RtpEndpoint."""

    def __init__(self, codec: str) -> None:
        from mixer.wideband import wide_stream
        self._stream = wide_stream(codec, 48000)
        self._codec_i = 1
        self._variants = VARIANT_OFFSETS[1]
        self.jitter = self._stream.jitter if self._stream is not None else JitterBuffer(0xD5)
        self.on_hold = self.closed = self.muted = False
        self.beep_frame = -1
        self.beep_end = 13
        self._dest = ("127.0.0.1", 9)
        self._prompt = None
        self._prompt_pos = 0


def _payloads(codec: str, talks: bool, ticks: int) -> list[bytes]:
    from mixer.g722 import G722Encoder
    from mixer.opus import OpusEncoder
    rate = {"PCMA": 8000, "G722": 16000, "OPUS": 48000}[codec]
    n = rate // 50
    t = np.arange(n * ticks) / rate
    pcm = (6000 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.int16)
    if not talks:
        pcm[:] = 0
    if codec == "PCMA":
        return [codecs.encode(pcm[i * n:(i + 1) * n], "PCMA") for i in range(ticks)]
    enc = G722Encoder() if codec == "G722" else OpusEncoder(48000)
    return [enc.encode(np.ascontiguousarray(pcm[i * n:(i + 1) * n])) for i in range(ticks)]


def bench_wide(n: int, codec: str, talkers: int, ticks: int = 200) -> float:
    """µs per tick of the general path for n participants in rooms of ROOM."""
    from mixer.wideband import RTP_STEP, WidebandMix
    mix_codecs = {"g722": ["G722"] * ROOM, "opus": ["OPUS"] * ROOM,
                  "mixed": ["PCMA"] * 4 + ["G722"] * 3 + ["OPUS"] * 3}[codec]
    rooms = []
    feeds = []
    for _ in range(n // ROOM):
        eps = [_Endpoint(c) for c in mix_codecs]
        wm = WidebandMix(make_beep())
        wm.set_members(eps)
        rooms.append(wm)
        for i, (ep, c) in enumerate(zip(eps, mix_codecs)):
            feeds.append((ep, RTP_STEP[c], _payloads(c, i < talkers, ticks)))
    sent = [0]

    def send(ep, payload) -> None:
        sent[0] += 1

    def done(ep) -> None:
        pass

    elapsed = 0.0
    for k in range(ticks):
        for ep, step, payloads in feeds:  # arrivals (not timed: that is the receive path)
            p = payloads[k]
            ep.jitter.put(k * step, p, 0, len(p))
        t = time.perf_counter()
        for wm in rooms:
            wm.tick(0, send, done)
        elapsed += time.perf_counter() - t
    assert sent[0] >= (ticks - 3) * n
    return elapsed / ticks * 1e6


def bench_talk(n: int, talkers: int | None) -> float:
    """µs per tick of BatchMixer.mix; ``talkers`` per room talk (None: no
    talk detection at all, everyone summed as before)."""
    rng = np.random.default_rng(1)
    mixer = BatchMixer(make_beep())
    mixer.set_layout([0] * n, [ROOM] * (n // ROOM))
    loud = rng.integers(-8000, 8000, (n, FRAME))
    quiet = rng.integers(-20, 20, (n, FRAME))  # about -65 dBFS: line noise
    speaking = np.zeros(n, dtype=bool)
    if talkers is not None:
        speaking[[r for r in range(n) if r % ROOM < talkers]] = True
    else:
        speaking[:] = True
    pcm = np.where(speaking[:, None], loud, quiet).astype(np.int16)
    mixer.rx[:] = codecs.ULAW_ENCODE[pcm.view(np.uint16)]
    for i in range(n):
        mixer.variant[i] = VARIANT_OFFSETS[0][0]
    if talkers is not None:
        detector = TalkDetector(-45.0)
        detector.set_rows([False] * n)

        def contributing(decoded):  # what MediaEngine._contributing does for G.711 calls
            detector.update(decoded)
            talking = detector.talking
            return None if talking.all() else np.flatnonzero(talking)

        mixer.contrib_hook = contributing
    for _ in range(20):
        mixer.mix()
    best = float("inf")
    for _ in range(REPEATS):  # the best of several runs: the machine is shared
        t = time.perf_counter()
        for _ in range(TICKS // REPEATS):
            mixer.mix()
        best = min(best, (time.perf_counter() - t) / (TICKS // REPEATS) * 1e6)
    return best


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", choices=("pcma", "g722", "opus", "mixed"), default="pcma")
    parser.add_argument("--talkers", type=int, default=2, help="talkers per room of 10 (general path; default 2)")
    parser.add_argument("-n", type=int, nargs="*", help="participant counts")
    args = parser.parse_args()
    if args.codec != "pcma":
        print(f"general path, rooms of {ROOM} ({args.codec}), {args.talkers} talkers per room, payloads pre-encoded")
        print(f"{'participants':>12} {'tick µs/tick':>13} {'tick µs/part':>13}")
        for n in args.n or (50, 100):
            us = bench_wide(n, args.codec, args.talkers)
            print(f"{n:>12} {us:>13.1f} {us / n:>13.1f}")
        return
    print(f"rooms of {ROOM}, {TICKS} ticks each, half PCMU / half PCMA, a beep in every other room")
    print(f"{'participants':>12} {'mix µs/tick':>12} {'mix µs/part':>12} {'tick µs/tick':>13} {'tick µs/part':>13}")
    for n in args.n or (100, 500, 1000):
        mix_us, tick_us = bench(n)
        print(f"{n:>12} {mix_us:>12.1f} {mix_us / n:>12.3f} {tick_us:>13.1f} {tick_us / n:>13.3f}")
    print()
    print(f"talk detection, rooms of {ROOM}, all PCMU, mix µs/tick (µs/participant)")
    print(f"{'participants':>12} {'no detection':>16} {'all talking':>16} {'2 talk per room':>16}")
    for n in (100, 500, 1000):
        cells = [bench_talk(n, t) for t in (None, ROOM, 2)]
        print(f"{n:>12} " + " ".join(f"{c:>8.1f} ({c / n:.3f})" for c in cells))


if __name__ == "__main__":
    main()
