"""SIP messages: parse, serialise, build responses, frame a TCP stream (RFC 3261 7, 18.3).

Sans-IO: bytes in, objects out. Header values are kept as text exactly as received
(after unfolding); structured views (Via, name-addr) are parsed on demand from uri.py.
Header text is decoded as UTF-8 with "surrogateescape", so any byte survives a
parse/serialise round trip unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from .uri import NameAddr, Via, parse_name_addr, parse_uri, parse_via

MAX_MESSAGE_SIZE = 65535  # bytes; larger -> SipParseError
MAX_HEADERS = 200  # header fields; more -> SipParseError


class SipParseError(ValueError):
    """The bytes are not an acceptable SIP message.

    `partial` is the partially parsed request when it can still be answered (start line,
    Via, From, To, Call-ID and CSeq readable), else None. `reason` is short text usable as
    a reason phrase; `status` is the response code to send when `partial` is set (400,
    or 505 for an unsupported SIP version, 513 for an oversized message).
    """

    def __init__(self, reason: str, partial: "Request | None" = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial
        self.status = status


# RFC 3261 7.3.3 and later RFCs: compact form -> canonical name.
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN_NAMES = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization",
    "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Server",
    "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
    "Warning", "WWW-Authenticate",
]
_CANONICAL = {n.lower(): n for n in _KNOWN_NAMES}
_CANONICAL.update(COMPACT_FORMS)

# Headers whose value is a comma-separated list (RFC 3261 7.3.1). Authentication headers,
# Date, etc. contain commas that do not separate values and are deliberately absent.
LIST_HEADERS = frozenset(
    n.lower()
    for n in [
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
        "Allow", "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
        "Error-Info", "In-Reply-To", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
        "Proxy-Require", "Reason", "Record-Route", "Reject-Contact", "Require", "Route",
        "Service-Route", "Supported", "Unsupported", "Via", "Warning",
    ]
)

# Fields that may appear only once (RFC 4475 3.3.8, 3.3.9).
_SINGLE_HEADERS = ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SCHEME_PREFIX_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_VERSION_RE = re.compile(r"SIP/\d{1,3}\.\d{1,3}", re.I)
_CSEQ_RE = re.compile(r"(\d{1,10})\s+(" + r"[A-Za-z0-9\-.!%*_+`'~]+" + r")")


# lower-case name -> (lookup key, canonical spelling), for the parser's hot loop
_KEYED = {low: (canon.lower(), canon) for low, canon in _CANONICAL.items()}


def canonical_name(name: str) -> str:
    return _CANONICAL.get(name.lower(), name)


def _split_list(value: str) -> list[str]:
    """Split a list header value on commas outside quotes and <...>; drop empty items."""
    if "," not in value:
        value = value.strip()
        return [value] if value else []
    if '"' not in value and "<" not in value:
        return [p for p in (s.strip() for s in value.split(",")) if p]
    parts: list[str] = []
    start = 0
    in_quotes = in_angle = False
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif in_angle:
            in_angle = ch != ">"
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ",":
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return [p for p in (s.strip() for s in parts) if p]


class Headers:
    """Ordered, case-insensitive multi-map of header fields under canonical names.

    Compact forms and known names are stored under their canonical spelling (v, VIA ->
    Via); unknown names keep the spelling each field was given with.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # (lower-case key, canonical name, value)
        self._items: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        name = canonical_name(name)
        self._items.append((name.lower(), name, value))

    def get(self, name: str, default: str | None = None) -> str | None:
        key = canonical_name(name).lower()
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_fields(self, name: str) -> list[str]:
        """Every field value of that name, unsplit."""
        key = canonical_name(name).lower()
        return [v for k, _, v in self._items if k == key]

    def get_all(self, name: str) -> list[str]:
        key = canonical_name(name).lower()
        values = [v for k, _, v in self._items if k == key]
        if key not in LIST_HEADERS:
            return values
        out: list[str] = []
        for v in values:
            out.extend(_split_list(v))
        return out

    def set(self, name: str, value: str) -> None:
        name = canonical_name(name)
        key = name.lower()
        new: list[tuple[str, str, str]] = []
        placed = False
        for item in self._items:
            if item[0] == key:
                if not placed:
                    new.append((key, name, value))
                    placed = True
            else:
                new.append(item)
        if not placed:
            new.append((key, name, value))
        self._items = new

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [item for item in self._items if item[0] != key]

    def count(self, name: str) -> int:
        key = canonical_name(name).lower()
        return sum(1 for k, _, _ in self._items if k == key)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name).lower()
        return any(k == key for k, _, _ in self._items)

    def items(self) -> list[tuple[str, str]]:
        return [(n, v) for _, n, v in self._items]

    def copy(self) -> "Headers":
        h = Headers()
        h._items = list(self._items)
        return h

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


