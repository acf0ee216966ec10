"""SPEC 10 in the configuration and in SDP offer/answer (pure, no sockets),
plus check-config refusing an unknown codec (the real CLI)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sipconf.config import ConfigError, parse_config
from sipconf.sdp import build_answer, parse_sdp, select_audio

REPO = Path(__file__).resolve().parents[1]
ALL = ("OPUS", "G722", "PCMA", "PCMU")


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def server(text: str):
    return parse_config(tomllib.loads("[server]\n" + text)).server


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads("[server]\n" + text))
    return info.value.problems


def test_codecs_and_mix_rate_defaults_and_values():
    s = server("")
    assert s.codecs == ALL and s.max_mix_rate == 48000
    s = server('codecs = ["pcma", "G722"]\nmax_mix_rate = 16000\n')
    assert s.codecs == ("PCMA", "G722") and s.max_mix_rate == 16000


@pytest.mark.parametrize("line,needle", [
    ('codecs = ["G729"]', "[server] codecs[0]: must be one of opus, G722, PCMA, PCMU, got 'G729'"),
    ('codecs = ["PCMA", "pcma"]', "[server] codecs[1]: 'pcma' is listed twice"),
    ("codecs = []", "[server] codecs: must name at least one codec"),
    ('codecs = "PCMA"', "[server] codecs: must be an array of strings"),
    ("max_mix_rate = 12000", "[server] max_mix_rate: must be 8000, 16000 or 48000, got 12000"),
    ("max_mix_rate = 96000", "[server] max_mix_rate: must be an integer 8000-48000"),
])
def test_codec_rules(line, needle):
    found = problems(line + "\n")
    assert len(found) == 1 and needle in found[0], found


def test_check_config_refuses_an_unknown_codec(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\ncodecs = ["opus", "speex"]\n')
    run = subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(bad)], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "[server] codecs[1]" in run.stderr + run.stdout and "speex" in run.stderr + run.stdout


OFFER = ("v=0", "o=- 1 1 IN IP4 10.0.0.5", "s=-", "c=IN IP4 10.0.0.5", "t=0 0")


def test_g722_static_payload_type_without_rtpmap():
    offer = parse_sdp(sdp(*OFFER, "m=audio 4000 RTP/AVP 9 0 101", "a=rtpmap:101 telephone-event/8000"))
    sel = select_audio(offer, ALL)
    assert (sel.codec, sel.payload_type, sel.telephone_event_pt, sel.telephone_event_rate) == ("G722", 9, 101, 8000)
    answer = build_answer(offer, sel, address="10.0.0.1", port=20000, session_id=1, version=1).decode()
    assert "m=audio 20000 RTP/AVP 9 101" in answer and "a=rtpmap:9 G722/8000" in answer
    assert "a=rtpmap:101 telephone-event/8000" in answer


def test_opus_answer_has_fec_and_48k_telephone_event():
    offer = parse_sdp(sdp(*OFFER, "m=audio 4000 RTP/AVP 111 9 8 101 100",
                          "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1",
                          "a=rtpmap:101 telephone-event/48000", "a=rtpmap:100 telephone-event/8000"))
    sel = select_audio(offer, ALL)
    assert (sel.codec, sel.payload_type, sel.telephone_event_pt, sel.telephone_event_rate) == ("OPUS", 111, 101, 48000)
    answer = build_answer(offer, sel, address="10.0.0.1", port=20000, session_id=1, version=1).decode()
    for line in ("m=audio 20000 RTP/AVP 111 101", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 useinbandfec=1",
                 "a=rtpmap:101 telephone-event/48000", "a=ptime:20"):
        assert line in answer, answer


def test_opus_offer_with_8k_telephone_event_keeps_it():
    offer = parse_sdp(sdp(*OFFER, "m=audio 4000 RTP/AVP 111 101", "a=rtpmap:111 opus/48000/2",
                          "a=rtpmap:101 telephone-event/8000"))
    sel = select_audio(offer, ALL)
    assert (sel.telephone_event_pt, sel.telephone_event_rate) == (101, 8000)
    answer = build_answer(offer, sel, address="10.0.0.1", port=20000, session_id=1, version=1).decode()
    assert "a=rtpmap:101 telephone-event/8000" in answer


def test_first_enabled_codec_of_the_offer_wins():
    offer = parse_sdp(sdp(*OFFER, "m=audio 4000 RTP/AVP 111 9 8", "a=rtpmap:111 opus/48000/2"))
    assert select_audio(offer, ALL).codec == "OPUS"
    assert select_audio(offer, ("PCMA", "G722")).codec == "G722"
    assert select_audio(offer, ("PCMA",)).codec == "PCMA"


def test_opus_must_say_48000():
    offer = parse_sdp(sdp(*OFFER, "m=audio 4000 RTP/AVP 96 0", "a=rtpmap:96 opus/16000/1"))
    assert select_audio(offer, ALL).codec == "PCMU"
