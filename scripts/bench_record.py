#!/usr/bin/env python3
"""What an active recording costs the mixer thread, in process.

1. The per-tick hook: for each recorded conference, the engine takes the
   conference's row of the mix totals and calls ``Recorder.push`` (copy +
   deque append), with the recorder's worker thread encoding meanwhile, as
   in the server. Timed in batches (mean) and one by one (percentiles).
2. The real ``MediaEngine._tick`` of N participants in conferences of 10
   (sockets bound, no traffic: every row conceals), with 0 and with 1 or
   10 conferences recorded, alternating blocks of ticks (paired).
3. The worker's effect on tick timing: a 20 ms tick loop on the main thread
   (like the mixer's) pushes to R recorders while their workers encode and
   write; lateness of each tick (p50 / p99 / max) with R = 0, 1, 10, and
   the CPU the workers used.

    scripts/bench_record.py [--format ogg|flac|wav] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixer.engine import MIX_RATE, MediaEngine  # noqa: E402
from mixer.jitter import FRAME  # noqa: E402
from mixer.record import Recorder  # noqa: E402

GROUPS = 100  # conferences in the totals array (a 1,000-participant server in rooms of 10)


def totals_for(tick: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(-20000, 20000, (GROUPS, FRAME)).astype(np.int32)


def drained(recorder: Recorder) -> None:
    for _ in range(1000):
        if not recorder._queue:
            return
        time.sleep(0.005)


def bench_hook(directory: Path, fmt: str, pushes: int) -> None:
    rng = np.random.default_rng(0)
    totals = totals_for(0, rng)
    recorder = Recorder(str(directory / f"hook.{fmt}"), fmt, file_rate=MIX_RATE).start()
    taps = [(7, recorder.push)]
    # batch timing: the hook loop exactly as MediaEngine._tick runs it, in
    # bursts of 250 ticks (half the queue) with a pause for the worker to
    # drain, so that every push is taken (a dropped one costs less)
    batch = 0.0
    for burst in range(0, pushes, 250):
        t = time.perf_counter()
        for tick in range(burst, burst + 250):
            for g, push in taps:
                push(totals[g], MIX_RATE, tick)
        batch += time.perf_counter() - t
        drained(recorder)
    # one by one, for the spread
    each = np.empty(pushes)
    clock = time.perf_counter_ns
    for i in range(pushes):
        tick = pushes + i
        t0 = clock()
        for g, push in taps:
            push(totals[g], MIX_RATE, tick)
        each[i] = clock() - t0
        if i % 250 == 249:
            drained(recorder)
    recorder.stop()
    recorder.join(10)
    # what the same loop costs with nothing recorded (the engine's `if self._taps` test)
    empty: list = []
    t = time.perf_counter()
    for tick in range(pushes):
        if empty:
            pass
    baseline = (time.perf_counter() - t) / pushes
    print(f"per-tick hook cost of one recorded conference ({fmt}), {pushes} ticks:")
    print(f"  mean {batch / pushes * 1e6:.2f} us (batched); one by one: p50 {np.percentile(each, 50) / 1e3:.2f} us, "
          f"p99 {np.percentile(each, 99) / 1e3:.2f} us, max {each.max() / 1e3:.1f} us "
          f"(timer overhead included); no recording: {baseline * 1e9:.0f} ns")
    print(f"  dropped {recorder.frames_dropped}, written {recorder.frames_written}")


async def bench_engine(directory: Path, fmt: str, participants: int, recorded: int, rounds: int = 200,
                       block: int = 20) -> None:
    engine = MediaEngine("127.0.0.1")
    endpoints = [engine.open_endpoint(0, codec="PCMU", payload_type=0, telephone_event_pt=101, remote=None,
                                      on_digit=lambda d: None, rtp_timeout=3600.0, on_timeout=lambda: None)
                 for _ in range(participants)]
    conferences = [engine.new_conference() for _ in range(participants // 10)]
    for i, endpoint in enumerate(endpoints):
        conferences[i // 10].add(endpoint)
    recorders = [Recorder(str(directory / f"engine-{i}.{fmt}"), fmt, file_rate=MIX_RATE).start()
                 for i in range(recorded)]
    tick = 0
    times = {False: [], True: []}
    try:
        for _ in range(rounds):
            for recording in (False, True):
                for conference, recorder in zip(conferences, recorders):
                    engine.set_recorder(conference, recorder if recording else None)
                engine._tick(tick)  # the taps list is rebuilt here: not timed
                tick += 1
                t = time.perf_counter()
                for _ in range(block):
                    engine._tick(tick)
                    tick += 1
                times[recording].append((time.perf_counter() - t) / block)
                await asyncio.sleep(0.02)  # the workers drain in the slack, as between real ticks
    finally:
        for recorder in recorders:
            recorder.stop()
        for recorder in recorders:
            recorder.join(10)
        await engine.close()
    without = np.median(times[False]) * 1e6
    with_rec = np.median(times[True]) * 1e6
    paired = np.array(times[True]) - np.array(times[False])
    low, high = np.percentile(paired, [25, 75]) * 1e6
    dropped = sum(r.frames_dropped for r in recorders)
    print(f"  {participants} participants, {recorded:>2} recorded: tick {without:.1f} us without, {with_rec:.1f} us "
          f"with; paired difference median {np.median(paired) * 1e6:+.1f} us (quartiles {low:+.1f} / {high:+.1f}) "
          f"over {rounds} pairs of {block}-tick blocks; dropped {dropped}")


def bench_ticks(directory: Path, fmt: str, recorders: int, seconds: float) -> None:
    rng = np.random.default_rng(1)
    totals = totals_for(0, rng)
    recs = [Recorder(str(directory / f"t{recorders}-{i}.{fmt}"), fmt, file_rate=MIX_RATE).start()
            for i in range(recorders)]
    taps = [(i % GROUPS, r.push) for i, r in enumerate(recs)]
    ticks = int(seconds / 0.02)
    lateness = np.empty(ticks)
    work = np.empty(ticks)
    cpu0 = time.process_time()
    start = time.perf_counter()
    for tick in range(ticks):
        due = start + tick * 0.02
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        now = time.perf_counter()
        lateness[tick] = now - due
        for g, push in taps:
            push(totals[g], MIX_RATE, tick)
        work[tick] = time.perf_counter() - now
    wall = time.perf_counter() - start
    for r in recs:
        r.stop()
    for r in recs:
        r.join(10)
    cpu = time.process_time() - cpu0
    dropped = sum(r.frames_dropped for r in recs)
    print(f"  {recorders:>3} recordings: tick lateness p50 {np.percentile(lateness, 50) * 1e3:.2f} ms, "
          f"p99 {np.percentile(lateness, 99) * 1e3:.2f} ms, max {lateness.max() * 1e3:.2f} ms; "
          f"hook work p99 {np.percentile(work, 99) * 1e6:.1f} us; process CPU {cpu / wall * 100:.1f} % of a core; "
          f"dropped {dropped}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", default="ogg", choices=["ogg", "flac", "wav"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pushes", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        directory = Path(tmp)
        bench_hook(directory, args.format, args.pushes)
        print("real MediaEngine._tick, paired blocks with and without recordings:")
        for recorded in (1, 10):
            asyncio.run(bench_engine(directory, args.format, 200, recorded))
        print(f"20 ms tick loop for {args.seconds:g} s, pushing to R recordings ({args.format}) "
              "whose workers encode meanwhile:")
        for recorders in (0, 1, 10):
            bench_ticks(directory, args.format, recorders, args.seconds)


if __name__ == "__main__":
    main()
