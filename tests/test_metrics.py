"""Prometheus metrics of the real server (``[server] metrics_port``): a test
phone joins a conference, two scrapes during the call must show the
participant gauge and the RTP counters move; every metric the load-test kit
reads is there."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from phone import TestPhone
from support import ServerProcess, free_port, office_config, wait_until

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return values


@pytest.fixture
def metrics_server(tmp_path):
    port = free_port()
    server = ServerProcess(tmp_path, config_text=office_config(
        server={"metrics_port": port, "language": "en"}, extensions=("101",), trunk=False, room_numbers=())).start()
    server.metrics_port = port
    yield server
    server.stop()


def test_metrics_move_during_a_call(metrics_server):
    port = metrics_server.metrics_port
    idle = scrape(port)
    for name in ("sipconf_participants", "sipconf_conferences", "sipconf_calls_active", "sipconf_registrations",
                 "sipconf_auth_failures_total", "sipconf_dtmf_digits_total", "sipconf_rtp_packets_in_total",
                 "sipconf_rtp_packets_out_total", "sipconf_rtp_packets_dropped_total",
                 "sipconf_jitter_concealed_frames_total", "sipconf_mixer_ticks_total",
                 "sipconf_mixer_ticks_skipped_total", "sipconf_rtp_send_errors_total", "sipconf_rtp_endpoints",
                 'sipconf_tick_lateness_seconds_bucket{le="+Inf"}', "sipconf_tick_lateness_seconds_count",
                 'sipconf_tick_work_seconds_bucket{le="0.005"}', "sipconf_tick_work_seconds_sum",
                 'sipconf_tick_lateness_recent_seconds{quantile="0.99"}',
                 'sipconf_tick_work_recent_seconds{quantile="1"}'):
        assert name in idle, f"{name} missing from /metrics"
    assert idle["sipconf_participants"] == 0 and idle["sipconf_calls_active"] == 0

    phone = TestPhone(("127.0.0.1", metrics_server.sip_port), user="101", password="alice-secret")
    try:
        assert phone.call("800").status == 200
        assert phone.wait_for_rtp(5, timeout=3)
        time.sleep(0.3)
        phone.send_dtmf("1234#4321#")
        assert wait_until(lambda: scrape(port)["sipconf_participants"] == 1, 15, interval=0.1), metrics_server.log()[-2000:]
        phone.send_tone(440)
        first = scrape(port)
        time.sleep(1.0)
        second = scrape(port)
        assert first["sipconf_calls_active"] == second["sipconf_calls_active"] == 1
        assert second["sipconf_conferences"] == 1
        assert second["sipconf_rtp_endpoints"] == 1
        assert second["sipconf_dtmf_digits_total"] >= 10
        # about 50 packets a second each way; counts, not speed: at least some
        assert second["sipconf_rtp_packets_in_total"] - first["sipconf_rtp_packets_in_total"] >= 10
        assert second["sipconf_rtp_packets_out_total"] - first["sipconf_rtp_packets_out_total"] >= 10
        assert second["sipconf_mixer_ticks_total"] > first["sipconf_mixer_ticks_total"]
        count = 'sipconf_tick_lateness_seconds_bucket{le="+Inf"}'
        assert second[count] > first[count]
        assert second[count] == second["sipconf_tick_lateness_seconds_count"]
        assert second["sipconf_tick_work_seconds_count"] == second["sipconf_tick_lateness_seconds_count"]
        # buckets are cumulative
        buckets = sorted((float(k.split('"')[1]), v) for k, v in second.items()
                         if k.startswith("sipconf_tick_lateness_seconds_bucket") and "+Inf" not in k)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)
        q = {k: second[f'sipconf_tick_lateness_recent_seconds{{quantile="{k}"}}'] for k in ("0.5", "0.99", "1")}
        assert q["0.5"] <= q["0.99"] <= q["1"]
        phone.hangup()
        assert wait_until(lambda: scrape(port)["sipconf_participants"] == 0, 5, interval=0.1)
        after = scrape(port)
        assert after["sipconf_calls_active"] == 0
        assert after['sipconf_calls_total{outcome="completed"}'] == 1
    finally:
        phone.close()
