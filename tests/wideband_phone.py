"""The test phone made wideband: G.722 and Opus through PyAV (SPEC 10).

``WidebandPhone`` is a ``phone.TestPhone`` that also offers and talks G.722
(static PT 9, 16 kHz audio on an 8000 RTP clock) and Opus (dynamic PT 111,
``opus/48000/2``, ``useinbandfec=1``, 48 kHz mono, FFmpeg's libopus encoder
with in-band FEC on). Audio it sends (tones, samples) and receives
(``received_audio``, ``tone_level``...) is at the codec's rate (``rate``).
``drop_next_packets(n)`` leaves out the next n audio packets (their sequence
numbers are used up, as a loss in the network would), for FEC tests.

The codec work is PyAV's, independent of the server's own Opus binding.
"""

from __future__ import annotations

import struct
import threading
import time

import av
import numpy as np
from av.audio.frame import AudioFrame

import phone as _phone
from phone import TestPhone, parse_rtp, parse_telephone_event

__all__ = ["WidebandPhone", "RATES", "wtone", "level_at_rate", "band_levels"]

RATES = {"PCMU": 8000, "PCMA": 8000, "G722": 16000, "OPUS": 48000}
CLOCK = {"PCMU": 8000, "PCMA": 8000, "G722": 8000, "OPUS": 48000}
OPUS_PT = 111


