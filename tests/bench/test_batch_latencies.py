"""The single-batch hot loop's latency accounting (``BatchLatencies``): one append per batch, no sample lost.

At QD1 the loop's own work per op sits between one completion and the next
submission, so it records a batch with one bound ``append``; every op of the
measured window must still reach the histogram, also across the folds that
bound its memory.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
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

    folds: list[int] = []
    real_fold = BatchLatencies.fold

    def fold(self: BatchLatencies, hist: Any) -> None:
        folds.append(len(self.lat))
        real_fold(self, hist)

    monkeypatch.setattr(api_loops, "BatchLatencies", Tiny)
    monkeypatch.setattr(BatchLatencies, "fold", fold)
    monkeypatch.setattr(api_loops, "_EDGE_NS", 0)  # the loop looks at its window after every batch
    monkeypatch.setattr(Meter, "result", result)
    f = tmp_path / "d.bin"
    runner.prepare_file(str(f), 4 << 20)
    spec = BenchSpec("randread", file_size=4 << 20, duration=0.3, queue_depth=1, direct=False, file=str(f))
    row = runner.run_mode(spec, RUNGS["batched"])
    assert row.status == "ok" and row.ops > 7
    assert seen == [(row.ops, row.ops)]
    assert len(folds) > 1  # folded along the way (past 7 batches), not only at the end


def test_the_qd1_row_counts_only_the_completions_inside_its_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop looks at its window only past a clock compare: the warm-up's batches and the
    one completing past the end must still not count, every one inside must."""
    readings: list[int] = []  # the loop's own clock reads: before and after each batch

    def perf_counter_ns() -> int:
        now = time.perf_counter_ns()
        readings.append(now)
        return now

    windows: list[tuple[int, int, int, int]] = []
    real = Meter.result

    def result(self: Meter, ops: int, nbytes: int, hist: Any, errors: list[str]) -> Any:
        windows.append((self.measure_from, self.until, ops, hist.get_total_count()))
        return real(self, ops, nbytes, hist, errors)

    monkeypatch.setattr(api_loops, "time", SimpleNamespace(perf_counter_ns=perf_counter_ns))
    monkeypatch.setattr(Meter, "result", result)
    f = tmp_path / "d.bin"
    runner.prepare_file(str(f), 4 << 20)
    spec = BenchSpec("randread", file_size=4 << 20, duration=0.3, queue_depth=1, direct=False, file=str(f))
    row = runner.run_mode(spec, RUNGS["batched"])
    assert row.status == "ok"
    ((start, until, ops, recorded),) = windows
    done_at = readings[1::2]  # each batch's completion, as the loop saw it
    assert len(readings) % 2 == 0
    warm = sum(t < start for t in done_at)
    assert warm > 5 and done_at[-1] >= until  # the warm-up ran, the last batch ended past the window
    # the window opens at a completion (the first past the warm-up), which is its edge, not counted
    assert start in done_at
    assert ops == sum(start < t < until for t in done_at) and recorded == ops
    assert row.ops == ops and row.bytes == ops * spec.block_size
