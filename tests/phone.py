"""A small, independent SIP/RTP test phone for sipconf integration tests.

It talks to the server over real UDP sockets on loopback, exactly as a desk
phone would.  It deliberately imports nothing from ``sipconf`` or ``mixer``:
it has its own SIP message builder/parser, G.711 codecs (numpy), RFC 4733
DTMF and an RFC 2617/7616 digest client (MD5, SHA-256, their -sess
variants; qop=auth).  Everything is synchronous; each phone runs two
daemon receiver threads (SIP, RTP) and, while it sends media, one sender
thread.  Several phones can run at once.  Every wait is bounded.

Quick use::

    from tests.phone import TestPhone

    with TestPhone(("127.0.0.1", 5060), user="101", password="alice-secret") as p:
        assert p.register().status == 200
        r = p.call("800")                 # INVITE + digest + ACK; parses the SDP answer
        assert r.status == 200
        p.send_dtmf("1234#")              # RFC 4733 events in the audio stream
        p.send_dtmf("4321#", mode="info") # or SIP INFO application/dtmf-relay
        p.send_tone(440)                  # 20 ms frames, until stop_audio()/hangup
        assert p.wait_for_tone(1000, timeout=3)   # e.g. the join beep
        p.hangup()

Constructor
    ``TestPhone(server=("127.0.0.1", 5060), *, local_ip="127.0.0.1", user="101",
    password=None, codecs=("PCMU",), telephone_event_pt=101, domain="office.local",
    user_agent="sipconf-testphone", auth_user=None, digest_algorithms=None,
    advertise_rtp=None, auto_media=True, sip_port=0, rtp_port=0)``

    Binds a SIP UDP socket and an RTP UDP socket (even port) on ``local_ip``.
    ``codecs`` is the offer order ("PCMU"=0, "PCMA"=8; a ("NAME", pt) pair
    gives a custom payload type).  ``telephone_event_pt=None`` leaves
    telephone-event out of the offer.  ``digest_algorithms`` limits the
    algorithms the digest client accepts (default: MD5, MD5-sess, SHA-256,
    SHA-256-sess); it answers the first challenge whose algorithm it supports.
    ``advertise_rtp=(ip, port)`` writes another address in the SDP than the
    socket really uses (for symmetric-RTP / latching tests).  With
    ``auto_media`` (default) the phone starts sending silence as soon as a
    call is answered, like a real phone; ``stop_audio()`` stops all RTP.

SIP (every method returns the final ``SipMessage`` response; raises
``TimeoutError`` when no final response arrives within ``timeout``)
    ``register(expires=3600, password=None, *, contact=None, timeout=5.0)``
        answers a 401/407 once with credentials.
    ``unregister()``  -- register(expires=0).
    ``options(uri=None, *, timeout=5.0)``
    ``call(number, *, auth=True, timeout=5.0, extra_headers=(), sdp=None,
    direction="sendrecv")`` -- INVITE sip:<number>@<domain> with an SDP offer,
        answers 401/407 with credentials when a password is set, ACKs every
        final (non-2xx: same branch; 2xx: new branch, Request-URI = Contact),
        parses the answer SDP (``remote_rtp``, ``answer_pt``, ``answer_codec``,
        ``answer_te_pt``, ``answer_direction``, ``answer_sdp``).
        Provisional responses are kept in ``provisionals``.
    ``reinvite(direction="sendonly", *, timeout=5.0)``  -- in-dialog INVITE.
    ``hangup(*, timeout=5.0)``  -- BYE, waits for the final response.
    ``cancel()``  -- CANCEL the INVITE in progress (use ``call(..., wait=False)``
        then ``wait_final()``).
    ``info(body, content_type="application/dtmf-relay")`` -- in-dialog INFO.
    ``request(method, uri=None, *, headers=(), body=b"", content_type=None,
    in_dialog=False, auth=False, timeout=5.0)`` -- any request (e.g. an
        unknown method for 405, a Require header for 420, a scanner
        User-Agent via headers=[("User-Agent", "friendly-scanner")]).
    ``send_raw(data, addr=None)`` -- bytes straight to the server.
    ``wait_for_bye(timeout) -> bool`` -- True once the server sent BYE (the
        phone answers 200 automatically and stops its media).
    ``wait_for_request(method, timeout) -> SipMessage | None``
    Server requests are answered automatically: BYE -> 200 (481 if the
    Call-ID is unknown), re-INVITE -> 200 with our SDP (retransmitted until
    ACK), OPTIONS/INFO/NOTIFY/CANCEL -> 200, others -> 501.  Retransmitted
    requests get the same answer; retransmitted final responses to our
    INVITEs get the ACK again.  ``requests_received``, ``last_request_received``,
    ``responses_received``, ``info_received`` record the traffic.

Media
    ``send_tone(hz, amplitude=8000)`` -- start/replace the background stream;
        ``hz=None`` is silence.  20 ms packets, constant SSRC, increasing
        seq/ts, codec of the answer.
    ``send_audio(samples, loop=False)`` -- play int16 samples (8 kHz), then
        silence (or loop them).
    ``stop_audio()`` -- stop sending RTP altogether.
    ``new_ssrc()`` -- switch the stream to a new SSRC (seq/ts re-randomised).
    ``send_dtmf(digits, *, duration_ms=100, gap_ms=100, mode="rfc4733",
    same_timestamp=False, end_packets=3, ssrc=None, timeout=None)`` -- blocks
        until sent.  rfc4733: per digit round(duration/20)-1 (min 1) packets
        without E bit (marker on the first, growing duration) then
        ``end_packets`` packets with the E bit, all with the event's start
        timestamp, in the same SSRC/seq space as the audio (audio pauses
        during an event).  ``same_timestamp=True`` gives every digit the same
        timestamp (as SIPp replaying a pcap); ``ssrc`` sends the events in
        another SSRC.  mode "info": INFO application/dtmf-relay
        ``Signal=<d>\\r\\nDuration=<ms>`` per digit, waiting for each 200;
        mode "info-dtmf": INFO application/dtmf with the bare digit.
    ``set_remote_rtp((ip, port), codec="PCMU", pt=None, te_pt=101)`` --
        configure media by hand (no SIP), e.g. phone-to-phone.
    ``rtp_address`` -- (ip, port) of the local RTP socket.

Reception
    ``received_audio(since=None) -> np.ndarray[int16]`` -- decoded samples
        in arrival order (bounded to the last ~60 s), optionally only packets
        that arrived at or after monotonic time ``since``.
    ``tone_level(hz, seconds=1.0, *, since=None) -> float`` -- amplitude of
        the component at ``hz`` (+-20 Hz band, Hann window) in the audio that
        arrived during the last ``seconds`` of wall time; a sine of amplitude
        A gives ~A, silence ~0, nothing received 0.
    ``hears(hz, seconds=1.0, threshold=DEFAULT_THRESHOLD)`` -> bool
    ``wait_for_tone(hz, timeout, *, seconds=0.2, threshold=DEFAULT_THRESHOLD)``
        -> bool (polls; good for short beeps).
    ``rms(seconds=1.0)``, ``dominant_frequency(seconds=1.0)``,
    ``TestPhone.level_at(samples, hz)`` (the measure behind tone_level)
    ``wait_for_rtp(count=1, timeout=5.0) -> bool``
    ``rtp_packets_received``, ``rtp_source`` (address the last RTP came from),
    ``rtp_ssrcs_seen`` (list, in order of first appearance), ``rtp_headers``
    (deque of ``RtpHeader(arrival, seq, ts, pt, ssrc, marker, payload_len)``),
    ``dtmf_events_received`` (list of ``(ssrc, ts, event, end, duration)``),
    ``clear_received()``, ``rtp_packets_sent``.

Module helpers: ``ulaw_encode/ulaw_decode/alaw_encode/alaw_decode``,
``digest_response(...)``, ``build_authorization(...)``,
``parse_challenges(value)``, ``parse_message(data)``, ``parse_sdp(text)``,
``parse_rtp(data)``, ``parse_telephone_event(payload)``, ``tone(hz, n, amplitude)``.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "TestPhone", "SipMessage", "RtpHeader", "DEFAULT_THRESHOLD",
    "ulaw_encode", "ulaw_decode", "alaw_encode", "alaw_decode",
    "digest_response", "build_authorization", "parse_challenges",
    "parse_message", "parse_sdp", "parse_rtp", "parse_telephone_event", "tone",
]

T1 = 0.5
T2 = 4.0
SAMPLE_RATE = 8000
FRAME = 160  # 20 ms at 8 kHz
DEFAULT_THRESHOLD = 500.0

# --------------------------------------------------------------------------
# G.711
# --------------------------------------------------------------------------

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def ulaw_encode(samples) -> bytes:
    """int16 samples -> G.711 mu-law bytes."""
    x = np.asarray(samples, dtype=np.int32)
    sign = (x < 0).astype(np.int32)
    mag = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS          # 132 .. 32767
    _, e = np.frexp(mag.astype(np.float64))                       # mag = m * 2**e
    exponent = e.astype(np.int32) - 8                             # floor(log2(mag)) - 7
    mantissa = (mag >> (exponent + 3)) & 0x0F
    code = (sign << 7) | (exponent << 4) | mantissa
    return (~code & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data) -> np.ndarray:
    """G.711 mu-law bytes -> int16 samples."""
    u = ~np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def alaw_encode(samples) -> bytes:
    """int16 samples -> G.711 A-law bytes."""
    x = np.asarray(samples, dtype=np.int32) >> 3                 # 13-bit
    mask = np.where(x >= 0, 0xD5, 0x55)
    x = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_ALAW_SEG_END, x, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, 7) << 4) | ((x >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return ((aval ^ mask) & 0xFF).astype(np.uint8).tobytes()


def alaw_decode(data) -> np.ndarray:
    """G.711 A-law bytes -> int16 samples."""
    a = np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ENCODERS = {"PCMU": ulaw_encode, "PCMA": alaw_encode}
_DECODERS = {"PCMU": ulaw_decode, "PCMA": alaw_decode}
_STATIC_PT = {"PCMU": 0, "PCMA": 8, "G722": 9}
_STATIC_NAME = {0: "PCMU", 8: "PCMA", 9: "G722"}


def tone(hz: float, n: int, amplitude: float = 8000, start: int = 0) -> np.ndarray:
    """n samples of a sine at hz (8 kHz), starting at sample index `start`."""
    t = (start + np.arange(n)) / SAMPLE_RATE
    return np.round(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


# --------------------------------------------------------------------------
# Digest (RFC 2617 / RFC 7616)
# --------------------------------------------------------------------------

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256, "SHA-512-256": None}
SUPPORTED_ALGORITHMS = ("MD5", "MD5-SESS", "SHA-256", "SHA-256-SESS")


def _h(algorithm: str, text: str | bytes) -> str:
    base = algorithm.upper()
    if base.endswith("-SESS"):
        base = base[:-5]
    fn = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[base]
    if isinstance(text, str):
        text = text.encode("utf-8")
    return fn(text).hexdigest()


def digest_response(*, username: str, password: str, realm: str, method: str, uri: str,
                    nonce: str, cnonce: str | None = None, nc: str = "00000001",
                    qop: str | None = "auth", algorithm: str = "MD5", body: bytes = b"") -> str:
    """The `response` value of a digest Authorization (RFC 2617 / 7616)."""
    alg = algorithm.upper()
    ha1 = _h(alg, f"{username}:{realm}:{password}")
    if alg.endswith("-SESS"):
        ha1 = _h(alg, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = _h(alg, f"{method}:{uri}:{_h(alg, body)}")
    else:
        ha2 = _h(alg, f"{method}:{uri}")
    if qop:
        return _h(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(alg, f"{ha1}:{nonce}:{ha2}")


_PARAM_RE = re.compile(r'([A-Za-z][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')


def parse_challenges(value: str) -> list[dict]:
    """Parse one WWW-/Proxy-Authenticate value (may hold several Digest challenges)."""
    out = []
    for part in re.split(r",\s*(?=Digest\s)", value.strip(), flags=re.I):
        m = re.match(r"\s*(\w+)\s+(.*)$", part, re.S)
        if not m:
            continue
        params = {"scheme": m.group(1)}
        for k, v in _PARAM_RE.findall(m.group(2)):
            if v.startswith('"'):
                v = re.sub(r"\\(.)", r"\1", v[1:-1])
            params[k.lower()] = v
        out.append(params)
    return out


def build_authorization(challenge: dict, *, username: str, password: str, method: str,
                        uri: str, nc: int = 1, cnonce: str | None = None, body: bytes = b"") -> str:
    """Authorization header value answering one parsed challenge."""
    alg = challenge.get("algorithm", "MD5")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else ("auth-int" if "auth-int" in qops else None)
    cnonce = cnonce or os.urandom(8).hex()
    ncs = f"{nc:08x}"
    realm = challenge.get("realm", "")
    nonce = challenge.get("nonce", "")
    resp = digest_response(username=username, password=password, realm=realm, method=method,
                           uri=uri, nonce=nonce, cnonce=cnonce, nc=ncs, qop=qop,
                           algorithm=alg, body=body)
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
             f'response="{resp}"', f"algorithm={alg}"]
    if qop:
        parts += [f'cnonce="{cnonce}"', f"qop={qop}", f"nc={ncs}"]
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------
# SIP messages
# --------------------------------------------------------------------------

_COMPACT = {"i": "call-id", "v": "via", "f": "from", "t": "to", "m": "contact",
            "l": "content-length", "c": "content-type", "e": "content-encoding",
            "k": "supported", "s": "subject", "o": "event", "u": "allow-events",
            "r": "refer-to", "b": "referred-by", "x": "session-expires"}


def _canon(name: str) -> str:
    n = name.strip().lower()
    return _COMPACT.get(n, n)


def _split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and <>."""
    out, cur, q, a = [], [], False, 0
    for ch in value:
        if ch == '"':
            q = not q
        elif not q and ch == "<":
            a += 1
        elif not q and ch == ">":
            a = max(0, a - 1)
        if ch == "," and not q and a == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


