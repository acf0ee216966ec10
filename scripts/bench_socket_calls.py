#!/usr/bin/env python3
"""What Python's socket calls cost over the same calls made in C, per packet.

The server's media I/O is one ``send`` and one ``recv_into`` per participant
per tick (mixer/engine.py); ``scripts/loadtest --floor`` compares the whole
server with a C program making those syscalls (scripts/floor/floor.c). This
benchmark isolates one layer of the difference: N pairs of UDP sockets on
127.0.0.1, one 172-byte packet per pair per round, timed per call, in C
(scripts/floor/socket_calls.c, compiled here with gcc -O2) and in Python
(bound methods over memoryview packets, as the engine calls them), for a
connected sender (the server's path once a phone's address is latched) and
for ``sendto``. The runs alternate C / Python so that drift of a shared
machine hits both.

    scripts/bench_socket_calls.py [--sockets 1000] [--rounds 200] [--repeat 5]

Prints a table of means (and each run's figures with --verbose); loopback only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "floor" / "socket_calls.c"
PACKET = 172


def python_run(n: int, rounds: int, connected: bool) -> dict:
    rx: list[socket.socket] = []
    tx: list[socket.socket] = []
    try:
        for _ in range(n):
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.append(r)
            t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.append(t)
            r.setblocking(False)
            t.setblocking(False)
            r.bind(("127.0.0.1", 0))
            t.bind(("127.0.0.1", 0))
            if connected:
                t.connect(r.getsockname())
        block = memoryview(bytearray(PACKET * n))
        block[0] = 0x80
        views = [block[i * PACKET:(i + 1) * PACKET] for i in range(n)]
        conn_sends = [(t.send, v) for t, v in zip(tx, views)]
        sends = [(t.sendto, v, r.getsockname()) for t, v, r in zip(tx, views, rx)]
        recvs = [r.recv_into for r in rx]
        buf = bytearray(2048)
        send_s = recv_s = 0.0
        sent = received = 0
        clock = time.perf_counter
        for _ in range(rounds):
            t0 = clock()
            if connected:
                for send, packet in conn_sends:
                    sent += send(packet) == PACKET
            else:
                for send, packet, dest in sends:
                    sent += send(packet, dest) == PACKET
            t1 = clock()
            for recv_into in recvs:
                received += recv_into(buf) > 0
            recv_s += clock() - t1
            send_s += t1 - t0
            for r in rx:  # drain, untimed
                try:
                    while r.recv_into(buf):
                        pass
                except BlockingIOError:
                    pass
        calls = n * rounds
        return {"send_us": send_s / calls * 1e6, "recv_us": recv_s / calls * 1e6, "sent": sent, "received": received}
    finally:
        for s in rx + tx:
            s.close()


def c_run(binary: Path, n: int, rounds: int, connected: bool) -> dict:
    out = subprocess.run([str(binary), str(n), str(rounds), "connected" if connected else "sendto"],
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000, help="socket pairs (default 1000)")
    parser.add_argument("--rounds", type=int, default=200, help="packets per pair per run (default 200)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each kind, alternating (default 5)")
    parser.add_argument("--verbose", action="store_true", help="print every run")
    args = parser.parse_args()
    if min(args.sockets, args.rounds, args.repeat) <= 0:
        parser.error("--sockets, --rounds and --repeat must be positive")
    gcc = shutil.which("gcc")
    if gcc is None:
        print("gcc not found (apt-get install gcc)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="sipconf-socket-calls-") as tmp:
        binary = Path(tmp) / "socket_calls"
        subprocess.run([gcc, "-O2", "-o", str(binary), str(SOURCE)], check=True)
        results: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.repeat):
            for connected in (True, False):
                mode = "connected send" if connected else "sendto"
                for lang in ("C", "Python"):
                    figures = (c_run(binary, args.sockets, args.rounds, connected) if lang == "C"
                               else python_run(args.sockets, args.rounds, connected))
                    if figures["sent"] != figures["received"] or figures["sent"] != args.sockets * args.rounds:
                        print(f"{lang} {mode}: {figures['sent']} sent, {figures['received']} received "
                              f"of {args.sockets * args.rounds}: loopback dropped packets", file=sys.stderr)
                        return 1
                    results.setdefault((mode, lang), []).append(figures)
                    if args.verbose:
                        print(f"{mode:15} {lang:6} send {figures['send_us']:.2f} µs  recv {figures['recv_us']:.2f} µs")
    print(f"{args.sockets} socket pairs, {args.rounds} rounds, {args.repeat} runs each (means, µs per call)")
    print(f"{'':15} {'send C':>7} {'send Py':>8} {'extra':>6} {'recv C':>7} {'recv Py':>8} {'extra':>6}")
    for mode in ("connected send", "sendto"):
        c, py = results[(mode, "C")], results[(mode, "Python")]
        sc, sp = (statistics.mean(r["send_us"] for r in x) for x in (c, py))
        rc, rp = (statistics.mean(r["recv_us"] for r in x) for x in (c, py))
        print(f"{mode:15} {sc:7.2f} {sp:8.2f} {sp - sc:+6.2f} {rc:7.2f} {rp:8.2f} {rp - rc:+6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
