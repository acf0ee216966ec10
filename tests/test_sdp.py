import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipconf.sdp import (
    AudioSelection,
    NoCommonCodec,
    SdpError,
    answer_direction,
    build_answer,
    parse_sdp,
    select_audio,
)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


PHONE_OFFER = sdp(
    "v=0",
    "o=- 3917634012 3917634012 IN IP4 192.168.1.50",
    "s=Polycom IP Phone",
    "c=IN IP4 192.168.1.50",
    "t=0 0",
    "m=audio 2222 RTP/AVP 0 8 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
    "a=sendrecv",
)

SIPP_OFFER = sdp(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)

SIPP_BARE_OFFER = (
    "v=0\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\n"
    "s=-\n"
    "c=IN IP4 127.0.0.1\n"
    "t=0 0\n"
    "m=audio 6000 RTP/AVP 0 101\n"
    "a=rtpmap:101 telephone-event/8000\n"
)


def answer_lines(offer_bytes, **kwargs):
    offer = parse_sdp(offer_bytes)
    selection = select_audio(offer)
    args = dict(address="10.0.0.1", port=20000, session_id=42, version=1)
    args.update(kwargs)
    body = build_answer(offer, selection, **args)
    assert body.endswith(b"\r\n")
    assert b"\n" not in body.replace(b"\r\n", b"")
    return body.decode().split("\r\n")[:-1]


# ---------------------------------------------------------------- parsing


def test_parse_phone_offer():
    session = parse_sdp(PHONE_OFFER)
    assert session.origin == "- 3917634012 3917634012 IN IP4 192.168.1.50"
    assert session.session_name == "Polycom IP Phone"
    assert session.connection == "192.168.1.50"
    assert session.direction is None
    (media,) = session.media
    assert media.media == "audio"
    assert media.port == 2222
    assert media.proto == "RTP/AVP"
    assert media.formats == ["0", "8", "101"]
    assert media.rtpmap == {
        0: ("PCMU", 8000, 1),
        8: ("PCMA", 8000, 1),
        101: ("telephone-event", 8000, 1),
    }
    assert media.fmtp == {101: "0-15"}
    assert media.ptime == 20
    assert media.direction == "sendrecv"
    assert media.connection is None
    assert ("rtpmap", "0 PCMU/8000") in media.attributes
    assert ("sendrecv", None) in media.attributes


def test_parse_accepts_str_and_bare_lf():
    session = parse_sdp(SIPP_BARE_OFFER)
    assert session.media[0].formats == ["0", "101"]
    assert session.media[0].rtpmap == {101: ("telephone-event", 8000, 1)}


def test_parse_rtpmap_channels_and_case_kept():
    session = parse_sdp(sdp(
        "v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4", "t=0 0",
        "m=audio 4000 RTP/AVP 111 0",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:0 pcmu/8000",
    ))
    assert session.media[0].rtpmap == {111: ("opus", 48000, 2), 0: ("pcmu", 8000, 1)}


def test_parse_ipv6_and_multicast_ttl():
    session = parse_sdp(sdp(
        "v=0", "o=- 1 1 IN IP6 ::1", "s=-", "c=IN IP6 2001:db8::5", "t=0 0",
        "m=audio 4000 RTP/AVP 0", "c=IN IP4 224.2.1.1/127/3",
    ))
    assert session.connection == "2001:db8::5"
    assert session.media[0].connection == "224.2.1.1"


