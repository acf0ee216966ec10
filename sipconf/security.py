"""Brute-force protection (SPEC section 3 ``[security]``) and scanner detection.

Failed digest attempts are counted per source address, failed conference
PINs per caller; ``limit`` failures within ``window`` seconds ban the key for
``ban`` seconds. Time is passed in, so this is testable without sleeping.
"""

from __future__ import annotations

import re
import time
from collections import deque
from typing import Callable

from .config import SecurityConfig

#: User-Agent names of SIP scanners and attack tools, matched as whole words,
#: case-insensitively, anywhere in the header. Their requests are dropped
#: without an answer (SPEC section 3), so a scan learns nothing, not even
#: that a SIP server listens here. This is the one list: add a tool here,
#: with a comment saying what it is.
#:
#: Administrators' diagnostic tools are deliberately NOT listed, so that a
#: monitoring probe sees the server as it is: sipsak (``sipsak -s sip:host``,
#: the usual SIP health check), Nagios/Icinga ``check_sip`` (User-Agent
#: ``check_sip 1.01``), SIPp and the like are answered like any client.
SCANNER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",  # SIPVicious svmap/svwar/svcrack's default User-Agent
    "sipvicious",        # SIPVicious under its own name (newer versions, forks)
    "sipcli",            # sipcli, a command-line brute-forcer ("sipcli/v1.8")
    "sip-scan",          # sip-scan, a scanner of whole address ranges
    "iwar",              # iWar, a war-dialler with a SIP mode
    "sundayddr",         # "SundayDDR Worm", a scanner seen in attack traffic
    "vaxsipuseragent",   # VaxSIPUserAgent: an SDK default, sent by toll-fraud bots
    "cantcoco",          # "Cantcoco", a scanner seen in attack traffic
    "pplsip",            # SIPPTS (Pepelux's toolkit) default
    "sipptk",            # SIPPTS, older versions' default
    "sip hacker",        # "SIP Hacker", an attack toolkit
)
_SCANNER_RE = re.compile(r"(?<![a-z0-9])(?:" + "|".join(re.escape(name) for name in SCANNER_AGENTS)
                         + r")(?![a-z0-9])", re.IGNORECASE)

# SPEC 13: wrong admin tokens from one address within [security] window that ban it.
ADMIN_TOKEN_FAILURES = 10

# Bound on how many sources we track at once, so that a flood of spoofed
# addresses cannot grow memory without limit.
MAX_TRACKED = 100_000


def is_scanner(user_agent: str | None) -> bool:
    """True when the User-Agent names a tool of SCANNER_AGENTS (as a word of
    its own: "sipcli/v1.8" does, a softphone called "MySipClient" does not)."""
    if not user_agent:
        return False
    return _SCANNER_RE.search(user_agent) is not None


class FailureCounter:
    def __init__(self, limit: int, window: float, ban: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.ban = ban
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._banned_until: dict[str, float] = {}

    def failed(self, key: str) -> bool:
        """Record one failure; True when this one bans the key."""
        now = self.clock()
        if len(self._failures) >= MAX_TRACKED:
            self._prune(now)
        times = self._failures.setdefault(key, deque())
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            self._banned_until[key] = now + self.ban
            times.clear()
            return True
        return False

    def banned(self, key: str) -> bool:
        until = self._banned_until.get(key)
        if until is None:
            return False
        if until <= self.clock():
            del self._banned_until[key]
            return False
        return True

    def _prune(self, now: float) -> None:
        for key in [k for k, t in self._failures.items() if not t or t[-1] <= now - self.window]:
            del self._failures[key]
        for key in [k for k, until in self._banned_until.items() if until <= now]:
            del self._banned_until[key]


class Security:
    def __init__(self, config: SecurityConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.auth = FailureCounter(config.auth_failures, config.window, config.ban, clock)
        self.pins = FailureCounter(config.pin_failures, config.window, config.ban, clock)
        # Wrong bearer tokens on the admin HTTP port (sipconf/admin), per address.
        self.admin = FailureCounter(ADMIN_TOKEN_FAILURES, config.window, config.ban, clock)

    def reconfigure(self, config: SecurityConfig) -> None:
        """New numbers (config reload); failures counted and bans given so far stay."""
        for counter, limit in ((self.auth, config.auth_failures), (self.pins, config.pin_failures)):
            counter.limit, counter.window, counter.ban = limit, config.window, config.ban
        self.admin.window, self.admin.ban = config.window, config.ban

    def source_banned(self, address: str) -> bool:
        return self.auth.banned(address)

    def auth_failed(self, address: str) -> bool:
        return self.auth.failed(address)

    def caller_banned(self, caller: str) -> bool:
        return self.pins.banned(caller)

    def pin_failed(self, caller: str) -> bool:
        return self.pins.failed(caller)