@dataclass
class SipMessage:
    """A parsed SIP request or response."""
    first_line: str
    headers: list = field(default_factory=list)   # [(canonical lower name, value)]
    body: bytes = b""
    raw: bytes = b""
    source: tuple | None = None
    received_at: float = 0.0
    method: str | None = None    # requests
    uri: str | None = None       # requests
    status: int | None = None    # responses
    reason: str = ""             # responses

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def header(self, name: str, default=None):
        n = _canon(name)
        for k, v in self.headers:
            if k == n:
                return v
        return default

    def headers_all(self, name: str) -> list[str]:
        n = _canon(name)
        return [v for k, v in self.headers if k == n]

    def header_values(self, name: str) -> list[str]:
        """All values, comma-separated ones split (Via, Allow, Supported...)."""
        out = []
        for v in self.headers_all(name):
            out.extend(_split_commas(v))
        return out

    @property
    def call_id(self):
        return self.header("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        v = self.header("cseq", "0 X").split()
        return int(v[0]), v[1].upper() if len(v) > 1 else ""

    @property
    def top_branch(self):
        vias = self.header_values("via")
        if not vias:
            return None
        m = re.search(r";\s*branch=([^;,\s]+)", vias[0], re.I)
        return m.group(1) if m else None

    @property
    def to_tag(self):
        return _tag(self.header("to", ""))

    @property
    def from_tag(self):
        return _tag(self.header("from", ""))

    @property
    def contact_uri(self):
        v = self.header("contact")
        return _uri_of(v) if v else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<SipMessage {self.first_line!r}>"


def _tag(value: str):
    m = re.search(r";\s*tag=([^;>\s,]+)", value.split(">")[-1] if ">" in value else value, re.I)
    return m.group(1) if m else None


def _uri_of(value: str) -> str:
    m = re.search(r"<([^>]*)>", value)
    if m:
        return m.group(1)
    return value.split(";")[0].strip()


def parse_message(data: bytes, source=None) -> SipMessage | None:
    """Parse a datagram; None for keep-alives or garbage."""
    if not data.strip():
        return None
    sep = data.find(b"\r\n\r\n")
    if sep >= 0:
        head, body = data[:sep], data[sep + 4:]
    else:
        sep = data.find(b"\n\n")
        head, body = (data[:sep], data[sep + 2:]) if sep >= 0 else (data, b"")
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    first = lines[0].strip()
    unfolded: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()
        elif line.strip():
            unfolded.append(line)
    headers = []
    for line in unfolded:
        if ":" not in line:
            continue
        k, v = line.split(":", 1)
        headers.append((_canon(k), v.strip()))
    msg = SipMessage(first_line=first, headers=headers, raw=data, source=source,
                     received_at=time.monotonic())
    cl = msg.header("content-length")
    if cl is not None:
        try:
            body = body[: int(cl)]
        except ValueError:
            pass
    msg.body = body
    if first.upper().startswith("SIP/2.0 "):
        parts = first.split(" ", 2)
        try:
            msg.status = int(parts[1])
        except (IndexError, ValueError):
            return None
        msg.reason = parts[2] if len(parts) > 2 else ""
    else:
        parts = first.split()
        if len(parts) != 3 or not parts[2].upper().startswith("SIP/"):
            return None
        msg.method, msg.uri = parts[0].upper(), parts[1]
    return msg


def _build(first_line: str, headers, body: bytes = b"") -> bytes:
    out = [first_line]
    for k, v in headers:
        out.append(f"{k}: {v}")
    out.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(out) + "\r\n\r\n").encode() + body


