"""The measured window of every loop is the loop's own clock, not a starved main thread's.

Regression: the thread-pool loop took its window (and CPU time) from the main
thread's wake-ups; with 32 threads in tight ``os.preadv`` loops on a hot file
the main thread could not get the GIL back for the whole run, and the window
shrank to microseconds (a "2.23M IOPS" figure from ~80k real reads).
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.bench import runner
from uringstack.bench.interleave import slice_spec
from uringstack.bench.ladder import RUNGS
from uringstack.bench.loops import Meter
from uringstack.bench.spec import BenchSpec
from uringstack.bench.tool_loops import aiofiles_available, thread_loop
from uringstack.plugins.fallback.pool import ThreadPool


def _hot_file(path: Path, size: int) -> None:
    path.write_bytes(os.urandom(size))
    with open(path, "rb") as f:  # pre-read: every read below hits the page cache
        while f.read(1 << 20):
            pass


@pytest.mark.timeout(60)
def test_thread_pool_window_is_the_measured_duration(tmp_path: Path) -> None:
    f = tmp_path / "hot.bin"
    _hot_file(f, 8 << 20)
    spec = BenchSpec("randread", queue_depth=32, file_size=8 << 20, duration=1.0, direct=False, file=str(f))
    fd = os.open(f, os.O_RDONLY)
    try:
        res = thread_loop(SimpleNamespace(fd=fd, path=str(f)), spec, 0)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    assert not res.errors
    # the window the ops were counted in: ~duration, whatever the main thread's luck
    assert res.seconds == pytest.approx(spec.duration, rel=0.1), res
    assert res.bytes == res.ops * spec.block_size
    # CPU time of a window of ~1 s on at most every CPU of the machine
    assert 0 < res.cpu <= 1.2 * spec.duration * (os.cpu_count() or 1)


def _slow_pool_start(monkeypatch: pytest.MonkeyPatch, prefix: str) -> tuple[list[int], list[tuple[int, int]]]:
    """The first thread pool named *prefix* is slow (0.4 s) to start its first thread.
    Returns when that start ended (filled once it happened) and each Meter's window."""
    ready: list[int] = []
    # (the fallback plugin's pool starts a thread in ThreadPool._start_thread; the event
    # loop's default executor is a ThreadPoolExecutor, in _adjust_thread_count)
    real_adjust = concurrent.futures.ThreadPoolExecutor._adjust_thread_count
    real_start = ThreadPool._start_thread

    def slow_start(name: str) -> None:
        if not ready and name.startswith(prefix):
            time.sleep(0.4)  # the pool's first thread is slow to start
            ready.append(time.perf_counter_ns())

    def slow_adjust(self: concurrent.futures.ThreadPoolExecutor) -> None:
        slow_start(self._thread_name_prefix)
        real_adjust(self)

    def slow_pool_start(self: ThreadPool) -> None:
        slow_start(self.name)
        real_start(self)

    windows: list[tuple[int, int]] = []
    real_result = Meter.result

    def result(self: Meter, ops: int, nbytes: int, hist: Any, errors: list[str]) -> Any:
        windows.append((self.measure_from, self.until))
        return real_result(self, ops, nbytes, hist, errors)

    monkeypatch.setattr(concurrent.futures.ThreadPoolExecutor, "_adjust_thread_count", slow_adjust)
    monkeypatch.setattr(ThreadPool, "_start_thread", slow_pool_start)
    monkeypatch.setattr(Meter, "result", result)
    return ready, windows


@pytest.mark.timeout(60)
def test_a_slow_pool_start_is_before_the_warm_up_not_in_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback plugin's pool starts its threads on the row's first reads; that start-up
    must not be measured.  Regression: the warm-up started with the loop, the pool's first
    completion came up to 0.14 s in (a 0.03 s warm-up), and the row's window held the pool's
    start: here a start slower than warm-up and window together left the row with no I/O."""
    ready, windows = _slow_pool_start(monkeypatch, "uringstack-fallback")
    f = tmp_path / "hot.bin"
    _hot_file(f, 4 << 20)
    spec = BenchSpec("randread", file_size=4 << 20, duration=0.2, queue_depth=8, direct=False, file=str(f))
    row = runner.run_mode(spec, RUNGS["fallback"])
    assert row.details["backend"] == "fallback" and ready  # the slow start happened, in this row
    assert row.status == "ok" and row.ops > 0, row.reason
    ((opened, until),) = windows
    assert opened >= ready[0] + int(spec.ramp_s * 1e9)  # the warm-up ran after the pool's start
    assert until - opened == int(spec.duration * 1e9)


@pytest.mark.timeout(60)
def test_an_aiofiles_slice_of_rounds_measures_after_its_executor_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --rounds every slice of the aiofiles row runs a new event loop, whose default
    executor starts its threads on the first reads: a slice's warm-up and window come after
    that start (the Meter's warm-up opens at the first completion), never over it."""
    if why := aiofiles_available():
        skip_without(why)
    ready, windows = _slow_pool_start(monkeypatch, "asyncio")  # the event loop's default executor
    f = tmp_path / "hot.bin"
    _hot_file(f, 4 << 20)
    whole = BenchSpec("randread", file_size=4 << 20, duration=0.6, queue_depth=8, direct=False, file=str(f))
    one = slice_spec(whole, 3)  # a slice of --rounds 3: 0.2 s after a 0.25 s warm-up
    row = runner.run_mode(one, RUNGS["aiofiles"])
    assert ready and row.status == "ok" and row.ops > 0, row.reason
    ((opened, until),) = windows
    assert opened >= ready[0] + int(one.ramp_s * 1e9)  # the warm-up ran after the executor's start
    assert until - opened == int(one.duration * 1e9)
