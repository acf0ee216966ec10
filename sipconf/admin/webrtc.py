"""Browser participants (SPEC 14): WebRTC audio through aiortc.

``GET /join`` (no token) serves a page where someone types a room extension,
conference ID and PIN. The page sends them with its WebRTC offer in one JSON
``POST /join/offer``; the server checks them with the rules of a phone's
room flow (``ConferenceDirectory.admit_role``, room full, locked, and the
PIN-failure bans of ``[security]`` counted against the browser's IP
address), answers with aiortc's SDP once ICE gathering is complete (host
candidates only: no STUN/TURN server is configured), and the participant
joins the conference when the peer connection is up.

Media: aiortc does ICE, DTLS-SRTP and Opus. Its decoded 48 kHz frames are
downmixed (and resampled if ``max_mix_rate`` is lower) and fed to a
``mixer.pcm_endpoint.PcmEndpoint``, which the engine mixes on its general
path at the conference's rate like any G.722/Opus caller; the participant's
mix comes back once per mixer tick as one Opus packet (encoded by the mixer
like an Opus phone's, shared by listeners who are not talking) and is
queued for aiortc's outgoing track, whose ``recv()`` therefore runs at the
pace of the one mixer clock; aiortc only packetises and encrypts it.

The page learns how its participant ended (kicked, conference ended, ...)
through ``GET /join/wait`` (a long poll); leaving the page sends
``POST /join/leave`` (``navigator.sendBeacon`` on ``pagehide``). ICE or DTLS
failure (peer connection state ``failed``), or no connection within
``CONNECT_TIMEOUT_S``, ends the participant; the page says why.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import itertools
import json
import logging
import secrets
import time
from importlib import resources
from typing import Any, Protocol

import av
import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from mixer.pcm_endpoint import PcmEndpoint
from mixer.resample import Resampler

from ..events import rfc3339

log = logging.getLogger("sipconf.webrtc")

API_CODEC = "opus/webrtc"      # SPEC 14: `codec` of a browser participant in the API
FLOW = "webrtc"                # `flow` of its call_started/call_ended events and call record
MAX_ATTEMPTS = 3               # wrong room/ID/PIN tries per page, as per call (SPEC 6.4)
MAX_OFFER = 64 * 1024          # bytes of a POST /join/offer body (an SDP offer is ~3-6 KB)
BODY_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 20.0       # from the answer to the peer connection being up
WAIT_POLL_S = 25.0             # a GET /join/wait answers at the latest after this long
ENDED_KEEP_S = 60.0            # an ended session's reason stays readable this long
OPUS_TIME_BASE = fractions.Fraction(1, 48000)  # Opus' RTP clock, whatever the audio rate
OPUS_STEP = 960                # RTP timestamp units per 20 ms packet
OUT_QUEUE_FRAMES = 5           # outgoing frames queued for aiortc before the oldest is dropped
MAX_SESSIONS = 1000            # open browser sessions (beyond: 503)
MAX_PAGES = 10000              # pages whose wrong attempts are remembered
JOIN_FILES = {"/join": ("index.html", "text/html"), "/join/join.js": ("join.js", "text/javascript"),
              "/join/join.css": ("join.css", "text/css")}


class ServerLike(Protocol):
    """What the bridge uses of ``sipconf.server.SipServer``, read at each use
    (a reloaded configuration is seen at once)."""

    media: Any
    conferences: Any
    controls: Any
    security: Any
    router: Any
    config: Any
    events: Any


# -- the outgoing track ------------------------------------------------------------------------


class MixTrack(MediaStreamTrack):
    """The participant's mix as aiortc's outgoing audio track.

    ``push`` is called by the mixer tick with one 20 ms frame: an Opus packet
    (bytes), which ``recv`` hands to aiortc as an ``av.Packet`` that it sends
    as it is, or int16 PCM at ``rate``, handed over as an ``av.AudioFrame``
    for aiortc to encode. ``recv`` is awaited by aiortc's sender, so it runs
    at the pace of the mixer clock, not of a timer of its own. A consumer
    that falls behind loses the oldest frames."""

    kind = "audio"

    def __init__(self, rate: int) -> None:
        super().__init__()
        self.rate = rate
        self._time_base = fractions.Fraction(1, rate)
        self._queue: collections.deque = collections.deque(maxlen=OUT_QUEUE_FRAMES)
        self._ready = asyncio.Event()
        self._pts = 0      # at 48 kHz for packets (Opus' RTP clock), at rate for PCM
        self.pushed = 0

    def push(self, frame: bytes | np.ndarray) -> None:
        self._queue.append(frame)
        self.pushed += 1
        self._ready.set()

    async def recv(self) -> av.Packet | av.AudioFrame:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        item = self._queue.popleft()
        if isinstance(item, bytes):
            out = av.Packet(item)
            out.pts = self._pts
            out.time_base = OPUS_TIME_BASE
            self._pts += OPUS_STEP
            return out
        out = av.AudioFrame.from_ndarray(item.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = self.rate
        out.pts = self._pts
        out.time_base = self._time_base
        self._pts += len(item)
        return out

    def stop(self) -> None:
        super().stop()
        self._ready.set()  # wake a waiting recv so it ends


# -- one browser participant -------------------------------------------------------------------


class BrowserSession:
    """One page's participant: a ``CallLike`` for sipconf.controls (``call_id``,
    ``caller``, ``endpoint``), its peer connection and how it ended."""

    def __init__(self, bridge: "WebRtcBridge", number: int, caller: str, room, conference, moderator: bool,
                 pc: RTCPeerConnection) -> None:
        self.bridge = bridge
        self.id = secrets.token_urlsafe(18)
        self.call_id = f"webrtc-{number}"
        self.caller = caller
        self.display_name = "browser"
        self.api_codec = API_CODEC
        self.srtp = True           # DTLS-SRTP, always (WebRTC)
        self.started_at = time.time()
        self.joined_at: float | None = None
        self.room = room
        self.conference = conference
        self.moderator = moderator
        self.pc = pc
        self.endpoint: PcmEndpoint | None = None
        self.track: MixTrack | None = None
        self.reader: asyncio.Task | None = None
        self.state = "connecting"   # -> joined -> ended
        self.reason = ""
        self.changed = asyncio.Event()

    def hang_up(self, reason: str) -> None:
        """The server's hang_up for this participant (kick, end, goodbye)."""
        self.bridge.end(self, reason)

    def view(self) -> dict:
        return {"state": self.state, "reason": self.reason}