def test_parse_fractional_ptime():
    session = parse_sdp(sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0", "a=ptime:30.0"))
    assert session.media[0].ptime == 30


def test_parse_session_direction_applies_to_media_without_its_own():
    session = parse_sdp(sdp(
        "v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4", "t=0 0",
        "a=sendonly",
        "m=audio 4000 RTP/AVP 0",
        "m=audio 4002 RTP/AVP 0", "a=recvonly",
    ))
    assert session.direction == "sendonly"
    assert session.media[0].direction == "sendonly"
    assert session.media[1].direction == "recvonly"


@pytest.mark.parametrize("body", [
    b"",
    b"\r\n\r\n",
    b"garbage",
    b"hello world\r\nthis is not sdp",
    b"\x00\xff\xfe\x80",
    sdp("v=1", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0"),
    sdp("o=- 1 1 IN IP4 1.2.3.4", "v=0", "m=audio 4000 RTP/AVP 0"),
    # missing m=
    sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4", "t=0 0"),
    # bad ports
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio abc RTP/AVP 0"),
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 70000 RTP/AVP 0"),
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio -1 RTP/AVP 0"),
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio ４０００ RTP/AVP 0"),
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000/x RTP/AVP 0"),
    # m= without formats
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP"),
    # bad c=
    sdp("v=0", "c=IN IP4", "m=audio 4000 RTP/AVP 0"),
    sdp("v=0", "c=XX IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0"),
    # bad rtpmap / ptime
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0", "a=rtpmap:x PCMU/8000"),
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0", "a=rtpmap:0 PCMU"),
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0", "a=rtpmap:0 PCMU/fast"),
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0", "a=rtpmap:200 PCMU/8000"),
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0", "a=ptime:twenty"),
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0", "a=ptime:0"),
    # a line that is not type=value
    sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0", "not a line"),
])
def test_malformed_bodies_raise_sdp_error(body):
    with pytest.raises(SdpError):
        parse_sdp(body)


def test_wrong_type_raises_sdp_error():
    with pytest.raises(SdpError):
        parse_sdp(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- selection


def test_select_phone_offer_takes_first_codec_and_telephone_event():
    selection = select_audio(parse_sdp(PHONE_OFFER))
    assert selection == AudioSelection(
        codec="PCMU", payload_type=0, telephone_event_pt=101,
        remote_host="192.168.1.50", remote_port=2222, direction="sendrecv",
        ptime=20, media_index=0,
    )


def test_select_sipp_offer_static_pt_without_rtpmap():
    selection = select_audio(parse_sdp(SIPP_BARE_OFFER))
    assert (selection.codec, selection.payload_type) == ("PCMU", 0)
    assert selection.telephone_event_pt == 101
    assert (selection.remote_host, selection.remote_port) == ("127.0.0.1", 6000)
    assert selection.ptime is None

    bare = parse_sdp(sdp("v=0", "c=IN IP4 127.0.0.1", "m=audio 6000 RTP/AVP 0"))
    selection = select_audio(bare)
    assert (selection.codec, selection.payload_type, selection.telephone_event_pt) == ("PCMU", 0, None)


def test_select_pcma_first():
    offer = parse_sdp(sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 8 0 101",
                          "a=rtpmap:101 telephone-event/8000"))
    selection = select_audio(offer)
    assert (selection.codec, selection.payload_type) == ("PCMA", 8)


def test_select_follows_offer_order_not_server_order():
    offer = parse_sdp(sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 8 0"))
    assert select_audio(offer, supported=("PCMU", "PCMA")).codec == "PCMA"
    assert select_audio(offer, supported=("pcmu",)).codec == "PCMU"


def test_select_skips_unsupported_codecs_first():
    offer = parse_sdp(sdp(
        "v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 9 18 111 8 101",
        "a=rtpmap:9 G722/8000", "a=rtpmap:18 G729/8000", "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:101 telephone-event/8000",
    ))
    assert (select_audio(offer).codec, select_audio(offer).payload_type) == ("PCMA", 8)


def test_select_dynamic_telephone_event_pt_kept():
    offer = parse_sdp(sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0 96",
                          "a=rtpmap:96 telephone-event/8000", "a=fmtp:96 0-16"))
    assert select_audio(offer).telephone_event_pt == 96


def test_select_ignores_wideband_telephone_event_and_unlisted_rtpmap():
    offer = parse_sdp(sdp(
        "v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0 100",
        "a=rtpmap:100 telephone-event/16000", "a=rtpmap:101 telephone-event/8000",
    ))
    assert select_audio(offer).telephone_event_pt is None


def test_select_dynamic_pt_naming_pcmu():
    offer = parse_sdp(sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 97 101",
                          "a=rtpmap:97 pcmu/8000", "a=rtpmap:101 telephone-event/8000"))
    selection = select_audio(offer)
    assert (selection.codec, selection.payload_type) == ("PCMU", 97)


def test_g729_only_offer_has_no_common_codec():
    offer = parse_sdp(sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 18 101",
                          "a=rtpmap:18 G729/8000", "a=rtpmap:101 telephone-event/8000"))
    with pytest.raises(NoCommonCodec):
        select_audio(offer)
    assert issubclass(NoCommonCodec, SdpError)


