from mixer import rtp
from mixer.dtmf import DtmfDetector


def event_packets(event: int, ts: int, *, starts: int = 3, ends: int = 3):
    """RFC 4733 as senders (and SIPp pcaps) emit it: updates, then 3 end packets."""
    return [(ts, event, False) for _ in range(starts)] + [(ts, event, True) for _ in range(ends)]


def feed_all(det: DtmfDetector, packets) -> str:
    return "".join(d for p in packets if (d := det.feed(*p)))


def test_one_digit_per_event_despite_repeated_end_packets():
    assert feed_all(DtmfDetector(), event_packets(5, 1000, ends=5)) == "5"


def test_end_packet_alone_counts_when_start_packets_are_lost():
    assert feed_all(DtmfDetector(), event_packets(9, 1000, starts=0)) == "9"


def test_identical_replayed_digit_counts_twice():
    # SIPp replays the same pcap: same event, same timestamp
    pkts = event_packets(1, 4242) + event_packets(1, 4242)
    assert feed_all(DtmfDetector(), pkts) == "11"


def test_sipp_sequence_with_repeated_timestamps():
    # each digit of "1234#4321#" replayed from a per-digit pcap that always
    # uses the same timestamp: the 4 of "#4" follows an ended 4-less event but
    # "44" would also have to count twice
    det = DtmfDetector()
    out = ""
    for ch in "1234#4321#44":
        ev = "0123456789*#".index(ch)
        out += feed_all(det, event_packets(ev, 8000))
    assert out == "1234#4321#44"


def test_event_codes_map_to_digits():
    det = DtmfDetector()
    out = ""
    for ev in range(16):
        out += feed_all(det, event_packets(ev, 160 * (ev + 1), starts=1, ends=1))
    assert out == "0123456789*#ABCD"
    assert rtp.event_digit(16) is None


def test_all_end_packets_lost_digit_emitted_on_next_event():
    det = DtmfDetector()
    assert feed_all(det, event_packets(3, 1000, ends=0)) == ""
    assert det.pending
    assert feed_all(det, event_packets(4, 2000)) == "34"


def test_all_end_packets_lost_digit_emitted_when_stale():
    det = DtmfDetector(stale_after=0.5)
    assert det.feed(1000, 6, False, now=10.0) is None
    assert det.expire(10.2) is None
    assert det.expire(10.6) == "6"
    assert det.expire(11.0) is None
    # late end packets of that event do not count again
    assert det.feed(1000, 6, True, now=11.1) is None


def test_lost_end_then_superseding_end_only_packet_gives_both():
    det = DtmfDetector()
    det.feed(1000, 1, False)
    assert det.feed(2000, 2, True) == "12"


def test_telephone_event_payload_round_trip():
    payload = rtp.build_telephone_event(11, True, 800, volume=7)
    ev = rtp.parse_telephone_event(payload, 0, len(payload))
    assert ev == rtp.TelephoneEvent(11, True, 7, 800)
    assert rtp.parse_telephone_event(payload, 0, 3) is None
