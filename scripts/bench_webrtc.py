#!/usr/bin/env python3
"""Cost of a browser (WebRTC) participant per 20 ms tick.

Two figures, both printed in microseconds per participant-tick:

* ``edge`` (in-process, no network): the mixer's part -- N PcmEndpoints in
  conferences of ``--room`` on the general path at 48 kHz, fed one 20 ms
  frame each per tick (what aiortc's decoder hands over, already mono),
  their mix encoded to Opus by the mixer and wrapped in the av.Packet
  aiortc's sender takes (``webrtc.MixTrack``). CPU time of this process.
* ``server`` (end to end): ``python -m sipconf serve`` with ``[admin]`` as a
  subprocess, and N aiortc peers in this process joining through
  ``POST /join/offer`` over loopback (ICE host candidates, DTLS-SRTP, Opus
  both ways), each sending a tone. The server's CPU time (utime + stime of
  its process, all threads: aiortc decodes in a thread) during a window
  with the N browsers in, minus the same window with none, per
  browser-tick. This is what counts against the 1,000 G.711 phones.

Usage: bench_webrtc.py [--mode edge|server|both] [-n 10] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mixer.engine import MediaEngine  # noqa: E402
from mixer.pcm_endpoint import PcmEndpoint  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- edge: the mixer and the PCM edges, no network ------------------------------------------------


async def bench_edge(n: int, room: int, seconds: float, one_talker: bool = False) -> dict:
    from sipconf.admin.webrtc import MixTrack

    engine = MediaEngine("127.0.0.1")
    engine.start()
    tracks = [MixTrack(48000) for _ in range(n)]
    eps = []
    for i in range(n):
        ep = PcmEndpoint(engine, tracks[i].push, opus=True)  # as webrtc.py makes them
        engine.attach(ep)
        eps.append(ep)
    confs = [engine.new_conference() for _ in range(-(-n // room))]
    for i, ep in enumerate(eps):
        confs[i // room].add(ep)
    t = np.arange(960) / 48000
    frames = [np.round((0 if one_talker and i % room else 3000) * np.sin(2 * np.pi * (300 + 37 * i) * t))
              .astype(np.int16) for i in range(n)]

    async def consume(track):  # aiortc's sender awaiting recv()
        while True:
            await track.recv()

    consumers = [asyncio.get_running_loop().create_task(consume(tr)) for tr in tracks]

    async def feed():  # aiortc's receivers: one decoded frame per participant per 20 ms
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        while True:
            for ep, f in zip(eps, frames):
                ep.feed(f)
            k += 1
            await asyncio.sleep(max(0.0, start + k * 0.02 - loop.time()))

    feeder = asyncio.get_running_loop().create_task(feed())
    await asyncio.sleep(1.0)  # warm-up
    ticks0, work0 = engine.stats.ticks, engine.stats.tick_work_sum
    pushed0 = sum(tr.pushed for tr in tracks)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    ticks = engine.stats.ticks - ticks0
    work = engine.stats.tick_work_sum - work0
    feeder.cancel()
    for c in consumers:
        c.cancel()
    pushed = sum(tr.pushed for tr in tracks) - pushed0
    await engine.close()
    return {"n": n, "ticks": ticks, "wall_s": wall, "cpu_us_per_pt": cpu / (n * ticks) * 1e6,
            "tick_work_us_per_pt": work / (n * ticks) * 1e6, "frames_out_per_tick": pushed / max(1, ticks) / n}


# -- server: end to end through the real server ---------------------------------------------------


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


async def bench_server(n: int, room: int, seconds: float, one_talker: bool = False) -> dict:
    from support import ServerProcess, wait_until
    from webrtc_support import AiortcGuest, admin_port, http_json, level_at, webrtc_config

    conferences = tuple((str(1000 + i), str(5000 + i)) for i in range(-(-n // room)))
    port = admin_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-webrtc-"))
    # INFO: the tests' DEBUG log has aiortc write lines per packet
    server = ServerProcess(workdir, config_text=webrtc_config(port, conferences=conferences,
                                                              server={"rtp_timeout": 60}),
                           extra_args=("--log-level", "INFO")).start()
    guests: list[AiortcGuest] = []
    try:
        assert wait_until(lambda: http_json(port, "GET", "/join", timeout=1)[0] == 200, 10)
        pid = server.process.pid
        await asyncio.sleep(1.0)
        c0, w0 = _cpu_s(pid), time.perf_counter()
        await asyncio.sleep(seconds)
        idle = (_cpu_s(pid) - c0) / (time.perf_counter() - w0)  # cores used with nobody in
        for i in range(n):
            conference, pin = conferences[i // room]
            g = AiortcGuest(port, 300.0 + 37 * i, amplitude=0 if one_talker and i % room else 8000)
            guests.append(g)
            status, data = await g.join("800", conference, pin)
            assert status == 200, data
        for g in guests:
            assert (await g.wait_state("connecting"))["state"] == "joined"
        await asyncio.sleep(3.0)  # prompts over, streams steady
        heard0 = sum(len(g.heard) for g in guests)
        c0, w0 = _cpu_s(pid), time.perf_counter()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - w0
        busy = (_cpu_s(pid) - c0) / wall
        heard = (sum(len(g.heard) for g in guests) - heard0) / wall / n  # frames per s per guest
        # every listener hears a talker of its conference (a lone talker hears silence: not counted)
        listeners = [i for i in range(n) if not (one_talker and i % room == 0)]
        hearing = 0
        for i in listeners:
            talkers = [j for j in range(i - i % room, min(n, i - i % room + room))
                       if j != i and not (one_talker and j % room)]
            if any(level_at(guests[i].recent(1.0), 48000, 300.0 + 37 * j) > 500 for j in talkers):
                hearing += 1
        ticks_per_s = 50.0
        return {"n": n, "idle_cores": idle, "busy_cores": busy, "frames_heard_per_s": heard,
                "us_per_pt": (busy - idle) / (n * ticks_per_s) * 1e6, "hearing": hearing,
                "listeners": len(listeners)}
    finally:
        for g in guests:
            await g.close()
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("edge", "server", "both"), default="both")
    ap.add_argument("-n", type=int, default=10, help="browser participants (at most ~50 on a shared machine)")
    ap.add_argument("--room", type=int, default=5, help="participants per conference")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--one-talker", action="store_true",
                    help="one talker per conference, the others silent (listeners share one Opus encode)")
    args = ap.parse_args()
    if args.mode in ("edge", "both"):
        r = asyncio.run(bench_edge(args.n, args.room, args.seconds, args.one_talker))
        print(f"edge   n={r['n']:3d}: {r['cpu_us_per_pt']:.1f} us CPU per participant-tick "
              f"(mixer tick work {r['tick_work_us_per_pt']:.1f} us), {r['frames_out_per_tick']:.3f} frames "
              f"out per participant per tick over {r['ticks']} ticks")
    if args.mode in ("server", "both"):
        r = asyncio.run(bench_server(args.n, args.room, args.seconds, args.one_talker))
        print(f"server n={r['n']:3d}: {r['us_per_pt']:.0f} us CPU per browser-tick "
              f"(server {r['busy_cores'] * 100:.1f} % of a core with them, {r['idle_cores'] * 100:.1f} % idle; "
              f"{r['frames_heard_per_s']:.1f} frames/s heard per browser, {r['hearing']}/{r['listeners']} "
              f"listeners hearing a talker)")


if __name__ == "__main__":
    main()