class WebRtcBridge:
    """Signalling, admission and the life of every browser session."""

    def __init__(self, server: ServerLike) -> None:
        self.server = server
        self.sessions: dict[str, BrowserSession] = {}
        self._pages: collections.OrderedDict[str, int] = collections.OrderedDict()  # page -> wrong tries
        self._numbers = itertools.count(1)
        self._files = {path: (resources.files(__package__).joinpath("join", name).read_bytes(), kind)
                       for path, (name, kind) in JOIN_FILES.items()}
        self._closing = False

    # -- routes -----------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [web.get(path, self.page, allow_head=False) for path in JOIN_FILES] + [
            web.post("/join/offer", self.offer),
            web.post("/join/leave", self.leave),
            web.get("/join/wait", self.wait, allow_head=False),
        ]

    async def page(self, request: web.Request) -> web.Response:
        body, kind = self._files[request.path]
        return web.Response(body=body, content_type=kind, charset="utf-8")

    async def offer(self, request: web.Request) -> web.Response:
        caller = request.remote or "?"
        try:
            data = json.loads(await _read_body(request, MAX_OFFER))
            if not isinstance(data, dict):
                raise ValueError("not an object")
            room_ext, conference_id, pin = (str(data.get(k, "")).strip() for k in ("room", "conference", "pin"))
            page = str(data.get("page", ""))[:64]
            sdp, kind = data.get("sdp"), data.get("type")
            if kind != "offer" or not isinstance(sdp, str) or "m=audio" not in sdp:
                raise ValueError("an SDP offer with audio is needed")
        except _TooLarge:
            return _answer(413, error=f"offer larger than {MAX_OFFER} bytes")
        except (ValueError, UnicodeDecodeError) as exc:
            return _answer(400, error=f"bad offer: {exc}")
        server = self.server
        security = server.security
        if security.caller_banned(caller):
            log.info("webrtc: offer from banned address %s refused", caller)
            return _answer(403, error="Too many wrong PINs from your address. Try again later.", goodbye=True)
        tries = self._pages.get(page, 0) if page else 0
        if tries >= MAX_ATTEMPTS:
            return _answer(403, error="Too many wrong attempts. Goodbye.", goodbye=True)
        room = server.router.room_for_extension(room_ext) if room_ext else None
        admitted = server.conferences.admit_role(room, conference_id, pin) if room is not None else None
        if admitted is None:
            log.info("webrtc: %s: wrong room, conference ID or PIN (room %r, id %r)", caller, room_ext,
                     conference_id)
            if room is not None:
                security.pin_failed(caller)  # the same brute-force count as a phone's PIN (SPEC 14)
            tries = self._count_failure(page)
            left = MAX_ATTEMPTS - tries
            if left <= 0 or security.caller_banned(caller):
                return _answer(403, error="Wrong room, conference ID or PIN. Goodbye.", goodbye=True)
            return _answer(403, error="Wrong room, conference ID or PIN.", attempts_left=left, goodbye=False)
        conference, moderator = admitted
        refusal = self._refusal(room, conference, moderator)
        if refusal is not None:
            return _answer(403, error=refusal, goodbye=True)
        if "opus/48000" not in sdp.lower():
            return _answer(400, error="the offer has no Opus")
        if len(self.sessions) >= MAX_SESSIONS or self._closing:
            return _answer(503, error="Too many browser participants. Try again later.")
        if page:
            self._pages.pop(page, None)
        session = await self._answer_offer(caller, room, conference, moderator, sdp)
        if session is None:
            return _answer(400, error="the offer could not be answered")
        return _answer(200, session=session.id, type="answer", sdp=session.pc.localDescription.sdp)

    async def leave(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await _read_body(request, 1024))
            sid = str(data.get("session", "")) if isinstance(data, dict) else ""
        except (_TooLarge, ValueError, UnicodeDecodeError):
            return _answer(400, error="bad request")
        session = self.sessions.get(sid)
        if session is None:
            return _answer(404, error="no such session")
        self.end(session, "left the page")
        return _answer(200, **session.view())

    async def wait(self, request: web.Request) -> web.Response:
        """Long poll: the session's state once it differs from ``?state=``,
        or after WAIT_POLL_S."""
        session = self.sessions.get(request.query.get("session", ""))
        if session is None:
            return _answer(404, error="no such session")
        known = request.query.get("state", "")
        if session.state == known:
            try:
                await asyncio.wait_for(session.changed.wait(), WAIT_POLL_S)
            except asyncio.TimeoutError:
                pass
        return _answer(200, **session.view())

    # -- admission --------------------------------------------------------------------------

    def _count_failure(self, page: str) -> int:
        if not page:
            return MAX_ATTEMPTS  # a client that does not say which page it is gets one try
        tries = self._pages.pop(page, 0) + 1
        self._pages[page] = tries
        while len(self._pages) > MAX_PAGES:
            self._pages.popitem(last=False)
        return tries

    def _refusal(self, room, conference, moderator: bool) -> str | None:
        """What keeps an admitted browser out now (as call.py checks after the PIN)."""
        if self.server.conferences.is_full(room):
            return "The room is full."
        if not moderator and self.server.controls.is_locked(room, conference):
            return "The conference is locked."
        return None

    async def _answer_offer(self, caller: str, room, conference, moderator: bool, sdp: str) -> BrowserSession | None:
        # no STUN/TURN: host candidates only (SPEC 14); aiortc would default to a public STUN server
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = BrowserSession(self, next(self._numbers), caller, room, conference, moderator, pc)
        self.sessions[session.id] = session

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "audio" and session.reader is None:
                session.reader = asyncio.get_running_loop().create_task(self._read(session, track),
                                                                         name=f"{session.call_id} audio in")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            log.info("webrtc %s: peer connection %s", session.call_id, state)
            if state == "connected" and session.state == "connecting":
                self._join(session)
            elif state == "failed":
                self.end(session, "connection failed (ICE or DTLS)")
            elif state == "closed":
                self.end(session, "connection closed")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
            transceivers = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not transceivers:
                raise ValueError("no audio in the offer")
            transceivers[0].setCodecPreferences(opus)
            session.track = MixTrack(min(48000, self.server.media.max_mix_rate))
            pc.addTrack(session.track)
            # aiortc's setLocalDescription returns once ICE gathering is complete,
            # so the answer carries every host candidate (no trickle needed)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # noqa: BLE001 - a bad offer ends this session only
            log.info("webrtc %s: offer from %s refused: %s", session.call_id, caller, exc)
            self.end(session, "bad offer")
            return None
        log.info("webrtc %s: answered %s for conference %s of room %s%s", session.call_id, caller, conference.id,
                 room.extension, " (moderator)" if moderator else "")
        self.server.events.publish("call_started", call_id=session.call_id, room=room.extension,
                                   **{"from": caller, "to": room.extension, "flow": FLOW})
        asyncio.get_running_loop().call_later(CONNECT_TIMEOUT_S, self._connect_deadline, session)
        return session

    def _connect_deadline(self, session: BrowserSession) -> None:
        if session.state == "connecting":
            self.end(session, "connection failed (ICE or DTLS): no connection within "
                              f"{CONNECT_TIMEOUT_S:g} s")

    def _join(self, session: BrowserSession) -> None:
        server = self.server
        refusal = self._refusal(session.room, session.conference, session.moderator)
        if refusal is not None:
            self.end(session, refusal)
            return
        assert session.track is not None
        endpoint = PcmEndpoint(server.media, session.track.push, opus=True,
                               timeout=server.config.server.rtp_timeout,
                               on_timeout=lambda: self.end(session, "no audio from the browser"))
        server.media.attach(endpoint)
        session.endpoint = endpoint
        session.state = "joined"
        session.joined_at = time.time()
        participant = server.controls.join(session, session.room, session.conference, moderator=session.moderator)
        log.info("webrtc %s: %s joined conference %s of room %s as participant %s", session.call_id, session.caller,
                 session.conference.id, session.room.extension, participant.id)
        self._changed(session)

    async def _read(self, session: BrowserSession, track) -> None:
        """The browser's decoded audio into the participant's FIFO."""
        edge = _InEdge()
        try:
            while True:
                frame = await track.recv()
                endpoint = session.endpoint
                if endpoint is None or endpoint.closed:
                    continue  # not joined yet: aiortc keeps decoding, we drop
                pcm = edge.mono(frame, endpoint.rate)
                if pcm is not None:
                    endpoint.feed(pcm)
        except (MediaStreamError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001 - this participant ends, nobody else
            log.exception("webrtc %s: reading the browser's audio failed", session.call_id)
            self.end(session, "internal error")

    # -- ending -----------------------------------------------------------------------------

    def end(self, session: BrowserSession, reason: str) -> None:
        """End a browser participant (idempotent): out of the conference and
        the mixer, peer connection closed, the page told why."""
        if session.state == "ended":
            return
        joined = session.state == "joined"
        answered = session.pc.localDescription is not None
        session.state = "ended"
        session.reason = reason
        log.info("webrtc %s: ended: %s", session.call_id, reason)
        if answered:  # a call record (sipconf/cdr.py) for every browser that got an answer
            end, at = time.time(), session.joined_at
            self.server.events.publish(
                "call_ended", call_id=session.call_id, flow=FLOW, room=session.room.extension,
                conference=session.conference.id if at is not None else None, start=rfc3339(session.started_at),
                answer=rfc3339(at) if at is not None else None, end=rfc3339(end),
                duration_s=round(end - at, 3) if at is not None else 0.0, end_reason=reason, codec=API_CODEC,
                srtp=True, moderator=session.moderator, **{"from": session.caller, "to": session.room.extension})
        if joined:
            self.server.controls.leave(session)
        if session.endpoint is not None:
            session.endpoint.close()
        if session.reader is not None and session.reader is not asyncio.current_task():
            session.reader.cancel()
        if session.track is not None:
            session.track.stop()
        loop = asyncio.get_running_loop()
        loop.create_task(session.pc.close(), name=f"{session.call_id} close")
        self._changed(session)
        loop.call_later(ENDED_KEEP_S, self._forget, session)

    def _forget(self, session: BrowserSession) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]

    @staticmethod
    def _changed(session: BrowserSession) -> None:
        session.changed.set()
        session.changed = asyncio.Event()

    async def close(self, _app=None) -> None:
        """Server shutdown: every browser participant ends, connections closed."""
        self._closing = True
        sessions = list(self.sessions.values())
        for session in sessions:
            self.end(session, "server shutting down")
        if sessions:
            await asyncio.gather(*(s.pc.close() for s in sessions), return_exceptions=True)

    @property
    def participants(self) -> int:
        return sum(1 for s in self.sessions.values() if s.state == "joined")


