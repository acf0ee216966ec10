"""Brute-force protection (SPEC section 3 ``[security]``) and scanner detection.

Failed digest attempts are counted per source address, failed conference
PINs per caller; ``limit`` failures within ``window`` seconds ban the key for
``ban`` seconds. Time is passed in, so this is testable without sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

from .config import SecurityConfig

SCANNER_AGENTS = ("friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sipsak", "iwar",
                  "sundayddr", "vaxsipuseragent", "cantcoco", "pplsip", "sip hacker")

# SPEC 13: wrong admin tokens from one address within [security] window that ban it.
ADMIN_TOKEN_FAILURES = 10

# Bound on how many sources we track at once, so that a flood of spoofed
# addresses cannot grow memory without limit.
MAX_TRACKED = 100_000


def is_scanner(user_agent: str | None) -> bool:
    if not user_agent:
        return False
    agent = user_agent.lower()
    return any(name in agent for name in SCANNER_AGENTS)


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
