"""Recognising RTCP (RFC 3550 section 6, RFC 5506 reduced-size) well enough to
count it as a sign of life from a call's peer.

We do not interpret reports; we only need to tell a real RTCP packet from junk
on the RTCP port, so that a phone with voice-activity detection -- which sends
no RTP while its user is quiet, only RTCP every few seconds (RFC 3550 6.3.5) --
is not hung up by the RTP timeout, while random datagrams cannot keep a dead
call up. RTCP arrives a few times a second per call at most, off the RTP fast
path, so a plain Python walk over the compound packet is cheap enough.
"""

from __future__ import annotations

#: RTCP packet types (RFC 3550 12.1 and later registrations): SR 200, RR 201,
#: SDES 202, BYE 203, APP 204, RTPFB 205, PSFB 206, XR 207.
RTCP_PT_MIN = 200
RTCP_PT_MAX = 207
#: Compound packets carry a handful of sub-packets (SR/RR, SDES, maybe XR or
#: BYE); more than this is not something a phone sends.
MAX_SUBPACKETS = 16


def same_host(a: str, b: str) -> bool:
    """``a`` and ``b`` name the same host, an IPv4 peer seen through a
    dual-stack socket (``::ffff:192.0.2.1``) included."""
    if a == b:
        return True
    return a.removeprefix("::ffff:") == b.removeprefix("::ffff:")


def is_rtcp(data: bytes) -> bool:
    """True when ``data`` is a well-formed RTCP packet, compound or reduced-size:
    every sub-packet has version 2, a packet type of 200-207 and a length
    field that keeps it inside the datagram, and the lengths add up to the
    datagram exactly (RFC 3550 A.2's validity check, without requiring SR/RR
    first, which RFC 5506 relaxes). Only the last sub-packet may be padded."""
    n = len(data)
    if n < 4 or n % 4:
        return False
    pos = 0
    for _ in range(MAX_SUBPACKETS):
        b0 = data[pos]
        pt = data[pos + 1]
        if b0 & 0xC0 != 0x80 or not RTCP_PT_MIN <= pt <= RTCP_PT_MAX:
            return False
        end = pos + 4 * (((data[pos + 2] << 8) | data[pos + 3]) + 1)
        if end > n:
            return False
        if end == n:
            # padding (P bit): the last octet counts the padding octets, which
            # must fit inside this sub-packet after its 4-octet header
            return not b0 & 0x20 or 0 < data[n - 1] <= end - pos - 4
        if b0 & 0x20:
            return False  # padding anywhere but on the last sub-packet
        pos = end
    return False
