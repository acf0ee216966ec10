"""The media engine: RTP endpoints, conferences and the 20 ms tick on asyncio.

Knows nothing of SIP. RTP is read at the start of each tick: one poll call
(an epoll of every RTP socket, not the event loop's) finds the sockets with
a datagram and each is read once per poll round: no event-loop callback per
datagram and no EAGAIN exception per socket. A G.711 call's datagrams (once
its source is latched and a socket connected to it) are read into a landing
block and checked and placed in the jitter buffers of every participant
together (``batch_jitter.BatchJitter``), and every participant's frame comes
out of them together. All decoding/mixing/encoding happens once per tick for
every participant at once (``conference.BatchMixer``).
RTCP is read by an event-loop reader (a few packets a second): a well-formed
packet from the call's peer counts as activity for the RTP timeout.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import select
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .clock import TickClock
from .codecs import MUTED_OFFSET, SILENCE_BYTE, VARIANT_OFFSETS, codec_index
from .conference import BatchMixer, Conference as _Conference, make_beep
from .dtmf import DtmfDetector
from .inband_dtmf import FrameClassifier, InbandDtmf, windows_of
from .batch_jitter import BatchJitter, RowJitter
from .jitter import CONCEALED, FRAME
from .rtcp import is_rtcp, same_host
from .rtp import HEADER_SIZE, RTP_HEADER, RtpSender, TELEPHONE_EVENT, initial_seq
from .wideband import WidebandMix, check_codec, wide_stream
from .talk import TalkDetector

log = logging.getLogger(__name__)

RCVBUF = 1 << 20
RELATCH_AFTER = 1.0  # s of silence from the latched address before another may take over
#: One outgoing G.711 packet: RTP header (RFC 3550, network byte order) + 20 ms.
PACKET = np.dtype([("b0", "u1"), ("b1", "u1"), ("seq", ">u2"), ("ts", ">u4"), ("ssrc", ">u4"),
                   ("payload", "u1", (FRAME,))])
RX_ROUNDS = 16  # poll rounds per tick: up to this many datagrams per socket per tick
JUNK_SKIP = 64  # dropped datagrams skipped per read (see RtpEndpoint._receive)
RTCP_READS = 16  # RTCP datagrams read per event-loop callback (the rest on the next one)
#: talk changes handed to ``on_talk`` per event-loop callback: a tick where
#: hundreds of participants start or stop talking at once is reported over
#: several callbacks, so the next tick's timer is not held up behind them
TALK_REPORT_CHUNK = 16
HOUSEKEEPING_TICKS = 5  # rtp timeout / stale DTMF checks every 100 ms
_RX_SIZE = 2048
_FAST_SIZE = HEADER_SIZE + FRAME  # the datagram of the receive fast path
#: The RTP header of every datagram in the landing block (one per _RX_SIZE bytes).
_LAND_HEADER = np.dtype({"names": ["b0", "b1", "seq", "ts", "ssrc"],
                         "formats": ["u1", "u1", ">u2", ">u4", ">u4"],
                         "offsets": [0, 1, 2, 4, 8], "itemsize": _RX_SIZE})
#: Sample rate of every conference's mix (handed to recorders with each block).
MIX_RATE = 8000
#: Upper bounds (s) of the tick lateness/work histogram buckets (counts since start).
TICK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
                0.01, 0.015, 0.02, 0.03, 0.05, 0.1)


@dataclass
class EngineStats:
    packets_in: int = 0
    packets_out: int = 0
    packets_dropped: int = 0  # junk, truncated, wrong PT, foreign source, too late
    frames_concealed: int = 0
    bad_payloads: int = 0  # G.722/Opus payloads that failed to decode (concealed)
    fec_frames: int = 0  # lost Opus frames rebuilt from the next packet's FEC
    plc_frames: int = 0  # lost Opus frames concealed by the decoder's PLC
    digits: int = 0
    ticks: int = 0
    ticks_skipped: int = 0
    send_errors: int = 0
    participants: int = 0  # open endpoints
    rtcp_in: int = 0  # well-formed RTCP from a call's peer (counts as activity)
    rtcp_dropped: int = 0  # anything else on an RTCP port
    tick_lateness_s: deque = field(default_factory=lambda: deque(maxlen=3000))
    tick_work_s: deque = field(default_factory=lambda: deque(maxlen=3000))
    # per-bucket (not cumulative) counts of every tick since start, last = +Inf
    tick_lateness_counts: list = field(default_factory=lambda: [0] * (len(TICK_BUCKETS) + 1))
    tick_work_counts: list = field(default_factory=lambda: [0] * (len(TICK_BUCKETS) + 1))
    tick_lateness_sum: float = 0.0
    tick_work_sum: float = 0.0


class Conference(_Conference):
    """A conference of RtpEndpoints (see conference.Conference)."""

    #: gets the conference's full mix every tick (``MediaEngine.set_recorder``)
    recorder = None


def _ignore(*_args) -> None:
    """A closed endpoint's callbacks (on_digit, on_timeout, on_frame): a call already scheduled may still come."""


class PromptPlayer:
    """Prompt playback and callbacks shared by every endpoint kind (RTP phones
    and PCM participants): the engine's tick reads ``_prompt``/``_prompt_pos`` of the
    endpoints in ``engine._players`` and calls ``_prompt_done`` at the end."""

    __slots__ = ()

    @property
    def playing(self) -> bool:
        return self._prompt is not None

    def play(self, pcm: np.ndarray, on_done: Callable[[], None] | None = None) -> None:
        pcm = np.asarray(pcm)
        if pcm.dtype != np.int16:
            pcm = pcm.astype(np.int16)
        self._prompt = pcm.reshape(-1)
        self._prompt_pos = 0
        self._prompt_done = on_done
        self._engine._players.add(self)

    def stop_playback(self) -> None:
        self._prompt = None
        self._prompt_done = None
        self._engine._players.discard(self)

    def _safe_call(self, fn, *args) -> None:
        """A callback of this endpoint's owner, from the engine (prompt done,
        digit, timeout): nothing once closed, and never an exception into
        the media engine."""
        if self.closed:
            return
        try:
            fn(*args)
        except Exception:  # a callback bug must not stop the media engine
            log.exception("media callback %r failed", fn)


