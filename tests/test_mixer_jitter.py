import numpy as np
import pytest

from mixer.jitter import CONCEALED, FRAME, READY, SILENT, JitterBuffer

SIL = 0xFF


def stream(n_samples: int) -> bytes:
    # distinct, recognisable bytes (never the silence byte)
    return bytes((i % 250) for i in range(n_samples))


def run(jb: JitterBuffer, ticks: int) -> tuple[list[int], bytes]:
    out = bytearray(ticks * FRAME)
    sts = []
    for t in range(ticks):
        st = jb.pop_into(out, t * FRAME)
        sts.append(st)
        if st == SILENT:
            out[t * FRAME:(t + 1) * FRAME] = bytes([SIL]) * FRAME
    return sts, bytes(out)


def test_in_order_frames_come_out_after_the_delay():
    jb = JitterBuffer(SIL, delay=2)
    data = stream(5 * FRAME)
    for i in range(5):
        jb.put(1000 + i * FRAME, data, i * FRAME, (i + 1) * FRAME)
    sts, out = run(jb, 7)
    assert sts == [SILENT, SILENT, READY, READY, READY, READY, READY]
    assert out[2 * FRAME:] == data


@pytest.mark.parametrize("packet_ms", [10, 20, 30, 60])
def test_packets_of_10_to_60_ms_are_reframed_by_timestamp(packet_ms):
    n = packet_ms * 8
    data = stream(12 * FRAME)
    jb = JitterBuffer(SIL, delay=0)
    out = bytearray()
    pos = 0
    ts0 = 0xFFFFFF00  # crosses the 32-bit timestamp wrap
    sts = []
    # interleave arrivals with ticks, as on the wire: deliver what is due
    for tick in range(12):
        while pos < (tick + 1) * FRAME:
            jb.put((ts0 + pos) & 0xFFFFFFFF, data, pos, pos + n)
            pos += n
        frame = bytearray(FRAME)
        sts.append(jb.pop_into(frame, 0))
        out += frame
    assert sts == [READY] * 12
    assert bytes(out) == data


def test_reordered_packets_are_put_back_in_order():
    data = stream(6 * FRAME)
    jb = JitterBuffer(SIL, delay=2)
    for i in [0, 2, 1, 4, 3, 5]:
        jb.put(i * FRAME, data, i * FRAME, (i + 1) * FRAME)
    sts, out = run(jb, 8)
    assert sts[2:] == [READY] * 6
    assert out[2 * FRAME:] == data


def test_duplicates_do_not_change_the_output():
    data = stream(4 * FRAME)
    a, b = JitterBuffer(SIL), JitterBuffer(SIL)
    for i in range(4):
        a.put(i * FRAME, data, i * FRAME, (i + 1) * FRAME)
        for _ in range(3):
            b.put(i * FRAME, data, i * FRAME, (i + 1) * FRAME)
    assert run(a, 6) == run(b, 6)


def test_one_lost_frame_is_concealed_then_silence():
    data = stream(6 * FRAME)
    jb = JitterBuffer(SIL, delay=1)
    for i in [0, 2]:  # frame 1 lost
        jb.put(i * FRAME, data, i * FRAME, (i + 1) * FRAME)
    # frames 3,4 lost too
    jb.put(5 * FRAME, data, 5 * FRAME, 6 * FRAME)
    sts, out = run(jb, 7)
    assert sts == [SILENT, READY, CONCEALED, READY, CONCEALED, SILENT, READY]
    # concealment repeats the previous frame (caller plays it at half amplitude)
    assert out[2 * FRAME:3 * FRAME] == data[:FRAME]
    assert out[4 * FRAME:5 * FRAME] == data[2 * FRAME:3 * FRAME]
    assert jb.concealed == 2


def test_too_late_packets_are_dropped():
    data = stream(4 * FRAME)
    jb = JitterBuffer(SIL, delay=1)
    jb.put(0, data, 0, FRAME)
    run(jb, 3)  # frames 0 (silent/delay), 0, 1 have been played
    assert not jb.put(FRAME, data, FRAME, 2 * FRAME)
    assert jb.late == 1
    assert jb.put(2 * FRAME, data, 2 * FRAME, 3 * FRAME)


def test_stream_restart_or_slow_sender_resyncs_after_three_late_packets():
    data = stream(10 * FRAME)
    jb = JitterBuffer(SIL, delay=1)
    jb.put(100_000, data, 0, FRAME)
    run(jb, 3)
    for i in range(3):  # new timestamp base far in the past
        jb.put(500 + i * FRAME, data, (i + 1) * FRAME, (i + 2) * FRAME)
    assert jb.resyncs == 1
    sts, out = run(jb, 3)
    assert READY in sts


def test_timestamp_jump_forward_resyncs():
    data = stream(2 * FRAME)
    jb = JitterBuffer(SIL, delay=1)
    jb.put(0, data, 0, FRAME)
    jb.put(80_000, data, FRAME, 2 * FRAME)
    assert jb.resyncs == 1
    sts, out = run(jb, 2)
    assert sts == [SILENT, READY] and out[FRAME:] == data[FRAME:]


def test_partial_frame_is_padded_with_silence_and_oversize_rejected():
    data = stream(FRAME)
    jb = JitterBuffer(SIL, delay=0)
    jb.put(0, data, 0, 80)  # only the first 10 ms arrives
    sts, out = run(jb, 1)
    assert sts == [READY] and out[:80] == data[:80] and out[80:] == bytes([SIL]) * 80
    assert not jb.put(0, bytes(2000))
