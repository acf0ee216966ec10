"""SDP parsing and the RFC 3264 offer/answer for one audio stream.

Written by hand because ``aiortc.sdp`` drops ``a=ptime`` and static payload
types that come without an ``a=rtpmap`` (SIPp's ``m=audio 6000 RTP/AVP 0``).

The parser is lenient where real phones differ (unknown line types and
attributes are kept or ignored, bare LF line ends, blank lines, a missing
``o=`` or ``s=``) and strict where a wrong guess would send media to the
wrong place (ports, ``c=`` lines, ``rtpmap`` payload types).  Every problem
is reported as :class:`SdpError`, never as another exception, so callers can
map it to ``400``/``488`` without a catch-all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

__all__ = [
    "AudioSelection",
    "DIRECTIONS",
    "MediaDescription",
    "NoCommonCodec",
    "SdpError",
    "SessionDescription",
    "answer_direction",
    "build_answer",
    "parse_sdp",
    "rtpmap_text",
    "select_audio",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# Static payload types of RFC 3551 that the bridge understands without an
# a=rtpmap line.
_STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
}

# (name, RTP clock, channels) of every codec the bridge can carry (SPEC 10):
# G.722 says 8000 though its audio is 16 kHz (RFC 3551 4.5.2); Opus is
# always opus/48000/2 in SDP (RFC 7587 7), mono on the wire for us.
_CARRIED = {("PCMU", 8000, 1), ("PCMA", 8000, 1), ("G722", 8000, 1), ("OPUS", 48000, 2)}
# How each codec is written in the answer's a=rtpmap
_RTPMAP = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G722": "G722/8000", "OPUS": "opus/48000/2"}
_CLOCK = {"PCMU": 8000, "PCMA": 8000, "G722": 8000, "OPUS": 48000}

# Transports answered by default.  RTP/SAVP (SRTP, keys in a=crypto) is
# usable when the caller passes ``protos`` (sipconf.sdes decides, per policy).
_USABLE_PROTOS = ("RTP/AVP", "RTP/AVPF")

_ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}

# RFC 3264 8.4: c=0.0.0.0 means "send neither RTP nor RTCP to me", i.e. the
# offerer does not want to receive; combine that with its stated direction.
_HOLD_DIRECTION = {
    "sendrecv": "sendonly",
    "sendonly": "sendonly",
    "recvonly": "inactive",
    "inactive": "inactive",
}

_HOLD_ADDRESS = "0.0.0.0"
_DEFAULT_TELEPHONE_EVENT_FMTP = "0-16"
_ANSWER_PTIME_MS = 20

_LINE_TYPE = re.compile(r"[a-zA-Z]")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")


class SdpError(ValueError):
    """The SDP body is malformed or cannot be answered."""


class NoCommonCodec(SdpError):
    """No usable audio stream offers a codec the server supports (SIP 488)."""


@dataclass
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    rtpmap: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str = "sendrecv"
    ptime: int | None = None
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    # Whether a direction attribute was written on this m= line (so the
    # session-level one applies otherwise); not part of the required API.
    direction_explicit: bool = False
    port_count: int = 1


@dataclass
class SessionDescription:
    origin: str = ""
    session_name: str = ""
    connection: str | None = None
    direction: str | None = None
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass(frozen=True)
class AudioSelection:
    codec: str
    payload_type: int
    telephone_event_pt: int | None
    remote_host: str
    remote_port: int
    direction: str
    ptime: int | None
    media_index: int
    telephone_event_rate: int = 8000


# --------------------------------------------------------------------------
# Parsing


def parse_sdp(body: bytes | str) -> SessionDescription:
    """Parse an SDP body; raise :class:`SdpError` when it is malformed.

    A body without any ``m=`` line is rejected too: the bridge has nothing to
    answer in it.
    """
    try:
        return _parse(body)
    except SdpError:
        raise
    except Exception as exc:  # defensive: the contract is SdpError only
        raise SdpError(f"malformed SDP: {exc}") from exc


def _parse(body: bytes | str) -> SessionDescription:
    if isinstance(body, (bytes, bytearray, memoryview)):
        # SDP is UTF-8 (RFC 4566 5); a stray Latin-1 s= must not fail a call.
        text = bytes(body).decode("utf-8", errors="replace")
    elif isinstance(body, str):
        text = body
    else:
        raise SdpError(f"SDP body must be bytes or str, not {type(body).__name__}")

    lines = [line.strip(" \t") for line in re.split(r"\r\n|\r|\n", text)]
    lines = [line for line in lines if line]
    if not lines:
        raise SdpError("empty SDP body")
    if lines[0] != "v=0":
        raise SdpError(f"SDP must start with v=0, got {lines[0][:40]!r}")

    session = SessionDescription()
    current: MediaDescription | None = None
    for number, line in enumerate(lines[1:], start=2):
        kind, sep, value = line.partition("=")
        if not sep or not _LINE_TYPE.fullmatch(kind):
            raise SdpError(f"line {number}: not a '<type>=<value>' line: {line[:40]!r}")
        if kind == "v":
            raise SdpError(f"line {number}: repeated v= line")
        if kind == "m":
            current = _parse_media_line(value, number)
            session.media.append(current)
        elif kind == "c":
            address = _parse_connection(value, number)
            if current is None:
                session.connection = address
            else:
                current.connection = address
        elif kind == "a":
            _parse_attribute(value, number, session, current)
        elif current is None and kind == "o":
            session.origin = value
        elif current is None and kind == "s":
            session.session_name = value
        # Every other type (i, u, e, p, b, t, r, z, k, unknown) carries
        # nothing the bridge needs; RFC 4566 5 says to ignore unknown ones.

    if not session.media:
        raise SdpError("SDP has no m= line")
    for media in session.media:
        if not media.direction_explicit and session.direction is not None:
            media.direction = session.direction
    return session


def _parse_media_line(value: str, number: int) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"line {number}: m= needs '<media> <port> <proto> <fmt> ...': {value[:60]!r}")
    media, port_text, proto, *formats = parts
    port_text, slash, count_text = port_text.partition("/")
    port = _parse_int(port_text, "port", number, 0, 65535)
    count = _parse_int(count_text, "port count", number, 1, 65535) if slash else 1
    if not _TOKEN.fullmatch(media) or not all(_TOKEN.fullmatch(p) for p in proto.split("/")):
        raise SdpError(f"line {number}: bad media or protocol in m= line: {value[:60]!r}")
    return MediaDescription(
        media=media, port=port, proto=proto, formats=formats, port_count=count
    )


def _parse_connection(value: str, number: int) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"line {number}: c= must be 'IN IP4|IP6 <address>': {value[:60]!r}")
    # Multicast addresses carry /ttl[/count]; only the address matters here.
    address = parts[2].split("/", 1)[0]
    if not address:
        raise SdpError(f"line {number}: empty connection address")
    return address


def _parse_attribute(
    value: str,
    number: int,
    session: SessionDescription,
    media: MediaDescription | None,
) -> None:
    name, sep, attr_value = value.partition(":")
    if not name:
        raise SdpError(f"line {number}: empty attribute name")
    pair = (name, attr_value if sep else None)
    if media is None:
        session.attributes.append(pair)
        if name in DIRECTIONS and not sep:
            session.direction = name
        return

    media.attributes.append(pair)
    if name in DIRECTIONS and not sep:
        media.direction = name
        media.direction_explicit = True
    elif name == "rtpmap":
        pt, encoding = _parse_rtpmap(attr_value, number)
        media.rtpmap[pt] = encoding
    elif name == "fmtp":
        fmt, _, params = attr_value.strip().partition(" ")
        # fmtp may name non-RTP formats (m=application); only RTP pts matter.
        if fmt.isascii() and fmt.isdigit() and int(fmt) <= 127:
            media.fmtp[int(fmt)] = params.strip()
    elif name == "ptime":
        media.ptime = _parse_ptime(attr_value, number)


def _parse_rtpmap(value: str, number: int) -> tuple[int, tuple[str, int, int]]:
    parts = value.split()
    if len(parts) != 2:
        raise SdpError(f"line {number}: a=rtpmap needs '<pt> <encoding>/<rate>': {value[:60]!r}")
    pt = _parse_int(parts[0], "rtpmap payload type", number, 0, 127)
    pieces = parts[1].split("/")
    if len(pieces) not in (2, 3) or not pieces[0]:
        raise SdpError(f"line {number}: bad a=rtpmap encoding: {parts[1][:60]!r}")
    rate = _parse_int(pieces[1], "rtpmap clock rate", number, 1, 10_000_000)
    channels = _parse_int(pieces[2], "rtpmap channels", number, 1, 255) if len(pieces) == 3 else 1
    return pt, (pieces[0], rate, channels)


def _parse_ptime(value: str, number: int) -> int:
    # Some phones write fractional ptime ("a=ptime:20.0"); keep whole ms.
    text = value.strip()
    if re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})?", text) is None:
        raise SdpError(f"line {number}: bad a=ptime: {value[:40]!r}")
    ptime = round(float(text))
    if ptime <= 0:
        raise SdpError(f"line {number}: a=ptime must be positive: {value[:40]!r}")
    return ptime


def _parse_int(text: str, what: str, number: int, low: int, high: int) -> int:
    # str.isdigit accepts '²' and other Unicode digits that int() rejects.
    if not text or len(text) > 10 or not all("0" <= ch <= "9" for ch in text):
        raise SdpError(f"line {number}: bad {what}: {text[:20]!r}")
    result = int(text)
    if not low <= result <= high:
        raise SdpError(f"line {number}: {what} {result} out of range {low}-{high}")
    return result


# --------------------------------------------------------------------------
# Offer/answer


def rtpmap_text(codec: str) -> str:
    """How ``codec`` (a canonical name) is written after ``a=rtpmap:PT``."""
    return _RTPMAP.get(codec, f"{codec}/8000")


def answer_direction(offer_direction: str) -> str:
    """The answer's direction for an offer's (RFC 3264 6.1)."""
    try:
        return _ANSWER_DIRECTION[offer_direction]
    except KeyError:
        raise SdpError(f"unknown media direction {offer_direction!r}") from None


def _codec_of(media: MediaDescription, fmt: str) -> tuple[str, int] | None:
    """(upper-case codec name, payload type) of one format, or None."""
    if not fmt.isascii() or not fmt.isdigit() or int(fmt) > 127:
        return None
    pt = int(fmt)
    encoding = media.rtpmap.get(pt) or _STATIC_PAYLOAD_TYPES.get(pt)
    if encoding is None:
        return None
    name, rate, channels = encoding
    if (name.upper(), rate, channels) not in _CARRIED:
        return None
    return name.upper(), pt


def _telephone_event(media: MediaDescription, clock: int = 8000) -> tuple[int, int] | None:
    """(payload type, clock) of the offer's telephone-event: the one at the
    audio codec's clock if offered (RFC 4733 2.1), else one at 8000 or 48000."""
    for rate in (clock, 8000, 48000):
        pt = _telephone_event_at(media, rate)
        if pt is not None:
            return pt, rate
    return None


