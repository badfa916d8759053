"""The "asyncio read" row's own loop: every op it counts has its latency sample, none lost to a fold."""

from __future__ import annotations

from pathlib import Path

import pytest

import uringstack
from uringstack.bench import api_loops, runner
from uringstack.bench.ladder import RUNGS
from uringstack.bench.spec import BenchSpec


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fold_at", [7, 1 << 22])
def test_asyncio_read_loop_keeps_one_sample_per_counted_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fold_at: int
) -> None:
    # fold_at=7: the flat samples are folded into the histogram many times while the
    # 8 tasks run (each task appends through one bound method: a fold must not strand it).
    monkeypatch.setattr(api_loops, "_FLUSH_SAMPLES", fold_at)
    f = tmp_path / "d.bin"
    runner.prepare_file(str(f), 1 << 20)
    spec = BenchSpec("randread", file_size=1 << 20, duration=0.3, queue_depth=8, direct=False, file=str(f))
    with uringstack.open_stack() as stack, stack.open(str(f), direct=False, writable=False) as h:
        res = api_loops.asyncio_loop(h, spec, RUNGS["asyncio read"], 0)
    assert not res.errors
    assert res.ops > fold_at or fold_at > 1000
    assert res.ops > 0 and res.bytes == res.ops * spec.block_size
    assert res.hist.get_total_count() == res.ops
