"""Room flow end to end: test phones over real UDP against the real server.

Each caller streams its own sine tone; by FFT each must hear the others and
never itself (SPEC 6).
"""

from __future__ import annotations

import re
import time

import pytest

from phone import TestPhone
from support import PASSWORDS, office_config, wait_until

TONES = {"101": 440.0, "102": 660.0, "103": 880.0}
BEEP_HZ = 1000.0


def room_config(*, rtp_timeout: int, max_participants: int) -> str:
    return office_config(server={"rtp_timeout": rtp_timeout, "language": "en"}, extensions=("101", "102", "103"),
                         conferences=(("1234", "4321"), ("5678", "8765")), max_participants=max_participants)


@pytest.fixture(scope="module")
def room_server(tmp_path_factory):
    from support import ServerProcess
    server = ServerProcess(tmp_path_factory.mktemp("room"),
                           config_text=room_config(rtp_timeout=30, max_participants=50)).start()
    yield server
    server.stop()


def caller(server, user: str, **kwargs) -> TestPhone:
    return TestPhone(("127.0.0.1", server.sip_port), user=user, password=PASSWORDS[user], **kwargs)


def join(phone: TestPhone, conference: str = "1234", pin: str = "4321", *, mode: str = "rfc4733",
         tone: float | None = None, prefix: str = "") -> None:
    answer = phone.call("800")
    assert answer.status == 200, answer
    phone.wait_for_rtp(5, timeout=3)
    time.sleep(0.3)
    phone.send_dtmf(f"{prefix}{conference}#{pin}#", mode=mode)
    if tone is not None:
        phone.send_tone(tone)


def joined_count(server, conference: str = "1234") -> int:
    return len(re.findall(rf"joined conference {conference} of room 800", server.log()))


def test_three_callers_hear_each_other_never_themselves(room_server):
    a, b, c = (caller(room_server, u) for u in ("101", "102", "103"))
    outsider = TestPhone(("127.0.0.1", room_server.sip_port), user="101", password="alice-secret")
    try:
        # someone in the other conference, joined first so that its "you are
        # the first participant" prompt is over when we listen
        join(outsider, conference="5678", pin="8765", tone=None)
        assert wait_until(lambda: joined_count(room_server, "5678") >= 1, 10)
        before = joined_count(room_server)
        join(a, tone=TONES["101"])
        assert wait_until(lambda: joined_count(room_server) == before + 1, 10), room_server.log()[-2000:]
        join(b, tone=TONES["102"])
        assert wait_until(lambda: joined_count(room_server) == before + 2, 10)
        time.sleep(0.5)
        # a and b were there: when c joins they hear the beep
        join(c, tone=TONES["103"])
        assert wait_until(lambda: joined_count(room_server) == before + 3, 10)
        assert a.wait_for_tone(BEEP_HZ, timeout=3), "a did not hear the join beep"
        assert b.wait_for_tone(BEEP_HZ, timeout=3), "b did not hear the join beep"
        time.sleep(1.5)
        for phone, own in ((a, "101"), (b, "102"), (c, "103")):
            for user, hz in TONES.items():
                level = phone.tone_level(hz, seconds=1.0)
                if user == own:
                    assert level < 300, f"{own} hears itself ({hz} Hz at {level:.0f})"
                else:
                    assert level > 1500, f"{own} does not hear {user} ({hz} Hz at {level:.0f})"
        for hz in TONES.values():
            assert outsider.tone_level(hz, seconds=1.0) < 300
        # after c hangs up, a and b stop hearing c's tone within a second
        assert c.hangup().status == 200
        time.sleep(1.0)
        assert a.tone_level(TONES["103"], seconds=0.5) < 300
        assert b.tone_level(TONES["103"], seconds=0.5) < 300
        assert a.tone_level(TONES["102"], seconds=0.5) > 1500
    finally:
        for phone in (a, b, c, outsider):
            phone.close()


