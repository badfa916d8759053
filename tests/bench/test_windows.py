"""The measured window of every loop is the loop's own clock, not a starved main thread's.

Regression: the thread-pool loop took its window (and CPU time) from the main
thread's wake-ups; with 32 threads in tight ``os.preadv`` loops on a hot file
the main thread could not get the GIL back for the whole run, and the window
shrank to microseconds (a "2.23M IOPS" figure from ~80k real reads).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from uringstack.bench.spec import BenchSpec
from uringstack.bench.tool_loops import thread_loop


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
