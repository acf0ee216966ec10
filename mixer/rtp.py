"""RTP (RFC 3550) header parsing/building and RFC 4733 telephone-event payloads.

Everything uses precompiled ``struct.Struct`` objects; the sender keeps one
preallocated packet buffer and rewrites seq/timestamp in place.
"""

from __future__ import annotations

import random
import struct
from typing import NamedTuple

RTP_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, seq, timestamp, SSRC
TELEPHONE_EVENT = struct.Struct("!BBH")  # event, E/R/volume, duration
HEADER_SIZE = 12

EVENT_DIGITS = "0123456789*#ABCD"


class RtpPacket(NamedTuple):
    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload_start: int  # offsets into the buffer that was parsed
    payload_end: int


def parse(buf: bytes | bytearray | memoryview, length: int | None = None) -> RtpPacket | None:
    """Parse an RTP header; None for anything that is not a valid RTP v2 packet.

    Handles CSRCs, the header extension and padding. The hot path in
    ``engine.py`` inlines the same checks to avoid the NamedTuple.
    """
    n = len(buf) if length is None else length
    if n < HEADER_SIZE:
        return None
    b0, b1, seq, ts, ssrc = RTP_HEADER.unpack_from(buf, 0)
    bounds = payload_bounds(buf, n, b0)
    if bounds is None:
        return None
    return RtpPacket(bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, bounds[0], bounds[1])


def payload_bounds(buf, n: int, b0: int) -> tuple[int, int] | None:
    """(start, end) of the payload, or None when the packet is malformed."""
    if b0 & 0xC0 != 0x80:
        return None
    start = HEADER_SIZE + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if n < start + 4:
            return None
        start += 4 + 4 * ((buf[start + 2] << 8) | buf[start + 3])
    end = n
    if b0 & 0x20:
        pad = buf[n - 1]
        if pad == 0:
            return None
        end -= pad
    if end < start:
        return None
    return start, end


def build(payload_type: int, seq: int, timestamp: int, ssrc: int, payload: bytes = b"", marker: bool = False) -> bytes:
    """One RTP packet as bytes (tests and tools; the sender uses RtpSender)."""
    return RTP_HEADER.pack(0x80, (0x80 if marker else 0) | payload_type, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + bytes(payload)


def initial_seq() -> int:
    """A stream's random first sequence number, in the lower half of the
    space (0..32767), as WebRTC picks it. SRTP needs it (issue 12): a
    receiver takes the rollover counter to be 0 at the first packet it
    hears (RFC 3711 3.3.1), and a call may first hear us many packets late
    (until we latch onto its RTP we send to its SDP address, unreachable
    behind NAT; the load kit's generator joins seconds after the answer).
    Started near 65535, the sequence number would wrap unheard, we would
    protect with ROC 1, and every packet of the call would fail
    authentication at the phone. From below 2^15 no wrap comes for 32,768
    packets (11 minutes). RFC 3550 asks only for a random start."""
    return random.getrandbits(15)


class RtpSender:
    """A preallocated packet (header + one frame) for one outgoing stream."""

    __slots__ = ("buffer", "payload_type", "ssrc", "seq", "_marker")

    def __init__(self, payload_type: int, ssrc: int, seq: int, frame_bytes: int = 160) -> None:
        self.buffer = bytearray(HEADER_SIZE + frame_bytes)
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.seq = seq & 0xFFFF
        self._marker = True  # first packet of the stream

    def next_header(self, timestamp: int) -> bytearray:
        """Write the header for the next packet in place; returns the buffer."""
        b1 = self.payload_type
        if self._marker:
            b1 |= 0x80
            self._marker = False
        RTP_HEADER.pack_into(self.buffer, 0, 0x80, b1, self.seq, timestamp & 0xFFFFFFFF, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        return self.buffer


class TelephoneEvent(NamedTuple):
    event: int
    end: bool
    volume: int
    duration: int


def parse_telephone_event(buf, start: int, end: int) -> TelephoneEvent | None:
    """First event of an RFC 4733 payload; None when too short."""
    if end - start < 4:
        return None
    event, flags, duration = TELEPHONE_EVENT.unpack_from(buf, start)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def build_telephone_event(event: int, end: bool, duration: int, volume: int = 10) -> bytes:
    return TELEPHONE_EVENT.pack(event, (0x80 if end else 0) | (volume & 0x3F), duration & 0xFFFF)


def event_digit(event: int) -> str | None:
    """RFC 4733 DTMF event code -> '0'..'9', '*', '#', 'A'..'D' (None for others)."""
    return EVENT_DIGITS[event] if 0 <= event < 16 else None