def wtone(hz: float, n: int, rate: int, amplitude: float = 8000, start: int = 0) -> np.ndarray:
    t = (start + np.arange(n)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def level_at_rate(samples, hz: float, rate: int, band: float = 20.0) -> float:
    """Amplitude of the ``hz`` component (same measure as TestPhone.level_at)."""
    x = np.asarray(samples, dtype=np.float64)
    n = len(x)
    if n < rate // 100:
        return 0.0
    x = x - x.mean()
    w = np.hanning(n)
    spec = np.abs(np.fft.rfft(x * w)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / rate)
    half = max(band, 4 * rate / n)
    sel = (freqs >= hz - half) & (freqs <= hz + half)
    return float(np.sqrt(4 * spec[sel].sum() / (n * np.sum(w ** 2))))


def band_levels(samples, rate: int, lo: float, hi: float) -> tuple[float, float]:
    """(peak amplitude, its frequency) of the strongest component in [lo, hi] Hz."""
    x = np.asarray(samples, dtype=np.float64)
    n = len(x)
    x = x - x.mean()
    w = np.hanning(n)
    spec = np.abs(np.fft.rfft(x * w)) * 2 / np.sum(w)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    sel = (freqs >= lo) & (freqs <= hi)
    i = int(np.argmax(spec[sel]))
    return float(spec[sel][i]), float(freqs[sel][i])


class _Codec:
    """PyAV encoder + decoder of one codec at its audio rate."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rate = RATES[name]
        self.frame = self.rate // 50
        ff = "g722" if name == "G722" else "libopus"
        enc = av.CodecContext.create(ff, "w")
        enc.sample_rate = self.rate
        enc.format = "s16"
        enc.layout = "mono"
        if name == "OPUS":
            enc.bit_rate = 32000
            enc.options = {"fec": "1", "packet_loss": "20", "application": "voip", "frame_duration": "20"}
        enc.open()
        dec = av.CodecContext.create(ff, "r")
        dec.sample_rate = self.rate
        dec.layout = "mono"
        dec.open()
        self._enc, self._dec, self._pts = enc, dec, 0

    def encode(self, pcm: np.ndarray) -> bytes:
        f = AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16",
                                    layout="mono")
        f.sample_rate = self.rate
        f.pts = self._pts
        self._pts += len(pcm)
        return b"".join(bytes(p) for p in self._enc.encode(f))

    def decode(self, payload: bytes) -> np.ndarray:
        try:
            frames = self._dec.decode(av.Packet(payload))
        except (av.FFmpegError, ValueError):
            return np.zeros(0, np.int16)
        out = [f.to_ndarray().reshape(-1) for f in frames]
        return np.concatenate(out).astype(np.int16) if out else np.zeros(0, np.int16)


class WidebandPhone(TestPhone):
    __test__ = False

    def __init__(self, *args, codecs=("G722",), **kwargs) -> None:
        self._wide_codecs: dict[str, _Codec] = {}
        self._drop = 0
        self._wide_lock = threading.Lock()
        names = []
        for c in codecs:
            name = c.upper() if isinstance(c, str) else c[0].upper()
            names.append((name, OPUS_PT) if name == "OPUS" and isinstance(c, str) else c)
        super().__init__(*args, codecs=names, **kwargs)

    # ---- codec state
    @property
    def rate(self) -> int:
        return RATES.get(self.answer_codec or "PCMU", 8000)

    def _codec(self, name: str) -> _Codec:
        with self._wide_lock:
            c = self._wide_codecs.get(name)
            if c is None:
                c = self._wide_codecs[name] = _Codec(name)
            return c

    def drop_next_packets(self, n: int = 1) -> None:
        with self._tx_lock:
            self._drop = n

    # ---- SDP
    def _sdp(self, direction="sendrecv") -> bytes:
        ip, port = self.advertise_rtp or (self.local_ip, self.rtp_port)
        self._sdp_version += 1
        te = self.telephone_event_pt
        first = self.codecs[0][0] if self.codecs else "PCMU"
        m_pts = [pt for _, pt in self.codecs] + ([te] if te is not None else [])
        lines = ["v=0", f"o={self.user} {self._sdp_session} {self._sdp_version} IN IP4 {ip}",
                 "s=sipconf-widebandphone", f"c=IN IP4 {ip}", "t=0 0",
                 f"m=audio {port} RTP/AVP {' '.join(map(str, m_pts))}"]
        for name, pt in self.codecs:
            if name == "OPUS":
                lines += [f"a=rtpmap:{pt} opus/48000/2", f"a=fmtp:{pt} useinbandfec=1"]
            else:
                lines.append(f"a=rtpmap:{pt} {name}/8000")
        if te is not None:
            lines += [f"a=rtpmap:{te} telephone-event/{CLOCK[first]}", f"a=fmtp:{te} 0-16"]
        lines += ["a=ptime:20", f"a={direction}"]
        return ("\r\n".join(lines) + "\r\n").encode()

    def _apply_remote_sdp(self, sdp: dict, offer=False):
        names = dict(_phone._STATIC_NAME)
        for pt, enc in sdp["rtpmap"].items():
            names[pt] = enc.split("/")[0].upper()
        ours = {n for n, _ in self.codecs}
        chosen = next((pt for pt in sdp["pts"] if names.get(pt) in ours), None)
        te = None
        for pt in sdp["pts"]:
            if names.get(pt) == "TELEPHONE-EVENT":
                te = pt
        with self._tx_lock:
            self.answer_sdp = sdp
            self._pt_names = names
            if sdp["ip"] and sdp["port"]:
                self.remote_rtp = (sdp["ip"], sdp["port"])
            if chosen is not None:
                self.answer_pt, self.answer_codec = chosen, names[chosen]
            self.answer_te_pt = te
            self.answer_direction = sdp["direction"]

    # ---- sending
    def _next_audio_frame(self) -> np.ndarray:
        rate = self.rate
        n = rate // 50
        src = self._tx_source
        n0 = self._tx_sample
        self._tx_sample += n
        if src[0] == "tone":
            return wtone(src[1], n, rate, src[2], n0)
        if src[0] == "samples":
            arr, pos, loop = src[1], src[2], src[3]
            if pos >= len(arr):
                if loop and len(arr):
                    pos = 0
                else:
                    self._tx_source = ("silence",)
                    return np.zeros(n, np.int16)
            frame = arr[pos:pos + n]
            self._tx_source = ("samples", arr, pos + n, loop)
            if len(frame) < n:
                frame = np.concatenate([frame, np.zeros(n - len(frame), np.int16)])
            return frame
        return np.zeros(n, np.int16)

    def _encode(self, frame: np.ndarray) -> bytes:
        name = self.answer_codec
        if name in _phone._ENCODERS:
            return _phone._ENCODERS[name](frame)
        return self._codec(name).encode(frame)

    def _send_audio(self) -> None:
        payload = self._encode(self._next_audio_frame())
        if self._drop > 0:
            self._drop -= 1
            self._seq = (self._seq + 1) & 0xFFFF  # lost on the way
            return
        self._send_rtp(self.answer_pt, False, payload, self._ts)

    def _tx_tick(self):
        item = self._dtmf_plan.popleft() if self._dtmf_plan else None
        if item is None or item[0] == "audio":
            self._send_audio()
        elif item[0] == "done":
            item[1].set()
            self._send_audio()
        elif item[0] == "event":
            _, code, start_key, dur, end, marker, ssrc, ts_holder = item
            if start_key not in ts_holder:
                ts_holder[start_key] = self._ts
            scale = CLOCK.get(self.answer_codec, 8000) // 8000
            payload = struct.pack("!BBH", code, (0x80 if end else 0) | 10, (dur * scale) & 0xFFFF)
            self._send_rtp(self.answer_te_pt, marker, payload, ts_holder[start_key], ssrc)
            self._tx_sample += self.rate // 50

    def _tx_loop(self, stop: threading.Event):
        next_t = time.monotonic()
        while not stop.is_set() and not self._closed.is_set():
            delay = next_t - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            with self._tx_lock:
                if stop.is_set():
                    break
                if self.remote_rtp is not None and self.answer_codec in RATES:
                    self._tx_tick()
                step = CLOCK.get(self.answer_codec, 8000) // 50
                self._ts = (self._ts + step) & 0xFFFFFFFF
            next_t += 0.02
            if time.monotonic() - next_t > 0.2:
                next_t = time.monotonic()

    # ---- receiving
    def _rtp_loop(self):
        while not self._closed.is_set():
            try:
                data, addr = self.rtp_sock.recvfrom(4096)
            except OSError as exc:
                if isinstance(exc, TimeoutError) or "timed out" in str(exc):
                    continue
                return
            p = parse_rtp(data)
            if p is None:
                continue
            _, marker, pt, seq, ts, ssrc, payload = p
            now = time.monotonic()
            with self._rx_lock:
                self.rtp_source = addr
                self.rtp_headers.append(_phone.RtpHeader(now, seq, ts, pt, ssrc, marker, len(payload)))
                if ssrc not in self.rtp_ssrcs_seen:
                    self.rtp_ssrcs_seen.append(ssrc)
                name = self._pt_names.get(pt) or _phone._STATIC_NAME.get(pt)
                if pt == self.answer_te_pt or name == "TELEPHONE-EVENT":
                    if len(payload) >= 4:
                        ev, end, _, dur = parse_telephone_event(payload)
                        self.dtmf_events_received.append((ssrc, ts, ev, end, dur))
                elif name in _phone._DECODERS:
                    self._audio_chunks.append((now, _phone._DECODERS[name](payload)))
                elif name in RATES:
                    self._audio_chunks.append((now, self._codec(name).decode(payload)))
            with self._rtp_cond:
                self.rtp_packets_received += 1
                self._rtp_cond.notify_all()

    def _recent(self, seconds, since=None):
        cutoff = time.monotonic() - seconds
        if since is not None:
            cutoff = max(cutoff, since)
        x = self.received_audio(cutoff)
        return x[-int(seconds * self.rate):]

    def level_at(self, samples, hz, band=20.0) -> float:  # type: ignore[override]
        return level_at_rate(samples, hz, self.rate, band)

    def dominant_frequency(self, seconds=1.0) -> float:
        x = self._recent(seconds).astype(np.float64)
        if len(x) < 80:
            return 0.0
        spec = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
        return float(np.fft.rfftfreq(len(x), 1 / self.rate)[int(np.argmax(spec))])
