"""The handle loop's batches kept in flight: a batch that did not move every byte stops the row.

The loop compares a batch's results with the full ones in one step and reads
them op by op only when they differ (as the raw loop's ``us_first_short``): a
short or failed op must still be recorded, its bytes left out of the row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from uringstack.bench import runner
from uringstack.bench.api_loops import asyncio_batch_loop, handle_loop
from uringstack.bench.ladder import RUNGS
from uringstack.bench.spec import BenchSpec
from uringstack.stack import open_stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.prepared import PreparedIO


class _Short:
    """A started batch whose last op reports *short* bytes (what a short read returns)."""

    def __init__(self, pending: Any, short: int) -> None:
        self.pending = pending
        self.n = pending.n
        self.short = short

    def done(self) -> bool:
        return bool(self.pending.done())

    def wait(self) -> list[int]:
        res = list(self.pending.wait())
        res[-1] = self.short
        return res


def _run_row(tmp_path: Path, loop: Any, rung: str) -> Any:
    """*loop* on a 4 MiB hot file: QD 8 in batches of 2 (4 batches or awaits in flight, the
    start/wait path, not run), a 10 s window opened by the first completion."""
    f = tmp_path / "d.bin"
    runner.prepare_file(str(f), 4 << 20)
    spec = BenchSpec(
        "randread", file=str(f), file_size=4 << 20, duration=10.0, ramp=0.0, queue_depth=8, batch=2, direct=False
    )
    stack = open_stack(overrides={"core.cores": [0], "fixedbuf.mode": "off", "sqpoll.mode": "off"})
    try:
        h = stack.open(str(f), writable=False)
        res = h.worker.submit(loop, h, spec, RUNGS[rung], 0).result(timeout=30)
        h.close()
    finally:
        stack.close()
    return res


def _stopped_at_the_short_one(res: Any, short: int, calls: int) -> None:
    assert res.errors == [f"op result {short} (want 4096)"]
    # the loop stopped at that batch (not after the 10 s window), counting its first op's bytes only
    assert 0 < res.ops <= calls * 2 and calls < 30 and res.seconds < 5
    assert res.bytes == res.ops * 4096 - 4096


@pytest.mark.timeout(60)
@pytest.mark.parametrize("short", [100, -5])
def test_a_short_batch_in_flight_is_recorded_and_its_bytes_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, short: int
) -> None:
    starts = [0]
    real = PreparedIO.start

    def start(self: PreparedIO, offsets: Any) -> Any:
        starts[0] += 1
        pending = real(self, offsets)
        return _Short(pending, short) if starts[0] == 20 else pending

    monkeypatch.setattr(PreparedIO, "start", start)
    res = _run_row(tmp_path, handle_loop, "batched")
    _stopped_at_the_short_one(res, short, starts[0])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("short", [100, -5])
def test_a_short_await_of_the_asyncio_batch_row_is_recorded_and_its_bytes_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, short: int
) -> None:
    """The asyncio batch row compares an await's results with the full ones in one step too."""
    calls = [0]
    real = FileHandle.read_many_async

    async def read_many_async(self: FileHandle, offsets: Any, buffers: Any, **kw: Any) -> list[int]:
        calls[0] += 1
        mine = calls[0]
        res = await real(self, offsets, buffers, **kw)
        if mine == 20:
            res = [*res[:-1], short]
        return res

    monkeypatch.setattr(FileHandle, "read_many_async", read_many_async)
    res = _run_row(tmp_path, asyncio_batch_loop, "asyncio batch")
    _stopped_at_the_short_one(res, short, calls[0])
