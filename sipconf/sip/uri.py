"""SIP URIs, name-addr values, Via values and header parameters (RFC 3261 19.1, 20, 25.1).

Everything here is text in, text out and raises ValueError on malformed input. Values are
kept as written (escapes are *not* decoded): comparing URIs is a job for the caller, and
keeping "%00" as three characters means a URI can never smuggle a raw NUL to the far side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# RFC 3261 25.1 token characters.
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN)
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# Hostname / IPv4 (lenient: "_" is common in the wild) or a bracketed IPv6 reference.
_HOST_RE = re.compile(r"[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\]")
# Parameter values that can be written without quotes: token plus the characters of an
# IPv6 reference (received=[2001:db8::1], maddr=...).
_BARE_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")
_DISPLAY_TOKENS_RE = re.compile(_TOKEN + r"(?:[ \t]+" + _TOKEN + r")*")
# Any whitespace or control character: never allowed inside a URI (RFC 4475 3.1.2.14).
_BAD_URI_CHAR_RE = re.compile(r"[\x00-\x20\x7f]")
_VIA_RE = re.compile(
    r"(" + _TOKEN + r")\s*/\s*(" + _TOKEN + r")\s*/\s*(" + _TOKEN + r")\s+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?:\s*:\s*(\d{1,5}))?\s*(;.*)?",
    re.S,
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.S)


def split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on `sep` except inside "quoted strings" (backslash escapes honoured)."""
    if '"' not in text:
        return text.split(sep)
    parts: list[str] = []
    start = 0
    in_quotes = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_quotes:
        raise ValueError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return _QUOTED_PAIR_RE.sub(r"\1", value[1:-1])
    if '"' in value:
        raise ValueError(f"stray quote in parameter value {value!r}")
    return value


def quote_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ";a=b;c" (leading ";" optional) into {"a": "b", "c": None}.

    Names are lower-cased (parameter names are case-insensitive), quoted values are
    unquoted. An empty parameter (";;") is a syntax error (RFC 4475 3.1.2.1).
    """
    text = text.strip()
    if not text:
        return {}
    if text[0] == ";":
        text = text[1:]
    params: dict[str, str | None] = {}
    for piece in split_outside_quotes(text, ";"):
        name, eq, value = piece.partition("=")
        name = name.strip()
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"bad parameter name {name!r}")
        if eq:
            value = value.strip()
            if not value:
                raise ValueError(f"empty value for parameter {name!r}")
            params[name.lower()] = _unquote(value)
        else:
            params[name.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    out = []
    for name, value in params.items():
        if value is None:
            out.append(";" + name)
        elif _BARE_VALUE_RE.fullmatch(value):
            out.append(f";{name}={value}")
        else:
            out.append(f";{name}={quote_string(value)}")
    return "".join(out)


@dataclass
class SipUri:
    """sip:, sips:, tel: or any other absolute URI.

    For tel: the number is in `user` and host is "". For other schemes (http:, isbn:, ...)
    only `scheme` and `opaque` (everything after the colon) are meaningful.
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        if self.scheme not in ("sip", "sips", "tel"):
            return f"{self.scheme}:{self.opaque or ''}"
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.hostport)
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)