class RtpEndpoint(PromptPlayer):
    # slots: a smaller object per participant and the interpreter's fastest
    # attribute access, both of which count in the per-packet/per-row loops
    __slots__ = (
        "_engine", "_loop", "_sock", "_rtcp", "_rxbuf", "_rxmv", "_recv_into", "on_digit", "on_timeout",
        "rtp_timeout", "conference", "beep_frame", "_row", "closed", "on_hold", "_codec_i", "codec",
        "payload_type", "telephone_event_pt", "remote", "_dest", "_latched", "_latched_at", "_audio_ssrc",
        "_variants", "jitter", "dtmf", "_sender", "_ts0", "_first_tick", "_last_rx", "_timed_out",
        "_prompt", "_prompt_pos", "_prompt_done", "dropped", "_fd", "_stream", "_wide", "_rtcp_junk_logged",
        "_sendto", "srtp",  # SRTP hook: mixer/srtp.py replaces _recv_into/_sendto once per call
        "_conn", "_conn_recv", "_conn_send",  # the socket connected to the latched address (_connect_latched)
        "beep_end", "muted", "talking", "inband",
        "_jid",  # G.711: this stream's row in the engine's BatchJitter (-1: G.722/Opus, own buffer)
    )

    def __init__(self, engine: "MediaEngine", rtp: socket.socket, rtcp: socket.socket, *, codec: str,
                 payload_type: int, telephone_event_pt: int | None, remote: tuple[str, int] | None,
                 on_digit: Callable[[str], None], rtp_timeout: float, on_timeout: Callable[[], None]) -> None:
        self._engine = engine
        self._loop = engine._loop
        self._sock = rtp
        self._rtcp = rtcp
        self._rxbuf = engine._rxbuf  # shared: every datagram is handled as soon as it is read
        self._rxmv = engine._rxmv
        self._recv_into = rtp.recvfrom_into
        self._sendto = rtp.sendto  # SRTP hook: SrtpStream.attach swaps both bound functions
        self.srtp = None  # mixer.srtp.SrtpStream when the call uses SRTP
        self._conn: socket.socket | None = None
        self._conn_recv = None
        self._conn_send = None
        self.on_digit = on_digit
        self.on_timeout = on_timeout
        self.rtp_timeout = rtp_timeout
        self.conference: Conference | None = None
        self.beep_frame = -1
        self.beep_end = engine._mixer.join_end
        self.muted = False     # SPEC 12: left out of the mix sum (set_muted)
        self.talking = False   # SPEC 12: talk detection, kept by the engine
        # no telephone-event: keypad digits are looked for in the audio
        self.inband: InbandDtmf | None = InbandDtmf() if telephone_event_pt is None else None
        self._row = -1
        self.closed = False
        self.on_hold = False
        self._wide: WidebandMix | None = None  # set by the engine's layout
        self._jid = -1
        self._audio_ssrc: int | None = None
        self.payload_type = payload_type
        self._set_codec(codec)
        self.telephone_event_pt = -1 if telephone_event_pt is None else telephone_event_pt
        self.remote = remote
        self._dest = remote  # where we send: remote until latched
        self._latched: tuple | None = None
        self._latched_at = 0.0
        self.dtmf = DtmfDetector()
        self._sender = RtpSender(payload_type, random.getrandbits(32), initial_seq())  # below 2^15: SRTP (rtp.py)
        self._ts0 = random.getrandbits(32)
        self._first_tick: int | None = None
        self._last_rx = time.monotonic()
        self._timed_out = False
        self._prompt: np.ndarray | None = None
        self._prompt_pos = 0
        self._prompt_done: Callable[[], None] | None = None
        self.dropped = 0
        self._rtcp_junk_logged = False
        self._fd = rtp.fileno()
        engine._watch(self)
        engine._loop.add_reader(rtcp.fileno(), self._on_rtcp)

    # -- public API ---------------------------------------------------------------------------
    @property
    def local_port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def latched(self) -> tuple | None:
        """Address RTP arrives from (where we send), once known."""
        return self._latched

    def update(self, *, codec: str, payload_type: int, telephone_event_pt: int | None,
               remote: tuple[str, int] | None) -> None:
        if codec.upper() != self.codec:
            if self._stream is None and codec.upper() in SILENCE_BYTE:
                ci = codec_index(codec)
                self._codec_i = ci
                self.codec = codec.upper()
                self._variants = VARIANT_OFFSETS[ci]
                self.jitter.reset(SILENCE_BYTE[self.codec])
            else:
                self._set_codec(codec)  # to or from G.722/Opus: new codec state
                self._audio_ssrc = None
            self._engine._dirty = True
        if payload_type != self.payload_type:
            self._engine._dirty = True  # the batched headers carry it
        self.payload_type = payload_type
        self._sender.payload_type = payload_type
        self.telephone_event_pt = -1 if telephone_event_pt is None else telephone_event_pt
        if (telephone_event_pt is None) != (self.inband is not None):
            self.inband = InbandDtmf() if telephone_event_pt is None else None
            self._engine._dirty = True  # the engine's list of in-band rows
        if remote != self.remote:
            # media moved (re-INVITE): latch again on what arrives next
            self.remote = remote
            self._latched = None
            self._dest = remote
            self._engine._disconnect(self)
            self._engine._sends_dirty = True
        self._sync_rx()

    def _set_codec(self, codec: str) -> None:
        """G.711 rows use the batch tables; G.722/Opus get their codec state
        (``wideband.WideStream``) and the general path, chosen here once."""
        self._stream = wide_stream(codec, self._engine.max_mix_rate)
        self._codec_i = codec_index(codec) if self._stream is None else 0
        self.codec = codec.upper()
        self._variants = VARIANT_OFFSETS[self._codec_i]
        batch = self._engine._jitter
        if self._jid >= 0:
            batch.close(self._jid)
            self._jid = -1
        if self._stream is None:
            self._jid = batch.open(SILENCE_BYTE[self.codec])
            self.jitter = RowJitter(batch, self._jid)
        else:
            self.jitter = self._stream.jitter
        self._sync_rx()
        self._engine._route_conn(self)

    def _sync_rx(self) -> None:
        """What the batched receive checks a G.711 packet against (its payload
        type, the stream's SSRC) into the BatchJitter's arrays."""
        j = self._jid
        if j >= 0:
            batch = self._engine._jitter
            batch.payload_type[j] = self.payload_type
            batch.ssrc[j] = -1 if self._audio_ssrc is None else self._audio_ssrc

    def _heard(self, own: float) -> float:
        """The later of ``own`` (a time this endpoint kept) and the last packet
        the batched receive placed for it (BatchJitter.heard)."""
        j = self._jid
        if j >= 0:
            placed = float(self._engine._jitter.heard[j])
            if placed > own:
                return placed
        return own

    def set_hold(self, on_hold: bool) -> None:
        if self.on_hold and not on_hold:
            self._last_rx = time.monotonic()  # the RTP timeout pauses while on hold
        if on_hold != self.on_hold:
            self._engine._sends_dirty = True
        self.on_hold = on_hold

    def set_muted(self, muted: bool) -> None:
        """Muted: out of the mix sum (the others do not hear us); we still
        hear them, and in-band digits are still read (so *6 can unmute)."""
        self.muted = muted
        engine = self._engine
        if 0 <= self._row < len(engine._muted) and engine._rows[self._row] is self:
            engine._muted[self._row] = muted
        else:
            engine._dirty = True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stop_playback()
        # The owner's callbacks hold the owner (a call's bound method), which
        # holds this endpoint: dropped, both are freed by reference counting
        # when the call ends. Left for the cyclic GC, a churn's dead calls
        # made full collections that stopped the loop for 130 ms (issue 15).
        self.on_digit = self.on_timeout = _ignore
        if self.conference is not None:
            self.conference.remove(self)
        self._engine._unwatch(self)
        try:
            self._loop.remove_reader(self._rtcp.fileno())
        except (ValueError, OSError):
            pass
        self._engine._disconnect(self)
        for s in (self._sock, self._rtcp):
            s.close()
        if self._jid >= 0:
            self._engine._jitter.close(self._jid)
            self._jid = -1
        self._engine._forget(self)

    # -- receive --------------------------------------------------------------------------------
    def _on_rtcp(self) -> None:
        """RTCP, off the tick: a well-formed packet from the call's peer (the
        host RTP is latched to, else the SDP's) keeps the call alive like RTP
        does (SPEC 5: a phone with voice-activity detection sends only RTCP
        while quiet; Asterisk's rtptimeout counts RTCP too). Anything else is
        dropped, so junk aimed at the port cannot keep a dead call up."""
        stats = self._engine.stats
        for _ in range(RTCP_READS):
            try:
                data, addr = self._rtcp.recvfrom(_RX_SIZE)
            except OSError:  # BlockingIOError included: nothing more to read
                return
            host = addr[0]
            latched, remote = self._latched, self.remote
            # RTCP from the peer keeps the call alive (SPEC 5): a phone with
            # silence suppression or Opus DTX sends no RTP while quiet
            if ((latched is not None and same_host(host, latched[0]))
                    or (remote is not None and same_host(host, remote[0]))) and is_rtcp(data):
                self._last_rx = time.monotonic()
                stats.rtcp_in += 1
                continue
            stats.rtcp_dropped += 1
            if not self._rtcp_junk_logged:  # once per call: a flood must not fill the log
                self._rtcp_junk_logged = True
                log.info("RTCP port %d: dropped a datagram from %s that is not RTCP from the call's peer "
                         "(further ones are counted, not logged)", self._rtcp.getsockname()[1], host)

    def _receive(self, now: float, skip: int = JUNK_SKIP) -> int:
        """One useful datagram if there is one: dropped ones (junk, a third
        address, wrong PT) are skipped at once, up to ``skip``, so that a flood
        aimed at this port cannot use up the socket's reads of the tick and
        delay the call's own packets behind it."""
        stats = self._engine.stats
        for _ in range(skip):
            r = self._receive_one(now)
            if r != 1:
                return r
            stats.packets_in += 1
            stats.packets_dropped += 1
        return self._receive_one(now)

    def _receive_one(self, now: float) -> int:
        """Read one datagram (the engine's poll said one is there) into the
        jitter buffer; returns 1 when it was dropped, 0 when used, -1 when
        nothing was read. No loop, so no EAGAIN exception per socket per tick."""
        try:
            n, addr = self._recv_into(self._rxbuf)
        except OSError:  # BlockingIOError included: spurious readiness
            return -1
        return self._handle(n, addr, now)

    def _handle(self, n: int, addr, now: float) -> int:
        """Every check on a datagram just read into the shared buffer (the
        general case; ``MediaEngine._receive_all`` and ``_place_landed`` do
        the common one for many at once): 1 when it was dropped, 0 when used."""
        buf = self._rxbuf
        if n < HEADER_SIZE:
            self.dropped += 1
            return 1
        b0, b1, seq, ts, ssrc = RTP_HEADER.unpack_from(buf, 0)
        if b0 != 0x80:  # slow path: CSRCs, extension, padding, or not RTP v2
            if b0 & 0xC0 != 0x80:
                self.dropped += 1
                return 1
            start = HEADER_SIZE + 4 * (b0 & 0x0F)
            if b0 & 0x10:
                if n < start + 4:
                    self.dropped += 1
                    return 1
                start += 4 + 4 * ((buf[start + 2] << 8) | buf[start + 3])
            end = n
            if b0 & 0x20:
                end -= buf[n - 1]
            if end <= start:
                self.dropped += 1
                return 1
        else:
            start, end = HEADER_SIZE, n
        pt = b1 & 0x7F
        if pt != self.payload_type and pt != self.telephone_event_pt:
            if addr == self._latched:
                self._last_rx = now  # e.g. comfort noise: the phone is still there
            self.dropped += 1
            return 1
        if addr != self._latched:
            if self._latched is not None and now - self._heard(self._latched_at) < RELATCH_AFTER:
                self.dropped += 1  # someone else while the latched source is alive
                return 1
            self._latched = self._dest = addr
            self._engine._latch_changed(self)
        self._latched_at = now
        self._last_rx = now  # only RTP we accept keeps a call alive, not junk
        if pt == self.payload_type:
            if ssrc != self._audio_ssrc:
                if self._audio_ssrc is not None:
                    self.jitter.reset()  # a new stream replaces the old one (SPEC 5)
                self._audio_ssrc = ssrc
                self._sync_rx()
            if not self.jitter.put(ts, self._rxmv, start, end):
                self.dropped += 1
                return 1
            return 0
        if end - start < 4:
            self.dropped += 1
            return 1
        event, flags, _duration = TELEPHONE_EVENT.unpack_from(buf, start)
        digits = self.dtmf.feed(ts, event, bool(flags & 0x80), now)
        if digits:
            self._emit_digits(digits)
        return 0

    def _emit_digits(self, digits: str) -> None:
        for d in digits:
            self._engine.stats.digits += 1
            self._loop.call_soon(self._safe_call, self.on_digit, d)

    def _housekeeping(self, now: float) -> None:
        if self.dtmf.pending:
            d = self.dtmf.expire(now)
            if d:
                self._emit_digits(d)
        if not self._timed_out and not self.on_hold and now - self._last_rx >= self.rtp_timeout:
            # the batched receive keeps its own time (BatchJitter.heard): read
            # only when ours looks old, then kept, so once per timeout period
            self._last_rx = self._heard(self._last_rx)
            if now - self._last_rx >= self.rtp_timeout:
                self._timed_out = True
                self._loop.call_soon(self._safe_call, self.on_timeout)


