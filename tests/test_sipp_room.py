"""SIPp joins a room the way the load tests do (issue #3): over the trunk,
conference ID and PIN as RFC 4733 events replayed from Debian's
dtmf_2833_<d>.pcap, then G.711 A-law speech (g711a.pcap) via rtp_stream.
A test phone already in the conference must hear it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import time

import numpy as np
import pytest

from phone import TestPhone
from support import (REPO, SIPP, SIPP_DIR, SIPP_PCAPS, ServerProcess, _sipp_counts, free_port, free_rtp_range,
                     wait_until)

pytestmark = pytest.mark.skipif(
    SIPP is None or not (SIPP_PCAPS / "g711a.pcap").exists(),
    reason="sipp and its pcaps (Debian sip-tester) are not installed")


def _rtpgen():
    spec = importlib.util.spec_from_file_location("rtpgen", REPO / "scripts" / "rtpgen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def joined(server, conference="1234") -> list[str]:
    return re.findall(rf"call (\S+): joined conference {conference} of room 800", server.log())


def window_rms(samples: np.ndarray, seconds: float = 0.5) -> list[float]:
    n = int(8000 * seconds)
    x = samples.astype(np.float64)
    return [float(np.sqrt(np.mean(x[i:i + n] ** 2))) for i in range(0, len(x) - n + 1, n)]


def test_sipp_joins_room_by_rfc4733_pcaps_and_is_heard(tmp_path):
    # the speech of g711a.pcap as raw A-law, where rtp_stream looks for it
    (tmp_path / "speech.alaw").write_bytes(_rtpgen().speech_alaw())
    server = ServerProcess(tmp_path).start()  # demo configuration: trunk 127.0.0.2, room 800, 1234/4321
    phone = TestPhone(("127.0.0.1", server.sip_port), user="101", password="alice-secret", codecs=("PCMA",))
    sipp = None
    try:
        answer = phone.call("800")
        assert answer.status == 200, answer
        assert phone.wait_for_rtp(5, timeout=3)
        time.sleep(0.3)
        phone.send_dtmf("1234#4321#")
        assert wait_until(lambda: len(joined(server)) == 1, 15), server.log()[-3000:]
        time.sleep(2.5)  # "you are the first participant" (1.9 s) is over
        quiet = phone.rms(seconds=0.5)
        assert quiet < 100, f"the phone alone should hear silence (rms {quiet:.0f})"

        hold_ms = 9000
        args = [SIPP, f"127.0.0.1:{server.sip_port}", "-sf", str(SIPP_DIR / "room_join.xml"),
                "-i", "127.0.0.2", "-p", str(free_port("127.0.0.2")), "-mp", str(free_rtp_range(10)[0]),
                "-s", "800", "-d", str(hold_ms), "-m", "1", "-nostdin", "-timeout", "40s", "-timeout_error",
                "-trace_err", "-trace_stat", "-stf", "stats.csv", "-fd", "1"]
        started = time.monotonic()
        sipp = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True)
        assert wait_until(lambda: len(joined(server)) == 2, 15), server.log()[-3000:]
        sipp_call = joined(server)[1]
        assert "127.0.0.2" in sipp_call
        join_seen = time.monotonic()
        output, _ = sipp.communicate(timeout=60)
        ended = time.monotonic()
        assert sipp.returncode == 0, output[-3000:] + (tmp_path / "stats.csv").read_text(errors="replace")
        successful, failed = _sipp_counts(tmp_path / "stats.csv")
        assert (successful, failed) == (1, 0)
        assert re.search(rf"call {re.escape(sipp_call)}: left conference 1234 of room 800", server.log())

        # The speech (g711a.pcap is 1.5 s of near silence then speech at
        # rms 500-3000) plays from about 0.5 s after the join until BYE.
        heard = phone.received_audio(since=join_seen + 0.5)
        heard = heard[: int(8000 * max(0.0, ended - join_seen - 1.0))]
        levels = window_rms(heard)
        assert len(levels) >= 8, levels
        loud = [x for x in levels if x > 400]
        assert len(loud) >= len(levels) // 3, f"phone heard too little of SIPp's speech: {levels}"
        assert max(levels) > 1000, levels
        assert ended - started < 40
    finally:
        if sipp is not None and sipp.poll() is None:
            sipp.kill()
            sipp.wait(5)
        phone.close()
        server.stop()
