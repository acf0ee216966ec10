"""HD voice end to end (SPEC 10): wideband test phones (G.722 and Opus by
PyAV) and G.711 phones over real UDP against the real server subprocess.

Tones are chosen away from the join beep (1000 Hz) and from each other.
"""

from __future__ import annotations

import re
import time
import urllib.request

import numpy as np
import pytest

from phone import TestPhone
from support import PASSWORDS, ServerProcess, free_port, office_config, wait_until
from wideband_phone import WidebandPhone, band_levels, level_at_rate

USERS = ("101", "102", "103", "104")


@pytest.fixture(scope="module")
def hd_server(tmp_path_factory):
    metrics_port = free_port()
    server = ServerProcess(tmp_path_factory.mktemp("hd"), config_text=office_config(
        server={"rtp_timeout": 30, "language": "en", "metrics_port": metrics_port},
        extensions=USERS, conferences=(("1234", "4321"), ("5678", "8765"), ("2222", "3333")),
        max_participants=50,
        # the rate-switch test listens for clicks right after joins: no spoken
        # "there are N other participants" (SPEC 12) over that window
        extra="[sounds]\nannounce_count = false\n")).start()
    server.metrics_port = metrics_port
    yield server
    server.stop()


def phone(server, user: str, codec: str):
    cls = TestPhone if codec in ("PCMU", "PCMA") else WidebandPhone
    return cls(("127.0.0.1", server.sip_port), user=user, password=PASSWORDS[user], codecs=(codec,))


def join(p, conference: str, pin: str) -> None:
    answer = p.call("800")
    assert answer.status == 200, answer
    assert p.wait_for_rtp(5, timeout=3)
    time.sleep(0.3)
    p.send_dtmf(f"{conference}#{pin}#")


def joined(server, conference: str) -> int:
    return len(re.findall(rf"joined conference {conference} of room 800", server.log()))


def settle(server, conference: str, count: int) -> None:
    assert wait_until(lambda: joined(server, conference) >= count, 10), server.log()[-3000:]
    time.sleep(2.5)  # the newcomer's "first participant" prompt and the beeps are over


def metric(server, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=3).read().decode()
    m = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_answer_codecs_and_fmtp(hd_server):
    for codec, rtpmap in (("G722", "G722/8000"), ("OPUS", "opus/48000/2")):
        p = phone(hd_server, "101", codec)
        skipped_before = metric(hd_server, "sipconf_mixer_ticks_skipped")
        try:
            answer = p.call("800")
            assert answer.status == 200
            body = answer.body.decode()
            assert rtpmap in body, body
            if codec == "OPUS":
                assert "useinbandfec=1" in body and "telephone-event/48000" in body, body
            else:
                assert "telephone-event/8000" in body, body
            assert p.answer_codec == codec
            assert p.wait_for_rtp(10, timeout=3)
            assert {h.pt for h in list(p.rtp_headers)} <= {p.answer_pt}
            # the welcome prompt, resampled to the caller's rate, is heard
            assert wait_until(lambda: p.rms(0.5) > 300, 3), p.rms(0.5)
            step = 960 if codec == "OPUS" else 160
            hs = list(p.rtp_headers)
            # one packet per 20 ms at the caller's clock rate: consecutive
            # sequence numbers, timestamps a frame apart; a tick the server
            # skipped after a stall (a busy machine) is a gap in time, so
            # its timestamps jump by whole frames, each one counted
            assert all(((b.seq - a.seq) & 0xFFFF) == 1 for a, b in zip(hs, hs[1:]))
            frames = [((b.ts - a.ts) & 0xFFFFFFFF) / step for a, b in zip(hs, hs[1:])]
            assert all(f == int(f) and f >= 1 for f in frames), frames
            jumped = sum(int(f) - 1 for f in frames)
            assert jumped <= metric(hd_server, "sipconf_mixer_ticks_skipped") - skipped_before, frames
        finally:
            p.close()