class _MessageViews:
    """Convenience views shared by Request and Response (parsed on each access)."""

    headers: Headers

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def from_addr(self) -> NameAddr:
        return parse_name_addr(self.headers.get("From") or "")

    @property
    def to_addr(self) -> NameAddr:
        return parse_name_addr(self.headers.get("To") or "")

    @property
    def from_tag(self) -> str | None:
        return self.from_addr.tag

    @property
    def to_tag(self) -> str | None:
        return self.to_addr.tag

    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        vias = self.headers.get_all("Via")
        if not vias:
            raise ValueError("no Via")
        return parse_via(vias[0])

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip().lower() or None


@dataclass(eq=True)
class Request(_MessageViews):
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"


@dataclass(eq=True)
class Response(_MessageViews):
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"


Message = Request | Response


def parse_cseq(value: str) -> tuple[int, str]:
    m = _CSEQ_RE.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"bad CSeq {value!r}")
    number = int(m.group(1))
    if number >= 2**32:  # RFC 3261 20.16: a 32-bit unsigned integer
        raise ValueError("CSeq number out of range")
    return number, m.group(2)


def _find_blank_line(data: bytes) -> tuple[int, int] | None:
    """(end of header block, start of body), accepting CRLF or bare LF line ends."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, crlf + 4
    if lf >= 0:
        return lf, lf + 2
    return None


# Raw header name (as written, before the colon) -> (lookup key, canonical name).
# Names repeat across messages, so this skips the regex check and lookups; bounded so
# that a stream of invented names cannot grow it without limit.
_NAME_CACHE: dict[str, tuple[str, str]] = {}


def _header_key(raw_name: str) -> tuple[str, str]:
    hit = _NAME_CACHE.get(raw_name)
    if hit is not None:
        return hit
    name = raw_name.rstrip(" \t")
    if not _TOKEN_RE.fullmatch(name):
        raise SipParseError("malformed header name")
    low = name.lower()
    hit = _KEYED.get(low) or (low, name)
    if len(_NAME_CACHE) < 4096:
        _NAME_CACHE[raw_name] = hit
    return hit


def _split_head(head: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Start line and unfolded (key, canonical name, value) fields of a header block."""
    if "\r" in head:
        head = head.replace("\r\n", "\n")
    lines = head.split("\n")
    if len(lines) > MAX_HEADERS + 1 and "\n " not in head and "\n\t" not in head:
        raise SipParseError("too many headers")
    fields: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            # RFC 3261 7.3.1: a continuation line is joined with a single space.
            if not fields:
                raise SipParseError("continuation line before first header")
            prev = fields[-1]
            prev[2] = prev[2].rstrip(" \t") + " " + line.strip(" \t")
            continue
        raw_name, colon, value = line.partition(":")
        if not colon or not raw_name:
            raise SipParseError("malformed header line")
        key, canon = _header_key(raw_name)
        fields.append([key, canon, value])
        if len(fields) > MAX_HEADERS:
            raise SipParseError("too many headers")
    return lines[0], [(k, n, v.strip(" \t")) for k, n, v in fields]


def parse_message(data: bytes) -> Message:
    """Parse one complete message (a UDP datagram, or one StreamFramer output)."""
    try:
        return _parse(bytes(data))
    except SipParseError:
        raise
    except Exception as exc:  # never let odd input escape as another exception type
        raise SipParseError("malformed message") from exc