def _rand(n=10) -> str:
    return os.urandom(n).hex()


# --------------------------------------------------------------------------
# SDP
# --------------------------------------------------------------------------

def parse_sdp(text: str) -> dict:
    """Tiny SDP parser for the first audio m-line.

    Returns dict(ip, port, pts, rtpmap{pt: 'NAME/rate'}, fmtp{pt: str},
    direction, ptime, raw)."""
    res = {"ip": None, "port": None, "pts": [], "rtpmap": {}, "fmtp": {},
           "direction": "sendrecv", "ptime": None, "raw": text}
    session_c = None
    in_audio = seen_media = False
    for line in text.replace("\r\n", "\n").split("\n"):
        line = line.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        t, v = line[0], line[2:]
        if t == "m":
            seen_media = True
            f = v.split()
            in_audio = f[0] == "audio" and res["port"] is None
            if in_audio:
                res["port"] = int(f[1])
                res["pts"] = [int(p) for p in f[3:] if p.isdigit()]
        elif t == "c":
            ip = v.split()[-1].split("/")[0]
            if not seen_media:
                session_c = ip
            elif in_audio:
                res["ip"] = ip
        elif t == "a" and (in_audio or not seen_media):
            if v.startswith("rtpmap:"):
                pt, enc = v[7:].split(None, 1)
                res["rtpmap"][int(pt)] = enc.strip()
            elif v.startswith("fmtp:"):
                pt, p = (v[5:].split(None, 1) + [""])[:2]
                res["fmtp"][int(pt)] = p
            elif v in ("sendrecv", "sendonly", "recvonly", "inactive"):
                res["direction"] = v
            elif v.startswith("ptime:"):
                res["ptime"] = v[6:]
    if res["ip"] is None:
        res["ip"] = session_c
    return res


# --------------------------------------------------------------------------
# RTP
# --------------------------------------------------------------------------

@dataclass
class RtpHeader:
    arrival: float
    seq: int
    ts: int
    pt: int
    ssrc: int
    marker: bool
    payload_len: int


def parse_rtp(data: bytes):
    """-> (version, marker, pt, seq, ts, ssrc, payload) or None."""
    if len(data) < 12:
        return None
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
    if b0 >> 6 != 2:
        return None
    off = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # extension
        if len(data) < off + 4:
            return None
        off += 4 + 4 * struct.unpack("!H", data[off + 2: off + 4])[0]
    payload = data[off:]
    if b0 & 0x20 and payload:  # padding
        payload = payload[: -payload[-1]]
    return 2, bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, payload


def parse_telephone_event(payload: bytes):
    """-> (event, end, volume, duration) for an RFC 4733 payload."""
    ev, flags, dur = struct.unpack("!BBH", payload[:4])
    return ev, bool(flags & 0x80), flags & 0x3F, dur


_DTMF_CODE = {**{str(i): i for i in range(10)}, "*": 10, "#": 11,
              "A": 12, "B": 13, "C": 14, "D": 15}


# --------------------------------------------------------------------------
# The phone
# --------------------------------------------------------------------------

class _Transaction:
    def __init__(self, branch, method):
        self.branch, self.method = branch, method
        self.responses: list[SipMessage] = []
        self.cond = threading.Condition()


