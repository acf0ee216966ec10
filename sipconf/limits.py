"""Per-source limits on SIP input: requests per second (token buckets) and
transactions in flight (requests without a final answer yet).

Sans-IO: time is passed in, nothing sleeps, nothing touches a socket. The
server asks ``SourceLimits.admit`` before parsing a message and drops it
(counted in ``sipconf_sip_dropped{reason=...}``) when the answer is a reason.
Trusted trunk sources get their own, higher numbers: a SIPp load test through
the trunk legitimately sends hundreds of calls per second from one address.

Memory is bounded too: at most ``MAX_TRACKED`` sources are remembered; idle
ones are forgotten first, so a flood of spoofed addresses cannot grow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Bound on sources tracked at once (each costs ~200 bytes).
MAX_TRACKED = 50_000
# An unanswered transaction older than this is forgotten (64*T1: no
# transaction legitimately waits longer for its final answer).
IN_FLIGHT_MAX_AGE = 32.0

REASON_RATE = "rate"
REASON_IN_FLIGHT = "in_flight"


@dataclass(frozen=True)
class LimitNumbers:
    rate: float          # messages per second, sustained
    burst: float         # bucket size: messages accepted at once after a quiet spell
    in_flight: int       # requests of this source still waiting for our final answer


# A desk phone sends a few messages a second at most; a small office behind
# one NAT address a few dozen. SIPp calls with digest auth send 5 messages per
# call, so 100/s still lets a developer run 20 calls/s from an extension.
UNTRUSTED = LimitNumbers(rate=100.0, burst=200.0, in_flight=64)
TRUNK = LimitNumbers(rate=5000.0, burst=10000.0, in_flight=4096)


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; each message takes one."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def full_at(self, now: float) -> bool:
        """True when the bucket would be full: the source has been quiet."""
        return self.tokens + max(0.0, now - self.stamp) * self.rate >= self.burst


class _Source:
    __slots__ = ("bucket", "in_flight", "numbers")

    def __init__(self, numbers: LimitNumbers, now: float) -> None:
        self.numbers = numbers
        self.bucket = TokenBucket(numbers.rate, numbers.burst, now)
        self.in_flight: dict[object, float] = {}  # transaction key -> since


class SourceLimits:
    def __init__(self, untrusted: LimitNumbers = UNTRUSTED, trunk: LimitNumbers = TRUNK,
                 *, is_trusted: Callable[[str], bool] = lambda host: False,
                 max_tracked: int = MAX_TRACKED) -> None:
        self.untrusted = untrusted
        self.trunk = trunk
        # Asked once per newly seen source, not per message.
        self.is_trusted = is_trusted
        self.max_tracked = max_tracked
        self._sources: dict[str, _Source] = {}
        self._owner: dict[object, str] = {}  # transaction key -> source host
        self._rejudge: set[str] = set()  # sources to classify again (after a reload)

    def reconfigure(self, *, is_trusted: Callable[[str], bool] | None = None) -> None:
        """The trunk sources changed (config reload): every source is judged
        again on its next message; transactions in flight stay counted."""
        if is_trusted is not None:
            self.is_trusted = is_trusted
        for host in [h for h, s in self._sources.items() if not s.in_flight]:
            del self._sources[host]
        self._rejudge = set(self._sources)

    def _source(self, host: str, now: float) -> _Source:
        source = self._sources.get(host)
        if source is None or host in self._rejudge:
            numbers = self.trunk if self.is_trusted(host) else self.untrusted
            if source is None:
                if len(self._sources) >= self.max_tracked:
                    self._forget_idle(now)
                source = self._sources[host] = _Source(numbers, now)
            else:
                self._rejudge.discard(host)
                source.numbers = numbers
                source.bucket = TokenBucket(numbers.rate, numbers.burst, now)
        return source

    def admit(self, host: str, now: float) -> str | None:
        """One message from ``host``: None to accept it, or the reason to drop it."""
        if not self._source(host, now).bucket.take(now):
            return REASON_RATE
        return None

    # -- transactions in flight -----------------------------------------------------

    def may_open(self, host: str, now: float) -> bool:
        """Whether ``host`` may start one more transaction."""
        source = self._source(host, now)
        limit = source.numbers.in_flight
        if len(source.in_flight) >= limit:
            self._expire(source, now)
        return len(source.in_flight) < limit

    def opened(self, host: str, key: object, now: float) -> None:
        source = self._source(host, now)
        source.in_flight[key] = now
        self._owner[key] = host

    def answered(self, key: object) -> None:
        """The transaction got its final answer (or was given up)."""
        host = self._owner.pop(key, None)
        if host is not None:
            source = self._sources.get(host)
            if source is not None:
                source.in_flight.pop(key, None)

    def in_flight(self, host: str) -> int:
        source = self._sources.get(host)
        return len(source.in_flight) if source is not None else 0

    def __len__(self) -> int:
        return len(self._sources)

    # -- housekeeping ---------------------------------------------------------------

    def _expire(self, source: _Source, now: float) -> None:
        for key in [k for k, since in source.in_flight.items() if now - since > IN_FLIGHT_MAX_AGE]:
            del source.in_flight[key]
            self._owner.pop(key, None)

    def _forget_idle(self, now: float) -> None:
        for host in [h for h, s in self._sources.items() if not s.in_flight and s.bucket.full_at(now)]:
            del self._sources[host]
        if len(self._sources) >= self.max_tracked:
            # Everyone is busy (a spoofed-address flood): forget the oldest half.
            # They start again with a full bucket, which is the price of a bound.
            for host in list(self._sources)[: len(self._sources) // 2]:
                for key in self._sources.pop(host).in_flight:
                    self._owner.pop(key, None)
        self._rejudge &= set(self._sources)
