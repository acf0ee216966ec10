"""Faults (issue #6): SIP over a lossy, reordering path still completes
through retransmissions, and a withheld ACK ends the call by Timer H.

The relay (``tests/relay.py``) drops 15% of the datagrams in each direction
and delays/reorders 10% of the rest, from a seeded RNG; a test phone
registers and makes several calls through it (407 + INVITE + ACK, then BYE):
every one completes. Without the server's retransmissions (2xx until ACK,
non-2xx finals until ACK, the last answer to a retransmitted request) some
would time out. Only SIP goes through the relay; RTP flows directly."""

from __future__ import annotations

import re
import secrets
import socket
import time

import pytest

from phone import TestPhone
from relay import LossyRelay
from support import ServerProcess, office_config, wait_until

CONFIG = office_config(server={"language": "en", "rtp_timeout": 60}, extensions=("101",), room_name=None,
                       room_numbers=())

LOSS = 0.15
CALLS = 8
REGISTERS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("faults"), config_text=CONFIG).start()
    yield server
    server.stop()


def test_relay_drops_and_reorders_about_the_given_fraction():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(0.5)
        with LossyRelay(sink.getsockname(), loss=0.2, reorder=0.2, max_delay=0.05, seed=1) as relay:
            sent, got = 1000, []

            def drain(wait: float) -> None:
                sink.settimeout(wait)
                while True:
                    try:
                        got.append(int.from_bytes(sink.recv(16), "big"))
                    except socket.timeout:
                        return

            for i in range(sent):
                client.sendto(i.to_bytes(4, "big"), relay.address)
                if i % 20 == 19:
                    drain(0.01)  # stay well inside the socket buffers
            drain(0.5)
            stats = relay.stats()
        assert stats["dropped"]["up"] + len(got) == sent
        assert 0.14 * sent < stats["dropped"]["up"] < 0.26 * sent, stats
        assert stats["delayed"]["up"] > 0.1 * sent, stats
        assert got != sorted(got), "nothing was reordered"


def test_register_and_calls_complete_over_lossy_relay(server):
    log_before = server.log()
    with LossyRelay(("127.0.0.1", server.sip_port), loss=LOSS, reorder=0.1, seed=6) as relay:
        with TestPhone(relay.address, user="101", password="alice-secret") as p:
            for _ in range(REGISTERS):
                answer = p.register(timeout=20)
                assert answer.status == 200, answer
            call_ids = []
            for _ in range(CALLS):
                answer = p.call("800", timeout=20)
                assert answer.status == 200, answer
                call_ids.append(p.call_id)
                time.sleep(0.3)
                bye = p.hangup(timeout=20)
                assert bye.status == 200, bye
        stats = relay.stats()
    # the 200 to the last BYE leaves before its line is written
    wait_until(lambda: f"call {call_ids[-1]}: ended" in server.log(), 5)
    log = server.log()[len(log_before):]
    for call_id in call_ids:
        assert f"call {call_id}: ended: caller hung up (BYE)" in log, log[-3000:]
    assert "no ACK" not in log
    # The loss really hit the signalling, both ways.
    assert stats["dropped"]["up"] >= 3 and stats["dropped"]["down"] >= 3, stats
    assert stats["delayed"]["up"] + stats["delayed"]["down"] >= 3, stats


def test_withheld_ack_ends_call_by_timer_h_with_bye(server):
    """INVITE from the trusted trunk address, never ACKed: the 200 is
    retransmitted (T1 doubling to T2) and after 64*T1 = 32 s the server
    gives up on the call with a BYE."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.2", 0))
        port = sock.getsockname()[1]
        call_id = secrets.token_hex(8) + "@127.0.0.2"
        sdp = ("v=0\r\no=trunk 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
               f"m=audio {port + 2} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
               "a=rtpmap:101 telephone-event/8000\r\n").encode()
        invite = (f"INVITE sip:800@127.0.0.1:{server.sip_port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
                  "Max-Forwards: 70\r\n"
                  f"From: <sip:+33611223344@provider.example>;tag={secrets.token_hex(4)}\r\n"
                  "To: <sip:800@office.local>\r\n"
                  f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: <sip:trunk@127.0.0.2:{port}>\r\n"
                  f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n").encode() + sdp
        sock.sendto(invite, ("127.0.0.1", server.sip_port))
        sock.settimeout(0.5)
        oks, bye, started = 0, None, time.monotonic()
        while bye is None and time.monotonic() - started < 45:
            try:
                data, source = sock.recvfrom(65535)
            except socket.timeout:
                continue
            first = data.split(b"\r\n", 1)[0]
            if first.startswith(b"SIP/2.0 200") and b"INVITE" in data.split(b"CSeq:", 1)[1].split(b"\r\n", 1)[0]:
                oks += 1
            elif first.startswith(b"BYE "):
                bye = data
                # answer it: copy Via/From/To/Call-ID/CSeq
                headers = [line for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
                           if line.split(b":", 1)[0].strip().lower() in (b"via", b"from", b"to", b"call-id", b"cseq")]
                sock.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(headers) + b"\r\nContent-Length: 0\r\n\r\n", source)
        assert bye is not None, server.log()[-3000:]
        assert f"Call-ID: {call_id}".encode() in bye
        # T1 = 0.5 s doubling to T2 = 4 s over 32 s: 0.5, 1.5, 3.5, 7.5, 11.5, ... 31.5 -> 10 copies.
        assert oks >= 8, oks
        # the BYE leaves before the "ended" line is written: give the log a moment
        assert wait_until(lambda: re.search(rf"call {re.escape(call_id)}: ended: no ACK for 200 OK \(Timer H\); "
                                            r"BYE sent", server.log()), 3), server.log()[-3000:]


test_withheld_ack_ends_call_by_timer_h_with_bye = pytest.mark.slow(test_withheld_ack_ends_call_by_timer_h_with_bye)
