"""``Wal.counters()["write_ns"]``: the time spent inside the durable writes, and only there.

``uringstack bench wal`` splits a flush cycle with it into the device's part
and the rest (Python, thread hand-offs): it must count each durable write's
whole call, and nothing around it.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from typing import Any

from uringstack.ring.io_backend import FileIO
from uringstack.ring.pending import Pending
from uringstack.wal import Wal, WalConfig
from uringstack.wal.faults import WrappedFileIO

_SLOW_S = 0.02
_TOOK: list[int] = []  # ns per durable write, the wrapper's whole call


class _SlowWrites(WrappedFileIO):
    """Every durable write takes at least _SLOW_S longer (a slow device); records how long each took."""

    def start_write_durable(self, offset: int, buffer: Any, sync: Any, *, wait: bool = False) -> Pending:
        t0 = time.perf_counter_ns()
        time.sleep(_SLOW_S)
        res = self.inner.start_write_durable(offset, buffer, sync, wait=wait)
        _TOOK.append(time.perf_counter_ns() - t0)
        return res


def _slow(inner: FileIO) -> FileIO:
    return _SlowWrites(inner)


def test_write_ns_counts_the_durable_writes(tmp_path: pathlib.Path) -> None:
    _TOOK.clear()
    with Wal.open(tmp_path / "wal", WalConfig(), backend="fallback", wrap_io=_slow) as wal:
        c0 = wal.counters()
        assert c0["write_ns"] == 0 and c0["flushes"] == 0
        t0 = time.perf_counter_ns()
        for i in range(5):  # inline flushes (the appending thread)
            wal.append(b"x" * (i + 1))

        async def main() -> None:  # flushes by the flusher thread
            for _ in range(3):
                await asyncio.wait_for(wal.append_async(b"y"), 5)

        asyncio.run(main())
        elapsed = time.perf_counter_ns() - t0
        c = wal.counters()
    assert c["flushes"] == 8 and len(_TOOK) == 8
    assert c["write_ns"] >= sum(_TOOK)  # every write's whole call
    assert c["write_ns"] <= elapsed  # and nothing outside the appends


def test_write_ns_leaves_out_the_time_between_writes(tmp_path: pathlib.Path) -> None:
    _TOOK.clear()
    with Wal.open(tmp_path / "wal", WalConfig(), backend="fallback", wrap_io=_slow) as wal:
        wal.append(b"a")
        before = wal.counters()["write_ns"]
        time.sleep(0.5)  # idle: no write in flight
        wal.append(b"b")
        after = wal.counters()["write_ns"]
    assert len(_TOOK) == 2 and before >= _TOOK[0]
    # the second write's own time, plus the handle's few microseconds around it, not the idle 0.5 s
    assert _TOOK[1] <= after - before < _TOOK[1] + 0.5e9
