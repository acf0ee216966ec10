"""RTCP from the call's peer counts as activity for ``rtp_timeout`` (SPEC 5).

A phone with voice-activity detection (Twinkle, many desk phones) stops RTP
while its user is quiet and sends only RTCP every few seconds; it must not be
hung up. Junk on the RTCP port, or RTCP from some other host, must not keep a
dead call up. Real server subprocess, test phone over loopback UDP.
"""

from __future__ import annotations

import re
import socket
import struct
import time

import pytest

from phone import TestPhone
from rtcp_packets import compound, receiver_report
from support import PASSWORDS, office_config

RTP_TIMEOUT = 3
RTCP_INTERVAL = 2.0
QUIET_FOR = 10.0  # > 3 x rtp_timeout of RTCP only


@pytest.fixture
def server(make_server):
    return make_server(office_config(server={"rtp_timeout": RTP_TIMEOUT, "language": "en"},
                                     extensions=("101",)))


def rtcp_socket(host: str, rtp_port: int) -> socket.socket:
    """The phone's RTCP socket: RTP port + 1 on its host (any port if taken)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((host, rtp_port + 1))
    except OSError:
        s.bind((host, 0))
    return s


def server_rtcp(phone: TestPhone) -> tuple[str, int]:
    host, port = phone.remote_rtp
    return host, port + 1


def bye_within(phone: TestPhone, start: float, seconds: float) -> float | None:
    """Seconds from ``start`` to the server's BYE, if it comes by ``start + seconds``."""
    if phone.wait_for_bye(max(0.0, start + seconds - time.monotonic())):
        return time.monotonic() - start
    return None


@pytest.mark.parametrize("case", ["stops_rtp", "never_sends_rtp", "nat_latched"])
def test_rtcp_only_keeps_the_call_up_then_bye_when_it_stops(server, case):
    # nat_latched: the SDP names another host, so only the latched RTP source
    # identifies the peer (a phone behind NAT); never_sends_rtp: only the SDP does.
    advertise = ("127.0.0.99", 40000) if case == "nat_latched" else None
    with TestPhone(("127.0.0.1", server.sip_port), user="101", password=PASSWORDS["101"],
                   auto_media=False, advertise_rtp=advertise) as phone, \
            rtcp_socket("127.0.0.1", phone.rtp_port) as rtcp:
        assert phone.call("800").status == 200
        destination = server_rtcp(phone)
        if case != "never_sends_rtp":
            phone.send_tone(None)   # silence frames: the phone is talking
            assert phone.wait_for_rtp(10, timeout=3)
            time.sleep(1.0)
            phone.stop_audio()      # voice-activity detection: quiet from now on
        quiet_since = time.monotonic()
        sent = 0
        while time.monotonic() - quiet_since < QUIET_FOR:
            assert not phone.wait_for_bye(0), f"hung up after {time.monotonic() - quiet_since:.1f} s of RTCP only"
            rtcp.sendto(compound(phone.ssrc, sender=sent % 2 == 1), destination)
            last_rtcp = time.monotonic()
            sent += 1
            phone.wait_for_bye(RTCP_INTERVAL)
        assert not phone.wait_for_bye(0), "hung up although RTCP kept coming"
        assert phone.dialog_up
        # RTCP stops too: now the timeout applies, with a BYE.
        elapsed = bye_within(phone, last_rtcp, RTP_TIMEOUT + 3)
        assert elapsed is not None, "no BYE once RTCP stopped too"
        assert elapsed >= RTP_TIMEOUT - 0.5, elapsed
    log = server.log()
    assert f"no RTP for {RTP_TIMEOUT} s; BYE sent" in log
    assert "not RTCP from the call's peer" not in log


def test_junk_on_the_rtcp_port_does_not_keep_the_call_up(server):
    with TestPhone(("127.0.0.1", server.sip_port), user="101", password=PASSWORDS["101"],
                   auto_media=False) as phone, \
            rtcp_socket("127.0.0.1", phone.rtp_port) as rtcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.77", 0))
        assert phone.call("800").status == 200
        destination = server_rtcp(phone)
        phone.send_tone(None)
        assert phone.wait_for_rtp(10, timeout=3)
        time.sleep(0.5)
        phone.stop_audio()
        quiet_since = time.monotonic()
        junk = [
            b"keep-alive",                                               # not RTCP at all
            struct.pack("!BBHII", 0x80, 0, 1, 160, phone.ssrc) + b"\xff" * 160,  # RTP on the RTCP port
            struct.pack("!BBHI", 0x80, 201, 7, phone.ssrc),              # RR whose length runs past the end
            struct.pack("!BBHI", 0x80, 199, 1, phone.ssrc),              # PT outside 200-207
            struct.pack("!BBHI", 0x40, 201, 1, phone.ssrc),              # version 1
        ]
        elapsed = None
        for i in range(int((RTP_TIMEOUT + 4) / 0.25)):
            rtcp.sendto(junk[i % len(junk)], destination)                # junk from the peer's own host
            stranger.sendto(receiver_report(0x5EED), destination)        # real RTCP, wrong host
            if phone.wait_for_bye(0.25):
                elapsed = time.monotonic() - quiet_since
                break
        assert elapsed is not None, "junk on the RTCP port kept the call up"
        assert RTP_TIMEOUT - 0.5 <= elapsed <= RTP_TIMEOUT + 2.5, elapsed
    log = server.log()
    assert f"no RTP for {RTP_TIMEOUT} s; BYE sent" in log
    # logged once per call, not once per datagram
    assert len(re.findall(r"not RTCP from the call's peer", log)) == 1, log