def _telephone_event_at(media: MediaDescription, clock: int) -> int | None:
    offered = set(media.formats)
    for fmt in media.formats:
        if not fmt.isascii() or not fmt.isdigit():
            continue
        pt = int(fmt)
        encoding = media.rtpmap.get(pt)
        if encoding is None or str(pt) not in offered:
            continue
        name, rate, _ = encoding
        if name.lower() == "telephone-event" and rate == clock:
            return pt
    return None


def _is_usable_audio(media: MediaDescription, protos: Sequence[str] = _USABLE_PROTOS) -> bool:
    return (
        media.media.lower() == "audio"
        and media.port != 0
        and media.proto.upper() in protos
    )


def select_audio(
    offer: SessionDescription, supported: Sequence[str] = ("PCMU", "PCMA"),
    protos: Sequence[str] = _USABLE_PROTOS,
) -> AudioSelection:
    """Choose the stream and codec to answer with.

    The first usable ``m=audio`` line (port not 0, RTP/AVP or RTP/AVPF) that
    offers any supported codec wins, and within it the offer's first
    supported format: the offerer's preference order rules (SPEC 5).

    ``direction`` is the offer's effective direction: the media attribute,
    else the session attribute, else sendrecv.  A connection address of
    0.0.0.0 (RFC 2543 hold, RFC 3264 8.4) means the offerer wants nothing
    sent to it, so it turns sendrecv into sendonly and recvonly into
    inactive; ``remote_host`` stays "0.0.0.0".
    """
    wanted = {name.upper() for name in supported}
    for index, media in enumerate(offer.media):
        if not _is_usable_audio(media, protos):
            continue
        for fmt in media.formats:
            found = _codec_of(media, fmt)
            if found is None or found[0] not in wanted:
                continue
            codec, pt = found
            host = media.connection or offer.connection
            if host is None:
                raise SdpError(f"m= line {index + 1} has no connection address (c=)")
            direction = media.direction
            if host == _HOLD_ADDRESS:
                direction = _HOLD_DIRECTION[direction]
            te = _telephone_event(media, _CLOCK[codec])
            return AudioSelection(
                codec=codec,
                payload_type=pt,
                telephone_event_pt=None if te is None else te[0],
                telephone_event_rate=8000 if te is None else te[1],
                remote_host=host,
                remote_port=media.port,
                direction=direction,
                ptime=media.ptime,
                media_index=index,
            )
    offered = [
        f"{m.media} {m.port} {m.proto} {' '.join(m.formats)}" for m in offer.media
    ]
    raise NoCommonCodec(
        f"no usable audio stream with {'/'.join(sorted(wanted))}; offered: {offered}"
    )


