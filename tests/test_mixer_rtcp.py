"""mixer.rtcp.is_rtcp: real RTCP is recognised, junk on the RTCP port is not."""

from __future__ import annotations

import struct

import pytest

from mixer.rtcp import is_rtcp, same_host
from rtcp_packets import compound, receiver_report, sdes_cname, sender_report


@pytest.mark.parametrize("packet", [
    receiver_report(0x1234),                       # reduced-size (RFC 5506) RR
    sender_report(0x1234, 160, 10, 1600),          # SR alone
    compound(0x1234),                              # RR + SDES
    compound(0x1234, sender=True),                 # SR + SDES
    struct.pack("!BBHI", 0x81, 203, 1, 7),         # BYE
    struct.pack("!BBHII", 0x8F, 205, 2, 7, 8),     # RTPFB (generic NACK, FMT 15)
    struct.pack("!BBHI", 0x80, 207, 1, 7),         # XR header
    # padded last sub-packet: RR + 4 octets of padding, the last one counting them
    receiver_report(1) + struct.pack("!BBHI", 0xA0, 201, 2, 2) + b"\x00\x00\x00\x04",
], ids=["rr-reduced", "sr", "rr+sdes", "sr+sdes", "bye", "rtpfb", "xr", "padded"])  # stable ids: SRs hold the clock
def test_well_formed_rtcp(packet):
    assert is_rtcp(packet)


@pytest.mark.parametrize("packet", [
    b"",
    b"\x80\xc9\x00",                                         # shorter than a header
    b"hello world!",                                         # text
    struct.pack("!BBHII", 0x80, 0, 1, 160, 1) + b"\xff" * 160,  # an RTP packet (PCMU)
    struct.pack("!BBHI", 0x40, 201, 1, 7),                   # version 1
    struct.pack("!BBHI", 0x80, 199, 1, 7),                   # PT below the RTCP range
    struct.pack("!BBHI", 0x80, 208, 1, 7),                   # PT above it
    struct.pack("!BBHI", 0x80, 201, 5, 7),                   # length runs past the datagram
    struct.pack("!BBHI", 0x80, 201, 0, 7),                   # length leaves 4 octets over
    receiver_report(1) + b"\x00\x00",                        # not a multiple of 4
    receiver_report(1) + b"\x00\x00\x00\x00",                # trailing garbage
    struct.pack("!BBHI", 0xA0, 201, 1, 7) + receiver_report(1),  # padding on a first sub-packet
    struct.pack("!BBHI", 0xA0, 201, 1, 0),                   # padding count 0
    struct.pack("!BBHI", 0xA0, 201, 1, 9),                   # padding count past the body
    sdes_cname(1, "x")[:-4],                                 # SDES cut short
    receiver_report(1) * 17,                                 # more sub-packets than any phone sends
])
def test_junk_is_not_rtcp(packet):
    assert not is_rtcp(packet)


def test_same_host_sees_through_ipv4_mapped_addresses():
    assert same_host("192.0.2.1", "192.0.2.1")
    assert same_host("::ffff:192.0.2.1", "192.0.2.1") and same_host("192.0.2.1", "::ffff:192.0.2.1")
    assert not same_host("192.0.2.1", "192.0.2.10")
    assert not same_host("::1", "127.0.0.1")
