"""Configuration: a TOML file (SPEC section 3) into frozen dataclasses.

:func:`parse_config` checks everything and raises one :class:`ConfigError`
listing *every* problem found, each naming the table, the key and why, so an
administrator can fix a file in one pass (``sipconf check-config``).

Numbers (extensions, room extensions, DIDs, receptionist numbers) compare on
their digits alone: ``+33 1 40 00 08 00`` equals ``33140000800``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

from .netaddr import is_wildcard
from .tls import DEFAULT_HANDSHAKE_TIMEOUT, TlsConfig, tls_file_problems
from .wording import plural

__all__ = [
    "DEMO_CONFIG_TOML",
    "AdminConfig",
    "DIGEST_ALGORITHMS",
    "Config",
    "ConfigError",
    "ConferenceConfig",
    "ExtensionConfig",
    "ReceptionistConfig",
    "RecordingConfig",
    "RoomConfig",
    "SecurityConfig",
    "ServerConfig",
    "SoundsConfig",
    "SRTP_POLICIES",
    "TlsConfig",
    "TrunkConfig",
    "TrunkRegistration",
    "demo_config",
    "digits_of",
    "load_config",
    "parse_config",
    "parse_port_range",
    "with_overrides",
]

#: The example of SPEC section 3, verbatim: the built-in demo configuration.
DEMO_CONFIG_TOML = '''\
[server]
bind = "127.0.0.1"          # address of the SIP and RTP sockets
advertise = ""              # address written in Contact and SDP c=; default: bind
sip_port = 5060             # UDP and TCP
rtp_ports = "20000-20999"   # inclusive range; even ports carry RTP, the next odd one RTCP
domain = "office.local"     # SIP domain, and the realm of digest challenges
language = "fr"             # prompt language, "fr" or "en"
rtp_timeout = 30            # seconds without any RTP before a call is hung up
digest_algorithms = ["MD5"] # challenge algorithms, strongest first, e.g. ["SHA-256", "MD5"]

[receptionist]
numbers = ["+33140000000"]  # numbers on the trunk answered by the Virtual Receptionist
extension = "0"             # internal extension that reaches it (optional)

[[extensions]]              # desk phones
number = "101"
password = "alice-secret"
name = "Alice"

[[extensions]]
number = "102"
password = "bob-secret"
name = "Bob"

[[trunks]]
name = "provider"
allow = ["127.0.0.2/32"]    # sources trusted to deliver calls without digest auth

[[rooms]]
extension = "800"
name = "Salle Everest"
numbers = ["+33140000800"]  # direct numbers (DID) that skip the receptionist
max_participants = 50

  [[rooms.conferences]]
  id = "1234"
  pin = "4321"

  [[rooms.conferences]]
  id = "5678"
  pin = "8765"

[sounds]
join_beep_hz = 1000         # the join beep: a sine at this frequency
join_beep_ms = 250

[security]
auth_failures = 5           # failed digest attempts from one source within `window` ...
pin_failures = 10           # ... or failed conference PINs from one caller within `window` ...
window = 600                # seconds
ban = 900                   # ... refuse that source / caller for this many seconds
'''

#: Digest algorithms a config may name, canonical spelling (see sipconf.digest).
DIGEST_ALGORITHMS: tuple[str, ...] = ("MD5", "SHA-256", "SHA-512-256")
#: SPEC 10: the codecs ``[server] codecs`` may name (compared case-blind) and the mix rates
AUDIO_CODECS: tuple[str, ...] = ("OPUS", "G722", "PCMA", "PCMU")
MIX_RATES: tuple[int, ...] = (8000, 16000, 48000)
LANGUAGES: tuple[str, ...] = ("fr", "en")
#: ``srtp`` of an extension or a trunk (SPEC 11); same as sipconf.sdes.POLICIES
SRTP_POLICIES: tuple[str, ...] = ("optional", "required", "off")
RECORDING_FORMATS: tuple[str, ...] = ("ogg", "flac", "wav")  # mixer.record.FORMATS
_DIGITS = frozenset("0123456789")
_NUMBER_RE = re.compile(r"\+?[0-9][0-9 ]*")
_HOSTNAME_RE = re.compile(r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class TrunkRegistration:
    """Optional ``[trunks.register]``: the bridge registers to the provider."""

    registrar: str  # "sip:provider.example:5060"
    username: str
    password: str
    expires: int = 3600


@dataclass(frozen=True)
class ServerConfig:
    bind: str = "127.0.0.1"
    advertise: str = ""
    sip_port: int = 5060
    rtp_port_min: int = 20000
    rtp_port_max: int = 20999
    domain: str = "office.local"
    language: str = "fr"
    rtp_timeout: float = 30
    digest_algorithms: tuple[str, ...] = ("MD5",)
    metrics_port: int = 0
    # Not in SPEC: how long an INVITE rings (180) before we answer; 0 answers
    # at once. Lets a caller CANCEL, and suits trunks that dislike instant answers.
    answer_delay_ms: int = 0
    # SPEC 10: enabled audio codecs (canonical names) and the highest mix rate
    codecs: tuple[str, ...] = ("OPUS", "G722", "PCMA", "PCMU")
    max_mix_rate: int = 48000
    # SPEC 12: a participant is "talking" while their level is above this
    # (RMS relative to a full-scale sine), with 300 ms of hangover.
    talk_threshold_dbfs: float = -45.0
    cdr_file: str = ""  # one JSON line per ended call appended here (sipconf/cdr.py); "" = off

    @property
    def advertised_address(self) -> str:
        """Address written in Contact and SDP ``c=``: ``advertise``, else ``bind``.

        With a wildcard ``bind`` this is the wildcard itself, which must never be
        written anywhere: use ``address_for`` with the flow's local address."""
        return self.advertise or self.bind

    def address_for(self, local: str) -> str:
        """The address to write in Via, Contact and SDP for a flow whose packets
        arrive on ``local`` (SPEC section 15): ``advertise`` when set, else
        ``bind`` unless it is a wildcard, else ``local``."""
        if self.advertise:
            return self.advertise
        if not is_wildcard(self.bind):
            return self.bind
        return local

    @property
    def rtp_ports(self) -> str:
        return f"{self.rtp_port_min}-{self.rtp_port_max}"


