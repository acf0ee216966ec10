"""The RTP port pool against the real server: a port of the range that
another program holds for a while is skipped, not lost (issue 15: each
"RTP port N unusable" used to take that port out of the pool for good)."""

from __future__ import annotations

import socket

from phone import TestPhone
from support import free_rtp_range, wait_until

ALICE = dict(user="101", password="alice-secret")


def phone(server) -> TestPhone:
    return TestPhone(("127.0.0.1", server.sip_port), **ALICE)


def test_port_busy_elsewhere_goes_back_to_the_pool(make_server):
    # Room for exactly two calls (even ports low and low + 2, RTCP above each).
    low = free_rtp_range(10)[0]
    server = make_server(None, rtp_low=low, rtp_high=low + 3)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        squatter.bind(("127.0.0.1", low))  # the first port the pool hands out
        with phone(server) as first:
            assert first.call("800").status == 200
            assert first.remote_rtp[1] == low + 2  # the busy one was skipped
            assert wait_until(lambda: f"RTP port {low} unusable" in server.log(), 3), server.log()
            first.hangup()
    finally:
        squatter.close()
    # The other program is gone: both ports serve two calls at once again.
    with phone(server) as a, phone(server) as b:
        assert a.call("800").status == 200
        assert b.call("800").status == 200, server.log()[-2000:]
        assert {a.remote_rtp[1], b.remote_rtp[1]} == {low, low + 2}
        a.hangup()
        b.hangup()
    assert server.alive()
