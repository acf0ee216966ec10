"""Browser participants (SPEC 14) with a real headless Chromium (Debian's),
driven by Playwright: the /join page joins a conference where the test
phone plays a tone. The phone hears the browser's fake microphone (a tone
WAV, FFT on what the phone receives); the page reports the phone's tone (an
AnalyserNode on the remote stream, read with page.evaluate). Kick from the
API, a DTLS failure, and three wrong PINs are shown on the page."""

from __future__ import annotations

import os
import re
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from phone import TestPhone
from support import PASSWORDS, ServerProcess, wait_until
from webrtc_support import TOKEN, admin_port, http_json, participants, webrtc_config

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")

PHONE_HZ = 660.0
BROWSER_HZ = 1500.0
CONFERENCES = (("1234", "4321"), ("2345", "5432"), ("3456", "6543"))


def tone_wav(path: Path, hz: float, seconds: float = 30.0, rate: int = 48000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    pcm = np.round(8000 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = admin_port()
    # pin_failures 3: the third wrong PIN of the last test bans the address
    s = ServerProcess(tmp_path_factory.mktemp("webrtc-browser"),
                      config_text=webrtc_config(port, conferences=CONFERENCES,
                                                security={"pin_failures": 3, "window": 600, "ban": 900})).start()
    s.admin_port = port
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    wav = tone_wav(tmp_path_factory.mktemp("wav") / "tone.wav", BROWSER_HZ)
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
        ])
        yield b
        b.close()


def _phone_in(server, conference: str, pin: str) -> TestPhone:
    p = TestPhone(("127.0.0.1", server.sip_port), user="101", password=PASSWORDS["101"])
    assert p.call("800").status == 200
    p.wait_for_rtp(5, timeout=3)
    time.sleep(0.3)
    p.send_dtmf(f"{conference}#{pin}#")
    return p


def _open(browser, server):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{server.admin_port}/join")
    return context, page


def _fill(page, room: str, conference: str, pin: str) -> None:
    page.fill("#room", room)
    page.fill("#conference", conference)
    page.fill("#pin", pin)
    page.click("#go")


def _js(page, expression: str):
    return page.evaluate(expression)


def test_browser_joins_and_hears_the_phone_the_phone_hears_the_browser_then_kicked(server, browser):
    port = server.admin_port
    phone = _phone_in(server, "1234", "4321")
    context, page = _open(browser, server)
    try:
        phone.send_tone(PHONE_HZ)
        _fill(page, "800", "1234", "4321")
        assert wait_until(lambda: _js(page, "sipconfJoin.phase") == "joined", 15), \
            (_js(page, "sipconfJoin.message"), server.log()[-3000:])
        people = wait_until(lambda: len(participants(port)) == 2 and participants(port), 5)
        browser_rows = [p for p in people if p["codec"] == "opus/webrtc"]
        assert len(browser_rows) == 1, people
        # the phone hears the browser's fake microphone
        assert wait_until(lambda: phone.hears(BROWSER_HZ, 1.0), 15), server.log()[-3000:]
        # (once the join beep and prompts are over, it is the loudest thing the phone hears)
        assert wait_until(lambda: abs(phone.dominant_frequency(1.0) - BROWSER_HZ) < 20, 10), \
            phone.dominant_frequency(1.0)
        # the page's analyser hears the phone
        assert wait_until(lambda: abs(_js(page, "sipconfJoin.dominantHz()") - PHONE_HZ) < 15, 15), \
            _js(page, "sipconfJoin.dominantHz()")
        # kicked from the API: the page says so and its peer connection is closed
        pid = browser_rows[0]["id"]
        status, _ = http_json(port, "POST", f"/api/rooms/800/conferences/1234/participants/{pid}/kick", {},
                              token=TOKEN)
        assert status == 200
        assert wait_until(lambda: _js(page, "sipconfJoin.phase") == "ended", 15)
        assert "removed from the conference" in page.inner_text("#status")
        assert _js(page, "sipconfJoin.connectionState") == "none"  # closed and dropped by the page
        assert wait_until(lambda: len(participants(port)) == 1, 5)
    finally:
        context.close()
        phone.close()


def test_closing_the_page_ends_the_participant(server, browser):
    port = server.admin_port
    context, page = _open(browser, server)
    try:
        _fill(page, "800", "2345", "5432")
        assert wait_until(lambda: _js(page, "sipconfJoin.phase") == "joined", 15), _js(page, "sipconfJoin.message")
        assert wait_until(lambda: len(participants(port, "2345")) == 1, 5)
        page.close()  # pagehide: the beacon to /join/leave
        assert wait_until(lambda: participants(port, "2345") == [], 10), server.log()[-2000:]
        assert "ended: left the page" in server.log()
    finally:
        context.close()


def test_dtls_failure_is_shown_on_the_page_and_ends_the_participant(server, browser):
    """The answer's DTLS fingerprint is altered on its way to the page: the
    handshake fails on both sides."""
    port = server.admin_port
    context, page = _open(browser, server)

    def tamper(route):
        response = route.fetch()
        body = response.text()
        # every fingerprint (aiortc gives sha-256/384/512): one byte changed in each
        tampered = re.sub(r"(a=fingerprint:\S+ )([0-9A-Fa-f]{2})",
                          lambda m: m.group(1) + ("00" if m.group(2) != "00" else "11"), body)
        assert tampered != body
        body = tampered
        route.fulfill(response=response, body=body)

    try:
        page.route("**/join/offer", tamper)
        _fill(page, "800", "2345", "5432")
        assert wait_until(lambda: _js(page, "sipconfJoin.phase") == "ended", 30), _js(page, "sipconfJoin.message")
        message = page.inner_text("#status")
        assert "Connection failed" in message and "DTLS" in message, message
        assert wait_until(lambda: participants(port, "2345") == [], 10)
        assert wait_until(lambda: "ended: connection failed" in server.log() or "ended: left the page" in
                          server.log(), 10)
    finally:
        context.close()


def test_wrong_pin_three_times_goodbye_on_the_page_and_the_ban_counts(server, browser):
    context, page = _open(browser, server)
    try:
        for attempt, left in ((1, 2), (2, 1)):
            _fill(page, "800", "3456", f"000{attempt}")
            assert wait_until(lambda: f"{left} attempt" in page.inner_text("#status"), 10), \
                page.inner_text("#status")
            assert _js(page, "sipconfJoin.phase") == "idle"
        _fill(page, "800", "3456", "0003")
        assert wait_until(lambda: "Goodbye" in page.inner_text("#status"), 10), page.inner_text("#status")
        assert page.is_hidden("#join")  # no fourth try from this page
        # the three failures count against the browser's address ([security] pin_failures = 3):
        # a new page with the right PIN is refused
        context2, page2 = _open(browser, server)
        try:
            _fill(page2, "800", "3456", "6543")
            assert wait_until(lambda: "Goodbye" in page2.inner_text("#status"), 10)
            assert "Too many wrong PINs from your address" in page2.inner_text("#status")
        finally:
            context2.close()
        assert participants(server.admin_port, "3456") == []
    finally:
        context.close()
