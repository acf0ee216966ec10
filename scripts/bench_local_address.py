#!/usr/bin/env python3
"""Which local address did a SIP datagram arrive on? Two ways, measured.

A server bound to a wildcard must write, in Via/Contact/SDP, the address the
phone sent to (SPEC section 15). It can read it per datagram (IP_PKTINFO via
recvmsg) or ask the routing table for the address that routes back to the
sender (a connected probe socket's getsockname). This prints the cost of each
per message on loopback and whether each gives the right answer on a host
with two addresses (127.0.0.1 and 127.0.0.9 stand in for two interfaces).

    .venv/bin/python scripts/bench_local_address.py [--count 20000]
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sipconf.netaddr import route_source  # noqa: E402
from sipconf.transport import IP_PKTINFO, _pktinfo_address  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="datagrams per method (default 20000)")
    count = parser.parse_args().count

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", 0))
    server.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    port = server.getsockname()[1]
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    payload = b"OPTIONS sip:x SIP/2.0\r\n" + b"x" * 400

    def run(method: str, target: str) -> tuple[float, str]:
        answer = ""
        started = time.perf_counter()
        for _ in range(count):
            phone.sendto(payload, (target, port))
            if method == "pktinfo":
                _data, ancillary, _flags, _addr = server.recvmsg(65535, 256)
                answer = _pktinfo_address(ancillary)
            else:
                _data, addr = server.recvfrom(65535)
                answer = route_source(addr[0]) or ""
        return (time.perf_counter() - started) / count * 1e6, answer

    print(f"{'method':<10} {'us/datagram (incl. send+recv)':>30}  {'to 127.0.0.1':>14}  {'to 127.0.0.9':>14}")
    for method in ("recvfrom", "pktinfo", "route"):
        if method == "recvfrom":
            cost, _ = run("route", "127.0.0.1")  # warm-up
            started = time.perf_counter()
            for _ in range(count):
                phone.sendto(payload, ("127.0.0.1", port))
                server.recvfrom(65535)
            cost = (time.perf_counter() - started) / count * 1e6
            print(f"{'(baseline)':<10} {cost:>30.2f}  {'-':>14}  {'-':>14}")
            continue
        cost, first = run(method, "127.0.0.1")
        _, second = run(method, "127.0.0.9")
        print(f"{method:<10} {cost:>30.2f}  {first:>14}  {second:>14}")
    print("right answers: 127.0.0.1 then 127.0.0.9 (the address the datagram was sent to)")
    server.close()
    phone.close()


if __name__ == "__main__":
    main()