@dataclass(frozen=True)
class ReceptionistConfig:
    numbers: tuple[str, ...] = ()
    extension: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.numbers) or self.extension is not None


@dataclass(frozen=True)
class ExtensionConfig:
    number: str
    password: str
    name: str = ""
    srtp: str = "optional"  # SPEC 11: "optional" | "required" | "off"


@dataclass(frozen=True)
class TrunkConfig:
    name: str
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    register: TrunkRegistration | None = None
    srtp: str = "optional"  # SPEC 11: "optional" | "required" | "off"

    def allows(self, ip: str) -> bool:
        addr = _parse_ip(ip)
        return addr is not None and any(addr in net for net in self.allow if net.version == addr.version)


@dataclass(frozen=True)
class ConferenceConfig:
    id: str
    pin: str
    # SPEC 12: entered at the PIN step instead of the PIN, joins as moderator.
    moderator_pin: str | None = None
    wait_for_moderator: bool = False  # callers wait, unmixed, until a moderator is in
    end_with_moderator: bool = False  # the last moderator leaving hangs everyone up
    auto_record: bool = False  # recording starts when the first participant joins


@dataclass(frozen=True)
class RoomConfig:
    extension: str
    name: str = ""
    numbers: tuple[str, ...] = ()
    max_participants: int = 50
    conferences: tuple[ConferenceConfig, ...] = ()

    def conference(self, conference_id: str) -> ConferenceConfig | None:
        for conf in self.conferences:
            if conf.id == conference_id:
                return conf
        return None


@dataclass(frozen=True)
class SoundsConfig:
    join_beep_hz: int = 1000
    join_beep_ms: int = 250
    leave_beep_hz: int = 500  # 0 = no leave beep
    leave_beep_ms: int = 250
    announce_count: bool = True  # a newcomer hears "there are N other participants"


@dataclass(frozen=True)
class RecordingConfig:
    directory: str = "recordings"  # created if missing; relative to the server's working directory
    format: str = "ogg"  # "ogg" (Opus), "flac" or "wav"


@dataclass(frozen=True)
class SecurityConfig:
    auth_failures: int = 5
    pin_failures: int = 10
    window: float = 600
    ban: float = 900


@dataclass(frozen=True)
class AdminConfig:
    """SPEC 13 ``[admin]``: the HTTP API and console (sipconf/admin/)."""

    bind: str = "127.0.0.1"
    port: int = 8080
    token: str = ""  # bearer token, at least ADMIN_TOKEN_MIN characters