def test_two_party_call_has_no_gain_change(room_server):
    a, b = caller(room_server, "101"), caller(room_server, "102")
    try:
        join(a, conference="5678", pin="8765", tone=TONES["101"])
        join(b, conference="5678", pin="8765", tone=TONES["102"])
        time.sleep(2.0)
        level = b.tone_level(TONES["101"], seconds=1.0)
        # the phone sends amplitude 8000; G.711 both ways keeps it within a few percent
        assert 7000 < level < 9000, level
    finally:
        a.close()
        b.close()


def test_pcma_and_pcmu_callers_hear_each_other(room_server):
    a = caller(room_server, "101", codecs=("PCMA",))
    b = caller(room_server, "102", codecs=("PCMU",))
    try:
        join(a, conference="5678", pin="8765", tone=TONES["101"])
        join(b, conference="5678", pin="8765", tone=TONES["102"])
        assert a.answer_codec == "PCMA" and b.answer_codec == "PCMU"
        time.sleep(2.0)
        assert a.hears(TONES["102"]) and b.hears(TONES["101"])
    finally:
        a.close()
        b.close()


def test_three_wrong_pins_end_in_bye(room_server):
    with caller(room_server, "101") as p:
        assert p.call("800").status == 200
        time.sleep(0.3)
        p.send_dtmf("1234#0000#1234#1111#1234#2222#")
        assert p.wait_for_bye(45), "no BYE after three wrong PINs"
    assert "too many wrong conference IDs or PINs" in room_server.log()


def test_star_clears_typed_digits(room_server):
    before = joined_count(room_server)
    with caller(room_server, "101") as p:
        join(p, prefix="9*")
        assert wait_until(lambda: joined_count(room_server) == before + 1, 15), room_server.log()[-2000:]


def test_sip_info_digits(room_server):
    before = joined_count(room_server)
    with caller(room_server, "102") as p:
        join(p, mode="info")
        assert wait_until(lambda: joined_count(room_server) == before + 1, 15)


def test_same_timestamp_digits_count_twice(room_server):
    """SIPp replays one pcap per digit with identical timestamps: 11 must be two digits."""
    config_pin = "4321"
    before = joined_count(room_server)
    with caller(room_server, "103") as p:
        assert p.call("800").status == 200
        time.sleep(0.3)
        p.send_dtmf(f"1234#{config_pin}#", same_timestamp=True)
        assert wait_until(lambda: joined_count(room_server) == before + 1, 15)


def test_hold_leaves_the_mix(room_server):
    a, b = caller(room_server, "101"), caller(room_server, "102")
    try:
        join(a, conference="5678", pin="8765", tone=TONES["101"])
        join(b, conference="5678", pin="8765", tone=TONES["102"])
        time.sleep(2.0)
        assert b.hears(TONES["101"])
        assert a.reinvite("sendonly").status == 200
        time.sleep(1.0)
        assert not b.hears(TONES["101"], seconds=0.5), "a held caller is still heard"
        assert a.rms(seconds=0.5) == 0 or not a.hears(TONES["102"], seconds=0.5), "a held caller still gets audio"
        assert a.reinvite("sendrecv").status == 200
        time.sleep(1.5)
        assert b.hears(TONES["101"], seconds=0.5)
    finally:
        a.close()
        b.close()


def test_room_full_prompt_and_bye(make_server):
    server = make_server(room_config(rtp_timeout=30, max_participants=2))
    a, b, c = (caller(server, u) for u in ("101", "102", "103"))
    try:
        join(a)
        join(b)
        assert wait_until(lambda: joined_count(server) == 2, 15)
        assert c.call("800").status == 200
        assert c.wait_for_bye(15)
        assert wait_until(lambda: "room 800 full" in server.log(), 2)  # logged just after the BYE
        assert c.rms(seconds=10) > 100, "the room-full prompt was not played"
    finally:
        for phone in (a, b, c):
            phone.close()


def test_no_rtp_hangs_up_after_rtp_timeout(make_server):
    server = make_server(room_config(rtp_timeout=2, max_participants=50))
    with caller(server, "101", auto_media=False) as p:
        assert p.call("800").status == 200
        assert p.wait_for_bye(6)
    assert "no RTP for 2 s" in server.log()
