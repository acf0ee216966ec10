"""SRTP (RFC 3711) around one RTP endpoint, through libsrtp (pylibsrtp).

Chosen once when a call is set up (``SrtpStream.attach``): the endpoint's
bound receive and send functions are replaced by ones that unprotect what
is read and protect what is sent. Plain-RTP endpoints keep the socket's own
bound methods, so the plain fast path in ``engine._receive_all`` gains no
per-packet test; an SRTP packet, once unprotected in the shared receive
buffer, takes that same fast path.

libsrtp is called through pylibsrtp's cffi binding directly on the
engine's receive buffer and on a per-stream send buffer, so a packet costs
the libsrtp call and no Python object: ``Session.protect``/``unprotect``
would copy each packet into and out of Python ``bytes`` (measured in
``scripts/bench_srtp.py``).

Packets that fail authentication or the replay check, and truncated ones,
are dropped and counted (``SrtpCounters``), never mixed.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Callable

from pylibsrtp import Error as SrtpError, Policy, Session, ffi, lib

__all__ = ["SUITES", "SrtpCounters", "SrtpStream", "key_length"]

#: SDES crypto-suite name (RFC 4568 6.2) -> libsrtp profile.
SUITES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
_MASTER_LENGTH = 30  # 16-byte AES-128 master key + 14-byte master salt, both suites
_BUFFER = 2048       # larger than any datagram the engine reads plus the SRTP trailer
_SKIP = 64           # bad packets skipped per read (as engine.JUNK_SKIP): a flood cannot starve the call
_OK = lib.srtp_err_status_ok


def key_length(suite: str) -> int:
    """Bytes of master key + salt that ``suite`` takes (SDES inline key)."""
    if suite not in SUITES:
        raise ValueError(f"unsupported SRTP suite {suite!r}")
    return _MASTER_LENGTH


@dataclass
class SrtpCounters:
    """Shared by every stream of a server: what /metrics reports."""

    dropped: int = 0       # SRTP packets failing authentication, replay or length checks
    rtcp_dropped: int = 0  # SRTCP packets failing their checks
    rtcp_in: int = 0       # SRTCP packets accepted


class SrtpStream:
    """The two SRTP sessions of one call: ``rx`` with the peer's key (the
    offer's a=crypto), ``tx`` with ours (the answer's)."""

    def __init__(self, suite: str, rx_key: bytes, tx_key: bytes, counters: SrtpCounters) -> None:
        profile = SUITES[suite]
        self.suite = suite
        self.rx_key = rx_key
        self.tx_key = tx_key
        self.counters = counters
        rx = Policy(key=rx_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        tx = Policy(key=tx_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        # Our sequence numbers restart at the same value after a hold (unsent
        # rows step back): libsrtp must not refuse a repeated index on send.
        tx.allow_repeat_tx = True
        self._rx = Session(rx)
        self._tx = Session(tx)
        self._txbuf = bytearray(_BUFFER)
        self._txmv = memoryview(self._txbuf)
        self._txc = ffi.from_buffer(self._txbuf)
        self._rtcpbuf = bytearray(_BUFFER)
        self._rtcpc = ffi.from_buffer(self._rtcpbuf)
        self._len = ffi.new("int *")

    # -- wiring into an endpoint (once per call, and again on a rekey) --------------------------
    def attach(self, endpoint) -> None:
        """Make ``endpoint`` (a mixer.engine.RtpEndpoint) speak SRTP: its
        receive function unprotects in place in the engine's shared buffer,
        its send function protects, and SRTCP is checked. Attaching a new
        stream (re-INVITE with a new key) replaces the old one."""
        sock: socket.socket = endpoint._sock
        # a connected socket (engine._connect_latched) is made again with
        # this stream's functions around it
        endpoint._engine._reconnect(endpoint)
        endpoint._recv_into = self.receiver(sock.recvfrom_into, endpoint._rxbuf)
        endpoint._sendto = self.sender(sock.sendto)
        endpoint.srtp = self
        endpoint._engine._sends_dirty = True  # the send list holds the bound send function
        rtcp = endpoint._rtcp
        try:
            endpoint._loop.remove_reader(rtcp.fileno())
            endpoint._loop.add_reader(rtcp.fileno(), self._on_rtcp, rtcp)
        except (ValueError, OSError):
            pass

    @staticmethod
    def detach(endpoint) -> None:
        """Back to plain RTP (a re-INVITE offered RTP/AVP)."""
        sock: socket.socket = endpoint._sock
        endpoint._recv_into = sock.recvfrom_into
        endpoint._sendto = sock.sendto
        endpoint.srtp = None
        endpoint._engine._sends_dirty = True
        endpoint._engine._reconnect(endpoint)  # plain functions on the connected socket
        rtcp = endpoint._rtcp
        try:
            endpoint._loop.remove_reader(rtcp.fileno())
            endpoint._loop.add_reader(rtcp.fileno(), endpoint._on_rtcp)
        except (ValueError, OSError):
            pass

    def receiver(self, recvfrom_into: Callable, buf: bytearray) -> Callable:
        """A ``recvfrom_into(buf)`` stand-in returning the *unprotected*
        length. Packets that fail are counted and skipped (up to _SKIP per
        call); when nothing good is left it raises what the socket raises
        (BlockingIOError), which the engine takes as "nothing read"."""
        cbuf = ffi.from_buffer(buf)
        length = ffi.new("int *")
        unprotect = lib.srtp_unprotect
        session = self._rx._srtp[0]
        counters = self.counters

        def recv_into(_buf) -> tuple[int, object]:
            for _ in range(_SKIP):
                n, addr = recvfrom_into(buf)
                length[0] = n
                # libsrtp checks the length, the tag and the replay window
                # before it decrypts in place.
                if n >= 12 and unprotect(session, cbuf, length) == _OK:
                    return length[0], addr
                counters.dropped += 1
            raise BlockingIOError("only bad SRTP packets")

        return recv_into

    def connected_receiver(self, recv_into: Callable, buf: bytearray) -> Callable:
        """``receiver`` for a socket connected to the phone: a ``recv_into(target)``
        stand-in returning the unprotected length."""
        cbuf = ffi.from_buffer(buf)
        bufmv = memoryview(buf)
        length = ffi.new("int *")
        unprotect = lib.srtp_unprotect
        session = self._rx._srtp[0]
        counters = self.counters

        def recv(target) -> int:
            """Unprotected in ``buf``, then copied to ``target`` if that is
            another buffer (the engine's landing block, MediaEngine._receive_all)."""
            for _ in range(_SKIP):
                n = recv_into(buf)
                length[0] = n
                if n >= 12 and unprotect(session, cbuf, length) == _OK:
                    n = length[0]
                    if target is not buf:
                        target[:n] = bufmv[:n]
                    return n
                counters.dropped += 1
            raise BlockingIOError("only bad SRTP packets")

        return recv

    def connected_sender(self, send: Callable) -> Callable:
        """``sender`` for a connected socket: ``send(packet)`` protected."""
        txbuf, txmv, txc, length = self._txbuf, self._txmv, self._txc, self._len
        protect = lib.srtp_protect
        session = self._tx._srtp[0]

        def send_protected(packet) -> int:
            n = len(packet)
            txbuf[:n] = packet
            length[0] = n
            if protect(session, txc, length) != _OK:
                raise OSError("SRTP protect failed")
            return send(txmv[:length[0]])

        return send_protected

    def sender(self, sendto: Callable) -> Callable:
        """A ``sendto(packet, dest)`` stand-in that sends the packet protected."""
        txbuf, txmv, txc, length = self._txbuf, self._txmv, self._txc, self._len
        protect = lib.srtp_protect
        session = self._tx._srtp[0]

        def send(packet, dest) -> int:
            n = len(packet)
            txbuf[:n] = packet
            length[0] = n
            if protect(session, txc, length) != _OK:
                raise OSError("SRTP protect failed")
            return sendto(txmv[:length[0]], dest)

        return send

    # -- SRTCP (a few packets a second: off the hot path) ---------------------------------------
    def _on_rtcp(self, sock: socket.socket) -> None:
        counters = self.counters
        for _ in range(_SKIP):
            try:
                n = sock.recv_into(self._rtcpbuf)
            except OSError:  # BlockingIOError included
                return
            self._len[0] = n
            if n >= 8 and lib.srtp_unprotect_rtcp(self._rx._srtp[0], self._rtcpc, self._len) == _OK:
                counters.rtcp_in += 1
            else:
                counters.rtcp_dropped += 1

    # -- for tools and tests (bytes in, bytes out) ----------------------------------------------
    def protect(self, packet: bytes) -> bytes:
        return self._tx.protect(bytes(packet))

    def unprotect(self, packet: bytes) -> bytes:
        """Raises ``SrtpError`` when the packet fails its checks."""
        return self._rx.unprotect(bytes(packet))


__all__.append("SrtpError")