def test_mixed_room_everyone_hears_everyone_never_themselves(hd_server):
    tones = {"101": ("PCMU", 440.0), "102": ("G722", 6000.0), "103": ("OPUS", 700.0)}
    phones = {u: phone(hd_server, u, codec) for u, (codec, _) in tones.items()}
    try:
        before = joined(hd_server, "1234")
        for u, p in phones.items():
            join(p, "1234", "4321")
            p.send_tone(tones[u][1])
        settle(hd_server, "1234", before + 3)
        start = time.monotonic()
        time.sleep(1.2)
        heard = {u: p.received_audio(start) for u, p in phones.items()}
        rate = {"101": 8000, "102": 16000, "103": 48000}
        lvl = {(u, hz): level_at_rate(heard[u][-rate[u]:], hz, rate[u]) for u in phones
               for hz in (440.0, 700.0, 6000.0) if hz < rate[u] / 2}
        # everyone hears the others' tones...
        assert lvl[("102", 440.0)] > 1500 and lvl[("103", 440.0)] > 1500, lvl
        assert lvl[("101", 700.0)] > 1500 and lvl[("102", 700.0)] > 1500, lvl
        # ...the G.722 talker's 6 kHz reaches the Opus listener in full band...
        assert lvl[("103", 6000.0)] > 1500, lvl
        # ...and never themselves
        assert lvl[("101", 440.0)] < 200 and lvl[("102", 6000.0)] < 200 and lvl[("103", 700.0)] < 200, lvl
        # the G.711 listener hears no fold-down of 6 kHz (alias at 2 kHz)
        assert level_at_rate(heard["101"][-8000:], 2000.0, 8000) < lvl[("103", 6000.0)] / 100, lvl
    finally:
        for p in phones.values():
            p.close()


def test_six_khz_from_g722_is_40_db_down_at_a_g711_listener(hd_server):
    talker = phone(hd_server, "101", "G722")
    wide = phone(hd_server, "102", "G722")
    narrow = phone(hd_server, "103", "PCMA")
    try:
        before = joined(hd_server, "5678")
        for p in (wide, narrow, talker):
            join(p, "5678", "8765")
        settle(hd_server, "5678", before + 3)
        talker.send_tone(6000.0, amplitude=12000)
        time.sleep(1.5)
        wide_level = level_at_rate(wide._recent(1.0), 6000.0, 16000)
        assert wide_level > 3000, wide_level
        peak, at = band_levels(narrow._recent(1.0), 8000, 50, 4000)
        assert peak < wide_level / 100, (peak, at, wide_level)  # >= 40 dB down anywhere in 0-4 kHz
    finally:
        for p in (talker, wide, narrow):
            p.close()


