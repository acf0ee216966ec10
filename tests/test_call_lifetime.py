"""An ended call is freed by reference counting, not left to the cyclic GC
(issue 15). A call gave its endpoint its own bound method (on_digit) and a
lambda holding it (on_timeout), so every ended call stayed as a reference
cycle -- Call, RtpEndpoint, two socket objects, jitter buffer, digit
collector, task, ~35 objects -- until a full collection. Under churn (40
calls/s) those collections found 50,000 such objects at a time and stopped
the event loop, mixer tick included, for up to 130 ms.

These tests run with the cyclic GC disabled: what is still alive after the
call ended was held by a cycle (or a real leak)."""

from __future__ import annotations

import asyncio
import gc
import time
import tomllib
import weakref

import numpy as np

from mixer.engine import MediaEngine
from phone import TestPhone
from sipconf.config import parse_config
from support import PASSWORDS, free_port, free_rtp_range, office_config


class _Owner:
    """What a call is to its endpoint: it holds the endpoint, and the
    endpoint's callbacks hold it."""

    def __init__(self, engine: MediaEngine) -> None:
        self.digits: list[str] = []
        self.endpoint = engine.open_endpoint(0, codec="PCMU", payload_type=0, telephone_event_pt=101, remote=None,
                                             on_digit=self.on_digit, rtp_timeout=30,
                                             on_timeout=lambda: self.on_digit("timeout"))

    def on_digit(self, digit: str) -> None:
        self.digits.append(digit)


async def test_closed_endpoint_lets_its_owner_go_without_the_gc():
    engine = MediaEngine("127.0.0.1")
    engine.start()
    gc.disable()
    try:
        owner = _Owner(engine)
        conference = engine.new_conference()
        conference.add(owner.endpoint)
        owner.endpoint.play(np.zeros(800, dtype=np.int16), on_done=lambda: owner.on_digit("done"))
        await asyncio.sleep(0.05)  # a few ticks with it in the mix
        owner_ref = weakref.ref(owner)  # (an RtpEndpoint has slots and no weak references)
        owner.endpoint.close()
        del owner
        await asyncio.sleep(0.05)  # the engine lays its rows out again without it
        assert owner_ref() is None, [type(r).__name__ for r in gc.get_referrers(owner_ref())]
    finally:
        gc.enable()
        await engine.close()


def _config(sip_port: int, rtp: tuple[int, int]) -> dict:
    return tomllib.loads(office_config(server={"bind": "127.0.0.1", "sip_port": sip_port,
                                               "rtp_ports": f"{rtp[0]}-{rtp[1]}", "language": "en"}))


async def test_ended_calls_are_freed_without_the_gc():
    """The real server in this process, real calls from the test phone over
    loopback: one that joins the conference and hangs up, one that hangs up
    at the PIN prompt (its flow task is cancelled)."""
    from sipconf.server import SipServer

    sip_port = free_port()
    server = SipServer(parse_config(_config(sip_port, free_rtp_range(20))))
    await server.start()
    calls: list[weakref.ref] = []
    new_call = server._new_call

    def spy(*args, **kwargs):
        call = new_call(*args, **kwargs)
        if call is not None:
            calls.append(weakref.ref(call))
        return call

    server._new_call = spy

    def dial(digits: str) -> None:
        phone = TestPhone(("127.0.0.1", sip_port), user="101", password=PASSWORDS["101"])
        try:
            assert phone.call("800").status == 200
            phone.wait_for_rtp(3, timeout=3)
            phone.send_dtmf(digits)
            phone.send_tone(440)
            time.sleep(1.5)
            assert phone.hangup().status == 200
        finally:
            phone.close(hangup=False)

    gc.collect()
    gc.disable()
    try:
        await asyncio.to_thread(dial, "1234#4321#")  # joins
        await asyncio.to_thread(dial, "1234#")       # hangs up at the PIN prompt
        for _ in range(50):  # the flows' tasks finish their cancellation, the engine its layout
            await asyncio.sleep(0.02)
        assert len(calls) == 2 and not server.calls
        alive = [ref() for ref in calls if ref() is not None]
        assert not alive, [(c.call_id, c.state, [type(r).__name__ for r in gc.get_referrers(c)]) for c in alive]
    finally:
        gc.enable()
        await server.shutdown()
