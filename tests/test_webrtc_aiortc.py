"""Browser participants (SPEC 14) against the real server, with aiortc as the
browser: a real WebRTC peer (ICE host candidates, DTLS-SRTP, Opus) over real
sockets, signalling over the admin HTTP port, and the test phone over SIP/RTP
in the same conference. The Chromium test (test_webrtc_browser.py) proves the
page; this one proves the server side quickly and in detail."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from phone import TestPhone
from support import PASSWORDS, ServerProcess, wait_until
from webrtc_support import TOKEN, AiortcGuest, admin_port, dominant_hz, http_json, level_at, participants, \
    webrtc_config

pytestmark = pytest.mark.integration

PHONE_HZ = 660.0
GUEST_HZ = 1500.0
CONFERENCES = (("1234", "4321"), ("2345", "5432"), ("3456", "6543"), ("4567", "7654"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = admin_port()
    workdir = tmp_path_factory.mktemp("webrtc")
    cdr = workdir / "cdr.jsonl"
    s = ServerProcess(workdir, config_text=webrtc_config(port, conferences=CONFERENCES, server={"cdr_file": str(cdr)},
                                                         security={"pin_failures": 5, "window": 600, "ban": 900})).start()
    s.admin_port = port
    s.cdr = cdr
    assert wait_until(lambda: _reachable(port), 10), s.log()[-2000:]
    yield s
    s.stop()


def _reachable(port: int) -> bool:
    try:
        return http_json(port, "GET", "/join", timeout=1)[0] == 200
    except OSError:
        return False


def _phone_in(server, conference: str, pin: str) -> TestPhone:
    p = TestPhone(("127.0.0.1", server.sip_port), user="101", password=PASSWORDS["101"])
    assert p.call("800").status == 200
    p.wait_for_rtp(5, timeout=3)
    time.sleep(0.3)
    p.send_dtmf(f"{conference}#{pin}#")
    return p


async def _until(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(interval)
    return predicate()


async def test_join_page_is_served_without_a_token(server):
    status, body = http_json(server.admin_port, "GET", "/join")
    assert status == 200 and b'id="pin"' in body and b'id="conference"' in body and b'id="room"' in body
    status, js = http_json(server.admin_port, "GET", "/join/join.js")
    assert status == 200 and b"RTCPeerConnection" in js and b"https://" not in js and b"http://" not in js
    # no CDN: everything the page loads is ours
    assert all(ref.startswith(b"/join/") for ref in re.findall(rb'(?:src|href)="([^"]+)"', body))
    assert http_json(server.admin_port, "GET", "/join/join.css")[0] == 200
    assert http_json(server.admin_port, "POST", "/join/offer", b"not json")[0] == 400
    assert http_json(server.admin_port, "POST", "/join/offer", b"x" * 70000)[0] == 413


async def test_guest_and_phone_hear_each_other_mute_and_kick(server):
    port = server.admin_port
    phone = await asyncio.to_thread(_phone_in, server, "1234", "4321")
    guest = AiortcGuest(port, GUEST_HZ)
    try:
        phone.send_tone(PHONE_HZ)
        status, data = await guest.join("800", "1234", "4321")
        assert status == 200, data
        assert "a=candidate" in data["sdp"] and "opus/48000" in data["sdp"].lower()
        assert "a=fingerprint" in data["sdp"]  # DTLS-SRTP
        assert (await guest.wait_state("connecting"))["state"] == "joined"
        # in the API like a phone, codec opus/webrtc
        people = await _until(lambda: len(participants(port)) == 2 and participants(port), 5)
        browser = [p for p in people if p["codec"] == "opus/webrtc"]
        assert len(browser) == 1 and browser[0]["caller"] == "127.0.0.1", people
        assert browser[0]["srtp"] is True and browser[0]["name"] == "browser"
        pid = browser[0]["id"]
        status, data = http_json(port, "GET", "/api/status", token=TOKEN)
        assert data["participants"] == 2
        # the phone hears the browser's tone; the browser hears the phone's
        assert await _until(lambda: phone.hears(GUEST_HZ, 1.0), 10), server.log()[-3000:]
        assert await _until(lambda: level_at(guest.recent(1.0), 48000, PHONE_HZ) > 1000, 10)
        assert abs(dominant_hz(guest.recent(1.0), 48000) - PHONE_HZ) < 15
        # talking, as the API and the event stream say of a phone (SPEC 12/13)
        assert await _until(lambda: [p["talking"] for p in participants(port) if p["id"] == pid] == [True], 5)
        assert re.search(rf"event talking room=800 conference=1234 participant={pid}\b", server.log())
        # muted from the API: the phone no longer hears it
        assert http_json(port, "POST", f"/api/rooms/800/conferences/1234/participants/{pid}/mute", {},
                         token=TOKEN)[0] == 200
        await asyncio.sleep(1.2)
        assert not phone.hears(GUEST_HZ, 1.0)
        http_json(port, "POST", f"/api/rooms/800/conferences/1234/participants/{pid}/unmute", {}, token=TOKEN)
        assert await _until(lambda: phone.hears(GUEST_HZ, 0.5), 5)
        # kicked: goodbye, the peer connection closes, the page is told why
        assert http_json(port, "POST", f"/api/rooms/800/conferences/1234/participants/{pid}/kick", {},
                         token=TOKEN)[0] == 200
        ended = await guest.wait_state("joined")
        assert ended["state"] == "ended" and "removed" in ended["reason"], ended
        assert await _until(lambda: guest.pc.connectionState == "closed"
                            or guest.pc.connectionState == "failed", 40)
        assert len(participants(port)) == 1
        assert "webrtc-" in server.log() and "ended: removed from the conference" in server.log()
        # a call record like a phone's (SPEC 13 cdr_file)
        records = await _until(lambda: [json.loads(x) for x in server.cdr.read_text().splitlines()
                                        if '"webrtc' in x] if server.cdr.exists() else [], 5)
        rec = [r for r in records if r["end_reason"] == "removed from the conference"]
        assert len(rec) == 1, records
        assert rec[0]["flow"] == "webrtc" and rec[0]["codec"] == "opus/webrtc" and rec[0]["srtp"] is True
        assert rec[0]["room"] == "800" and rec[0]["conference"] == "1234" and rec[0]["from"] == "127.0.0.1"
        assert rec[0]["answer"] and rec[0]["duration_s"] > 0
    finally:
        await guest.close()
        phone.close()


async def test_leaving_the_page_ends_the_participant(server):
    port = server.admin_port
    guest = AiortcGuest(port, GUEST_HZ)
    other = AiortcGuest(port, 900.0)
    try:
        assert (await guest.join("800", "2345", "5432"))[0] == 200
        assert (await other.join("800", "2345", "5432"))[0] == 200
        assert (await guest.wait_state("connecting"))["state"] == "joined"
        assert (await other.wait_state("connecting"))["state"] == "joined"
        assert await _until(lambda: len(participants(port, "2345")) == 2, 5)
        # two browsers hear each other through the mixer
        assert await _until(lambda: level_at(other.recent(1.0), 48000, GUEST_HZ) > 1000, 10)
        status, data = http_json(port, "POST", "/join/leave", {"session": guest.session})
        assert status == 200 and data["state"] == "ended"
        assert await _until(lambda: len(participants(port, "2345")) == 1, 5)
        # the peer connection closing ends the other one too (tab closed without a beacon)
        await other.pc.close()
        assert await _until(lambda: len(participants(port, "2345")) == 0, 40), server.log()[-3000:]
        assert http_json(port, "POST", "/join/leave", {"session": "nope"})[0] == 404
    finally:
        await guest.close()
        await other.close()


async def test_wrong_pin_three_times_goodbye_and_the_ban_counts(server):
    port = server.admin_port
    guests = [AiortcGuest(port, GUEST_HZ, page="page-one") for _ in range(4)]
    try:
        s1, d1 = await guests[0].join("800", "3456", "0000")
        s2, d2 = await guests[1].join("800", "3456", "1111")
        s3, d3 = await guests[2].join("800", "3456", "2222")
        assert (s1, d1["attempts_left"], d1["goodbye"]) == (403, 2, False)
        assert (s2, d2["attempts_left"], d2["goodbye"]) == (403, 1, False)
        assert s3 == 403 and d3["goodbye"] is True and "Goodbye" in d3["error"]
        # the same page cannot try again, even with the right PIN
        s4, d4 = await guests[3].join("800", "3456", "6543")
        assert s4 == 403 and d4["goodbye"] is True
        # a new page may, until [security] pin_failures (5) from this address ban it
        fresh = [AiortcGuest(port, GUEST_HZ) for _ in range(3)]
        guests += fresh
        assert (await fresh[0].join("800", "3456", "3333"))[0] == 403
        s, d = await fresh[1].join("800", "3456", "4444")  # the 5th wrong PIN from 127.0.0.1: banned
        assert s == 403 and d["goodbye"] is True
        s, d = await fresh[2].join("800", "3456", "6543")  # right PIN, banned address
        assert s == 403 and d["goodbye"] is True and "address" in d["error"], d
        assert participants(port, "3456") == []
    finally:
        for g in guests:
            await g.close()


async def test_server_shutdown_ends_browser_participants(tmp_path):
    """SIGTERM with a browser in: it is ended (page told), the server exits cleanly."""
    port = admin_port()
    s = ServerProcess(tmp_path, config_text=webrtc_config(port)).start()
    guest = AiortcGuest(port, GUEST_HZ)
    try:
        assert wait_until(lambda: _reachable(port), 10)
        assert (await guest.join("800", "1234", "4321"))[0] == 200
        assert (await guest.wait_state("connecting"))["state"] == "joined"
        code = await asyncio.to_thread(s.stop)
        assert code == 0, s.log()[-3000:]
        assert "ended: server shutting down" in s.log()
        assert await _until(lambda: guest.pc.connectionState in ("closed", "failed"), 40)
    finally:
        await guest.close()
        s.stop()
