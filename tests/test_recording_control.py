"""start_recording / stop_recording, as the moderator's *7 and the admin API
call them: the real SipServer on its own event loop in a thread (the same
object ``sipconf serve`` runs), test phones over real UDP sockets.

Checks the state answers, the spoken notices both ways, the events on the
EventBus, and the file written between the two calls.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mixer.sounds import load_prompt
from phone import TestPhone
from recording_support import decode, tone_level
from sipconf.config import parse_config
from support import PASSWORDS, free_port, free_rtp_range, wait_until
from test_recording_integration import _notch, prompt_match

TONES = {"101": 440.0, "102": 660.0}


class ThreadedServer:
    """A SipServer on an event loop of its own thread; ``run(fn)`` calls fn there."""

    def __init__(self, config) -> None:
        from sipconf.server import SipServer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sipconf test server", daemon=True)
        self.thread.start()
        self.server = SipServer(config)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def run(self, fn, *args):
        async def call():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5)

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture
def threaded(tmp_path):
    low, high = free_rtp_range()
    port = free_port()
    while low <= port <= high + 1:
        port = free_port()
    config = parse_config({
        "server": {"sip_port": port, "rtp_ports": f"{low}-{high}", "language": "en"},
        "extensions": [{"number": u, "password": PASSWORDS[u]} for u in ("101", "102")],
        "rooms": [{"extension": "800", "conferences": [{"id": "5678", "pin": "8765"}]}],
        "recording": {"directory": str(tmp_path / "rec"), "format": "ogg"},
    })
    server = ThreadedServer(config)
    yield server
    server.close()


def join(threaded: ThreadedServer, phone: TestPhone) -> None:
    server = threaded.server
    before = threaded.run(lambda: server.conferences.participants)
    assert phone.call("800").status == 200
    assert phone.wait_for_rtp(5, timeout=3)
    time.sleep(0.2)
    phone.send_dtmf("5678#8765#")
    assert wait_until(lambda: threaded.run(lambda: server.conferences.participants) > before, 10)


def heard(phone: TestPhone, prompt: str, other_tone: float, since: float) -> float:
    pcm = load_prompt("en", prompt)
    return prompt_match(_notch(phone.received_audio(since=since), other_tone), _notch(pcm, other_tone))


@pytest.mark.integration
def test_start_and_stop_recording_by_call(threaded, tmp_path):
    server = threaded.server
    recordings = server.recordings
    events: list[dict] = []
    threaded.run(server.events.subscribe, events.append)
    # nobody in the conference: nothing to record
    assert threaded.run(recordings.start_recording, "800", "5678") is False
    a = TestPhone(("127.0.0.1", server.config.server.sip_port), user="101", password=PASSWORDS["101"])
    b = TestPhone(("127.0.0.1", server.config.server.sip_port), user="102", password=PASSWORDS["102"])
    try:
        join(threaded, a)
        a.send_tone(TONES["101"])
        join(threaded, b)
        b.send_tone(TONES["102"])
        time.sleep(2.0)  # a's "first participant" is over
        assert threaded.run(recordings.recording, "800", "5678") is False
        started_at = time.monotonic()
        assert threaded.run(recordings.start_recording, "800", "5678") is True
        assert threaded.run(recordings.start_recording, "800", "5678") is True  # already: same state
        assert threaded.run(recordings.recording, "800", "5678") is True
        time.sleep(3.0)
        for phone, other in ((a, TONES["102"]), (b, TONES["101"])):
            assert heard(phone, "recording_started", other, started_at - 0.1) > 0.6
        stopped_at = time.monotonic()
        assert threaded.run(recordings.stop_recording, "800", "5678") is False
        span = stopped_at - started_at
        assert threaded.run(recordings.recording, "800", "5678") is False
        assert threaded.run(recordings.stop_recording, "800", "5678") is False  # already stopped
        time.sleep(2.0)
        for phone, other in ((a, TONES["102"]), (b, TONES["101"])):
            assert heard(phone, "recording_stopped", other, stopped_at - 0.1) > 0.6
            assert phone.hears(other)  # the call goes on
        # a second recording of the same conference (as *7 does it): a file of its own
        assert threaded.run(recordings.toggle_recording, "800", "5678") is True
        time.sleep(0.5)
    finally:
        a.close()
        b.close()
    assert wait_until(lambda: threaded.run(recordings.recording, "800", "5678") is False, 5)
    names = [(e["event"], e.get("room"), e.get("conference"), e.get("reason")) for e in events
             if e["event"].startswith("recording_")]
    assert names == [("recording_started", "800", "5678", None), ("recording_stopped", "800", "5678", "stopped"),
                     ("recording_started", "800", "5678", None),
                     ("recording_stopped", "800", "5678", "conference ended")]
    files = sorted((tmp_path / "rec").glob("800-5678-*.ogg"), key=lambda p: p.stat().st_mtime)
    assert len(files) == 2, files
    assert wait_until(lambda: all(f.stat().st_size > 0 for f in files), 5)
    time.sleep(0.3)
    samples, rate = decode(files[0])
    assert abs(len(samples) / rate - span) < 0.4, (len(samples) / rate, span)
    for hz in TONES.values():
        assert tone_level(samples[int(0.5 * rate):int(2.5 * rate)], rate, hz) > 6000
