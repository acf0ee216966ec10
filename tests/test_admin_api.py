"""Admin HTTP API (SPEC 13) over real HTTP against the real server, with
live calls from test phones: status and rooms contents, every action's
effect (mute proved by FFT, kick and end by BYE, lock by a refused
newcomer), auth and bans, JSON errors."""

from __future__ import annotations

import datetime
import socket
import time

import av
import pytest

from admin_support import CONFERENCES, TOKEN, TONES, Admin, admin_config, admin_ports, enter, metric, phone
from support import ServerProcess, wait_until

pytestmark = pytest.mark.integration
CONF = dict(CONFERENCES)
# The newcomer hears "there is one other participant" (1.9 s), whose speech has
# energy at the test tones: listen for tones once it is over.
ANNOUNCEMENT_S = 2.3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    admin_port, metrics_port = admin_ports()
    workdir = tmp_path_factory.mktemp("admin")
    s = ServerProcess(workdir, config_text=admin_config(admin_port, metrics_port=metrics_port,
                                                        recordings=workdir / "recordings"))
    s.admin_port, s.metrics_port, s.recordings = admin_port, metrics_port, workdir / "recordings"
    s.start()
    yield s
    s.stop()


@pytest.fixture
def admin(server):
    return Admin(server.admin_port)


def close_all(*phones) -> None:
    for p in phones:
        p.close()


def test_status_and_rooms_list_live_participants(server, admin):
    a, b = phone(server, "101"), phone(server, "102")
    try:
        conference = "1001"
        pa = enter(a, admin, conference, CONF[conference])
        pb = enter(b, admin, conference, CONF[conference])
        status, data, headers = admin.get("/api/status")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert data["version"] and data["uptime_s"] > 0
        assert data["calls"] == 2 and data["participants"] == 2 and data["registrations"] == 0
        status, data, _ = admin.get("/api/rooms")
        assert status == 200
        (room,) = data["rooms"]
        assert room["extension"] == "800" and room["name"] == "Everest"
        assert [c["id"] for c in room["conferences"]] == [c for c, _ in CONFERENCES]  # every configured one
        live = next(c for c in room["conferences"] if c["id"] == conference)
        assert live["locked"] is False and live["recording"] is False
        assert [p["id"] for p in live["participants"]] == [pa, pb]
        assert [p["caller"] for p in live["participants"]] == ["101", "102"]  # the calling numbers
        assert [p["name"] for p in live["participants"]] == ["Alice", "Bob"]  # the extensions' names
        for p in live["participants"]:
            assert set(p) >= {"id", "caller", "name", "codec", "srtp", "moderator", "muted", "talking", "joined_at"}
            assert p["codec"] == "PCMU/8000" and p["srtp"] is False and p["moderator"] is False
            assert p["muted"] is False and isinstance(p["talking"], bool)
            joined = datetime.datetime.fromisoformat(p["joined_at"].replace("Z", "+00:00"))
            assert joined.tzinfo is not None
            assert abs((datetime.datetime.now(datetime.timezone.utc) - joined).total_seconds()) < 60
        others = [c for c in room["conferences"] if c["id"] != conference]
        assert all(c["participants"] == [] for c in others)
    finally:
        close_all(a, b)
    assert wait_until(lambda: admin.get("/api/status")[1]["calls"] == 0, 5)


def test_mute_and_unmute_by_fft(server, admin):
    a, b = phone(server, "101"), phone(server, "102")
    try:
        conference = "1002"
        pa = enter(a, admin, conference, CONF[conference])
        enter(b, admin, conference, CONF[conference])
        a.send_tone(TONES["101"])
        b.send_tone(TONES["102"])
        time.sleep(ANNOUNCEMENT_S)
        assert b.hears(TONES["101"], seconds=0.5) and a.hears(TONES["102"], seconds=0.5)
        status, state, _ = admin.action(conference, "mute", pa)
        assert status == 200 and state["room"] == "800" and state["id"] == conference
        assert next(p for p in state["participants"] if p["id"] == pa)["muted"] is True
        time.sleep(1.3)  # talk hangover (300 ms) and jitter buffers, then listen for 0.5 s
        assert b.tone_level(TONES["101"], seconds=0.5) < 100, "the muted phone's tone is still in the mix"
        assert a.hears(TONES["102"], seconds=0.5), "the muted phone stopped hearing the others"
        assert admin.participants(conference)[0]["muted"] is True
        status, state, _ = admin.action(conference, "unmute", pa)
        assert status == 200 and next(p for p in state["participants"] if p["id"] == pa)["muted"] is False
        assert b.wait_for_tone(TONES["101"], 3, seconds=0.5), "unmuted, yet not heard again"
    finally:
        close_all(a, b)