def add_webrtc_routes(app: web.Application, bridge: WebRtcBridge) -> None:
    """The join page and its signalling on the admin HTTP server."""
    app.add_routes(bridge.routes())
    app.on_shutdown.append(bridge.close)


# -- helpers -----------------------------------------------------------------------------------


class _InEdge:
    """aiortc's decoded frames (48 kHz s16 stereo from its Opus decoder) as
    int16 mono at the participant's rate: a numpy downmix, and the mixer's
    polyphase resampler when ``max_mix_rate`` is lower (PyAV's resampler
    cost ~150 us per frame, measured; this ~10). Other layouts go through
    PyAV's resampler."""

    def __init__(self) -> None:
        self._down: Resampler | None = None
        self._av: av.AudioResampler | None = None

    def mono(self, frame: av.AudioFrame, rate: int) -> np.ndarray | None:
        if frame.format.name == "s16" and frame.sample_rate == 48000 and frame.layout.name in ("stereo", "mono"):
            x = frame.to_ndarray().reshape(-1)
            if frame.layout.name == "stereo":
                x = ((x[0::2].astype(np.int32) + x[1::2]) >> 1).astype(np.int16)
            if rate == 48000:
                return x
            if len(x) != 960:
                return None  # not 20 ms: aiortc's Opus decoder always gives 20 ms
            if self._down is None or self._down.rate_out != rate:
                self._down = Resampler(48000, rate)
            y = self._down.process(x.reshape(1, -1).astype(np.float32))[0]
            return np.clip(np.rint(y), -32768, 32767).astype(np.int16)
        if self._av is None:
            self._av = av.AudioResampler(format="s16", layout="mono", rate=rate)
        parts = [f.to_ndarray().reshape(-1) for f in self._av.resample(frame)]
        return np.concatenate(parts) if parts else None



class _TooLarge(Exception):
    pass


async def _read_body(request: web.Request, limit: int) -> str:
    """The body, read within BODY_TIMEOUT_S, refused beyond ``limit`` bytes
    (the admin app's own body cap is for the small API bodies)."""
    if request.content_length is not None and request.content_length > limit:
        raise _TooLarge

    async def read() -> bytes:
        chunks, size = [], 0
        while True:
            chunk = await request.content.read(limit + 1 - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise _TooLarge

    return (await asyncio.wait_for(read(), BODY_TIMEOUT_S)).decode("utf-8")


def _answer(status: int, **body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, separators=(",", ":")),
                        content_type="application/json")