def build_answer(
    offer: SessionDescription,
    selection: AudioSelection,
    *,
    address: str,
    port: int,
    session_id: int,
    version: int,
    crypto: str | None = None,
) -> bytes:
    """The SDP answer: one m= line per offered one, in order (RFC 3264 6).

    The chosen audio line keeps the offer's payload-type numbers and
    transport; every other line is rejected with port 0.
    """
    if not 0 <= selection.media_index < len(offer.media):
        raise SdpError(f"selection names m= line {selection.media_index}, offer has {len(offer.media)}")
    if not 0 < port <= 65535:
        raise SdpError(f"answer port {port} out of range")
    if session_id < 0 or version < 0:
        raise SdpError("session id and version must not be negative")
    addrtype = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=sipconf {session_id} {version} IN {addrtype} {address}",
        "s=sipconf",
        f"c=IN {addrtype} {address}",
        "t=0 0",
    ]
    for index, media in enumerate(offer.media):
        if index != selection.media_index:
            lines.append(f"m={media.media} 0 {media.proto} {media.formats[0]}")
            continue
        pt = selection.payload_type
        te = selection.telephone_event_pt
        formats = f"{pt}" if te is None else f"{pt} {te}"
        lines.append(f"m=audio {port} {media.proto} {formats}")
        lines.append(f"a=rtpmap:{pt} {rtpmap_text(selection.codec)}")
        if selection.codec == "OPUS":
            lines.append(f"a=fmtp:{pt} useinbandfec=1")
        if te is not None:
            lines.append(f"a=rtpmap:{te} telephone-event/{selection.telephone_event_rate}")
            # Echo the offered event list (RFC 4733 7.1.1), else DTMF 0-16.
            fmtp = media.fmtp.get(te) or _DEFAULT_TELEPHONE_EVENT_FMTP
            lines.append(f"a=fmtp:{te} {fmtp}")
        if crypto is not None:
            lines.append(f"a=crypto:{crypto}")  # SDES answer (sipconf.sdes)
        lines.append(f"a=ptime:{_ANSWER_PTIME_MS}")
        lines.append(f"a={answer_direction(selection.direction)}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