def _clicks(x: np.ndarray, rate: int, cutoff: float = 2500.0) -> np.ndarray:
    """Peak per 10 ms of what a signal has above ``cutoff``: the 470 Hz
    tone and the 1 kHz join beep (5 ms ramps) are filtered out (windowed-sinc
    high-pass, >60 dB down there), a click or a gap is broadband and stays."""
    m = np.arange(201) - 100
    fc = cutoff / rate
    lp = 2 * fc * np.sinc(2 * fc * m) * np.kaiser(201, 8.0)
    hp = -lp
    hp[100] += 1.0
    y = np.convolve(x.astype(np.float64), hp, mode="valid")
    n = rate // 100
    return np.abs(y[: len(y) // n * n]).reshape(-1, n).max(axis=1)


def _continuous(p) -> bool:
    """Sequence numbers and timestamps advance by one frame at every packet."""
    hs = list(p.rtp_headers)
    step = 960 if p.answer_codec == "OPUS" else 160
    return all(((b.seq - a.seq) & 0xFFFF) == 1 and ((b.ts - a.ts) & 0xFFFFFFFF) == step
               for a, b in zip(hs, hs[1:]) if b.ssrc == a.ssrc)


def test_rate_switches_with_joins_and_leaves_without_click_or_gap(hd_server, tmp_path):
    talker = phone(hd_server, "101", "PCMA")
    narrow = phone(hd_server, "102", "PCMA")
    wide = phone(hd_server, "103", "G722")
    opus = phone(hd_server, "104", "OPUS")
    try:
        before = joined(hd_server, "2222")
        join(narrow, "2222", "3333")
        join(talker, "2222", "3333")
        settle(hd_server, "2222", before + 2)
        talker.send_tone(470.0, amplitude=6000)  # not a whole number of cycles per frame
        time.sleep(0.5)
        narrow.clear_received()
        base_start = time.monotonic()
        time.sleep(1.0)
        join(wide, "2222", "3333")  # 8 -> 16 kHz
        assert wait_until(lambda: joined(hd_server, "2222") >= before + 3, 10)
        time.sleep(2.0)
        wide.clear_received()
        join(opus, "2222", "3333")  # 16 -> 48 kHz
        assert wait_until(lambda: joined(hd_server, "2222") >= before + 4, 10)
        time.sleep(2.0)
        opus.hangup()  # 48 -> 16
        time.sleep(1.0)
        wide.hangup()  # 16 -> 8
        time.sleep(1.0)
        x = narrow.received_audio(base_start)
        y = wide.received_audio()
        assert _continuous(narrow), "G.711 listener's RTP has a gap"
        # the beeps are part of what they hear: take them out by level, not time
        for label, sig, rate in (("g711", x, 8000), ("g722", y, 16000)):
            # the tone and the join beeps are what they hear: what is left is coding noise or clicks
            quiet = _clicks(sig, rate)
            base = np.median(quiet)
            assert quiet.max() < max(8 * base, 200), (label, quiet.max(), base, np.argmax(quiet), len(quiet))
        assert narrow.level_at(x[-8000:], 470.0) > 3000
    finally:
        for p in (talker, narrow, wide, opus):
            p.close()


def test_opus_fec_rebuilds_a_dropped_packet(hd_server):
    talker = phone(hd_server, "101", "OPUS")
    listener = phone(hd_server, "102", "OPUS")
    try:
        before = joined(hd_server, "1234")
        join(listener, "1234", "4321")
        join(talker, "1234", "4321")
        settle(hd_server, "1234", before + 2)
        talker.send_tone(700.0, amplitude=8000)
        time.sleep(1.0)
        fec0 = metric(hd_server, "sipconf_opus_fec_frames")
        listener.clear_received()
        start = time.monotonic()
        for _ in range(5):
            talker.drop_next_packets(1)
            time.sleep(0.3)
        time.sleep(0.5)
        assert wait_until(lambda: metric(hd_server, "sipconf_opus_fec_frames") >= fec0 + 5, 3), \
            metric(hd_server, "sipconf_opus_fec_frames")
        x = listener.received_audio(start)
        n = 960
        frames = x[: len(x) // n * n].reshape(-1, n).astype(np.float64)
        rms = np.sqrt((frames ** 2).mean(axis=1))
        # no gap: every 20 ms of the tone is there (FEC, not silence)
        assert rms[5:-5].min() > 0.5 * np.median(rms), rms
    finally:
        for p in (talker, listener):
            p.close()


def test_disabled_codecs_are_not_answered(make_server):
    server = make_server(office_config(server={"codecs": ["PCMA"]}, extensions=("101",)))
    p = phone(server, "101", "G722")
    try:
        assert p.call("800").status == 488
    finally:
        p.close()
    p = WidebandPhone(("127.0.0.1", server.sip_port), user="101", password=PASSWORDS["101"],
                      codecs=("OPUS", "G722", "PCMA"))
    try:
        assert p.call("800").status == 200 and p.answer_codec == "PCMA"
    finally:
        p.close()


def test_max_mix_rate_8000_band_limits_a_g722_room(make_server):
    server = make_server(office_config(server={"max_mix_rate": 8000, "language": "en"}, extensions=("101", "102")))
    talker, listener = phone(server, "101", "G722"), phone(server, "102", "G722")
    try:
        for p in (listener, talker):
            join(p, "1234", "4321")
        settle(server, "1234", 2)
        talker.send_tone(6000.0, amplitude=12000)
        time.sleep(1.5)
        x = listener._recent(1.0)
        assert level_at_rate(x, 6000.0, 16000) < 120  # mixed at 8 kHz: no 6 kHz left
        talker.send_tone(1500.0, amplitude=8000)
        time.sleep(1.0)
        assert level_at_rate(listener._recent(0.6), 1500.0, 16000) > 3000  # the narrow band passes
    finally:
        talker.close()
        listener.close()


def test_a_payload_type_not_in_the_answer_is_dropped(hd_server):
    talker, listener = phone(hd_server, "101", "G722"), phone(hd_server, "102", "G722")
    try:
        before = joined(hd_server, "5678")
        for p in (listener, talker):
            join(p, "5678", "8765")
        settle(hd_server, "5678", before + 2)
        talker.send_tone(2500.0, amplitude=8000)
        time.sleep(0.8)
        assert listener.hears(2500.0, seconds=0.5, threshold=3000)
        with talker._tx_lock:
            talker.answer_pt = 0  # PCMU's payload type with G.722 bytes: not in the answer
        time.sleep(1.0)
        assert level_at_rate(listener._recent(0.5), 2500.0, 16000) < 200
        with talker._tx_lock:
            talker.answer_pt = 9
        time.sleep(1.0)
        assert listener.hears(2500.0, seconds=0.5, threshold=3000)
    finally:
        talker.close()
        listener.close()


def test_reinvite_switches_a_call_from_g722_to_opus(hd_server):
    talker, listener = phone(hd_server, "101", "G722"), phone(hd_server, "102", "G722")
    try:
        before = joined(hd_server, "2222")
        for p in (listener, talker):
            join(p, "2222", "3333")
        settle(hd_server, "2222", before + 2)
        talker.send_tone(5000.0, amplitude=8000)
        assert listener.wait_for_tone(5000.0, timeout=3, threshold=3000)
        listener.codecs = [("OPUS", 111)]
        answer = listener.reinvite("sendrecv")
        assert answer.status == 200 and "opus/48000/2" in answer.body.decode()
        assert listener.answer_codec == "OPUS" and listener.rate == 48000
        listener.clear_received()
        time.sleep(1.5)
        assert {h.pt for h in list(listener.rtp_headers)[-20:]} == {111}
        assert listener.tone_level(5000.0, 0.8) > 3000  # still hears the G.722 talker, now through Opus
        assert _continuous(listener)
    finally:
        talker.close()
        listener.close()


def test_opus_dtx_silence_with_rtcp_is_not_a_lost_call(make_server):
    """A DTX phone sends no RTP while silent, only RTCP: the call stays up
    past rtp_timeout; with neither, it is hung up (SPEC 5, SPEC 10)."""
    import socket
    import struct
    server = make_server(office_config(server={"rtp_timeout": 2, "language": "en"}, extensions=("101", "102")))
    quiet, gone = phone(server, "101", "OPUS"), phone(server, "102", "OPUS")
    rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for p in (quiet, gone):
            assert p.call("800").status == 200
            assert p.wait_for_rtp(5, timeout=3)
        time.sleep(0.3)
        quiet.stop_audio()
        gone.stop_audio()
        server_rtcp = (quiet.remote_rtp[0], quiet.remote_rtp[1] + 1)
        # an empty receiver report (RFC 3550 6.4.2) once a second
        report = struct.pack("!BBHI", 0x80, 201, 1, quiet.ssrc)
        for _ in range(5):
            rtcp.sendto(report, server_rtcp)
            time.sleep(1.0)
        assert gone.wait_for_bye(3.0), "the call with neither RTP nor RTCP was not hung up"
        assert not quiet.wait_for_bye(0.1), "RTCP alone should have kept the DTX call alive"
    finally:
        rtcp.close()
        quiet.close()
        gone.close()


def test_undecodable_opus_is_dropped_and_counted_and_the_call_goes_on(hd_server):
    talker, listener = phone(hd_server, "101", "OPUS"), phone(hd_server, "102", "G722")
    try:
        before = joined(hd_server, "5678")
        for p in (listener, talker):
            join(p, "5678", "8765")
        settle(hd_server, "5678", before + 2)
        dropped0 = metric(hd_server, "sipconf_rtp_packets_dropped")
        with talker._tx_lock:  # 50 packets of the right PT that are not Opus (a code-3 TOC cut short)
            for _ in range(50):
                talker._send_rtp(talker.answer_pt, False, b"\x03\xff", talker._ts)
                talker._ts = (talker._ts + 960) & 0xFFFFFFFF
        assert wait_until(lambda: metric(hd_server, "sipconf_rtp_packets_dropped") >= dropped0 + 50, 3)
        talker.send_tone(3000.0, amplitude=8000)
        assert listener.wait_for_tone(3000.0, timeout=3, threshold=3000)
        assert "Traceback" not in hd_server.log()
    finally:
        talker.close()
        listener.close()