def parse_uri(text: str) -> SipUri:
    text = text.strip()
    if _BAD_URI_CHAR_RE.search(text):
        raise ValueError(f"whitespace or control character in URI {text!r}")
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        raise ValueError(f"no scheme in URI {text!r}")
    scheme = scheme.lower()
    if scheme == "tel":
        number, _, ptext = rest.partition(";")
        if not number:
            raise ValueError("empty tel: number")
        return SipUri("tel", number, None, "", None, parse_params(ptext) if ptext else {})
    if scheme not in ("sip", "sips"):
        if not rest:
            raise ValueError(f"empty {scheme}: URI")
        return SipUri(scheme, opaque=rest)

    user = password = None
    # The user part may hold ";", "?", ":" and "," (RFC 4475 3.1.1.2, 3.1.1.9); "@" can
    # only appear escaped there, so the first "@" ends the userinfo.
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if colon:
            password = pw
        if not user:
            raise ValueError("empty user part")
    rest, qmark, htext = rest.partition("?")
    hostport, semi, ptext = rest.partition(";")
    if hostport.startswith("["):
        close = hostport.find("]")
        host, after = hostport[: close + 1], hostport[close + 1 :]
        if close < 0 or (after and not after.startswith(":")):
            raise ValueError(f"bad IPv6 reference in {text!r}")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
    if not _HOST_RE.fullmatch(host):
        raise ValueError(f"bad host in URI {text!r}")
    port = _parse_port(port_text) if port_text is not None else None
    params: dict[str, str | None] = {}
    if semi:
        for piece in ptext.split(";"):
            name, eq, value = piece.partition("=")
            if not name:
                raise ValueError(f"empty URI parameter in {text!r}")
            params[name.lower()] = value if eq else None
    headers: dict[str, str] = {}
    if qmark:
        for piece in htext.split("&"):
            name, eq, value = piece.partition("=")
            if not name or not eq:
                raise ValueError(f"bad URI header in {text!r}")
            headers[name] = value
    return SipUri(scheme, user, password, host, port, params, headers)


def _parse_port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > 65535:
        raise ValueError(f"bad port {text!r}")
    return int(text)


@dataclass
class NameAddr:
    """From/To/Contact/Route value: optional display name, URI, header parameters."""

    display_name: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        name = quote_string(self.display_name) + " " if self.display_name else ""
        return f"{name}<{self.uri}>{format_params(self.params)}"


def _closing_quote(text: str, start: int) -> int:
    """Index of the '"' closing the quoted string opened at text[start]."""
    i = start + 1
    while True:
        j = text.find('"', i)
        if j < 0:
            raise ValueError("unterminated quoted string")
        k = j - 1
        while k > start and text[k] == "\\":
            k -= 1
        if (j - 1 - k) % 2 == 0:  # an even number of backslashes: the quote is real
            return j
        i = j + 1


def parse_name_addr(text: str) -> NameAddr:
    """Parse name-addr ("Bob" <sip:b@h>;tag=1) or addr-spec (sip:b@h;tag=1).

    In addr-spec form the ";params" belong to the header, not the URI (RFC 3261 20.10).
    """
    text = text.strip(" \t")
    display: str | None = None
    if text.startswith('"'):
        end = _closing_quote(text, 0)
        display = _QUOTED_PAIR_RE.sub(r"\1", text[1:end])
        rest = text[end + 1 :].lstrip(" \t")
        if not rest.startswith("<"):
            raise ValueError("quoted display name without <uri>")
        lt = 0
    else:
        rest = text
        lt = text.find("<")
        if lt > 0:
            name = text[:lt].strip(" \t")
            # RFC 4475 3.1.1.6: no LWS needed before "<"; 3.1.2.15: no "," etc. unquoted.
            if name and not _DISPLAY_TOKENS_RE.fullmatch(name):
                raise ValueError(f"bad display name {name!r}")
            display = name or None
    if lt >= 0:
        gt = rest.find(">", lt)
        if gt < 0:
            raise ValueError("missing '>'")
        uri_text = rest[lt + 1 : gt]
        if uri_text != uri_text.strip():
            raise ValueError("whitespace inside <...>")
        uri = parse_uri(uri_text)
        tail = rest[gt + 1 :].strip(" \t")
        if tail and not tail.startswith(";"):
            raise ValueError(f"garbage after '>': {tail!r}")
        return NameAddr(display, uri, parse_params(tail))
    uri_text, semi, ptext = text.partition(";")
    return NameAddr(None, parse_uri(uri_text), parse_params(ptext) if semi else {})


@dataclass
class Via:
    """One via-parm. `rport` is the port value of ;rport=N, None when absent or when
    present without a value; `has_rport` tells the two None cases apart (RFC 3581)."""

    protocol: str  # "SIP/2.0/UDP", normalised without LWS
    transport: str  # upper-case
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol} {self.host}{port}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    m = _VIA_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"bad Via {text!r}")
    name, version, transport, host, port, ptext = m.groups()
    transport = transport.upper()
    params = parse_params(ptext) if ptext else {}
    return Via(
        f"{name.upper()}/{version}/{transport}",
        transport,
        host,
        _parse_port(port) if port else None,
        params,
    )
