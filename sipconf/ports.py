"""The pool of RTP ports: one even port per call, the odd one above for RTCP."""

from __future__ import annotations

from collections import deque
from typing import Iterable


class RtpPortPool:
    def __init__(self, low: int, high: int, in_use: Iterable[int] = ()) -> None:
        first = low if low % 2 == 0 else low + 1
        # An even port is usable only when its RTCP partner is in range too.
        self._free: deque[int] = deque(range(first, high, 2))
        self.size = len(self._free)
        # Ports still held by live calls (a new range after a reload) are not
        # handed out again until those calls give them back.
        held = set(in_use) & set(self._free)
        if held:
            self._free = deque(port for port in self._free if port not in held)
        self._in_use: set[int] = held

    def acquire(self) -> int | None:
        """The least recently used free port (so a late packet of an ended call
        rarely lands on a new one), or None when every port is taken."""
        if not self._free:
            return None
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        if port in self._in_use:
            self._in_use.discard(port)
            self._free.append(port)

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._in_use)