def test_video_only_or_disabled_or_srtp_audio_has_no_common_codec():
    for body in (
        sdp("v=0", "c=IN IP4 1.2.3.4", "m=video 4000 RTP/AVP 96", "a=rtpmap:96 H264/90000"),
        sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 0 RTP/AVP 0"),
        sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/SAVP 0"),
    ):
        with pytest.raises(NoCommonCodec):
            select_audio(parse_sdp(body))


def test_select_accepts_avpf_and_skips_unusable_lines():
    offer = parse_sdp(sdp(
        "v=0", "c=IN IP4 1.2.3.4",
        "m=audio 0 RTP/AVP 0",
        "m=video 5000 RTP/AVP 96",
        "m=audio 4100 RTP/AVP 18",
        "m=audio 4200 RTP/AVPF 8",
    ))
    selection = select_audio(offer)
    assert (selection.media_index, selection.remote_port, selection.codec) == (3, 4200, "PCMA")


def test_media_connection_overrides_session():
    offer = parse_sdp(sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0",
                          "c=IN IP4 5.6.7.8"))
    assert select_audio(offer).remote_host == "5.6.7.8"


def test_media_connection_only():
    offer = parse_sdp(sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "t=0 0",
                          "m=audio 4000 RTP/AVP 0", "c=IN IP4 5.6.7.8"))
    assert offer.connection is None
    assert select_audio(offer).remote_host == "5.6.7.8"


def test_no_connection_address_is_sdp_error():
    offer = parse_sdp(sdp("v=0", "m=audio 4000 RTP/AVP 0"))
    with pytest.raises(SdpError):
        select_audio(offer)


@pytest.mark.parametrize("session_attr,media_attr,expected", [
    (None, None, "sendrecv"),
    (None, "sendonly", "sendonly"),
    (None, "recvonly", "recvonly"),
    (None, "inactive", "inactive"),
    ("sendonly", None, "sendonly"),
    ("inactive", None, "inactive"),
    ("sendonly", "sendrecv", "sendrecv"),
])
def test_offer_direction_media_then_session(session_attr, media_attr, expected):
    lines = ["v=0", "c=IN IP4 1.2.3.4"]
    if session_attr:
        lines.append(f"a={session_attr}")
    lines.append("m=audio 4000 RTP/AVP 0")
    if media_attr:
        lines.append(f"a={media_attr}")
    assert select_audio(parse_sdp(sdp(*lines))).direction == expected


@pytest.mark.parametrize("media_attr,expected", [
    (None, "sendonly"),
    ("sendrecv", "sendonly"),
    ("sendonly", "sendonly"),
    ("recvonly", "inactive"),
    ("inactive", "inactive"),
])
def test_hold_by_zero_address(media_attr, expected):
    lines = ["v=0", "c=IN IP4 0.0.0.0", "m=audio 4000 RTP/AVP 0"]
    if media_attr:
        lines.append(f"a={media_attr}")
    selection = select_audio(parse_sdp(sdp(*lines)))
    assert selection.direction == expected
    assert selection.remote_host == "0.0.0.0"


def test_answer_direction():
    assert answer_direction("sendrecv") == "sendrecv"
    assert answer_direction("sendonly") == "recvonly"
    assert answer_direction("recvonly") == "sendonly"
    assert answer_direction("inactive") == "inactive"
    with pytest.raises(SdpError):
        answer_direction("sideways")


# ---------------------------------------------------------------- answer


def test_answer_to_phone_offer():
    assert answer_lines(PHONE_OFFER) == [
        "v=0",
        "o=sipconf 42 1 IN IP4 10.0.0.1",
        "s=sipconf",
        "c=IN IP4 10.0.0.1",
        "t=0 0",
        "m=audio 20000 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
        "a=sendrecv",
    ]


def test_answer_to_bare_sipp_offer_defaults_fmtp():
    lines = answer_lines(SIPP_BARE_OFFER)
    assert "m=audio 20000 RTP/AVP 0 101" in lines
    assert "a=rtpmap:0 PCMU/8000" in lines
    assert "a=fmtp:101 0-16" in lines