class MediaEngine:
    def __init__(self, bind: str, *, beep_hz: int = 1000, beep_ms: int = 250, leave_beep_hz: int = 0,
                 leave_beep_ms: int = 250, talk_threshold_dbfs: float = -45.0,
                 max_mix_rate: int = 48000) -> None:
        self.bind = bind
        self.max_mix_rate = max_mix_rate
        # id(conference, or lone endpoint) -> (it, its WidebandMix): groups with a G.722/Opus member
        self._wide_mixes: dict[int, tuple[object, WidebandMix]] = {}
        self.beep = make_beep(beep_hz, beep_ms)
        self.stats = EngineStats()
        self.clock = TickClock()
        leave = make_beep(leave_beep_hz, leave_beep_ms) if leave_beep_hz > 0 else None
        self._mixer = BatchMixer(self.beep, leave)
        self._n_beep_frames = len(self._mixer.beep_frames)
        join_end = self._mixer.join_end
        self._beeps = (join_end, join_end, self._n_beep_frames)  # leave beep: [join_end, end)
        # the same table (join beep frames, then the leave beep's) for the general path
        self._beep_table = self._mixer.beep_frames.reshape(-1).astype(np.int16)
        # SPEC 12: talk detection and in-band DTMF, batched in the tick
        # (BatchMixer.contrib_hook); talk changes go to on_talk once per tick.
        self.on_talk: Callable[[list[tuple["RtpEndpoint", bool]]], None] | None = None
        self._talk = TalkDetector(talk_threshold_dbfs, FRAME)
        self._talk_queue: deque = deque()  # (endpoint, talking) not yet given to on_talk
        self._talk_drain_scheduled = False
        self._muted = np.zeros(0, dtype=bool)
        self._dtmf_classifier = FrameClassifier(FRAME)
        self._inband_rows: list[tuple[int, RtpEndpoint]] = []
        self._inband_index = np.zeros(0, dtype=np.intp)
        self._mixer.contrib_hook = self._contributing
        # the jitter buffers of every G.711 stream (RtpEndpoint._jid), popped
        # for all rows at once each tick
        self._jitter = BatchJitter()
        self._endpoints: list[RtpEndpoint] = []
        self._rows: list[RtpEndpoint] = []
        self._row_jids = np.zeros(0, dtype=np.intp)
        self._row_variants = np.zeros(0, dtype=np.uint16)  # (row, READY/CONCEALED/SILENT) flat
        self._variant_base = np.zeros(0, dtype=np.intp)
        self._hold_rows = np.zeros(0, dtype=np.intp)
        self._beeping: list[RtpEndpoint] = []  # rows whose beep is sounding (set at each layout)
        self._players: set[RtpEndpoint] = set()
        self._dirty = True
        self._tick_waiters: list[asyncio.Future] = []
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # RTP sockets are polled from the tick, not watched by the event loop:
        # one poll syscall finds every socket with a datagram, and each is
        # read exactly once per round (no per-datagram callback, no EAGAIN).
        self._rx_poll = select.epoll() if hasattr(select, "epoll") else select.poll()
        self._by_fd: dict[int, RtpEndpoint] = {}
        # Once a call's RTP source is latched, a second socket on the same
        # port (SO_REUSEPORT) is connected to it: the kernel hands that
        # source's datagrams to it (the more specific match) and everything
        # else (a moved phone, junk, a third address) to the first socket.
        # The common packet then costs recv_into/send: no source address
        # made into a Python tuple and compared, no destination parsed, no
        # route looked up per packet.
        self._by_conn: dict[int, RtpEndpoint] = {}
        self._to_connect: list[RtpEndpoint] = []
        self._connect_failed_logged = False
        self._rxbuf = bytearray(_RX_SIZE)  # every RTP datagram is read here
        self._rxmv = memoryview(self._rxbuf)
        # The connected sockets of G.711 streams read into a landing block,
        # one datagram per row of it: per packet only the read and two
        # appends; after the poll rounds all of them are checked and placed
        # in their jitter buffers with a few array operations (_place_landed).
        self._land_get: dict[int, Callable] = {}  # connected fd -> its receive function
        self._fd_jid = np.full(64, -1, dtype=np.intp)  # connected fd -> BatchJitter id
        self._land_capacity = 0
        self._set_landing(64)
        self._tick_index = 0
        self._group_of: dict[int, int] = {}
        self._groups: list[tuple[Conference, int]] = []  # conference -> its group of rows (mixer totals)
        self._taps: list[tuple[int, Callable]] = []  # (group, recorder.push) of recorded conferences
        self._taps_dirty = False
        self._set_packets([])

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name="mixer-clock")

    async def close(self) -> None:
        for ep in list(self._endpoints):
            ep.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._rx_poll.close()

    def open_endpoint(self, rtp_port: int, *, codec: str, payload_type: int, telephone_event_pt: int | None,
                      remote: tuple[str, int] | None, on_digit: Callable[[str], None],
                      rtp_timeout: float, on_timeout: Callable[[], None],
                      host: str | None = None) -> RtpEndpoint:
        """Bind RTP on ``rtp_port`` and RTCP on ``rtp_port + 1``; OSError if busy.
        ``rtp_port=0`` picks a free even port pair (tests, tools). ``host``
        binds this call's sockets to one local address instead of the engine's
        (a server listening on a wildcard gives each call the address its
        phone reached, so the media leaves from the address in the SDP)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        check_codec(codec)  # ValueError before any socket is opened
        rtp, rtcp = self._bind_pair(rtp_port, host or self.bind)
        try:
            ep = RtpEndpoint(self, rtp, rtcp, codec=codec, payload_type=payload_type,
                             telephone_event_pt=telephone_event_pt, remote=remote, on_digit=on_digit,
                             rtp_timeout=rtp_timeout, on_timeout=on_timeout)
        except BaseException:
            rtp.close()
            rtcp.close()
            raise
        self._endpoints.append(ep)
        self.stats.participants = len(self._endpoints)
        self._dirty = True
        return ep

    async def after_tick(self, timeout: float = 0.1) -> None:
        """Return right after the next tick: the moment with the most time to
        spare before the one after, for occasional work on the loop (a metrics
        scrape) that must not delay a tick."""
        if self._task is None or self._task.done():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._tick_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            pass

    def attach(self, ep) -> None:
        """Take in a participant that has no RTP socket (``pcm_endpoint.PcmEndpoint``):
        mixed on the general path, ``ep.close()`` takes it out again."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        ep._loop = self._loop
        self._endpoints.append(ep)
        self.stats.participants = len(self._endpoints)
        self._dirty = True

    def new_conference(self) -> Conference:
        return Conference(self._mark_dirty, self._beeps)

    def set_recorder(self, conference: Conference, recorder) -> None:
        """From the next tick on, hand ``conference``'s full mix (everyone) to
        ``recorder.push(pcm, rate, tick)`` each tick; None stops it. The push
        runs on the tick: it must only copy and queue (mixer.record.Recorder)."""
        conference.recorder = recorder
        self._taps_dirty = True

    # -- internals --------------------------------------------------------------------------------
    def _watch(self, ep: RtpEndpoint) -> None:
        self._rx_poll.register(ep._fd, select.POLLIN)
        self._by_fd[ep._fd] = ep

    def _unwatch(self, ep: RtpEndpoint) -> None:
        if self._by_fd.get(ep._fd) is ep:
            del self._by_fd[ep._fd]
            try:
                self._rx_poll.unregister(ep._fd)
            except (KeyError, OSError, ValueError):
                pass

    def _receive_all(self) -> None:
        """Poll rounds over every RTP socket, one datagram per ready socket per
        round. A G.711 call's connected socket reads into the next row of the
        landing block, and nothing else happens per packet: after the rounds
        ``_place_landed`` checks and places all of them at once. Other sockets
        (before latching, G.722/Opus) read into the shared buffer; there the
        common case -- a 20 ms packet with a plain v2 header, the audio PT,
        the current SSRC, from the latched address, landing in time on a frame
        boundary of the jitter ring -- is handled right here (one slice copy
        into the ring; what ``RtpEndpoint._handle`` and ``JitterBuffer.put``
        would do for it); anything else goes through ``RtpEndpoint._handle``."""
        by_fd = self._by_fd
        if not by_fd:
            return
        now = time.monotonic()
        poll = self._rx_poll.poll
        epoll = isinstance(self._rx_poll, getattr(select, "epoll", ()))
        get = by_fd.get
        conn_get = self._by_conn.get
        land_get = self._land_get.get
        views = self._land_views
        capacity = self._land_capacity
        fds: list[int] = []
        lengths: list[int] = []
        fds_append = fds.append
        lengths_append = lengths.append
        landed = 0
        buf = self._rxbuf
        payload = self._rxmv[HEADER_SIZE:_FAST_SIZE]
        unpack = RTP_HEADER.unpack_from
        n_in = dropped = 0
        for _ in range(RX_ROUNDS):
            events = poll(0, len(by_fd) + len(self._land_get) + 8) if epoll else poll(0)
            if not events:
                break
            for fd, _mask in events:
                recv = land_get(fd)
                if recv is not None:  # G.711, connected: checked after the rounds
                    if landed == capacity:
                        # full (ticks missed: several datagrams per socket):
                        # place these now, so that no datagram of a stream
                        # is handled before an earlier one (a reordered
                        # telephone-event would count a digit twice)
                        n_in += landed
                        dropped += self._place_landed(landed, fds, lengths, now)
                        fds.clear()
                        lengths.clear()
                        landed = 0
                    try:
                        lengths_append(recv(views[landed]))
                    except OSError:  # BlockingIOError, or an ICMP error reported on the socket
                        continue
                    fds_append(fd)
                    landed += 1
                    continue
                ep = conn_get(fd)
                if ep is not None:  # connected: from the latched address, by the kernel's choice
                    try:
                        n = ep._conn_recv(buf)
                    except OSError:  # BlockingIOError, or an ICMP error reported on the socket
                        continue
                    addr = ep._latched
                else:
                    ep = get(fd)
                    if ep is None:
                        continue
                    try:
                        n, addr = ep._recv_into(buf)
                    except OSError:  # BlockingIOError included: spurious readiness
                        continue
                n_in += 1
                if n == _FAST_SIZE and addr == ep._latched and ep._jid < 0:  # G.722 in its JitterBuffer
                    b0, b1, _seq, ts, ssrc = unpack(buf)
                    if b0 == 0x80 and b1 == ep.payload_type and ssrc == ep._audio_ssrc:
                        jb = ep.jitter
                        play_ts = jb._play_ts
                        if play_ts is not None:
                            d = ts - play_ts  # no wrap-around in the range accepted here
                            if 0 <= d <= jb._fast_max and not d % FRAME:
                                frame = jb._k + d // FRAME
                                slot = frame % jb.slots
                                jb._tags[slot] = frame
                                slot *= FRAME
                                jb._ringmv[slot:slot + FRAME] = payload
                                jb._late_streak = 0
                                jb.received += 1
                                ep._latched_at = ep._last_rx = now
                                continue
                if ep._handle(n, addr, now):
                    dropped += 1
                    # dropped (junk, a third address...): skip more at once, so
                    # that a flood at this port cannot delay the call's packets
                    r = ep._receive(now, JUNK_SKIP - 1)
                    if r >= 0:
                        n_in += 1
                        dropped += r
        if landed:
            n_in += landed
            dropped += self._place_landed(landed, fds, lengths, now)
        if n_in:
            stats = self.stats
            stats.packets_in += n_in
            stats.packets_dropped += dropped
        if self._to_connect:
            self._connect_latched(now)

    # -- connected sockets (see _by_conn) -------------------------------------------------------
    def _set_landing(self, capacity: int) -> None:
        """A landing block for ``capacity`` datagrams (when a tick reads more,
        the block is placed and refilled: ``_receive_all``)."""
        self._land = np.zeros((capacity, _RX_SIZE), dtype=np.uint8)
        self._land_header = self._land.reshape(-1).view(_LAND_HEADER)
        flat = memoryview(self._land.reshape(-1))
        self._land_views = [flat[i * _RX_SIZE:(i + 1) * _RX_SIZE] for i in range(capacity)]
        self._land_capacity = capacity

    def _route_conn(self, ep: RtpEndpoint) -> None:
        """A connected socket of a G.711 stream reads into the landing block;
        of a G.722/Opus one, one by one (its own jitter buffer)."""
        s = ep._conn
        if s is None:
            return
        fd = s.fileno()
        if ep._jid >= 0:
            if fd >= len(self._fd_jid):
                grown = np.full(max(2 * len(self._fd_jid), fd + 1), -1, dtype=np.intp)
                grown[:len(self._fd_jid)] = self._fd_jid
                self._fd_jid = grown
            self._fd_jid[fd] = ep._jid
            self._land_get[fd] = ep._conn_recv
        else:
            self._land_get.pop(fd, None)

    def _place_landed(self, count: int, fds: list[int], lengths: list[int], now: float) -> int:
        """The ``count`` datagrams of the landing block, in the order they
        were read: the common ones (a whole 20 ms frame with the plain
        header, the stream's payload type and SSRC, due within the ring) are
        placed in their jitter buffers at once; every datagram of a stream
        that had any other kind this tick goes through RtpEndpoint._handle,
        in order. Returns how many were dropped."""
        batch = self._jitter
        ids = self._fd_jid[np.array(fds, dtype=np.intp)]
        header = self._land_header[:count]
        ts = header["ts"].astype(np.int64)
        common = np.array(lengths, dtype=np.intp) == _FAST_SIZE
        common &= header["b0"] == 0x80
        common &= header["b1"] == batch.payload_type[ids]
        common &= header["ssrc"] == batch.ssrc[ids]
        common &= batch.fast(ids, ts)
        if common.all():
            batch.place(ids, ts, self._land[:count, HEADER_SIZE:_FAST_SIZE], now)
            return 0
        common &= ~np.isin(ids, ids[~common])
        chosen = np.flatnonzero(common)
        if len(chosen):
            batch.place(ids[chosen], ts[chosen], self._land[chosen, HEADER_SIZE:_FAST_SIZE], now)
        dropped = 0
        buf, views, by_conn = self._rxbuf, self._land_views, self._by_conn
        for i in np.flatnonzero(~common).tolist():
            ep = by_conn.get(fds[i])
            if ep is None or ep.closed:
                continue
            n = lengths[i]
            buf[:n] = views[i][:n]
            dropped += ep._handle(n, ep._latched, now)
        return dropped

    def _latch_changed(self, ep: RtpEndpoint) -> None:
        """``ep`` latched on a new address: its sends change, and its
        connected socket (if any) belongs to the old address."""
        self._sends_dirty = True
        self._disconnect(ep)
        self._to_connect.append(ep)

    def _connect_latched(self, now: float) -> None:
        """Connected sockets for the endpoints that latched this tick (after
        the receive loop: no socket is opened while its events are read)."""
        pending, self._to_connect = self._to_connect, []
        for ep in pending:
            addr = ep._latched
            if ep.closed or addr is None or ep._conn is not None:
                continue
            first = ep._sock
            local = first.getsockname()
            s = socket.socket(first.family, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                s.setblocking(False)
                # SO_REUSEPORT on the first socket only for this bind: the
                # port stays refused to any other socket bound without it
                # (another server's port pool, a stray program)
                first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                try:
                    s.bind(local)
                finally:
                    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
                s.connect(addr)
                self._rx_poll.register(s.fileno(), select.POLLIN)
            except OSError as e:  # e.g. out of file descriptors: the first socket serves, as before
                s.close()
                if not self._connect_failed_logged:
                    self._connect_failed_logged = True
                    log.warning("RTP port %d: no connected socket (%s); calls use the unconnected path "
                                "(logged once)", local[1], e)
                continue
            srtp = ep.srtp
            ep._conn = s
            if srtp is None:
                ep._conn_recv = s.recv_into
                ep._conn_send = s.send
                recvfrom_into = s.recvfrom_into
            else:  # SRTP (mixer/srtp.py): unprotect/protect around the connected socket
                ep._conn_recv = srtp.connected_receiver(s.recv_into, self._rxbuf)
                ep._conn_send = srtp.connected_sender(s.send)
                recvfrom_into = srtp.receiver(s.recvfrom_into, self._rxbuf)
            self._by_conn[s.fileno()] = ep
            self._route_conn(ep)
            self._sends_dirty = True
            # Between bind and connect the new socket was an unconnected
            # member of the port's group and may have been handed any
            # source's datagram: read those with their real address.
            for _ in range(JUNK_SKIP):
                try:
                    n, src = recvfrom_into(self._rxbuf)
                except OSError:
                    break
                self.stats.packets_in += 1
                if ep._handle(n, src, now):
                    self.stats.packets_dropped += 1
                if ep._conn is not s:  # that datagram moved the latch: this socket is gone
                    break

    def _reconnect(self, ep: RtpEndpoint) -> None:
        """New receive/send functions (SRTP on or off): a new connected socket
        with them at the next tick."""
        if ep._conn is not None:
            self._disconnect(ep)
            self._to_connect.append(ep)

    def _disconnect(self, ep: RtpEndpoint) -> None:
        s = ep._conn
        if s is None:
            return
        ep._conn = ep._conn_recv = ep._conn_send = None
        self._by_conn.pop(s.fileno(), None)
        self._land_get.pop(s.fileno(), None)
        try:
            self._rx_poll.unregister(s.fileno())
        except (KeyError, OSError, ValueError):
            pass
        s.close()
        self._sends_dirty = True

    def _contributing(self, decoded: np.ndarray) -> np.ndarray | None:
        """BatchMixer.contrib_hook: in-band digits, then talk detection, for
        every row at once; the rows whose frame goes into the mix sum."""
        silenced = self._muted
        if self._inband_rows:
            silenced = silenced.copy()
            silenced[self._inband(decoded)] = True
        any_silenced = bool(silenced.any())
        changed = self._talk.update(decoded, silenced if any_silenced else None)
        talking = self._talk.talking
        if len(changed):
            rows = self._rows
            changes = []
            for r in changed.tolist():
                ep = rows[r]
                ep.talking = bool(talking[r])
                changes.append((ep, ep.talking))
            if self.on_talk is not None:
                self._queue_talk(changes)
        if any_silenced:  # muted or typing tones: out at once, whatever the hangover says
            talking = talking & ~silenced
        if talking.all():
            return None
        return np.flatnonzero(talking)

    def _inband(self, decoded: np.ndarray) -> list[int]:
        """In-band DTMF of the rows without telephone-event: digits reported,
        and the rows whose audio is a tone now (kept out of the mix)."""
        states = [ep.inband for _, ep in self._inband_rows]
        windows = windows_of(states, decoded[self._inband_index])
        digit, spectrum, low, high = self._dtmf_classifier.classify(windows)
        suppressed = []
        for i, (row, ep) in enumerate(self._inband_rows):
            state = states[i]
            for w in (2 * i, 2 * i + 1):
                d = state.step(int(digit[w]), spectrum[w], int(low[w]), int(high[w]))
                if d:
                    ep._emit_digits(d)
            if state.suppressing:
                suppressed.append(row)
        return suppressed

    def _queue_talk(self, changes: list) -> None:
        """Talk changes of a tick, in order, for ``on_talk`` off the tick."""
        self._talk_queue.extend(changes)
        if not self._talk_drain_scheduled and self._loop is not None:
            self._talk_drain_scheduled = True
            self._loop.call_soon(self._report_talk)

    def _report_talk(self) -> None:
        """Up to TALK_REPORT_CHUNK queued changes to ``on_talk``; the rest on
        a later callback (in order: one queue, one drain at a time)."""
        queue = self._talk_queue
        batch = [queue.popleft() for _ in range(min(TALK_REPORT_CHUNK, len(queue)))]
        if queue:
            self._loop.call_soon(self._report_talk)
        else:
            self._talk_drain_scheduled = False
        if self.on_talk is None:
            return
        try:
            self.on_talk([(ep, talking) for ep, talking in batch if not ep.closed])
        except Exception:  # a callback bug must not stop the media engine
            log.exception("talk callback failed")

    def _mark_dirty(self) -> None:
        self._dirty = True

    def _forget(self, ep: RtpEndpoint) -> None:
        if ep in self._endpoints:
            self._endpoints.remove(ep)
        self.stats.participants = len(self._endpoints)
        self._dirty = True

    def _socket(self, port: int, host: str) -> socket.socket:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            s.setblocking(False)
            s.bind((host, port))
        except BaseException:
            s.close()
            raise
        return s

    def _bind_pair(self, rtp_port: int, host: str) -> tuple[socket.socket, socket.socket]:
        if rtp_port:
            rtp = self._socket(rtp_port, host)
            try:
                return rtp, self._socket(rtp_port + 1, host)
            except BaseException:
                rtp.close()
                raise
        for _ in range(100):
            port = random.randrange(30000, 60000, 2)
            try:
                return self._bind_pair(port, host)
            except OSError:
                continue
        raise OSError("no free RTP port pair")

    def _relayout(self) -> None:
        """Rows grouped by conference (members contiguous), others alone."""
        rows: list[RtpEndpoint] = []
        sizes: list[int] = []
        groups: list[tuple[Conference, int]] = []
        seen: set[int] = set()
        wide: list[tuple[object, list[RtpEndpoint]]] = []  # groups with a G.722/Opus member
        self._group_of = {}
        for ep in self._endpoints:
            conf = ep.conference
            if conf is None:
                if ep._stream is not None:
                    wide.append((ep, [ep]))
                    continue
                rows.append(ep)
                sizes.append(1)
            elif id(conf) not in seen:
                seen.add(id(conf))
                members = [m for m in conf.members if not m.closed]
                if any(m._stream is not None for m in members):
                    wide.append((conf, members))
                    continue
                self._group_of[id(conf)] = len(sizes)
                groups.append((conf, len(sizes)))
                rows.extend(members)
                sizes.append(len(members))
        self._save_headers()
        for i, ep in enumerate(rows):
            ep._row = i
            if ep._first_tick is None:
                ep._first_tick = self._tick_index
            ep._wide = None
        self._rows = rows
        self._groups = groups
        self._taps_dirty = True
        self._mixer.set_layout([ep._codec_i for ep in rows], sizes)
        # per tick: every row's frame from its jitter buffer, and the decode
        # variant of what came out (ready, concealed, silent) for its codec
        self._row_jids = np.array([ep._jid for ep in rows], dtype=np.intp)
        self._row_variants = np.array([ep._variants for ep in rows], dtype=np.uint16).reshape(-1)
        self._variant_base = np.arange(len(rows), dtype=np.intp) * 3
        # a beep starts at a join or leave, which always brings a new layout
        self._beeping = [ep for ep in rows if ep.beep_frame >= 0]
        if self._land_capacity < 2 * len(self._endpoints) + 64:
            self._set_landing(4 * len(self._endpoints) + 64)
        self._talk.set_rows([ep.talking for ep in rows])
        self._muted = np.array([ep.muted for ep in rows], dtype=bool)
        self._inband_rows = [(i, ep) for i, ep in enumerate(rows) if ep.inband is not None]
        self._inband_index = np.array([i for i, _ in self._inband_rows], dtype=np.intp)
        self._set_packets(rows)
        self._set_wide(wide)
        self._dirty = False

    def _set_wide(self, groups: list[tuple[object, list[RtpEndpoint]]]) -> None:
        """One WidebandMix per group with a G.722/Opus member, kept across
        layouts (its resamplers and encoders carry state)."""
        old = self._wide_mixes
        self._wide_mixes = {}
        for key, members in groups:
            hit = old.get(id(key))
            wm = hit[1] if hit is not None and hit[0] is key else WidebandMix(self._beep_table, self._talk.threshold_dbfs)
            wm.set_members(members)
            self._wide_mixes[id(key)] = (key, wm)
            for ep in members:
                ep._wide = wm
                ep._row = -1
                if ep._first_tick is None:
                    ep._first_tick = self._tick_index

    def conference_mix(self, conference) -> tuple[int, np.ndarray] | None:
        """(rate, samples) of the conference's full mix (everyone, no beeps
        or prompts) of the last tick, at the conference's mix rate; a view
        valid until the next tick (for a recorder reading once per tick)."""
        hit = self._wide_mixes.get(id(conference))
        if hit is not None and hit[0] is conference:
            return hit[1].rate, hit[1].full_mix
        g = self._group_of.get(id(conference))
        if g is None or self._dirty:
            return None
        return 8000, self._mixer._totals[g]

    def _wide_send(self, ep: RtpEndpoint, payload: bytes) -> None:
        if ep._sock is None:  # a PcmEndpoint (pcm_endpoint.py): the frame itself, no RTP
            ep._deliver(payload)
            return
        stream = ep._stream
        step = stream.step if stream is not None else FRAME
        header = ep._sender.next_header(ep._ts0 + (self._tick_index - ep._first_tick) * step)
        try:
            ep._sendto(bytes(header[:HEADER_SIZE]) + payload, ep._dest)  # SRTP hook: protects when set
            self.stats.packets_out += 1
        except OSError:
            self.stats.send_errors += 1

    def _wide_prompt_done(self, ep: RtpEndpoint) -> None:
        done = ep._prompt_done
        ep._prompt = None
        ep._prompt_done = None
        self._players.discard(ep)
        if done is not None:
            self._loop.call_soon(ep._safe_call, done)

    def _tick_wide(self) -> None:
        """Every conference with a G.722/Opus participant (general path)."""
        stats = self.stats
        talk_changes: list = []
        for key, wm in self._wide_mixes.values():
            before = (wm.bad_payloads, wm.fec_frames, wm.plc_frames)
            try:
                stats.frames_concealed += wm.tick(self._n_beep_frames, self._wide_send, self._wide_prompt_done)
                recorder = getattr(key, "recorder", None)  # a recorded conference (not a lone endpoint)
                if recorder is not None:
                    recorder.push(np.rint(wm.full_mix).astype(np.int32), wm.rate, self._tick_index)
                if wm.talk_changes:
                    talk_changes.extend(wm.talk_changes)
                    wm.talk_changes = []
            except Exception:  # a codec bug must not stop the other conferences
                log.exception("wideband mix failed")
            stats.bad_payloads += wm.bad_payloads - before[0]
            stats.fec_frames += wm.fec_frames - before[1]
            stats.plc_frames += wm.plc_frames - before[2]
        if talk_changes and self.on_talk is not None:
            self._queue_talk(talk_changes)

    def _set_packets(self, rows: list[RtpEndpoint]) -> None:
        """Outgoing packets of every row in one array: per tick the payloads
        (one copy), sequence numbers and timestamps are written for all rows
        at once; the Python loop only calls sendto."""
        n = len(rows)
        pk = np.zeros(n, dtype=PACKET)
        pk["b0"] = 0x80
        pk["b1"] = [ep._sender.payload_type | (0x80 if ep._sender._marker else 0) for ep in rows]
        pk["ssrc"] = [ep._sender.ssrc for ep in rows]
        self._pk = pk
        self._seq = np.array([ep._sender.seq for ep in rows], dtype=np.uint16)
        self._ts_base = np.array([(ep._ts0 - (ep._first_tick or 0) * FRAME) for ep in rows], dtype=np.int64)
        self._ts_now = np.zeros(n, dtype=np.int64)
        flat = memoryview(pk.view(np.uint8).reshape(-1)) if n else memoryview(b"")
        size = PACKET.itemsize
        self._pk_views = [flat[i * size:(i + 1) * size] for i in range(n)]
        self._set_sends()

    def _set_sends(self) -> None:
        """(bound sendto, packet, destination) of every row that sends, and the
        rows that do not (no address yet, or on hold): rebuilt only when the
        layout, a latch or a hold changes, not per tick."""
        sends = []
        conn_sends = []
        unsent = []
        hold = []
        views = self._pk_views
        for row, ep in enumerate(self._rows):
            dest = ep._dest
            if ep.on_hold:
                hold.append(row)
            if dest is None or ep.on_hold:
                unsent.append(row)
            elif ep._conn is not None:
                conn_sends.append((ep._conn_send, views[row]))  # connected to dest (SRTP: protects)
            else:
                sends.append((ep._sendto, views[row], dest))  # SRTP hook: protects when set
        self._sends = sends
        self._conn_sends = conn_sends
        self._unsent = unsent
        self._hold_rows = np.array(hold, dtype=np.intp)
        self._sends_dirty = False

    def _save_headers(self) -> None:
        """Write the batched header state back to each row's RtpSender."""
        b1 = self._pk["b1"] if len(self._rows) else ()
        for row, ep in enumerate(self._rows):
            ep._sender.seq = int(self._seq[row])
            ep._sender._marker = bool(b1[row] & 0x80)

    async def _run(self) -> None:
        clock = self.clock
        clock.start()
        sleep = asyncio.sleep
        while True:
            slept = False
            while True:
                delay = clock.delay()
                if delay <= 0:
                    break
                await sleep(delay)
                slept = True
            if not slept:
                # Already due (the last tick overran): let the event loop run
                # once first. Without it an overloaded mixer ticks back to
                # back and starves everything else -- SIP, digits, hang-ups
                # -- so the overload never ends (100 G.722 calls set up at
                # once: 0 of 100 joined, issue 15).
                await sleep(0)
            skipped = clock.begin_tick()
            t = time.perf_counter()
            try:
                self._tick(clock.tick_index, skipped)
            except Exception:
                log.exception("mixer tick failed")
            work = time.perf_counter() - t
            late = clock.lateness[-1]
            stats = self.stats
            stats.tick_work_s.append(work)
            stats.tick_lateness_s.append(late)
            stats.tick_work_counts[bisect.bisect_left(TICK_BUCKETS, work)] += 1
            stats.tick_lateness_counts[bisect.bisect_left(TICK_BUCKETS, late)] += 1
            stats.tick_work_sum += work
            stats.tick_lateness_sum += late
            if self._tick_waiters:
                waiters, self._tick_waiters = self._tick_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def _tick(self, tick: int, skipped: int = 0) -> None:
        stats = self.stats
        stats.ticks += 1
        if skipped:
            stats.ticks_skipped += skipped
            self._jitter.skip_all(skipped)
            for ep in self._endpoints:
                if getattr(ep, "_jid", -1) < 0:  # G.722/Opus and PCM participants: their own buffers
                    ep.jitter.skip(skipped)
        self._receive_all()
        self._tick_index = tick
        if self._dirty:
            self._relayout()
        if self._wide_mixes:
            self._tick_wide()
        rows = self._rows
        mixer = self._mixer
        if not rows:
            self._housekeeping(tick)
            return
        if self._sends_dirty:
            self._set_sends()  # also the rows on hold
        status = self._jitter.pop(self._row_jids, mixer.rx)
        variant = mixer.variant_flat
        np.take(self._row_variants, self._variant_base + status, out=variant, mode="clip")
        if len(self._hold_rows):
            variant[self._hold_rows] = MUTED_OFFSET
        stats.frames_concealed += int(np.count_nonzero(status == CONCEALED))
        beep_rows: list[int] = []
        beep_idx: list[int] = []
        if self._beeping:
            sounding = []
            for ep in self._beeping:
                b = ep.beep_frame
                if b < 0:
                    continue
                if not ep.on_hold:
                    beep_rows.append(ep._row)
                    beep_idx.append(b)
                b += 1
                if b < ep.beep_end:
                    ep.beep_frame = b
                    sounding.append(ep)
                else:
                    ep.beep_frame = -1
            self._beeping = sounding
        extra = []
        finished = []
        if self._players:
            for ep in self._players:
                if ep.on_hold or ep._dest is None or ep.closed or ep._wide is not None:
                    continue  # nothing is sent, so the prompt waits (wideband: its own mix)
                pcm = ep._prompt
                pos = ep._prompt_pos
                extra.append((ep._row, pcm[pos:pos + FRAME]))
                ep._prompt_pos = pos + FRAME
                if pos + FRAME >= len(pcm):
                    finished.append(ep)
        mixer.mix(beep_rows, beep_idx, extra)
        if self._taps_dirty:
            self._taps = [(g, conf.recorder.push) for conf, g in self._groups if conf.recorder is not None]
            self._taps_dirty = False
        if self._taps:
            totals = mixer.totals
            try:
                for g, push in self._taps:
                    push(totals[g], MIX_RATE, tick)
            except Exception:  # a recorder's bug must not cost the calls this tick's packets
                log.exception("recorder push failed: recordings detached from the mixer")
                for conf, _g in self._groups:
                    conf.recorder = None
                self._taps = []
        pk = self._pk
        pk["payload"] = mixer.tx
        np.add(self._ts_base, tick * FRAME, out=self._ts_now)
        np.bitwise_and(self._ts_now, 0xFFFFFFFF, out=self._ts_now)
        pk["ts"] = self._ts_now
        pk["seq"] = self._seq
        sends = self._sends  # (rebuilt before the pop when dirty)
        conn_sends = self._conn_sends
        unsent = self._unsent
        errors = 0
        for send, packet in conn_sends:
            try:
                send(packet)
            except OSError:  # also an ICMP error from an earlier packet, reported here once
                errors += 1
        for send, packet, dest in sends:
            try:
                send(packet, dest)
            except OSError:
                errors += 1
        sent = len(sends) + len(conn_sends) - errors
        # the next sequence number for every row that sent (errors count as sent,
        # as a lost packet would); the marker only on a stream's first packet
        seq = self._seq
        if unsent:
            b1 = pk["b1"]
            keep = b1[unsent]
            seq[unsent] -= 1
            np.add(seq, 1, out=seq)
            np.bitwise_and(b1, 0x7F, out=b1)
            b1[unsent] = keep
        else:
            np.add(seq, 1, out=seq)
            b1 = pk["b1"]
            np.bitwise_and(b1, 0x7F, out=b1)
        stats.packets_out += sent
        stats.send_errors += errors
        for ep in finished:
            done = ep._prompt_done
            ep._prompt = None
            ep._prompt_done = None
            self._players.discard(ep)
            if done is not None:
                self._loop.call_soon(ep._safe_call, done)
        self._housekeeping(tick)

    def _housekeeping(self, tick: int) -> None:
        if tick % HOUSEKEEPING_TICKS == 0:
            now = time.monotonic()
            for ep in self._endpoints:
                ep._housekeeping(now)