ADMIN_TOKEN_MIN = 16


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    receptionist: ReceptionistConfig = field(default_factory=ReceptionistConfig)
    extensions: tuple[ExtensionConfig, ...] = ()
    trunks: tuple[TrunkConfig, ...] = ()
    rooms: tuple[RoomConfig, ...] = ()
    sounds: SoundsConfig = field(default_factory=SoundsConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    tls: TlsConfig | None = None  # [tls]: absent table, no TLS listener
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    admin: AdminConfig | None = None  # absent table: no HTTP administration

    def summary(self) -> str:
        """One line for ``check-config`` and the startup log."""
        s = self.server
        conferences = sum(len(r.conferences) for r in self.rooms)
        rec = self.receptionist
        if rec.numbers:
            receptionist = "receptionist on " + ", ".join(rec.numbers)
        elif rec.extension is not None:
            receptionist = f"receptionist on extension {rec.extension}"
        else:
            receptionist = "no receptionist"
        host = f"[{s.bind}]" if ":" in s.bind else s.bind
        registering = [f"{t.name} registers to {t.register.registrar} as {t.register.username}"
                       for t in self.trunks if t.register is not None]
        trunks = plural(len(self.trunks), "trunk") + (f" ({'; '.join(registering)})" if registering else "")
        return (
            f"{s.domain}: {plural(len(self.extensions), 'extension')}, {plural(len(self.rooms), 'room')} "
            f"({plural(conferences, 'conference')}), {trunks}, {receptionist}; "
            f"SIP {host}:{s.sip_port}" + (f", TLS {host}:{self.tls.port}" if self.tls else "")
            + f", RTP {s.rtp_port_min}-{s.rtp_port_max}"
            + "".join(f"; WARNING: {warning}" for warning in self.routing_warnings())
        )

    def routing_warnings(self) -> list[str]:
        """A valid file that cannot put a call anywhere (an empty file, say):
        said in check-config's summary and logged as a WARNING at start."""
        if self.rooms:
            return []
        if self.receptionist.enabled:
            return ["no [[rooms]]: the receptionist answers but has no room to send callers to"]
        return ["nothing is routable: no [[rooms]] and no [receptionist], so no call can reach anything"]

    # Lookups are built once per (immutable) Config. cached_property writes to
    # the instance __dict__ directly, which a frozen dataclass allows.
    @cached_property
    def _extensions_by_digits(self) -> dict[str, ExtensionConfig]:
        return {digits_of(e.number): e for e in self.extensions}

    @cached_property
    def _rooms_by_digits(self) -> dict[str, RoomConfig]:
        table: dict[str, RoomConfig] = {}
        for room in self.rooms:
            for number in (room.extension, *room.numbers):
                table.setdefault(digits_of(number), room)
        return table

    @cached_property
    def _receptionist_digits(self) -> frozenset[str]:
        rec = self.receptionist
        numbers = list(rec.numbers) + ([rec.extension] if rec.extension is not None else [])
        return frozenset(digits_of(n) for n in numbers)

    def extension(self, number: str) -> ExtensionConfig | None:
        """The desk phone with this number (compared on digits), if any."""
        d = digits_of(number)
        return self._extensions_by_digits.get(d) if d else None

    def room_for(self, number: str) -> RoomConfig | None:
        """The room whose extension or direct number this is (compared on digits)."""
        d = digits_of(number)
        return self._rooms_by_digits.get(d) if d else None

    def is_receptionist(self, number: str) -> bool:
        """True for a receptionist number or its extension (compared on digits)."""
        d = digits_of(number)
        return bool(d) and d in self._receptionist_digits

    def is_trunk_source(self, ip: str) -> TrunkConfig | None:
        """The trunk whose ``allow`` list holds this source address, if any."""
        addr = _parse_ip(ip)
        if addr is None:
            return None
        for trunk in self.trunks:
            if any(addr in net for net in trunk.allow if net.version == addr.version):
                return trunk
        return None


class ConfigError(Exception):
    """An invalid configuration; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str] | str, *, source: str | None = None) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------- helpers


def digits_of(number: str) -> str:
    """The digits of a number alone: ``"+33 1 40 00 08 00"`` -> ``"33140000800"``."""
    return "".join(c for c in number if c in _DIGITS)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except (ValueError, AttributeError):
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d
    return addr


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_host(text: str) -> bool:
    return _is_ip(text) or bool(_HOSTNAME_RE.fullmatch(text))


def _show(value: Any) -> str:
    """A value as the admin wrote it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    return repr(value)


def _port_range_problems(text: Any, where: str) -> tuple[tuple[int, int] | None, list[str]]:
    if not isinstance(text, str):
        return None, [f"{where}: must be a string \"LO-HI\", e.g. \"20000-20999\", got {_show(text)}"]
    m = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", text)
    if not m:
        return None, [f"{where}: must be \"LO-HI\", e.g. \"20000-20999\", got {_show(text)}"]
    lo, hi = int(m.group(1)), int(m.group(2))
    problems = []
    if lo % 2:
        problems.append(f"{where}: the first port must be even (RTP on even ports, RTCP on the next odd one), got {lo}")
    if not (1024 <= lo <= 65535 and 1024 <= hi <= 65535):
        problems.append(f"{where}: ports must be within 1024-65535, got {text.strip()!r}")
    if lo >= hi:
        problems.append(f"{where}: LO must be below HI (at least 2 ports), got {text.strip()!r}")
    return (None if problems else (lo, hi)), problems


def parse_port_range(text: str, where: str) -> tuple[int, int]:
    """Parse an inclusive ``"LO-HI"`` RTP port range; ConfigError names ``where``."""
    result, problems = _port_range_problems(text, where)
    if problems or result is None:
        raise ConfigError(problems)
    return result


# --------------------------------------------------------------------------- parsing


class _Table:
    """One TOML table being read: typed getters that record problems and fall back."""

    def __init__(self, problems: list[str], where: str, data: dict[str, Any], known: tuple[str, ...]) -> None:
        self.problems = problems
        self.where = where
        self.data = data
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                tip = f" (did you mean {hint[0]!r}?)" if hint else f" (known keys: {', '.join(known)})"
                self.problem(key, "unknown key" + tip)

    def problem(self, key: str | None, message: str) -> None:
        self.problems.append(f"{self.where} {key}: {message}" if key else f"{self.where}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def missing(self, key: str, what: str) -> None:
        self.problem(key, f"is required ({what})")

    def string(self, key: str, default: str | None, *, required: str | None = None) -> str | None:
        if key not in self.data:
            if required:
                self.missing(key, required)
            return default
        value = self.data[key]
        if not isinstance(value, str):
            hint = f' (write it quoted: "{value}")' if isinstance(value, int) and not isinstance(value, bool) else ""
            self.problem(key, f"must be a string, got {_show(value)}{hint}")
            return None if required else default
        return value

    def integer(self, key: str, default: int, lo: int, hi: int | None = None, *, what: str = "") -> int:
        if key not in self.data:
            return default
        value = self.data[key]
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and value >= lo and (hi is None or value <= hi):
            return value
        span = f"{lo}-{hi}" if hi is not None else f">= {lo}"
        self.problem(key, f"must be an integer {span}{what}, got {_show(value)}")
        return default

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool):
            return value
        hint = " (write it unquoted)" if isinstance(value, str) and value.lower() in ("true", "false") else ""
        self.problem(key, f"must be true or false, got {_show(value)}{hint}")
        return default

    def real(self, key: str, default: float, lo: float, hi: float, *, what: str = "") -> float:
        """Any finite integer or float within [lo, hi]."""
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and lo <= value <= hi:
            return float(value)
        self.problem(key, f"must be a number from {lo:g} to {hi:g}{what}, got {_show(value)}")
        return default

    def number(self, key: str, default: float, *, what: str = "a number > 0") -> float:
        """A positive duration in seconds: integer or float, finite."""
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            return float(value)
        self.problem(key, f"must be {what}, got {_show(value)}")
        return default

    def string_list(self, key: str) -> list[tuple[int, str]] | None:
        """``[(index, text)]`` of an array of strings; None when absent or not an array."""
        if key not in self.data:
            return None
        value = self.data[key]
        if isinstance(value, str):
            self.problem(key, f"must be an array of strings, e.g. [{value!r}], got {_show(value)}")
            return None
        if not isinstance(value, list):
            self.problem(key, f"must be an array of strings, got {_show(value)}")
            return None
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append((i, item))
            else:
                self.problem(f"{key}[{i}]", f"must be a string, got {_show(item)}")
        return out


class _Parser:
    TOP = {
        "server": "table",
        "receptionist": "table",
        "extensions": "array",
        "trunks": "array",
        "rooms": "array",
        "sounds": "table",
        "security": "table",
        "tls": "table",
        "recording": "table",
        "admin": "table",
    }

    def __init__(self) -> None:
        self.problems: list[str] = []
        # digits -> (place, as written), for uniqueness across the file
        self.numbers: dict[str, str] = {}

    # -- uniqueness

    def claim(self, table: _Table, key: str, number: str, place: str) -> None:
        d = digits_of(number)
        if not d:
            return
        if d in self.numbers:
            table.problem(key, f"{number!r} is already used by {self.numbers[d]}")
        else:
            self.numbers[d] = place

    # -- shapes

    def table(self, data: dict[str, Any], name: str) -> dict[str, Any] | None:
        if name not in data:
            return {}
        value = data[name]
        if isinstance(value, dict):
            return value
        if isinstance(value, list):
            self.problems.append(f"[{name}]: must be a single table [{name}], not an array [[{name}]]")
        else:
            self.problems.append(f"[{name}]: must be a table, got {name} = {_show(value)}")
        return None

    def array(self, data: dict[str, Any], name: str) -> list[tuple[int, dict[str, Any]]]:
        if name not in data:
            return []
        value = data[name]
        if isinstance(value, dict):
            self.problems.append(f"[[{name}]]: must be an array of tables, written [[{name}]], not [{name}]")
            return []
        if not isinstance(value, list):
            self.problems.append(f"[[{name}]]: must be an array of tables [[{name}]], got {name} = {_show(value)}")
            return []
        out = []
        for i, item in enumerate(value, start=1):
            if isinstance(item, dict):
                out.append((i, item))
            else:
                self.problems.append(f"[[{name}]] #{i}: must be a table, got {_show(item)}")
        return out

    def digits(self, t: _Table, key: str, value: str | None) -> str | None:
        if value is None:
            return None
        if not value or not set(value) <= _DIGITS:
            t.problem(key, f"{value!r} must be digits only" + ("" if value else " and not empty"))
            return None
        return value

    def claimed_numbers(self, t: _Table, where: str) -> list[str]:
        """The table's ``numbers`` list, each valid and claimed as unique."""
        numbers = []
        for i, text in t.string_list("numbers") or []:
            number = self.phone_number(t, f"numbers[{i}]", text)
            if number is not None:
                self.claim(t, f"numbers[{i}]", number, f"{where} numbers[{i}]")
                numbers.append(number)
        return numbers

    def phone_number(self, t: _Table, key: str, value: str) -> str | None:
        text = value.strip()
        if not _NUMBER_RE.fullmatch(text):
            t.problem(key, f"{value!r} is not a phone number (digits, spaces and a leading + only)")
            return None
        return text

    # -- the file

    def parse(self, data: dict[str, Any]) -> Config:
        if not isinstance(data, dict):
            raise ConfigError([f"configuration must be a TOML table, got {_show(data)}"])
        for key, value in data.items():
            if key not in self.TOP:
                hint = difflib.get_close_matches(key, list(self.TOP), n=1)
                tip = f" (did you mean {hint[0]!r}?)" if hint else f" (known tables: {', '.join(self.TOP)})"
                if isinstance(value, dict):
                    self.problems.append(f"[{key}]: unknown table{tip}")
                elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                    self.problems.append(f"[[{key}]]: unknown table{tip}")
                else:
                    self.problems.append(f"{key}: unknown top-level key{tip}")
        server = self.server(self.table(data, "server"))
        receptionist = self.receptionist(self.table(data, "receptionist"))
        extensions = tuple(
            e for i, d in self.array(data, "extensions") if (e := self.extension(i, d)) is not None
        )
        trunks = self.trunks(self.array(data, "trunks"))
        rooms = tuple(r for i, d in self.array(data, "rooms") if (r := self.room(i, d)) is not None)
        sounds = self.sounds(self.table(data, "sounds"))
        security = self.security(self.table(data, "security"))
        tls = self.tls(self.table(data, "tls"), server) if "tls" in data else None
        recording = self.recording(self.table(data, "recording"))
        admin = self.admin(self.table(data, "admin"), server) if "admin" in data else None
        if self.problems:
            raise ConfigError(self.problems)
        return Config(server, receptionist, extensions, trunks, rooms, sounds, security, tls, recording, admin=admin)

    def server(self, data: dict[str, Any] | None) -> ServerConfig:
        d = ServerConfig()
        if data is None:
            return d
        t = _Table(
            self.problems,
            "[server]",
            data,
            ("bind", "advertise", "sip_port", "rtp_ports", "domain", "language", "rtp_timeout",
             "digest_algorithms", "metrics_port", "answer_delay_ms", "codecs", "max_mix_rate",
             "talk_threshold_dbfs", "cdr_file"),
        )
        bind = t.string("bind", d.bind)
        if bind is not None and not _is_ip(bind):
            t.problem("bind", f"must be an IP address such as \"127.0.0.1\" or \"0.0.0.0\", got {_show(bind)}")
            bind = None
        advertise = t.string("advertise", d.advertise)
        if advertise and not _is_host(advertise):
            t.problem("advertise", f"must be an IP address or a host name (or \"\" for bind), got {_show(advertise)}")
            advertise = None
        elif advertise and is_wildcard(advertise):
            t.problem("advertise", f"must be an address phones can reach, not the wildcard {_show(advertise)} "
                                   "(leave it \"\" to use the address each phone's packets arrive on)")
            advertise = None
        sip_port = t.integer("sip_port", d.sip_port, 1, 65535)
        rtp = (d.rtp_port_min, d.rtp_port_max)
        if t.has("rtp_ports"):
            parsed, problems = _port_range_problems(data["rtp_ports"], "[server] rtp_ports")
            self.problems.extend(problems)
            rtp = parsed or rtp
        domain = t.string("domain", d.domain)
        if domain is not None and not _is_host(domain):
            t.problem("domain", f"must be a domain name such as \"office.local\", got {_show(domain)}")
            domain = None
        language = t.string("language", d.language)
        if language is not None and language.lower() not in LANGUAGES:
            t.problem("language", f"must be \"fr\" or \"en\", got {_show(language)}")
            language = None
        rtp_timeout = t.number("rtp_timeout", d.rtp_timeout, what="a number of seconds > 0")
        algorithms = d.digest_algorithms
        items = t.string_list("digest_algorithms")
        if items is not None:
            canon: list[str] = []
            by_upper = {a.upper(): a for a in DIGEST_ALGORITHMS}
            for i, name in items:
                c = by_upper.get(name.strip().upper())
                if c is None:
                    t.problem(f"digest_algorithms[{i}]", f"must be one of {', '.join(DIGEST_ALGORITHMS)}, got {_show(name)}")
                elif c in canon:
                    t.problem(f"digest_algorithms[{i}]", f"{name!r} is listed twice")
                else:
                    canon.append(c)
            if not data["digest_algorithms"]:
                t.problem("digest_algorithms", "must name at least one algorithm, e.g. [\"MD5\"]")
            elif canon and len(canon) == len(items) == len(data["digest_algorithms"]):
                algorithms = tuple(canon)
        metrics_port = t.integer("metrics_port", d.metrics_port, 0, 65535, what=" (0 = off)")
        answer_delay_ms = t.integer("answer_delay_ms", d.answer_delay_ms, 0, 60000)
        codecs = d.codecs
        items = t.string_list("codecs")
        if items is not None:
            chosen: list[str] = []
            for i, name in items:
                c = name.strip().upper()
                if c not in AUDIO_CODECS:
                    t.problem(f"codecs[{i}]", f"must be one of opus, G722, PCMA, PCMU, got {_show(name)}")
                elif c in chosen:
                    t.problem(f"codecs[{i}]", f"{name!r} is listed twice")
                else:
                    chosen.append(c)
            if not data["codecs"]:
                t.problem("codecs", "must name at least one codec, e.g. [\"PCMA\", \"PCMU\"]")
            elif len(chosen) == len(items) == len(data["codecs"]):
                codecs = tuple(chosen)
        max_mix_rate = t.integer("max_mix_rate", d.max_mix_rate, 8000, 48000)
        if max_mix_rate not in MIX_RATES:
            t.problem("max_mix_rate", f"must be 8000, 16000 or 48000, got {_show(max_mix_rate)}")
            max_mix_rate = d.max_mix_rate
        talk_threshold = t.real("talk_threshold_dbfs", d.talk_threshold_dbfs, -96, 0, what=" (dBFS)")
        cdr_file = t.string("cdr_file", d.cdr_file)
        if cdr_file and os.path.isdir(cdr_file):
            t.problem("cdr_file", f"{cdr_file!r} is a directory; give a file name, e.g. \"/var/log/sipconf/cdr.jsonl\"")
            cdr_file = None
        server = ServerConfig(
            bind=bind or d.bind,
            advertise=advertise if advertise is not None else d.advertise,
            sip_port=sip_port,
            rtp_port_min=rtp[0],
            rtp_port_max=rtp[1],
            domain=domain or d.domain,
            language=language.lower() if language else d.language,
            rtp_timeout=rtp_timeout,
            digest_algorithms=algorithms,
            metrics_port=metrics_port,
            answer_delay_ms=answer_delay_ms,
            codecs=codecs,
            max_mix_rate=max_mix_rate,
            talk_threshold_dbfs=talk_threshold,
            cdr_file=cdr_file or d.cdr_file,
        )
        if t.has("sip_port") or t.has("rtp_ports") or t.has("metrics_port"):
            self.problems.extend(_server_port_clashes(server, "[server] sip_port", "[server] metrics_port"))
        return server

    def receptionist(self, data: dict[str, Any] | None) -> ReceptionistConfig:
        if data is None:
            return ReceptionistConfig()
        t = _Table(self.problems, "[receptionist]", data, ("numbers", "extension"))
        numbers = self.claimed_numbers(t, "[receptionist]")
        extension = self.digits(t, "extension", t.string("extension", None))
        if extension is not None:
            self.claim(t, "extension", extension, "[receptionist] extension")
        return ReceptionistConfig(tuple(numbers), extension)

    def extension(self, index: int, data: dict[str, Any]) -> ExtensionConfig | None:
        where = f"[[extensions]] #{index}"
        t = _Table(self.problems, where, data, ("number", "password", "name", "srtp"))
        number = self.digits(t, "number", t.string("number", None, required='digits, e.g. "101"'))
        if number is not None:
            self.claim(t, "number", number, where)
        password = t.string("password", None, required="the phone's digest password")
        if password is not None and not password:
            t.problem("password", "must not be empty")
            password = None
        name = t.string("name", "") or ""
        srtp = self.srtp_policy(t)
        if number is None or password is None:
            return None
        return ExtensionConfig(number, password, name, srtp)

    def trunks(self, items: list[tuple[int, dict[str, Any]]]) -> tuple[TrunkConfig, ...]:
        out = []
        names: dict[str, int] = {}
        for index, data in items:
            name = data.get("name")
            label = f"[[trunks]] #{index}" + (f" ({name})" if isinstance(name, str) and name else "")
            t = _Table(self.problems, label, data, ("name", "allow", "register", "srtp"))
            name = t.string("name", None, required='a label, e.g. "provider"')
            if name is not None:
                if not name.strip():
                    t.problem("name", "must not be empty")
                    name = None
                elif name in names:
                    t.problem("name", f"{name!r} is already used by [[trunks]] #{names[name]}")
                else:
                    names[name] = index
            allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
            allow_ok = True
            for i, text in t.string_list("allow") or []:
                try:
                    allow.append(ipaddress.ip_network(text.strip(), strict=False))
                except ValueError:
                    t.problem(f"allow[{i}]", f"must be an IP address or CIDR network like \"192.0.2.0/24\", got {_show(text)}")
                    allow_ok = False
            if t.has("allow") and not isinstance(data["allow"], list):
                allow_ok = False
            register = None
            if t.has("register"):
                register = self.registration(label, data["register"])
            if allow_ok and not allow and not t.has("register"):
                t.problem("allow", "is required: the trusted source addresses of the trunk, e.g. [\"192.0.2.10/32\"]"
                          " (or give a [trunks.register] table)")
            srtp = self.srtp_policy(t)
            if name is not None:
                out.append(TrunkConfig(name, tuple(allow), register, srtp))
        return tuple(out)

    def registration(self, trunk_label: str, value: Any) -> TrunkRegistration | None:
        where = f"{trunk_label} [trunks.register]"
        if not isinstance(value, dict):
            self.problems.append(f"{where}: must be a table, got register = {_show(value)}")
            return None
        t = _Table(self.problems, where, value, ("registrar", "username", "password", "expires"))
        registrar = t.string("registrar", None, required='a SIP URI, e.g. "sip:provider.example:5060"')
        if registrar is not None:
            scheme, _, rest = registrar.strip().partition(":")
            if scheme.lower() not in ("sip", "sips") or not rest.strip():
                t.problem("registrar", f"must be a SIP URI such as \"sip:provider.example:5060\", got {_show(registrar)}")
                registrar = None
        username = t.string("username", None, required="the account name at the provider")
        if username is not None and not username:
            t.problem("username", "must not be empty")
            username = None
        password = t.string("password", None, required="the account password at the provider")
        expires = t.integer("expires", 3600, 60, 86400, what=" seconds")
        if registrar is None or username is None or password is None:
            return None
        return TrunkRegistration(registrar.strip(), username, password, expires)

    def room(self, index: int, data: dict[str, Any]) -> RoomConfig | None:
        ext_value = data.get("extension")
        where = f"[[rooms]] #{index}"
        if isinstance(ext_value, str) and ext_value and set(ext_value) <= _DIGITS:
            where += f" (extension {ext_value})"
        t = _Table(self.problems, where, data, ("extension", "name", "numbers", "max_participants", "conferences"))
        extension = self.digits(t, "extension", t.string("extension", None, required='digits, e.g. "800"'))
        if extension is not None:
            self.claim(t, "extension", extension, where)
        name = t.string("name", "") or ""
        numbers = self.claimed_numbers(t, where)
        max_participants = t.integer("max_participants", 50, 2)
        conferences: list[ConferenceConfig] = []
        conf_items: list[tuple[int, dict[str, Any]]] = []
        conf_value = data.get("conferences")
        if conf_value is None:
            t.problem(None, "needs at least one [[rooms.conferences]] (id and pin)")
        elif isinstance(conf_value, list) and all(isinstance(c, dict) for c in conf_value):
            conf_items = list(enumerate(conf_value, start=1))
            if not conf_items:
                t.problem("conferences", "needs at least one [[rooms.conferences]] (id and pin)")
        else:
            t.problem("conferences", f"must be an array of tables [[rooms.conferences]], got {_show(conf_value)}")
        ids: dict[str, int] = {}
        for j, conf in conf_items:
            ct = _Table(self.problems, f"{where} [[rooms.conferences]] #{j}", conf,
                        ("id", "pin", "moderator_pin", "wait_for_moderator", "end_with_moderator", "auto_record"))
            conf_id = self.digits(ct, "id", ct.string("id", None, required='digits, e.g. "1234"'))
            pin = self.digits(ct, "pin", ct.string("pin", None, required='digits, e.g. "4321"'))
            moderator_pin = self.digits(ct, "moderator_pin", ct.string("moderator_pin", None))
            if moderator_pin is not None and moderator_pin == pin:
                ct.problem("moderator_pin", "must differ from pin (the PIN step tells the two apart)")
                moderator_pin = None
            wait = ct.boolean("wait_for_moderator", False)
            end = ct.boolean("end_with_moderator", False)
            if (wait or end) and moderator_pin is None and not ct.has("moderator_pin"):
                which = "wait_for_moderator" if wait else "end_with_moderator"
                ct.problem(which, "needs a moderator_pin (nobody could join as moderator)")
            if conf_id is not None:
                if conf_id in ids:
                    ct.problem("id", f"{conf_id!r} is already used by [[rooms.conferences]] #{ids[conf_id]} of this room")
                    conf_id = None
                else:
                    ids[conf_id] = j
            auto_record = ct.boolean("auto_record", False)
            if conf_id is not None and pin is not None:
                conferences.append(ConferenceConfig(conf_id, pin, moderator_pin, wait, end, auto_record=auto_record))
        if extension is None:
            return None
        return RoomConfig(extension, name, tuple(numbers), max_participants, tuple(conferences))

    def sounds(self, data: dict[str, Any] | None) -> SoundsConfig:
        d = SoundsConfig()
        if data is None:
            return d
        t = _Table(self.problems, "[sounds]", data,
                   ("join_beep_hz", "join_beep_ms", "leave_beep_hz", "leave_beep_ms", "announce_count"))
        hz = t.integer("join_beep_hz", d.join_beep_hz, 100, 3999, what=" (below the 4 kHz Nyquist limit of 8 kHz audio)")
        ms = t.integer("join_beep_ms", d.join_beep_ms, 20, 2000, what=" milliseconds")
        leave_hz = d.leave_beep_hz
        if t.has("leave_beep_hz") and data["leave_beep_hz"] == 0 and not isinstance(data["leave_beep_hz"], bool):
            leave_hz = 0
        else:
            leave_hz = t.integer("leave_beep_hz", d.leave_beep_hz, 100, 3999,
                                 what=" (or 0 = off; below the 4 kHz Nyquist limit of 8 kHz audio)")
        leave_ms = t.integer("leave_beep_ms", d.leave_beep_ms, 20, 2000, what=" milliseconds")
        announce = t.boolean("announce_count", d.announce_count)
        return SoundsConfig(hz, ms, leave_hz, leave_ms, announce)

    def srtp_policy(self, t: _Table) -> str:
        value = t.string("srtp", "optional")
        if value is None or value.lower() not in SRTP_POLICIES:
            if value is not None:
                t.problem("srtp", f"must be \"optional\", \"required\" or \"off\", got {_show(value)}")
            return "optional"
        return value.lower()

    def tls(self, data: dict[str, Any] | None, server: ServerConfig) -> TlsConfig | None:
        if data is None:
            return None
        t = _Table(self.problems, "[tls]", data, ("port", "cert", "key", "handshake_timeout"))
        port = t.integer("port", 5061, 1, 65535)
        cert = t.string("cert", None, required="the PEM certificate file, e.g. \"/etc/sipconf/cert.pem\"")
        key = t.string("key", None, required="the PEM private key file, e.g. \"/etc/sipconf/key.pem\"")
        timeout = t.number("handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT, what="a number of seconds > 0")
        if port == server.sip_port:
            t.problem("port", f"{port} is also [server] sip_port (SIP listens on TCP there)")
        elif server.metrics_port and port == server.metrics_port:
            t.problem("port", f"{port} is also [server] metrics_port")
        elif server.rtp_port_min <= port <= server.rtp_port_max:
            t.problem("port", f"{port} falls inside the RTP port range {server.rtp_port_min}-{server.rtp_port_max}")
        if cert is None or key is None:
            return None
        self.problems.extend(tls_file_problems(cert, key))
        return TlsConfig(port, cert, key, timeout)
    def recording(self, data: dict[str, Any] | None) -> RecordingConfig:
        d = RecordingConfig()
        if data is None:
            return d
        t = _Table(self.problems, "[recording]", data, ("directory", "format"))
        directory = t.string("directory", d.directory)
        if directory is not None and not directory.strip():
            t.problem("directory", "must not be empty (a folder for the files, e.g. \"recordings\")")
            directory = None
        elif directory is not None and os.path.exists(directory) and not os.path.isdir(directory):
            t.problem("directory", f"{directory!r} exists and is not a directory")
            directory = None
        fmt = t.string("format", d.format)
        if fmt is not None and fmt.lower() not in RECORDING_FORMATS:
            t.problem("format", f"must be one of {', '.join(repr(f) for f in RECORDING_FORMATS)}, got {_show(fmt)}")
            fmt = None
        return RecordingConfig(directory or d.directory, (fmt or d.format).lower())

    def security(self, data: dict[str, Any] | None) -> SecurityConfig:
        d = SecurityConfig()
        if data is None:
            return d
        t = _Table(self.problems, "[security]", data, ("auth_failures", "pin_failures", "window", "ban"))
        return SecurityConfig(
            auth_failures=t.integer("auth_failures", d.auth_failures, 1),
            pin_failures=t.integer("pin_failures", d.pin_failures, 1),
            window=t.number("window", d.window, what="a number of seconds > 0"),
            ban=t.number("ban", d.ban, what="a number of seconds > 0"),
        )


    def admin(self, data: dict[str, Any] | None, server: ServerConfig) -> AdminConfig | None:
        """``[admin]`` when the table is present (absent: off, never called)."""
        if data is None:  # not a table: already reported
            return None
        d = AdminConfig()
        t = _Table(self.problems, "[admin]", data, ("bind", "port", "token"))
        bind = t.string("bind", d.bind)
        if bind is not None and not _is_ip(bind):
            t.problem("bind", f"must be an IP address such as \"127.0.0.1\", got {_show(bind)}")
            bind = None
        port = t.integer("port", d.port, 1, 65535)
        if t.has("port") and port in (server.sip_port, server.metrics_port):
            other = "sip_port (SIP listens on TCP too)" if port == server.sip_port else "metrics_port"
            t.problem("port", f"{port} is also [server] {other}")
        token = t.string("token", None, required=f"a secret of at least {ADMIN_TOKEN_MIN} characters")
        if token is not None and len(token) < ADMIN_TOKEN_MIN:
            t.problem("token", f"must be at least {ADMIN_TOKEN_MIN} characters, got {len(token)} "
                               "(e.g. the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")
            token = None
        elif token is not None and (token != token.strip() or any(c in token for c in "\r\n")):
            t.problem("token", "must not start or end with spaces nor hold a line break (it is sent in an HTTP header)")
            token = None
        return AdminConfig(bind=bind or d.bind, port=port, token=token or "")


def _server_port_clashes(server: ServerConfig, sip_where: str, metrics_where: str) -> list[str]:
    problems = []
    if server.rtp_port_min <= server.sip_port <= server.rtp_port_max:
        problems.append(
            f"{sip_where}: {server.sip_port} falls inside the RTP port range "
            f"{server.rtp_port_min}-{server.rtp_port_max}"
        )
    if server.metrics_port and server.metrics_port == server.sip_port:
        problems.append(f"{metrics_where}: {server.metrics_port} is also the SIP port (SIP listens on TCP too)")
    return problems


# --------------------------------------------------------------------------- entry points


def parse_config(data: dict) -> Config:
    """Validate a parsed TOML document; ConfigError lists every problem found."""
    return _Parser().parse(data)


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a TOML file; every failure is a ConfigError with a clear message."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([f"{name}: no such file"], source=name) from None
    except IsADirectoryError:
        raise ConfigError([f"{name}: is a directory, not a configuration file"], source=name) from None
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"], source=name) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})"], source=name) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{name}: invalid TOML: {exc}"], source=name) from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=name) from None