def test_mute_all_and_unmute_all(server, admin):
    a, b = phone(server, "101"), phone(server, "102")
    try:
        conference = "1003"
        enter(a, admin, conference, CONF[conference])
        enter(b, admin, conference, CONF[conference])
        a.send_tone(TONES["101"])
        b.send_tone(TONES["102"])
        time.sleep(ANNOUNCEMENT_S)
        assert b.hears(TONES["101"], seconds=0.5)
        status, state, _ = admin.action(conference, "mute-all")
        assert status == 200 and all(p["muted"] for p in state["participants"])
        time.sleep(1.3)
        assert b.tone_level(TONES["101"], seconds=0.5) < 100 and a.tone_level(TONES["102"], seconds=0.5) < 100
        status, state, _ = admin.action(conference, "unmute-all")
        assert status == 200 and not any(p["muted"] for p in state["participants"])
        assert b.wait_for_tone(TONES["101"], 4, seconds=0.5) and a.wait_for_tone(TONES["102"], 4, seconds=0.5)
    finally:
        close_all(a, b)


def test_kick_ends_the_call_with_bye(server, admin):
    a, b = phone(server, "101"), phone(server, "102")
    try:
        conference = "1004"
        enter(a, admin, conference, CONF[conference])
        pb = enter(b, admin, conference, CONF[conference])
        status, state, _ = admin.action(conference, "kick", pb)
        assert status == 200 and pb not in [p["id"] for p in state["participants"]]
        assert b.wait_for_bye(10), "the kicked phone got no BYE"
        assert wait_until(lambda: [p["id"] for p in admin.participants(conference)] != [] and
                          pb not in [p["id"] for p in admin.participants(conference)], 5)
        assert len(admin.participants(conference)) == 1
    finally:
        close_all(a, b)


def test_lock_refuses_a_newcomer_and_unlock_lets_one_in(server, admin):
    a, late, later = phone(server, "101"), phone(server, "102"), phone(server, "103")
    try:
        conference = "1005"
        enter(a, admin, conference, CONF[conference])
        status, state, _ = admin.action(conference, "lock")
        assert status == 200 and state["locked"] is True
        assert admin.conference(conference)["locked"] is True
        assert late.call("800").status == 200
        late.wait_for_rtp(5, timeout=3)
        time.sleep(0.3)
        late.send_dtmf(f"{conference}#{CONF[conference]}#")
        assert late.wait_for_bye(15), "a newcomer was not sent away from a locked conference"
        assert len(admin.participants(conference)) == 1
        status, state, _ = admin.action(conference, "unlock")
        assert status == 200 and state["locked"] is False
        enter(later, admin, conference, CONF[conference])
        assert len(admin.participants(conference)) == 2
    finally:
        close_all(a, late, later)


def test_end_hangs_everyone_up(server, admin):
    a, b = phone(server, "101"), phone(server, "102")
    try:
        conference = "1006"
        enter(a, admin, conference, CONF[conference])
        enter(b, admin, conference, CONF[conference])
        status, state, _ = admin.action(conference, "end")
        assert status == 200 and state["participants"] == []
        assert a.wait_for_bye(10) and b.wait_for_bye(10), "end did not hang everyone up"
        assert wait_until(lambda: admin.participants(conference) == [], 5)
        status, data, _ = admin.action(conference, "lock")  # nobody left: nothing to lock
        assert status == 404 and "no participants" in data["error"]
    finally:
        close_all(a, b)


def test_record_start_and_stop(server, admin):
    a, b = phone(server, "101"), phone(server, "102")
    try:
        conference = "1012"
        enter(a, admin, conference, CONF[conference])
        enter(b, admin, conference, CONF[conference])
        a.send_tone(TONES["101"])
        b.send_tone(TONES["102"])
        status, state, _ = admin.action(conference, "record/start")
        assert status == 200 and state["recording"] is True
        assert admin.conference(conference)["recording"] is True
        assert wait_until(lambda: "event recording_started room=800 conference=1012" in server.log(), 3)
        time.sleep(2.0)
        status, state, _ = admin.action(conference, "record/stop")
        assert status == 200 and state["recording"] is False
        assert admin.conference(conference)["recording"] is False
        files = wait_until(lambda: list(server.recordings.glob(f"800-{conference}-*.wav")), 5)
        assert len(files) == 1
        # the file is complete and playable: PyAV reads it to the end
        with av.open(str(files[0])) as container:
            samples = sum(frame.samples for frame in container.decode(audio=0))
            rate = container.streams.audio[0].rate
        assert 1.5 < samples / rate < 4.0
        status, state, _ = admin.action(conference, "record/stop")  # already stopped: still the state
        assert status == 200 and state["recording"] is False
    finally:
        close_all(a, b)


