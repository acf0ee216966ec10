"""Browser-participant test support: a server config with ``[admin]``, JSON
over HTTP to the admin port (http.client, real sockets), and an aiortc peer
that joins like the /join page does (offer + credentials in one POST)."""

from __future__ import annotations

import asyncio
import fractions
import http.client
import json
import time
import uuid

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from support import free_port, office_config

TOKEN = "webrtc-test-token-0123456789"


def webrtc_config(admin_port: int, *, conferences=(("1234", "4321"),), security: dict | None = None,
                  server: dict | None = None) -> str:
    values = {"language": "en", "rtp_timeout": 30, **(server or {})}
    text = office_config(server=values, extensions=("101", "102", "103"), conferences=conferences,
                         security=security)
    return text + f'\n[admin]\nbind = "127.0.0.1"\nport = {admin_port}\ntoken = "{TOKEN}"\n'


def admin_port() -> int:
    return free_port()


def http_json(port: int, method: str, path: str, body=None, *, token: str | None = None, timeout: float = 10.0):
    """(status, parsed JSON or raw bytes) of one request to the admin port."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw
    finally:
        connection.close()


def participants(port: int, conference: str = "1234") -> list[dict]:
    status, data = http_json(port, "GET", "/api/rooms", token=TOKEN)
    assert status == 200, data
    for room in data["rooms"]:
        if room["extension"] == "800":
            for c in room["conferences"]:
                if c["id"] == conference:
                    return c["participants"]
    return []


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spec)])


def level_at(pcm: np.ndarray, rate: int, hz: float, band: float = 20.0) -> float:
    """RMS-like amplitude of ``pcm`` within ``hz`` +- ``band``."""
    if len(pcm) < rate // 10:
        return 0.0
    x = pcm.astype(np.float64) * np.hanning(len(pcm))
    spec = np.abs(np.fft.rfft(x)) * 2 / np.hanning(len(pcm)).sum()
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    return float(spec[np.abs(freqs - hz) <= band].max(initial=0.0))


class ToneTrack(MediaStreamTrack):
    """A 48 kHz mono sine, 20 ms frames paced by the wall clock (a microphone)."""

    kind = "audio"

    def __init__(self, hz: float, amplitude: float = 8000) -> None:
        super().__init__()
        self.hz = hz
        self.amplitude = amplitude
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n * 960 / 48000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(960) + self._n * 960) / 48000
        self._n += 1
        pcm = np.round(self.amplitude * np.sin(2 * np.pi * self.hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = (self._n - 1) * 960
        frame.time_base = fractions.Fraction(1, 48000)
        return frame


class AiortcGuest:
    """A browser participant made of aiortc: offer with a tone, POST
    /join/offer, records what it hears (48 kHz mono)."""

    def __init__(self, port: int, hz: float, *, page: str | None = None, amplitude: float = 8000) -> None:
        self.port = port
        self.page = page or str(uuid.uuid4())
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(ToneTrack(hz, amplitude))
        self.session: str | None = None
        self.heard: list[np.ndarray] = []
        self._reader: asyncio.Task | None = None
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)

        @self.pc.on("track")
        def on_track(track) -> None:
            self._reader = asyncio.get_running_loop().create_task(self._read(track))

    async def _read(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                for out in self._resampler.resample(frame):
                    self.heard.append(out.to_ndarray().reshape(-1).copy())
        except (MediaStreamError, asyncio.CancelledError):
            pass

    async def join(self, room: str, conference: str, pin: str) -> tuple[int, dict]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"room": room, "conference": conference, "pin": pin, "page": self.page, "type": "offer",
                "sdp": self.pc.localDescription.sdp}
        status, data = await asyncio.to_thread(http_json, self.port, "POST", "/join/offer", body)
        if status == 200:
            self.session = data["session"]
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="answer"))
        return status, data

    def recent(self, seconds: float) -> np.ndarray:
        n = int(seconds * 50)
        return np.concatenate(self.heard[-n:]) if self.heard else np.zeros(0, np.int16)

    async def wait_state(self, known: str) -> dict:
        status, data = await asyncio.to_thread(http_json, self.port, "GET",
                                               f"/join/wait?session={self.session}&state={known}", None,
                                               timeout=30)
        assert status == 200, data
        return data

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.pc.close()
