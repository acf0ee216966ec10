import random

from mixer.clock import TickClock


class FakeTime:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_no_drift_over_10000_ticks_with_late_wakeups():
    now = FakeTime()
    clock = TickClock(0.020, now=now)
    clock.start()
    t0 = now.t
    rng = random.Random(1)
    starts = []
    for _ in range(10_000):
        now.t += clock.delay()  # "sleep" until the deadline ...
        now.t += rng.uniform(0.0, 0.004)  # ... and wake up 0-4 ms late
        assert clock.begin_tick() == 0
        starts.append(now.t)
    # tick n started at t0 + n*20ms + (less than 4 ms): lateness never accumulates
    for n in (0, 1, 5_000, 9_999):
        assert 0.0 <= starts[n] - (t0 + n * 0.020) < 0.004 + 1e-9
    assert abs((starts[-1] - starts[0]) - 9_999 * 0.020) < 0.004
    assert len(clock.lateness) == 3000 and max(clock.lateness) < 0.004 + 1e-9
    # a naive "sleep 20 ms after each tick" clock would have drifted by ~20 s here
    assert clock.skipped == 0


def test_skips_ahead_instead_of_bursting_after_a_stall():
    now = FakeTime()
    clock = TickClock(0.020, now=now, max_late_ticks=3)
    clock.start()
    clock.begin_tick()  # tick 0
    now.t += 0.205  # process stalled ~10 ticks
    skipped = clock.begin_tick()
    assert skipped == 9 and clock.tick_index == 10
    assert clock.delay() > 0  # the next tick is in the future: no burst
    # small lateness (within max_late_ticks) is caught up without skipping
    now.t = clock.deadline() + 0.045
    assert clock.begin_tick() == 0