class TestPhone:
    """An independent SIP UA for tests. See the module docstring."""

    __test__ = False  # not a pytest test class

    def __init__(self, server=("127.0.0.1", 5060), *, local_ip="127.0.0.1", user="101",
                 password=None, codecs=("PCMU",), telephone_event_pt=101,
                 domain="office.local", user_agent="sipconf-testphone", auth_user=None,
                 digest_algorithms=None, advertise_rtp=None, auto_media=True,
                 sip_port=0, rtp_port=0):
        self.server = (server[0], int(server[1]))
        self.local_ip = local_ip
        self.user = user
        self.auth_user = auth_user or user
        self.password = password
        self.domain = domain
        self.user_agent = user_agent
        self.telephone_event_pt = telephone_event_pt
        self.digest_algorithms = tuple(a.upper() for a in (digest_algorithms or SUPPORTED_ALGORITHMS))
        self.advertise_rtp = advertise_rtp
        self.auto_media = auto_media
        self.codecs = []  # [(name, pt)]
        for c in codecs:
            if isinstance(c, str):
                self.codecs.append((c.upper(), _STATIC_PT[c.upper()]))
            else:
                self.codecs.append((c[0].upper(), int(c[1])))

        self._closed = threading.Event()
        self._lock = threading.RLock()

        # IPv6 when local_ip is one (SPEC 15): bracketed in Via/Contact, IN IP6 in SDP.
        self._family = socket.AF_INET6 if ":" in local_ip else socket.AF_INET
        self._host = f"[{local_ip}]" if ":" in local_ip else local_ip
        self.sip_sock = socket.socket(self._family, socket.SOCK_DGRAM)
        self.sip_sock.bind((local_ip, sip_port))
        self.sip_sock.settimeout(0.1)
        self.sip_port = self.sip_sock.getsockname()[1]
        self.rtp_sock = self._bind_even(local_ip, rtp_port)
        self.rtp_sock.settimeout(0.1)
        self.rtp_port = self.rtp_sock.getsockname()[1]

        # SIP state
        self._transactions: dict[tuple, _Transaction] = {}
        self._acks: dict[str, bytes] = {}           # INVITE branch -> ACK bytes
        self._answered: dict[tuple, bytes] = {}     # (branch, method, call-id) -> our response
        self._pending_2xx: dict[tuple, threading.Event] = {}
        self.reg_call_id = f"{_rand()}@{local_ip}"
        self._reg_cseq = 0
        self._reg_tag = _rand(4)
        self._options_call_id = f"{_rand()}@{local_ip}"
        self._nc: dict[str, int] = {}
        self.requests_received: list[SipMessage] = []
        self.responses_received: list[SipMessage] = []
        self.last_request_received: SipMessage | None = None
        self.info_received: list[SipMessage] = []
        self._req_cond = threading.Condition()
        self.provisionals: list[SipMessage] = []
        self.last_challenge: dict | None = None
        self._bye_event = threading.Event()
        self.bye_request: SipMessage | None = None
        self._invite_in_progress = None

        # dialog
        self.call_id = None
        self.local_tag = None
        self.remote_tag = None
        self.remote_target = None
        self.request_uri = None
        self.local_cseq = 0
        self.dialog_up = False
        self.remote_to = None  # To header value used in dialog (with their tag)
        self.local_from = None
        self.local_direction = "sendrecv"
        self._sdp_version = 0
        self._sdp_session = random.randint(1, 2 ** 31)

        # negotiated media
        self.answer_sdp = None
        self.remote_rtp = None
        self.answer_pt = None
        self.answer_codec = None
        self.answer_te_pt = None
        self.answer_direction = None
        self._pt_names: dict[int, str] = {}

        # RTP rx
        self._rx_lock = threading.Lock()
        self._audio_chunks = collections.deque(maxlen=6000)  # (arrival, int16 array)
        self.rtp_headers = collections.deque(maxlen=20000)
        self.rtp_packets_received = 0
        self.rtp_source = None
        self.rtp_ssrcs_seen: list[int] = []
        self.dtmf_events_received: list[tuple] = []
        self._rtp_cond = threading.Condition()

        # RTP tx
        self._tx_lock = threading.Lock()
        self._tx_thread = None
        self._tx_stop = threading.Event()
        self._tx_source = ("silence",)
        self._tx_sample = 0
        self._dtmf_plan = collections.deque()
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self.rtp_packets_sent = 0

        self._threads = [threading.Thread(target=self._sip_loop, daemon=True, name=f"phone{user}-sip"),
                         threading.Thread(target=self._rtp_loop, daemon=True, name=f"phone{user}-rtp")]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------ lifecycle

    @staticmethod
    def _bind_even(ip, port):
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        if port:
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.bind((ip, port))
            return s
        spare = []
        try:
            for _ in range(50):
                s = socket.socket(family, socket.SOCK_DGRAM)
                s.bind((ip, 0))
                if s.getsockname()[1] % 2 == 0:
                    return s
                spare.append(s)
            raise OSError("could not bind an even RTP port")
        finally:
            for s in spare:
                s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self, hangup: bool = True):
        """Stop media, optionally BYE an established call (1 s), close sockets, join threads."""
        if self._closed.is_set():
            return
        if hangup and self.dialog_up and not self._bye_event.is_set():
            try:
                self.hangup(timeout=1.0)
            except Exception:
                pass
        self.stop_audio()
        self._closed.set()
        for t in self._threads:
            t.join(timeout=2)
        for ev in list(self._pending_2xx.values()):
            ev.set()
        self.sip_sock.close()
        self.rtp_sock.close()

    def __del__(self):
        try:
            if not self._closed.is_set():
                self.close(hangup=False)
        except Exception:
            pass

    @property
    def sip_address(self):
        return (self.local_ip, self.sip_port)

    @property
    def rtp_address(self):
        return (self.local_ip, self.rtp_port)

    # ------------------------------------------------------------ SIP plumbing

    def send_raw(self, data: bytes, addr=None):
        self.sip_sock.sendto(data, addr or self.server)

    def _via(self, branch):
        return f"SIP/2.0/UDP {self._host}:{self.sip_port};branch={branch};rport"

    def _contact(self):
        return f"<sip:{self.user}@{self._host}:{self.sip_port}>"

    def _sip_loop(self):
        while not self._closed.is_set():
            try:
                data, addr = self.sip_sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                msg = parse_message(data, addr)
                if msg is None:
                    continue
                if msg.is_request:
                    self._on_request(msg)
                else:
                    self._on_response(msg)
            except Exception:  # a bad datagram must not kill the phone
                continue

    def _on_response(self, msg: SipMessage):
        with self._lock:
            self.responses_received.append(msg)
            key = (msg.top_branch, msg.cseq[1])
            tr = self._transactions.get(key)
        if tr is not None:
            with tr.cond:
                tr.responses.append(msg)
                tr.cond.notify_all()
            return
        # stray / retransmitted final to an INVITE we already finished: ACK again
        if msg.cseq[1] == "INVITE" and msg.status >= 200:
            ack = self._acks.get(msg.top_branch)
            if ack is not None:
                self.send_raw(ack)

    def _send_transaction(self, data: bytes, branch: str, method: str, timeout: float,
                          *, wait_final=True) -> SipMessage:
        tr = _Transaction(branch, method)
        with self._lock:
            self._transactions[(branch, method)] = tr
        try:
            self.send_raw(data)
            deadline = time.monotonic() + timeout
            interval = T1
            next_rtx = time.monotonic() + interval
            seen = 0
            got_provisional = False
            with tr.cond:
                while True:
                    for r in tr.responses[seen:]:
                        if r.status >= 200:
                            return r
                        got_provisional = True
                        if method == "INVITE":
                            self.provisionals.append(r)
                            if not wait_final:
                                return r
                    seen = len(tr.responses)
                    now = time.monotonic()
                    if now >= deadline:
                        raise TimeoutError(f"no final response to {method} within {timeout}s")
                    if now >= next_rtx:
                        if not (method == "INVITE" and got_provisional):
                            self.send_raw(data)
                        if method == "INVITE":
                            interval *= 2
                        else:
                            interval = T2 if got_provisional else min(interval * 2, T2)
                        next_rtx = now + interval
                    tr.cond.wait(min(deadline, next_rtx) - now)
        finally:
            if wait_final or method != "INVITE":
                with self._lock:
                    self._transactions.pop((branch, method), None)

    def _respond(self, req: SipMessage, status: int, reason: str, *, body=b"",
                 content_type=None, extra=(), to_tag=None):
        hdrs = [("Via", v) for v in req.headers_all("via")]
        to = req.header("to", "")
        if to_tag and not _tag(to):
            to = f"{to};tag={to_tag}"
        hdrs += [("From", req.header("from", "")), ("To", to), ("Call-ID", req.call_id or ""),
                 ("CSeq", req.header("cseq", "")), ("User-Agent", self.user_agent)]
        hdrs += list(extra)
        if content_type:
            hdrs.append(("Content-Type", content_type))
        data = _build(f"SIP/2.0 {status} {reason}", hdrs, body)
        self.send_raw(data, req.source)
        return data

    def _on_request(self, req: SipMessage):
        key = (req.top_branch, req.method, req.call_id)
        if req.method != "ACK" and key in self._answered:
            self.send_raw(self._answered[key], req.source)  # retransmission
            return
        with self._req_cond:
            self.requests_received.append(req)
            self.last_request_received = req
            self._req_cond.notify_all()
        ours = req.call_id == self.call_id and self.call_id is not None
        m = req.method
        if m == "ACK":
            ev = self._pending_2xx.pop((req.call_id, req.cseq[0]), None)
            if ev:
                ev.set()
            return
        if m == "BYE":
            if ours:
                data = self._respond(req, 200, "OK")
                self.bye_request = req
                self.dialog_up = False
                self.stop_audio()
                self._bye_event.set()
            else:
                data = self._respond(req, 481, "Call/Transaction Does Not Exist")
        elif m == "INVITE":
            if ours and self.dialog_up:
                sdp = parse_sdp(req.text) if req.body else None
                if sdp:
                    self._apply_remote_sdp(sdp, offer=True)
                body = self._sdp(self.local_direction)
                data = self._respond(req, 200, "OK", body=body, content_type="application/sdp",
                                     extra=[("Contact", self._contact())])
                self._retransmit_2xx(req, data)
            else:
                data = self._respond(req, 486, "Busy Here", to_tag=_rand(4))
        elif m in ("OPTIONS", "INFO", "NOTIFY", "CANCEL", "UPDATE"):
            if m == "INFO":
                self.info_received.append(req)
            data = self._respond(req, 200, "OK",
                                 extra=[("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO")]
                                 if m == "OPTIONS" else ())
        else:
            data = self._respond(req, 501, "Not Implemented")
        self._answered[key] = data

    def _retransmit_2xx(self, req, data):
        ev = threading.Event()
        self._pending_2xx[(req.call_id, req.cseq[0])] = ev
        dest = req.source

        def run():
            interval, deadline = T1, time.monotonic() + 32 * T1
            while not ev.wait(interval) and time.monotonic() < deadline and not self._closed.is_set():
                try:
                    self.send_raw(data, dest)
                except OSError:
                    return
                interval = min(interval * 2, T2)
        threading.Thread(target=run, daemon=True).start()

    def wait_for_request(self, method: str, timeout: float = 5.0, *, after: int = 0):
        """Wait for a request of `method` from the server (index >= after in requests_received)."""
        deadline = time.monotonic() + timeout
        with self._req_cond:
            while True:
                for r in self.requests_received[after:]:
                    if r.method == method.upper():
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._req_cond.wait(left)

    def wait_for_bye(self, timeout: float = 5.0) -> bool:
        return self._bye_event.wait(timeout)

    # ------------------------------------------------------------ auth

    def _pick_challenge(self, resp: SipMessage):
        name = "proxy-authenticate" if resp.status == 407 else "www-authenticate"
        for value in resp.headers_all(name):
            for ch in parse_challenges(value):
                if ch.get("scheme", "").lower() != "digest":
                    continue
                if ch.get("algorithm", "MD5").upper() in self.digest_algorithms:
                    return ch
        return None

    def _auth_header(self, resp, method, uri, password, body=b""):
        ch = self._pick_challenge(resp)
        if ch is None:
            return None
        self.last_challenge = ch
        nonce = ch.get("nonce", "")
        self._nc[nonce] = self._nc.get(nonce, 0) + 1
        value = build_authorization(ch, username=self.auth_user, password=password, method=method,
                                    uri=uri, nc=self._nc[nonce], body=body)
        return ("Proxy-Authorization" if resp.status == 407 else "Authorization", value)

    # ------------------------------------------------------------ requests

    def _out_of_dialog(self, method, uri, *, call_id, from_tag, cseq, to_uri, headers=(),
                       body=b"", content_type=None, branch=None):
        branch = branch or "z9hG4bK" + _rand(8)
        hdrs = [("Via", self._via(branch)), ("Max-Forwards", "70"),
                ("From", f"<sip:{self.user}@{self.domain}>;tag={from_tag}"),
                ("To", f"<{to_uri}>"), ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"),
                ("Contact", self._contact()), ("User-Agent", self.user_agent)]
        names = {k.lower() for k, _ in headers}
        hdrs = [(k, v) for k, v in hdrs if k.lower() not in names] + list(headers)
        if content_type:
            hdrs.append(("Content-Type", content_type))
        return branch, _build(f"{method} {uri} SIP/2.0", hdrs, body)

    def register(self, expires: int = 3600, password=None, *, contact=None, timeout=5.0,
                 extra_headers=()) -> SipMessage:
        password = password if password is not None else self.password
        uri = f"sip:{self.domain}"
        headers = [("Expires", str(expires))] + list(extra_headers)
        if contact is not None:
            headers.append(("Contact", contact))
        auth = None
        for attempt in range(2):
            self._reg_cseq += 1
            hs = headers + ([auth] if auth else [])
            branch, data = self._out_of_dialog(
                "REGISTER", uri, call_id=self.reg_call_id, from_tag=self._reg_tag,
                cseq=self._reg_cseq, to_uri=f"sip:{self.user}@{self.domain}", headers=hs)
            resp = self._send_transaction(data, branch, "REGISTER", timeout)
            if resp.status in (401, 407) and attempt == 0 and password is not None:
                auth = self._auth_header(resp, "REGISTER", uri, password)
                if auth is None:
                    return resp
                continue
            return resp
        return resp

    def unregister(self, **kw):
        return self.register(expires=0, **kw)

    def options(self, uri=None, *, timeout=5.0, extra_headers=()) -> SipMessage:
        return self.request("OPTIONS", uri, headers=extra_headers, timeout=timeout)

    def request(self, method, uri=None, *, headers=(), body=b"", content_type=None,
                in_dialog=False, auth=False, timeout=5.0) -> SipMessage:
        """Send any request and return its final response."""
        method = method.upper()
        if isinstance(body, str):
            body = body.encode()
        if in_dialog:
            return self._in_dialog(method, headers=headers, body=body,
                                   content_type=content_type, timeout=timeout, auth=auth)
        uri = uri or f"sip:{self.domain}"
        cseq = random.randint(1, 10000)
        call_id, tag = f"{_rand()}@{self.local_ip}", _rand(4)
        authh = None
        for attempt in range(2):
            hs = list(headers) + ([authh] if authh else [])
            branch, data = self._out_of_dialog(method, uri, call_id=call_id, from_tag=tag,
                                               cseq=cseq + attempt, to_uri=uri, headers=hs,
                                               body=body, content_type=content_type)
            resp = self._send_transaction(data, branch, method, timeout)
            if (auth and attempt == 0 and resp.status in (401, 407) and self.password is not None):
                authh = self._auth_header(resp, method, uri, self.password, body)
                if authh:
                    continue
            return resp
        return resp

    # ---- calls

    def _sdp(self, direction="sendrecv") -> bytes:
        ip, port = self.advertise_rtp or (self.local_ip, self.rtp_port)
        self._sdp_version += 1
        pts = [pt for _, pt in self.codecs]
        addrtype = "IP6" if ":" in ip else "IP4"
        lines = ["v=0", f"o={self.user} {self._sdp_session} {self._sdp_version} IN {addrtype} {ip}",
                 "s=sipconf-testphone", f"c=IN {addrtype} {ip}", "t=0 0"]
        te = self.telephone_event_pt
        m_pts = pts + ([te] if te is not None else [])
        lines.append(f"m=audio {port} RTP/AVP {' '.join(map(str, m_pts))}")
        for name, pt in self.codecs:
            lines.append(f"a=rtpmap:{pt} {name}/8000")
        if te is not None:
            lines += [f"a=rtpmap:{te} telephone-event/8000", f"a=fmtp:{te} 0-16"]
        lines += ["a=ptime:20", f"a={direction}"]
        return ("\r\n".join(lines) + "\r\n").encode()

    def _apply_remote_sdp(self, sdp: dict, offer=False):
        names = dict(_STATIC_NAME)
        for pt, enc in sdp["rtpmap"].items():
            names[pt] = enc.split("/")[0].upper()
        ours = {n for n, _ in self.codecs}
        chosen = None
        for pt in sdp["pts"]:
            if names.get(pt) in ours and names.get(pt) in _ENCODERS:
                chosen = pt
                break
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

    def set_remote_rtp(self, addr, codec="PCMU", pt=None, te_pt=101):
        """Configure media by hand: send `codec` to `addr`."""
        codec = codec.upper()
        with self._tx_lock:
            self.remote_rtp = (addr[0], int(addr[1]))
            self.answer_codec = codec
            self.answer_pt = _STATIC_PT[codec] if pt is None else pt
            self.answer_te_pt = te_pt
            self._pt_names = {**_STATIC_NAME, self.answer_pt: codec}
            if te_pt is not None:
                self._pt_names[te_pt] = "TELEPHONE-EVENT"

    def call(self, number: str, *, auth=True, timeout=5.0, extra_headers=(), sdp=None,
             direction="sendrecv", uri=None, to_uri=None, wait=True) -> SipMessage:
        """INVITE sip:<number>@<domain>; returns the final response (see module doc)."""
        self.request_uri = uri or f"sip:{number}@{self.domain}"
        to_uri = to_uri or self.request_uri
        self.call_id = f"{_rand()}@{self.local_ip}"
        self.local_tag = _rand(4)
        self.remote_tag = None
        self.dialog_up = False
        self._bye_event.clear()
        self.bye_request = None
        self.provisionals = []
        self.local_direction = direction
        self.local_cseq = 1
        self._to_uri = to_uri
        body = sdp if sdp is not None else self._sdp(direction)
        if isinstance(body, str):
            body = body.encode()
        self._invite_body = body
        authh = None
        for attempt in range(2):
            hs = list(extra_headers) + ([authh] if authh else [])
            branch, data = self._out_of_dialog(
                "INVITE", self.request_uri, call_id=self.call_id, from_tag=self.local_tag,
                cseq=self.local_cseq, to_uri=to_uri, headers=hs, body=body,
                content_type="application/sdp")
            self._invite_in_progress = (branch, data, self.local_cseq)
            if not wait:
                resp = self._send_transaction(data, branch, "INVITE", timeout, wait_final=False)
                if resp.status >= 200:
                    with self._lock:
                        self._transactions.pop((branch, "INVITE"), None)
                    self._invite_in_progress = None
                    self._finish_invite(resp, branch, data)
                return resp
            resp = self._send_transaction(data, branch, "INVITE", timeout)
            self._invite_in_progress = None
            done = self._finish_invite(resp, branch, data)
            if (not done and auth and attempt == 0 and resp.status in (401, 407)
                    and self.password is not None):
                authh = self._auth_header(resp, "INVITE", self.request_uri, self.password, body)
                if authh:
                    self.local_cseq += 1
                    continue
            return resp
        return resp

    def wait_final(self, timeout=5.0) -> SipMessage:
        """After call(..., wait=False): wait for the INVITE's final response and finish it."""
        branch, data, _ = self._invite_in_progress
        tr = self._transactions.get((branch, "INVITE"))
        deadline = time.monotonic() + timeout
        try:
            with tr.cond:
                while True:
                    for r in tr.responses:
                        if r.status >= 200:
                            self._finish_invite(r, branch, data)
                            return r
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("no final response to INVITE")
                    tr.cond.wait(left)
        finally:
            with self._lock:
                self._transactions.pop((branch, "INVITE"), None)
            self._invite_in_progress = None

    def cancel(self, timeout=5.0) -> SipMessage:
        """CANCEL the pending INVITE (sent with call(..., wait=False))."""
        branch, data, cseq = self._invite_in_progress
        hdrs = [("Via", self._via(branch)), ("Max-Forwards", "70"),
                ("From", f"<sip:{self.user}@{self.domain}>;tag={self.local_tag}"),
                ("To", f"<{self._to_uri}>"), ("Call-ID", self.call_id),
                ("CSeq", f"{cseq} CANCEL"), ("User-Agent", self.user_agent)]
        return self._send_transaction(_build(f"CANCEL {self.request_uri} SIP/2.0", hdrs),
                                      branch, "CANCEL", timeout)

    def _finish_invite(self, resp: SipMessage, branch: str, invite: bytes) -> bool:
        """ACK a final response; set up the dialog on 2xx. True if a dialog was established."""
        cseq = resp.cseq[0]
        to = resp.header("to", f"<{self._to_uri}>")
        from_ = f"<sip:{self.user}@{self.domain}>;tag={self.local_tag}"
        if resp.status >= 300:
            hdrs = [("Via", self._via(branch)), ("Max-Forwards", "70"), ("From", from_),
                    ("To", to), ("Call-ID", self.call_id), ("CSeq", f"{cseq} ACK"),
                    ("User-Agent", self.user_agent)]
            ack = _build(f"ACK {self.request_uri} SIP/2.0", hdrs)
            self._acks[branch] = ack
            self.send_raw(ack)
            return False
        # 2xx
        self.remote_tag = resp.to_tag
        self.remote_to = to
        self.local_from = from_
        self.remote_target = resp.contact_uri or self.request_uri
        ack_branch = "z9hG4bK" + _rand(8)
        hdrs = [("Via", self._via(ack_branch)), ("Max-Forwards", "70"), ("From", from_),
                ("To", to), ("Call-ID", self.call_id), ("CSeq", f"{cseq} ACK"),
                ("Contact", self._contact()), ("User-Agent", self.user_agent)]
        ack = _build(f"ACK {self.remote_target} SIP/2.0", hdrs)
        self._acks[branch] = ack
        self.send_raw(ack)
        if not self.dialog_up and resp.call_id == self.call_id:
            self.dialog_up = True
            if resp.body:
                self._apply_remote_sdp(parse_sdp(resp.text))
            if self.auto_media and self.remote_rtp and self.answer_codec:
                self._ensure_sender()
        return True

    def _dialog_headers(self, method, branch, cseq):
        return [("Via", self._via(branch)), ("Max-Forwards", "70"), ("From", self.local_from),
                ("To", self.remote_to), ("Call-ID", self.call_id), ("CSeq", f"{cseq} {method}"),
                ("Contact", self._contact()), ("User-Agent", self.user_agent)]

    def _in_dialog(self, method, *, headers=(), body=b"", content_type=None, timeout=5.0,
                   auth=True):
        if not self.remote_to:
            raise RuntimeError("no dialog")
        authh = None
        for attempt in range(2):
            self.local_cseq += 1
            branch = "z9hG4bK" + _rand(8)
            hdrs = self._dialog_headers(method, branch, self.local_cseq) + list(headers)
            if authh:
                hdrs.append(authh)
            if content_type:
                hdrs.append(("Content-Type", content_type))
            data = _build(f"{method} {self.remote_target} SIP/2.0", hdrs, body)
            resp = self._send_transaction(data, branch, method, timeout)
            if method == "INVITE":
                self._ack_reinvite(resp, branch)
            if (auth and attempt == 0 and resp.status in (401, 407) and self.password is not None):
                authh = self._auth_header(resp, method, self.remote_target, self.password, body)
                if authh:
                    continue
            return resp
        return resp

    def _ack_reinvite(self, resp, branch):
        cseq = resp.cseq[0]
        b = branch if resp.status >= 300 else "z9hG4bK" + _rand(8)
        hdrs = [("Via", self._via(b)), ("Max-Forwards", "70"), ("From", self.local_from),
                ("To", self.remote_to), ("Call-ID", self.call_id), ("CSeq", f"{cseq} ACK"),
                ("User-Agent", self.user_agent)]
        ack = _build(f"ACK {self.remote_target} SIP/2.0", hdrs)
        self._acks[branch] = ack
        self.send_raw(ack)
        if 200 <= resp.status < 300 and resp.body:
            self._apply_remote_sdp(parse_sdp(resp.text))

    def reinvite(self, direction="sendonly", *, timeout=5.0, sdp=None) -> SipMessage:
        """In-dialog INVITE with our SDP and a=<direction>; ACKs and applies the answer."""
        self.local_direction = direction
        body = sdp if sdp is not None else self._sdp(direction)
        if isinstance(body, str):
            body = body.encode()
        return self._in_dialog("INVITE", body=body, content_type="application/sdp", timeout=timeout)

    def info(self, body, content_type="application/dtmf-relay", *, timeout=5.0) -> SipMessage:
        if isinstance(body, str):
            body = body.encode()
        return self._in_dialog("INFO", body=body, content_type=content_type, timeout=timeout)

    def hangup(self, *, timeout=5.0) -> SipMessage:
        """BYE the call and wait for the final response. Stops media."""
        self.stop_audio()
        resp = self._in_dialog("BYE", timeout=timeout, auth=False)
        self.dialog_up = False
        return resp

    # ------------------------------------------------------------ RTP sending

    # Media hooks (tests/secure_phone.py: SRTP): an outgoing packet as sent,
    # an incoming datagram as parsed (None drops it).
    def _rtp_out(self, packet: bytes) -> bytes:
        return packet

    def _rtp_in(self, data: bytes) -> bytes | None:
        return data

    def _ensure_sender(self):
        with self._tx_lock:
            if self._tx_thread is not None and self._tx_thread.is_alive():
                return
            self._tx_stop = threading.Event()
            self._tx_thread = threading.Thread(target=self._tx_loop, args=(self._tx_stop,),
                                               daemon=True, name=f"phone{self.user}-rtptx")
            self._tx_thread.start()

    def send_tone(self, hz: float | None, amplitude: float = 8000):
        """Start (or change) the background stream: a sine at hz, or silence for None."""
        with self._tx_lock:
            self._tx_source = ("silence",) if hz is None else ("tone", float(hz), float(amplitude))
        self._ensure_sender()

    def send_audio(self, samples, loop=False):
        """Play int16 samples at 8 kHz in the stream, then silence (or loop)."""
        with self._tx_lock:
            self._tx_source = ("samples", np.asarray(samples, dtype=np.int16), 0, bool(loop))
        self._ensure_sender()

    def stop_audio(self):
        """Stop sending RTP altogether (pending DTMF is dropped)."""
        with self._tx_lock:
            t, self._tx_thread = self._tx_thread, None
            self._tx_stop.set()
            self._dtmf_plan.clear()
        if t is not None and t is not threading.current_thread():
            t.join(timeout=1.0)

    def new_ssrc(self):
        with self._tx_lock:
            self.ssrc = random.getrandbits(32)
            self._seq = random.getrandbits(16)
            self._ts = random.getrandbits(32)

    def _next_audio_frame(self) -> np.ndarray:
        src = self._tx_source
        n0 = self._tx_sample
        self._tx_sample += FRAME
        if src[0] == "tone":
            return tone(src[1], FRAME, src[2], n0)
        if src[0] == "samples":
            arr, pos, loop = src[1], src[2], src[3]
            if pos >= len(arr):
                if loop and len(arr):
                    pos = 0
                else:
                    self._tx_source = ("silence",)
                    return np.zeros(FRAME, np.int16)
            frame = arr[pos:pos + FRAME]
            self._tx_source = ("samples", arr, pos + FRAME, loop)
            if len(frame) < FRAME:
                frame = np.concatenate([frame, np.zeros(FRAME - len(frame), np.int16)])
            return frame
        return np.zeros(FRAME, np.int16)

    def _send_rtp(self, pt, marker, payload, ts, ssrc=None):
        hdr = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | (pt & 0x7F),
                          self._seq & 0xFFFF, ts & 0xFFFFFFFF,
                          self.ssrc if ssrc is None else ssrc)
        self._seq = (self._seq + 1) & 0xFFFF
        try:
            self.rtp_sock.sendto(self._rtp_out(hdr + payload), self.remote_rtp)
            self.rtp_packets_sent += 1
        except OSError:
            pass

    def _tx_loop(self, stop: threading.Event):
        next_t = time.monotonic()
        while not stop.is_set() and not self._closed.is_set():
            delay = next_t - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            with self._tx_lock:
                if stop.is_set():
                    break
                if self.remote_rtp is not None and self.answer_codec in _ENCODERS:
                    self._tx_tick()
                self._ts = (self._ts + FRAME) & 0xFFFFFFFF
            next_t += FRAME / SAMPLE_RATE
            if time.monotonic() - next_t > 0.2:   # fell far behind: resync
                next_t = time.monotonic()

    def _tx_tick(self):
        item = self._dtmf_plan.popleft() if self._dtmf_plan else None
        if item is None or item[0] == "audio":
            frame = self._next_audio_frame()
            self._send_rtp(self.answer_pt, False, _ENCODERS[self.answer_codec](frame), self._ts)
        elif item[0] == "done":
            item[1].set()
            frame = self._next_audio_frame()
            self._send_rtp(self.answer_pt, False, _ENCODERS[self.answer_codec](frame), self._ts)
        elif item[0] == "event":
            _, code, start_key, dur, end, marker, ssrc, ts_holder = item
            if start_key not in ts_holder:
                ts_holder[start_key] = self._ts
            payload = struct.pack("!BBH", code, (0x80 if end else 0) | 10, dur & 0xFFFF)
            self._send_rtp(self.answer_te_pt, marker, payload, ts_holder[start_key], ssrc)
            self._tx_sample += FRAME  # keep the tone phase continuous with time

    def send_dtmf(self, digits: str, *, duration_ms=100, gap_ms=100, mode="rfc4733",
                  same_timestamp=False, end_packets=3, ssrc=None, timeout=None):
        """Send DTMF digits; blocks until they are all sent (see module doc)."""
        digits = str(digits).upper()
        if mode in ("info", "info-dtmf"):
            for i, d in enumerate(digits):
                if mode == "info":
                    r = self.info(f"Signal={d}\r\nDuration={duration_ms}\r\n", "application/dtmf-relay")
                else:
                    r = self.info(d, "application/dtmf")
                if r.status != 200:
                    raise RuntimeError(f"INFO for {d!r} answered {r.status} {r.reason}")
                if i < len(digits) - 1 and gap_ms:
                    time.sleep(gap_ms / 1000)
            return
        if mode != "rfc4733":
            raise ValueError(f"unknown DTMF mode {mode!r}")
        if self.answer_te_pt is None:
            raise RuntimeError("no telephone-event payload type negotiated")
        n = max(1, round(duration_ms / 20))
        nonend = max(1, n - 1)
        total_dur = n * FRAME
        ts_holder: dict = {}
        plan = []
        for i, d in enumerate(digits):
            code = _DTMF_CODE[d]
            key = 0 if same_timestamp else i
            for k in range(1, nonend + 1):
                plan.append(("event", code, key, min(k * FRAME, total_dur), False, k == 1, ssrc, ts_holder))
            for _ in range(end_packets):
                plan.append(("event", code, key, total_dur, True, False, ssrc, ts_holder))
            if i < len(digits) - 1:
                plan += [("audio",)] * max(0, round(gap_ms / 20))
        done = threading.Event()
        plan.append(("done", done))
        with self._tx_lock:
            self._dtmf_plan.extend(plan)
        self._ensure_sender()
        if timeout is None:
            timeout = 2.0 + len(plan) * 0.03
        if not done.wait(timeout):
            raise TimeoutError("DTMF not sent in time")

    # ------------------------------------------------------------ RTP receiving

    def _rtp_loop(self):
        while not self._closed.is_set():
            try:
                data, addr = self.rtp_sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            data = self._rtp_in(data)
            p = parse_rtp(data) if data is not None else None
            if p is None:
                continue
            _, marker, pt, seq, ts, ssrc, payload = p
            now = time.monotonic()
            with self._rx_lock:
                self.rtp_source = addr
                self.rtp_headers.append(RtpHeader(now, seq, ts, pt, ssrc, marker, len(payload)))
                if ssrc not in self.rtp_ssrcs_seen:
                    self.rtp_ssrcs_seen.append(ssrc)
                name = self._pt_names.get(pt) or _STATIC_NAME.get(pt)
                if pt == self.answer_te_pt or name == "TELEPHONE-EVENT":
                    if len(payload) >= 4:
                        ev, end, _, dur = parse_telephone_event(payload)
                        self.dtmf_events_received.append((ssrc, ts, ev, end, dur))
                elif name in _DECODERS:
                    self._audio_chunks.append((now, _DECODERS[name](payload)))
            with self._rtp_cond:
                self.rtp_packets_received += 1
                self._rtp_cond.notify_all()

    def wait_for_rtp(self, count=1, timeout=5.0) -> bool:
        """Wait until at least `count` RTP packets have been received in total."""
        deadline = time.monotonic() + timeout
        with self._rtp_cond:
            while self.rtp_packets_received < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._rtp_cond.wait(left)
        return True

    def clear_received(self):
        with self._rx_lock:
            self._audio_chunks.clear()
            self.rtp_headers.clear()
            self.dtmf_events_received.clear()
            self.rtp_ssrcs_seen.clear()

    def received_audio(self, since: float | None = None) -> np.ndarray:
        with self._rx_lock:
            chunks = [c for t, c in self._audio_chunks if since is None or t >= since]
        return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)

    def _recent(self, seconds, since=None):
        cutoff = time.monotonic() - seconds
        if since is not None:
            cutoff = max(cutoff, since)
        x = self.received_audio(cutoff)
        return x[-int(seconds * SAMPLE_RATE):]

    @staticmethod
    def level_at(samples, hz, band=20.0) -> float:
        """Amplitude of the hz component of `samples` (8 kHz)."""
        x = np.asarray(samples, dtype=np.float64)
        n = len(x)
        if n < 80:
            return 0.0
        x = x - x.mean()
        w = np.hanning(n)
        spec = np.abs(np.fft.rfft(x * w)) ** 2
        freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        half = max(band, 4 * SAMPLE_RATE / n)
        sel = (freqs >= hz - half) & (freqs <= hz + half)
        return float(np.sqrt(4 * spec[sel].sum() / (n * np.sum(w ** 2))))

    def tone_level(self, hz, seconds=1.0, *, since=None) -> float:
        return self.level_at(self._recent(seconds, since), hz)

    def hears(self, hz, seconds=1.0, threshold=DEFAULT_THRESHOLD, *, since=None) -> bool:
        return self.tone_level(hz, seconds, since=since) >= threshold

    def wait_for_tone(self, hz, timeout=5.0, *, seconds=0.2, threshold=DEFAULT_THRESHOLD) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self.hears(hz, seconds, threshold):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def rms(self, seconds=1.0) -> float:
        x = self._recent(seconds).astype(np.float64)
        return float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0

    def dominant_frequency(self, seconds=1.0) -> float:
        x = self._recent(seconds).astype(np.float64)
        if len(x) < 80:
            return 0.0
        spec = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
        return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[int(np.argmax(spec))])
