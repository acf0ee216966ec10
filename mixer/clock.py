"""One drift-free 20 ms clock for the whole process.

Deadlines are ``start + n * period`` computed from a monotonic start time,
never "sleep 20 ms" (which accumulates every wake-up's lateness). When the
process falls more than ``max_late_ticks`` behind, it skips ahead to the
current tick rather than bursting the missed ones (a burst would send a
flood of packets and drain jitter buffers for nothing).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable


class TickClock:
    def __init__(
        self,
        period: float = 0.020,
        *,
        now: Callable[[], float] = time.monotonic,
        max_late_ticks: int = 3,
        history: int = 3000,
    ) -> None:
        self.period = period
        self.now = now
        self.max_late_ticks = max_late_ticks
        self.lateness: deque[float] = deque(maxlen=history)  # seconds, per tick
        self.skipped = 0  # ticks skipped in total
        self.tick_index = -1  # index of the tick being processed
        self._t0 = 0.0
        self._n = 0

    def start(self) -> None:
        self._t0 = self.now()
        self._n = 0
        self.tick_index = -1

    def deadline(self, n: int | None = None) -> float:
        """When tick ``n`` (default: the next one) is due."""
        return self._t0 + (self._n if n is None else n) * self.period

    def delay(self) -> float:
        """Seconds until the next tick is due (0 when already due)."""
        return max(0.0, self.deadline() - self.now())

    def begin_tick(self) -> int:
        """Call when woken for the next tick. Records its lateness and returns
        how many ticks were skipped to catch up (0 normally)."""
        t = self.now()
        late = t - self.deadline()
        skipped = 0
        if late > self.max_late_ticks * self.period:
            current = int((t - self._t0) / self.period)
            skipped = current - self._n
            self._n = current
            self.skipped += skipped
            late = t - self.deadline()
        self.lateness.append(late)
        self.tick_index = self._n
        self._n += 1
        return skipped