def test_not_found_bad_method_oversized_and_bad_json(server, admin):
    a = phone(server, "101")
    try:
        conference = "1007"
        pa = enter(a, admin, conference, CONF[conference])
        for path in ("/api/rooms/801/conferences/1007/lock", "/api/rooms/800/conferences/9999/lock",
                     f"/api/rooms/800/conferences/{conference}/participants/99999/mute",
                     f"/api/rooms/800/conferences/{conference}/participants/{pa}/explode",
                     "/api/nothing"):
            status, data, headers = admin.post(path)
            assert status == 404 and isinstance(data, dict) and data["error"], (path, status, data)
            assert headers["Content-Type"].startswith("application/json")
        status, data, _ = admin.get(f"/api/rooms/800/conferences/{conference}/lock")
        assert status == 405 and data["error"] == "method not allowed"
        status, data, _ = admin.request("DELETE", "/api/rooms")
        assert status == 405 and data["error"]
        status, data, _ = admin.post(f"/api/rooms/800/conferences/{conference}/lock", body=b"x" * 100_000)
        assert status == 413 and data["error"]
        status, data, _ = admin.post(f"/api/rooms/800/conferences/{conference}/lock", body=b"{not json",
                                     headers={"Content-Type": "application/json"})
        assert status == 400 and data["error"]
        status, data, _ = admin.post(f"/api/rooms/800/conferences/{conference}/lock", body=b"[1, 2]")
        assert status == 400
        assert admin.conference(conference)["locked"] is False  # none of those did anything
        status, state, _ = admin.post(f"/api/rooms/800/conferences/{conference}/lock", body=b"{}")
        assert status == 200 and state["locked"] is True
        assert metric(server, "sipconf_admin_rejected_total", reason="too_large") >= 1
        assert metric(server, "sipconf_admin_responses_total", status="404") >= 5
    finally:
        a.close()


def test_token_required_and_ten_wrong_tokens_ban_the_address(server, admin):
    banned_source = "127.0.0.3"
    assert admin.get("/api/status", token=None, source=banned_source)[0] == 401
    status, data, headers = admin.get("/api/rooms", token="wrong-token-wrong-token", source=banned_source)
    assert status == 401 and data["error"] and "Bearer" in headers["WWW-Authenticate"]
    assert admin.get("/api/status", token=TOKEN + "x", source=banned_source)[0] == 401
    assert admin.get("/api/events", token="nope-nope-nope-nope", source=banned_source)[0] == 401
    for _ in range(5):
        assert admin.post("/api/rooms/800/conferences/1001/lock", token="guess-guess-guess-guess",
                          source=banned_source)[0] == 401
    # that was the 9th; the 10th bans
    assert admin.get("/api/status", token="still-wrong-still-wrong", source=banned_source)[0] == 401
    status, data, _ = admin.get("/api/status", source=banned_source)  # the right token, too late
    assert status == 403 and "banned" in data["error"]
    assert admin.get("/", token=None, source=banned_source)[0] == 403
    # another address is not disturbed
    status, data, _ = admin.get("/api/status")
    assert status == 200 and data["version"]
    assert metric(server, "sipconf_admin_bans_total") == 1
    assert metric(server, "sipconf_admin_rejected_total", reason="unauthorized") >= 10
    assert metric(server, "sipconf_admin_rejected_total", reason="banned") >= 2
    assert "banned" in server.log() and banned_source in server.log()


def test_console_files_are_served(server, admin):
    status, body, headers = admin.get("/", token=None)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode() if isinstance(body, bytes) else str(body)
    assert "/console.js" in page and "/console.css" in page and "http://" not in page and "https://" not in page
    for path, kind in (("/console.js", "text/javascript"), ("/console.css", "text/css")):
        status, body, headers = admin.get(path, token=None)
        assert status == 200 and headers["Content-Type"].startswith(kind) and len(body) > 500
    assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_the_query_token_is_taken_on_the_event_stream_only(server, admin):
    source = "127.0.0.4"
    status, data, _ = admin.get(f"/api/status?token={TOKEN}", token=None, source=source)
    assert status == 401 and data["error"]
    status, _, _ = admin.post(f"/api/rooms/800/conferences/1001/lock?token={TOKEN}", token=None, source=source)
    assert status == 401
    # the stream with it answers (read its first bytes, then hang up)
    with socket.create_connection(("127.0.0.1", server.admin_port), timeout=5) as s:
        s.sendall(f"GET /api/events?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    assert TOKEN not in server.log()  # never logged, query strings included