def _parse(data: bytes) -> Message:
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError("message too large", status=513)
    # RFC 3261 7.5: empty lines before the start line are ignored (keep-alives).
    data = data.lstrip(b"\r\n")
    bounds = _find_blank_line(data)
    if bounds is None:
        # Only a datagram gets here (the stream framer cuts at the empty
        # line): it is a whole message, so one that stops after its last
        # header -- as some monitoring probes' OPTIONS do (check_sip ports) --
        # is read as headers without a body (Content-Length still checked).
        bounds = len(data.rstrip(b"\r\n")), len(data)
    head_end, body_start = bounds
    start_line, fields = _split_head(data[:head_end].decode("utf-8", "surrogateescape"))
    headers = Headers()
    headers._items = fields

    msg: Message
    if start_line.startswith("SIP/") or start_line[:4].upper() == "SIP/":
        msg = _parse_status_line(start_line, headers)
    else:
        msg = _parse_request_line(start_line, headers)
        if msg.version.upper() != "SIP/2.0":
            raise SipParseError("Version Not Supported", _routable(msg), status=505)
    try:
        _check_headers(msg)
        msg.body = _body(headers, data[body_start:])
    except ValueError as exc:
        reason = exc.reason if isinstance(exc, SipParseError) else str(exc)
        raise SipParseError(_short(reason), _routable(msg)) from exc
    return msg


def _short(reason: str) -> str:
    # Reason phrases go back on the wire: printable ASCII, bounded length.
    reason = "".join(ch if " " <= ch <= "~" else "?" for ch in reason[:80])
    return reason or "Bad Request"


def _parse_request_line(line: str, headers: Headers) -> Request:
    # Request-Line = Method SP Request-URI SP SIP-Version: exactly single spaces
    # (RFC 4475 3.1.2.8-3.1.2.10 reject extra or trailing whitespace).
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("malformed request line")
    method, uri, version = parts
    if not _TOKEN_RE.fullmatch(method) or not _VERSION_RE.fullmatch(version):
        raise SipParseError("malformed request line")
    req = Request(method, uri, headers, b"", version.upper())
    if not _SCHEME_PREFIX_RE.match(uri) or "\t" in uri:
        raise SipParseError("malformed Request-URI", _routable(req))
    if uri[:4].lower() in ("sip:", "sips"):
        try:
            parsed = parse_uri(uri)
        except ValueError:
            raise SipParseError("malformed Request-URI", _routable(req)) from None
        if parsed.headers:  # RFC 3261 19.1.1: headers are not allowed in a Request-URI
            raise SipParseError("headers in Request-URI", _routable(req))
    return req


def _parse_status_line(line: str, headers: Headers) -> Response:
    parts = line.split(" ", 2)
    if len(parts) < 2 or not _VERSION_RE.fullmatch(parts[0]):
        raise SipParseError("malformed status line")
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or not code.isascii() or not "100" <= code <= "699":
        raise SipParseError("bad status code")
    reason = parts[2] if len(parts) == 3 else ""
    if parts[0].upper() != "SIP/2.0":
        raise SipParseError("Version Not Supported", status=505)
    return Response(int(code), reason, headers, b"", "SIP/2.0")


def _check_headers(msg: Message) -> None:
    # One pass to count fields and remember first values: this runs for every message.
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for key, _, value in msg.headers._items:
        if key in counts:
            counts[key] += 1
        else:
            counts[key] = 1
            first[key] = value
    for key in _SINGLE_HEADERS:
        if counts.get(key, 0) > 1:
            raise ValueError(f"multiple {canonical_name(key)} headers")
    for key in ("via", "from", "to", "call-id", "cseq"):
        if key not in counts:
            raise ValueError(f"missing {canonical_name(key)}")
    vias = msg.headers.get_all("Via")
    if not vias:
        raise ValueError("empty Via")
    try:
        for v in vias:
            parse_via(v)
    except ValueError:
        raise ValueError("malformed Via") from None
    for key in ("from", "to"):
        try:
            parse_name_addr(first[key])
        except ValueError:
            raise ValueError(f"malformed {canonical_name(key)}") from None
    if not first["call-id"]:
        raise ValueError("empty Call-ID")
    try:
        _, cseq_method = parse_cseq(first["cseq"])
    except ValueError:
        raise ValueError("malformed CSeq") from None
    if isinstance(msg, Request) and cseq_method != msg.method:
        raise ValueError("CSeq method does not match request method")
    mf = first.get("max-forwards")
    if mf is not None and (not mf.isdigit() or not mf.isascii() or int(mf) > 255):
        raise ValueError("malformed Max-Forwards")
    if "contact" in counts:
        for contact in msg.headers.get_all("Contact"):
            if contact != "*":
                try:
                    parse_name_addr(contact)
                except ValueError:
                    raise ValueError("malformed Contact") from None


