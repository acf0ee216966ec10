"""scripts/loadtest --admin at a small size: an open console (event stream
read, /api/rooms and /api/status every second) all along a real load run;
every call works, the console saw every join and leave and no poll failed
(counts, never speed)."""

from __future__ import annotations

import subprocess

import pytest

from support import SIPP, SIPP_PCAPS, run_loadtest

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    SIPP is None or not (SIPP_PCAPS / "dtmf_2833_1.pcap").exists(),
    reason="sipp and its pcaps (Debian sip-tester) are not installed")]


def test_loadtest_admin_console_sees_every_participant(tmp_path):
    table, result, completed = run_loadtest(tmp_path, "-n", "10", "--rooms", "2", "--rate", "20", "--hold", "5", "--admin")
    assert "admin console: events received" in table and "tick lateness p50 / p99 / max" in table
    admin = result["admin"]
    assert admin["stream_error"] is None and admin["polls_failed"] == 0 and admin["polls_ok"] >= 6
    assert admin["events"]["joined"] == 10 and admin["events"]["left"] == 10
    assert admin["rooms_bytes"] > 1000  # the rooms answer held the participants at some point
    out = tmp_path / "run"  # run_loadtest's --out-dir
    assert "[admin]" in (out / "sipconf.toml").read_text()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out) not in ps