def demo_config() -> Config:
    """The built-in demo configuration (SPEC section 3 example)."""
    return parse_config(tomllib.loads(DEMO_CONFIG_TOML))


def with_overrides(
    config: Config,
    *,
    bind: str | None = None,
    sip_port: int | None = None,
    rtp_ports: str | None = None,
) -> Config:
    """Apply command-line flags (they win over the file); ConfigError names the flag."""
    problems: list[str] = []
    changes: dict[str, Any] = {}
    if bind is not None:
        if _is_ip(bind):
            changes["bind"] = bind
        else:
            problems.append(f"--bind: must be an IP address such as \"127.0.0.1\", got {_show(bind)}")
    if sip_port is not None:
        port: Any = sip_port
        if isinstance(port, str) and port.strip().isdecimal():
            port = int(port.strip())
        if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
            changes["sip_port"] = port
        else:
            problems.append(f"--sip-port: must be an integer 1-65535, got {_show(sip_port)}")
    if rtp_ports is not None:
        parsed, range_problems = _port_range_problems(rtp_ports, "--rtp-ports")
        problems.extend(range_problems)
        if parsed:
            changes["rtp_port_min"], changes["rtp_port_max"] = parsed
    if problems:
        raise ConfigError(problems)
    if not changes:
        return config
    server = dataclasses.replace(config.server, **changes)
    clash_where = "--sip-port" if "sip_port" in changes else ("--rtp-ports" if "rtp_port_min" in changes else "[server] sip_port")
    clashes = _server_port_clashes(server, clash_where, "[server] metrics_port")
    tls = config.tls
    if tls is not None and (tls.port == server.sip_port or server.rtp_port_min <= tls.port <= server.rtp_port_max):
        clashes.append(f"{clash_where}: clashes with [tls] port {tls.port}")
    if clashes:
        raise ConfigError(clashes)
    return dataclasses.replace(config, server=server)
