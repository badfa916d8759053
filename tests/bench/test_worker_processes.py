"""``python -m uringstack.bench.child SPEC MODE --processes``: workers as processes, rows merged."""

from __future__ import annotations

from typing import Any

import pytest

from uringstack.bench.processes import merge_processes, run_processes
from uringstack.bench.spec import BenchSpec


def _row(iops: float, ops: int, cpu: float, p99: float, enters: float | None = 0.25) -> dict[str, Any]:
    return {
        "status": "ok", "reason": "", "api": "public", "ops": ops, "bytes": ops * 4096, "seconds": 2.0,
        "iops": iops, "mb_s": iops * 4096 / 1e6, "cpu_pct": cpu, "enters_per_io": enters,
        "lat_us": {"p50": p99 / 2, "p99": p99, "p99_9": p99 * 2, "mean": p99 / 3},
        "details": {"backend": "uring", "batch": 4},
    }  # fmt: skip


def test_merge_adds_ops_and_cpu_and_keeps_the_worst_latency() -> None:
    row = merge_processes([_row(100.0, 200, 90.0, 50.0), _row(300.0, 600, 80.0, 70.0, 0.5)], "batched")
    assert (row.status, row.ops, row.bytes, row.iops) == ("ok", 800, 800 * 4096, 400.0)
    assert row.cpu_pct == 170.0  # two processes' CPU over the same window
    assert row.lat_us["p99"] == 70.0 and row.lat_us["p50"] == 35.0
    assert row.enters_per_io == pytest.approx((0.25 * 200 + 0.5 * 600) / 800)
    assert row.details["workers_as"] == "processes" and row.details["per_process_iops"] == [100.0, 300.0]
    assert row.cpu_us_per_io == pytest.approx(1.70 * 2.0 / 800 * 1e6)


def test_a_failed_process_fails_the_row() -> None:
    bad = {**_row(0.0, 0, 0.0, 0.0), "status": "failed", "reason": "op result -5 (want 4096)"}
    row = merge_processes([_row(100.0, 200, 90.0, 50.0), bad], "batched")
    assert (row.status, row.reason) == ("failed", "op result -5 (want 4096)")


def test_sequential_workloads_are_refused() -> None:
    spec = BenchSpec(workload="seqwrite", workers=2, file="/nonexistent")
    with pytest.raises(ValueError, match="random workloads only"):
        run_processes(spec, "batched")
