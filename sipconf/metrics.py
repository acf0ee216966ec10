"""Prometheus metrics (``[server] metrics_port``), on a registry of our own so
that tests can run several servers in one process without clashes."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter("sipconf_calls", "Calls by outcome", ["outcome"], registry=r)
        self.auth_failures = Counter("sipconf_auth_failures", "Failed digest authentications", registry=r)
        self.digits = Counter("sipconf_dtmf_digits", "DTMF digits received (RFC 4733 and INFO)", registry=r)
        self.sip_dropped = Counter("sipconf_sip_dropped", "SIP messages dropped (malformed, scanners, limits)",
                                   ["reason"], registry=r)
        self._server = None

    def watch(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        gauge = Gauge(name, documentation, registry=self.registry)
        gauge.set_function(read)

    def collect_from(self, collector) -> None:
        self.registry.register(collector)

    def serve(self, bind: str, port: int) -> None:
        if port:
            self._server, _ = start_http_server(port, addr=bind, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class MediaStatsCollector:
    """Exports the media engine's counters at scrape time (nothing on the hot path)."""

    def __init__(self, stats_of: Callable[[], object]) -> None:
        self._stats_of = stats_of

    def collect(self):
        stats = self._stats_of()
        if stats is None:
            return
        for name, attribute, documentation in (
            ("sipconf_rtp_packets_in", "packets_in", "RTP packets received"),
            ("sipconf_rtp_packets_out", "packets_out", "RTP packets sent"),
            ("sipconf_rtp_packets_dropped", "packets_dropped", "RTP packets dropped (junk, wrong SSRC/PT, late)"),
            ("sipconf_jitter_concealed_frames", "frames_concealed", "Frames concealed by the jitter buffers"),
            ("sipconf_mixer_ticks", "ticks", "Mixer ticks"),
        ):
            value = getattr(stats, attribute, None)
            if value is not None:
                family = CounterMetricFamily(name, documentation)
                family.add_metric([], float(value))
                yield family
        for name, attribute, documentation in (
            ("sipconf_tick_lateness_seconds", "tick_lateness_s", "How late each mixer tick started"),
            ("sipconf_tick_work_seconds", "tick_work_s", "Time each mixer tick took"),
        ):
            samples = list(getattr(stats, attribute, ()) or ())
            buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
            counts = []
            for bound in buckets:
                counts.append((str(bound), float(sum(1 for s in samples if s <= bound))))
            counts.append(("+Inf", float(len(samples))))
            family = HistogramMetricFamily(name, documentation + " (recent ticks)",
                                           buckets=counts, sum_value=float(sum(samples)))
            yield family