def _body(headers: Headers, rest: bytes) -> bytes:
    cl = headers.get("Content-Length")
    if cl is None:
        return rest  # allowed on UDP only; StreamFramer enforces it on TCP
    if not cl.isdigit() or not cl.isascii() or len(cl) > 10:
        raise ValueError("bad Content-Length")
    length = int(cl)
    if length > len(rest):
        raise ValueError("bad Content-Length")
    # RFC 3261 18.3: octets past Content-Length in a datagram are discarded.
    return rest[:length]


def _routable(msg: Message) -> Request | None:
    """The request if a 400 can be routed back for it (RFC 3261 8.2.6), else None."""
    if not isinstance(msg, Request):
        return None
    h = msg.headers
    try:
        if not all(n in h for n in ("From", "To", "Call-ID", "CSeq")):
            return None
        msg.top_via
    except ValueError:
        return None
    return msg


def serialize(msg: Message) -> bytes:
    """Wire form: CRLF line ends, canonical names, Content-Length = len(body)."""
    if isinstance(msg, Request):
        lines = [f"{msg.method} {msg.uri} {msg.version}"]
    else:
        lines = [f"{msg.version} {msg.status:03d} {msg.reason}"]
    length_written = False
    for name, value in msg.headers.items():
        if name == "Content-Length":
            if length_written:
                continue
            value = str(len(msg.body))
            length_written = True
        lines.append(f"{name}: {value}")
    if not length_written:
        lines.append(f"Content-Length: {len(msg.body)}")
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + msg.body


REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity", 433: "Anonymity Disallowed",
    436: "Bad Identity-Info", 437: "Unsupported Certificate", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 470: "Consent Needed",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def default_reason(status: int) -> str:
    return REASON_PHRASES.get(status) or {1: "Trying", 2: "OK", 3: "Redirect", 4: "Client Error",
                                          5: "Server Error", 6: "Global Failure"}.get(status // 100, "Unknown")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Response per RFC 3261 8.2.6: Via (all, in order), From, To (+tag), Call-ID, CSeq."""
    h = Headers()
    for value in request.headers.get_fields("Via"):
        h.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is None:
            continue
        if name == "To" and to_tag is not None and not _has_tag(value):
            value = f"{value};tag={to_tag}"
        h.add(name, value)
    for name, value in headers:
        h.add(name, value)
    if content_type is not None:
        h.set("Content-Type", content_type)
    return Response(status, reason if reason is not None else default_reason(status), h, body)


def _has_tag(to_value: str) -> bool:
    try:
        return parse_name_addr(to_value).tag is not None
    except ValueError:
        return ";tag=" in to_value.lower()


_CONTENT_LENGTH_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.I | re.M)


class StreamFramer:
    """Splits a TCP byte stream into messages using Content-Length (RFC 3261 18.3).

    Skips CRLF keep-alives (RFC 5626 "\\r\\n\\r\\n" pings) between messages. Raises
    SipParseError when buffered bytes exceed max_buffer or a header block has no or an
    invalid Content-Length (mandatory on TCP). After an error the stream cannot be
    resynchronised: close the connection.
    """

    def __init__(self, max_buffer: int = MAX_MESSAGE_SIZE * 2) -> None:
        self.max_buffer = max_buffer
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while True:
            skip = 0
            while skip < len(buf) and buf[skip] in (13, 10):  # CR / LF keep-alives
                skip += 1
            if skip:
                del buf[:skip]
            if not buf:
                break
            bounds = _find_blank_line(buf)
            if bounds is None:
                if len(buf) > self.max_buffer:
                    raise SipParseError("header block too large", status=513)
                break
            head_end, body_start = bounds
            matches = _CONTENT_LENGTH_RE.findall(bytes(buf[:head_end]))
            if not matches:
                raise SipParseError("missing Content-Length")
            if len(matches) > 1 or not matches[0].isdigit() or len(matches[0]) > 10:
                raise SipParseError("bad Content-Length")
            total = body_start + int(matches[0])
            if total > self.max_buffer:
                raise SipParseError("message too large", status=513)
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out
