"""Interoperability with pyVoIP (PyPI), a pure-Python softphone library.

pyVoIP 1.6 answers digest challenges the RFC 2069 way (no qop), which the
server accepts for REGISTER; it cannot answer a 407 on INVITE, so it calls
from the trusted trunk address 127.0.0.2, as a small PBX behind a trunk would.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from support import free_port, free_rtp_range

pyVoIP = pytest.importorskip("pyVoIP")
from pyVoIP.VoIP import CallState, PhoneStatus, VoIPPhone  # noqa: E402


def test_pyvoip_registers_calls_a_room_and_hears_the_prompt(demo_server):
    rtp_low, rtp_high = free_rtp_range(20)
    softphone = VoIPPhone("127.0.0.1", demo_server.sip_port, "101", "alice-secret", myIP="127.0.0.2",
                          sipPort=free_port("127.0.0.2"), rtpPortLow=rtp_low, rtpPortHigh=rtp_high)
    softphone.start()
    try:
        deadline = time.monotonic() + 10
        while softphone.get_status() != PhoneStatus.REGISTERED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert softphone.get_status() == PhoneStatus.REGISTERED
        call = softphone.call("800")
        deadline = time.monotonic() + 10
        while call.state != CallState.ANSWERED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert call.state == CallState.ANSWERED
        time.sleep(2.5)  # the "enter the conference ID" prompt is playing
        heard = np.frombuffer(call.read_audio(length=16000, blocking=False), np.uint8).astype(float) - 128
        assert np.sqrt(np.mean(heard ** 2)) > 3, "pyVoIP heard only silence"
        call.hangup()
        deadline = time.monotonic() + 5
        while "caller hung up (BYE)" not in demo_server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        softphone.stop()
    log = demo_server.log()
    assert "register 101: 1 contact from 127.0.0.2" in log
    assert "new call from 101 (trunk provider, 127.0.0.2" in log
    assert "caller hung up (BYE)" in log
