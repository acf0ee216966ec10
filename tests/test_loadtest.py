"""scripts/loadtest at a small size against the real server: every call
succeeds and audio flows both ways for every participant (counts, never
speed). Also REGISTER many (scripts/sipp/register_many.xml) and the
receptionist room-join scenario."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from support import REPO, SIPP, SIPP_PCAPS, ServerProcess, _sipp_counts, free_port, free_rtp_range, run_loadtest, run_sipp

pytestmark = pytest.mark.skipif(
    SIPP is None or not (SIPP_PCAPS / "dtmf_2833_1.pcap").exists(),
    reason="sipp and its pcaps (Debian sip-tester) are not installed")


def test_loadtest_small_run_all_calls_ok_audio_both_ways(tmp_path):
    table, result, completed = run_loadtest(tmp_path, "-n", "20", "--rooms", "2", "--rate", "20", "--hold", "6")
    assert "calls attempted / ok / failed" in table and "tick lateness p50 / p99 / max" in table
    assert result["sipp"] == {"attempted": 20, "ok": 20, "failed": 0}
    assert result["server_joined"] == 20
    assert result["streamed_calls"] == 20
    assert result["window"] >= 3
    rx = result["rx_per_participant"]
    assert rx["silent"] == 0 and rx["min"] > 0          # every participant heard the server
    assert result["server_in_per_participant"] > 0       # the server heard them
    assert result["server_out_per_participant"] > 0
    assert result["participants_gauge"] == 20
    assert result["server_errors"] == 0
    # every process the runner started is gone
    out = tmp_path / "run"  # run_loadtest's --out-dir
    for name in ("server.log", "sipp.out"):
        assert (out / name).exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out) not in ps


def test_loadtest_help():
    completed = subprocess.run([sys.executable, str(REPO / "scripts" / "loadtest"), "--help"],
                               capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0
    assert "--participants" in completed.stdout and "--pin" in completed.stdout


def test_register_many_from_csv(tmp_path):
    with ServerProcess(tmp_path) as server:
        result = run_sipp(tmp_path, "register_many.xml", server.sip_port, calls=4, rate=20, timeout=20,
                          extra=["-inf", str(REPO / "scripts" / "sipp" / "register_many.csv")])
        assert (result.returncode, result.successful, result.failed) == (0, 4, 0), result.errors()
        log = server.log()
        assert len(re.findall(r"register 101: 1 contact", log)) == 2
        assert len(re.findall(r"register 102: 1 contact", log)) == 2


def test_receptionist_room_join(tmp_path):
    from test_sipp_room import _rtpgen
    (tmp_path / "speech.alaw").write_bytes(_rtpgen().speech_alaw())  # rtp_stream reads it from the cwd
    with ServerProcess(tmp_path) as server:
        args = [SIPP, f"127.0.0.1:{server.sip_port}", "-sf", str(REPO / "scripts" / "sipp" / "room_join_receptionist.xml"),
                "-i", "127.0.0.2", "-p", str(free_port("127.0.0.2")), "-mp", str(free_rtp_range(10)[0]),
                "-s", "+33140000000", "-d", "2000", "-m", "1", "-nostdin", "-timeout", "40s", "-timeout_error",
                "-trace_err", "-trace_stat", "-stf", "stats.csv", "-fd", "1"]
        completed = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                   stdin=subprocess.DEVNULL)
        assert completed.returncode == 0, completed.stdout[-3000:]
        assert _sipp_counts(tmp_path / "stats.csv") == (1, 0)
        log = server.log()
        assert re.search(r"receptionist transfers to room 800", log), log[-3000:]
        assert re.search(r"joined conference 1234 of room 800", log), log[-3000:]


def test_loadtest_srtp_small_run(tmp_path):
    """--srtp: SDES offers, digits by INFO, rtpgen protects/unprotects; every
    call joins and hears, nothing fails to authenticate either way."""
    table, result, completed = run_loadtest(tmp_path, "-n", "6", "--rooms", "2", "--rate", "10", "--hold", "5", "--srtp")
    assert result["srtp"] is True and "SRTP dropped (server, window)" in table
    assert result["sipp"] == {"attempted": 6, "ok": 6, "failed": 0}
    assert result["server_joined"] == 6 and result["streamed_calls"] == 6
    assert result["rx_per_participant"]["silent"] == 0 and result["server_in_per_participant"] > 0
    assert result["srtp_dropped"] == 0 and result["generator_srtp_failures"] == 0
    out = tmp_path / "run"  # run_loadtest's --out-dir
    log = (out / "server.log").read_text()
    assert log.count("SRTP AES_CM_128_HMAC_SHA1_80") == 6
