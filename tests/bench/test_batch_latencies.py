"""The single-batch hot loop's latency accounting (``BatchLatencies``): one append per batch, no sample lost.

At QD1 the loop's own work per op sits between one completion and the next
submission, so it records a batch with one bound ``append``; every op of the
measured window must still reach the histogram, also across the folds that
bound its memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from uringstack.bench import api_loops, runner
from uringstack.bench.ladder import RUNGS
from uringstack.bench.loops import Meter
from uringstack.bench.metrics import BatchLatencies, new_histogram
from uringstack.bench.spec import BenchSpec


def test_fold_counts_each_latency_once_per_op_and_keeps_the_bound_append() -> None:
    lats = BatchLatencies(4)
    add = lats.append
    hist = new_histogram()
    for ns in (1000, 2000, 0):
        add(ns)
    lats.fold(hist)
    assert hist.get_total_count() == 12 and len(lats.lat) == 0
    assert hist.get_min_value() == 1  # a 0 ns reading still counts (as 1 ns)
    add(5000)  # the append bound before the fold still feeds the samples
    lats.fold(hist)
    assert hist.get_total_count() == 16
    assert hist.get_max_value() == pytest.approx(5000, rel=0.01)


def test_the_qd1_row_records_every_measured_op_across_folds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Tiny(BatchLatencies):
        def __init__(self, ops: int) -> None:
            super().__init__(ops, limit=7)  # fold every 7 batches

    seen: list[tuple[int, int]] = []
    real = Meter.result

    def result(self: Meter, ops: int, nbytes: int, hist: Any, errors: list[str]) -> Any:
        seen.append((ops, hist.get_total_count()))
        return real(self, ops, nbytes, hist, errors)

    monkeypatch.setattr(api_loops, "BatchLatencies", Tiny)
    monkeypatch.setattr(Meter, "result", result)
    f = tmp_path / "d.bin"
    runner.prepare_file(str(f), 4 << 20)
    spec = BenchSpec("randread", file_size=4 << 20, duration=0.3, queue_depth=1, direct=False, file=str(f))
    row = runner.run_mode(spec, RUNGS["batched"])
    assert row.status == "ok" and row.ops > 7
    assert seen == [(row.ops, row.ops)]
