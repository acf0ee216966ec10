"""Churn soak, short version (issue #6): scripts/soak with 60 join/leave
cycles after 20 of warm-up, one caller staying in the conference throughout.

Counts, not speed: every cycle succeeds and joins, every RTP port comes back
to the pool, the server's open fds come back to the warm-up level (within 3),
and the long-lived caller's audio never stops for 200 ms (a gap is audio
loss; the script's own bar is 100 ms, kept looser here because the suite
shares a 2-core machine; README has the full-size figures)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import REPO, SIPP, SIPP_PCAPS

pytestmark = pytest.mark.skipif(
    SIPP is None or not (SIPP_PCAPS / "dtmf_2833_1.pcap").exists(),
    reason="sipp and its pcaps (Debian sip-tester) are not installed")


def test_short_churn_soak(tmp_path):
    report = tmp_path / "soak.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "soak"), "--cycles", "60", "--warmup", "20", "--rate", "10",
         "--concurrency", "50", "--hold-ms", "500", "--timeout", "150", "--max-gap-ms", "200",
         "--json", str(report), "--keep", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    output = completed.stdout + completed.stderr
    assert report.exists(), output[-3000:]
    result = json.loads(report.read_text())
    assert (result["ok"], result["failed"], result["joined"]) == (60, 0, 60), output
    assert result["ports_free_idle"] == result["rtp_pool"], output
    assert result["at_end"]["ports_free"] == result["rtp_pool"] - 1, output  # only the long-lived call's
    assert abs(result["at_end"]["fds"] - result["after_warmup"]["fds"]) <= 3, output
    assert result["packets"] > 0 and result["max_gap_ms"] < 200, output
    assert result["caller_alive"] and result["caller_bye"] == 200, output
    assert result["server_exit"] == 0, output
    assert completed.returncode == 0, output
