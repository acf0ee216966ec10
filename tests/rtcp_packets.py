"""RTCP packets as phones send them (RFC 3550 6.4, 6.5), for the tests."""

from __future__ import annotations

import struct
import time


def receiver_report(ssrc: int) -> bytes:
    """An empty RR (no report blocks), the smallest packet a quiet phone sends."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def sdes_cname(ssrc: int, cname: str) -> bytes:
    text = cname.encode()
    chunk = struct.pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"  # CNAME item, then END
    chunk += b"\x00" * (-len(chunk) % 4)
    return struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk


def sender_report(ssrc: int, rtp_ts: int = 0, packets: int = 0, octets: int = 0) -> bytes:
    """An SR without report blocks."""
    ntp = time.time() + 2208988800
    seconds = int(ntp)
    fraction = int((ntp - seconds) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, seconds & 0xFFFFFFFF, fraction,
                       rtp_ts & 0xFFFFFFFF, packets, octets)


def compound(ssrc: int, *, sender: bool = False, cname: str = "phone@127.0.0.1") -> bytes:
    """SR or RR followed by SDES CNAME: the compound packet RFC 3550 6.1 asks for."""
    first = sender_report(ssrc) if sender else receiver_report(ssrc)
    return first + sdes_cname(ssrc, cname)