def test_answer_without_telephone_event():
    lines = answer_lines(sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 8"))
    assert lines[5:] == ["m=audio 20000 RTP/AVP 8", "a=rtpmap:8 PCMA/8000", "a=ptime:20", "a=sendrecv"]


def test_answer_keeps_dynamic_numbers():
    lines = answer_lines(sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 97 96",
                             "a=rtpmap:97 PCMU/8000", "a=rtpmap:96 telephone-event/8000"))
    assert lines[5:9] == [
        "m=audio 20000 RTP/AVP 97 96", "a=rtpmap:97 PCMU/8000",
        "a=rtpmap:96 telephone-event/8000", "a=fmtp:96 0-16",
    ]


def test_answer_rejects_video_and_extra_audio_in_order():
    offer = sdp(
        "v=0", "c=IN IP4 1.2.3.4",
        "m=video 5000 RTP/AVP 96 97", "a=rtpmap:96 H264/90000",
        "m=audio 4000 RTP/AVP 18 0",
        "m=audio 4002 RTP/AVP 8",
        "m=application 5002 UDP/BFCP *",
    )
    lines = answer_lines(offer)
    m_lines = [line for line in lines if line.startswith("m=")]
    assert m_lines == [
        "m=video 0 RTP/AVP 96",
        "m=audio 20000 RTP/AVP 0",
        "m=audio 0 RTP/AVP 8",
        "m=application 0 UDP/BFCP *",
    ]


@pytest.mark.parametrize("media_attr,expected", [
    ("sendonly", "a=recvonly"),
    ("inactive", "a=inactive"),
    ("recvonly", "a=sendonly"),
])
def test_answer_to_hold_offers(media_attr, expected):
    lines = answer_lines(sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0", f"a={media_attr}"))
    assert lines[-1] == expected


def test_answer_to_zero_address_hold():
    lines = answer_lines(sdp("v=0", "c=IN IP4 0.0.0.0", "m=audio 4000 RTP/AVP 0"))
    assert lines[-1] == "a=recvonly"


def test_answer_ipv6_address():
    lines = answer_lines(PHONE_OFFER, address="2001:db8::1", session_id=7, version=3)
    assert lines[1] == "o=sipconf 7 3 IN IP6 2001:db8::1"
    assert lines[3] == "c=IN IP6 2001:db8::1"


def test_answer_keeps_avpf_transport():
    lines = answer_lines(sdp("v=0", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVPF 0"))
    assert lines[5] == "m=audio 20000 RTP/AVPF 0"


def test_answer_is_parseable():
    offer = parse_sdp(PHONE_OFFER)
    body = build_answer(offer, select_audio(offer), address="10.0.0.1", port=20002,
                        session_id=1, version=2)
    answer = parse_sdp(body)
    selection = select_audio(answer)
    assert (selection.codec, selection.payload_type, selection.telephone_event_pt) == ("PCMU", 0, 101)
    assert (selection.remote_host, selection.remote_port, selection.ptime) == ("10.0.0.1", 20002, 20)


# ---------------------------------------------------------------- fuzzing

_FRAGMENTS = st.sampled_from([
    "v=0", "v=1", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "t=0 0", "c=IN IP4 1.2.3.4",
    "c=IN IP4 0.0.0.0", "c=IN IP6 ::1", "c=IN", "m=audio 4000 RTP/AVP 0 8 101",
    "m=audio 0 RTP/AVP 0", "m=video 5000 RTP/AVP 96", "m=audio 4000 RTP/AVPF 96",
    "m=audio x RTP/AVP 0", "m=audio 4000", "a=rtpmap:101 telephone-event/8000",
    "a=rtpmap:96 PCMU/8000", "a=rtpmap:96", "a=rtpmap:x y/z", "a=fmtp:101 0-16",
    "a=fmtp:", "a=ptime:20", "a=ptime:", "a=sendonly", "a=inactive", "a=recvonly",
    "a=", "a", "=", "b=AS:64", "z=", "m=audio 4000/2 RTP/AVP 0", "",
])


def _exercise(body):
    try:
        offer = parse_sdp(body)
        selection = select_audio(offer)
        build_answer(offer, selection, address="10.0.0.1", port=20000, session_id=1, version=1)
    except SdpError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_bytes_only_raise_sdp_error(body):
    _exercise(body)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_text_only_raise_sdp_error(body):
    _exercise(body)
    _exercise("v=0\r\n" + body)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=30)), max_size=20),
       st.sampled_from(["\r\n", "\n", "\r"]))
def test_fuzz_sdp_like_lines_only_raise_sdp_error(lines, line_end):
    _exercise(line_end.join(["v=0", *lines]))
