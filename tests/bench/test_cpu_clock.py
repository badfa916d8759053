"""A loop's CPU time is measured to the microsecond, not in 10 ms clock ticks.

Regression: ``cpu_seconds`` used ``os.times()``, which counts clock ticks
(10 ms).  A window in which the loop used less than a tick (a worker starved
on a loaded machine completing a few ops) measured 0 % CPU and 0 µs per I/O,
and every short window's CPU was off by up to a tick.
"""

from __future__ import annotations

import time

from uringstack.bench.loops import Meter
from uringstack.bench.spec import BenchSpec


def _work(cpu_s: float) -> float:
    """Burn about *cpu_s* of this thread's CPU; return what it really burned (thread clock)."""
    t0 = time.thread_time()
    n = 0
    while time.thread_time() - t0 < cpu_s:
        n += 1
    return time.thread_time() - t0


def test_a_window_with_under_a_tick_of_cpu_measures_it() -> None:
    meter = Meter(BenchSpec("randread", duration=60.0, ramp=0.0))
    # no warm-up: the first completion starts the clock and opens the window (CPU sampled here)
    assert meter.phase(time.perf_counter_ns()) == 0 and meter.t0
    burned = _work(0.002)  # a fifth of a 10 ms tick
    res = meter.result(1, 4096, None, [])  # the window closes now: CPU sampled again
    assert res.seconds > 0
    # the process clock covers this thread's work (and whatever other threads did meanwhile,
    # a few ms at most in a test process); a tick clock reads 0 or 10 ms
    assert burned <= res.cpu < burned + 0.005
