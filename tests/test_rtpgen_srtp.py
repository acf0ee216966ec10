"""The load kit's SRTP side (scripts/rtpgen.py, issue 12): the answer keys
read from SIPp's log, and the report naming the calls whose packets fail to
unprotect, with why. Real UDP sockets on loopback; a run takes ~1 s."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

from test_sipp_room import _rtpgen

rtpgen = _rtpgen()


def srtp_stream(key: bytes, first_seq: int, count: int, ssrc: int = 0x5EC0DE) -> list[bytes]:
    """``count`` SRTP packets of one stream protected by one sender from
    ``first_seq`` on (the sender's rollover counter follows the wrap)."""
    tx = rtpgen._srtp_session(key, outbound=True)
    out = []
    for i in range(count):
        packet = struct.pack("!BBHII", 0x80, 8, (first_seq + i) & 0xFFFF, i * 160, ssrc) + b"\xd5" * 160
        out.append(tx.protect(packet))
    return out


def test_diagnosis_tells_a_rollover_from_a_wrong_key():
    key = os.urandom(30)
    packets = srtp_stream(key, 65500, 60)  # wraps after 36 packets: the sender's ROC becomes 1
    assert rtpgen.diagnose_srtp_failure(packets[0], key) == "ok"
    assert rtpgen.diagnose_srtp_failure(packets[50], key) == "roc+1"
    assert rtpgen.diagnose_srtp_failure(packets[50], os.urandom(30)) == "bad key or corrupt"
    assert rtpgen.diagnose_srtp_failure(packets[0][:15], key) == "short"


def test_join_lines_with_keys_are_read_across_partial_writes(tmp_path):
    """SIPp writes "join <port> <key>" lines; a read may end mid-line and a
    base64 key may hold '+' and '/'."""
    keys = {40000: bytes([0xFB] * 30), 40002: bytes(range(30))}  # '+' / '/' and plain letters in base64
    log = tmp_path / "ports.log"
    log.write_text("")
    gen = rtpgen.RtpGenerator(srtp=True, start_delay=60.0)
    try:
        gen.follow(log)
        lines = "".join(f"join {port} {base64.b64encode(key).decode()}\n" for port, key in keys.items())
        assert "+" in lines and "/" in lines
        with open(log, "a") as f:
            f.write(lines[:25])  # stops inside the first key
            f.flush()
            gen._read_log()
            assert gen._srtp_keys == {}
            f.write(lines[25:] + "bye 40000\n")
            f.flush()
        gen._read_log()
        assert gen._srtp_keys == keys
        assert [port for _, port in gen._pending] == [40002]  # 40000 said bye before it started
    finally:
        gen.close()


def test_report_names_the_failing_call_and_why():
    """Two server ports stream to the generator: one it can unprotect, one
    whose sender wrapped before the generator heard it (what silenced 5
    calls of the 500-call run). The report counts the good one's packets
    and names only the other, with every one of its packets and 'roc+1'."""
    servers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    gen = rtpgen.RtpGenerator(srtp=True, start_delay=60.0)  # it never sends: we only test receiving
    try:
        for s in servers:
            s.bind(("127.0.0.1", 0))
        good, wrapped = (s.getsockname()[1] for s in servers)
        keys = {good: os.urandom(30), wrapped: os.urandom(30)}
        for port, key in keys.items():
            gen.add(port, key=key)
        streams = {good: srtp_stream(keys[good], 1000, 20),
                   wrapped: srtp_stream(keys[wrapped], 65500, 100)[80:]}  # heard from seq 44: ROC 1
        for s, port in zip(servers, (good, wrapped)):
            for packet in streams[port]:
                s.sendto(packet, gen.local)
        deadline = time.monotonic() + 5.0
        while gen.received + gen.srtp_failures < 40 and time.monotonic() < deadline:
            gen.run(time.monotonic() + 0.1)
        report = gen.report()
        assert report["received"] == 20 and report["srtp_failures"] == 20
        assert sum(report["bins"][str(good)]) == 20
        failed = report["srtp_failed_ports"]
        assert list(failed) == [str(wrapped)]
        assert failed[str(wrapped)]["failed"] == 20 and failed[str(wrapped)]["received"] == 0
        assert failed[str(wrapped)]["first_bad_seq"] == (65500 + 80) & 0xFFFF
        assert failed[str(wrapped)]["verdict"] == "roc+1"
        assert report["first_rx"][str(good)][1] == 1000
    finally:
        gen.close()
        for s in servers:
            s.close()
