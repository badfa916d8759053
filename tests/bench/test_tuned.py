"""`uringstack bench randread --tuned`: calibrate the bench file, then the default config's
stack runs what the measurement chose, beside the ladder, with its ratio to the best rung."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from uringstack.bench import runner
from uringstack.bench.spec import BenchSpec, WorkloadName
from uringstack.bench.tuned import TUNED
from uringstack.probe.tune_cache import load_state

pytestmark = pytest.mark.timeout(120)


def _spec(tmp_path: Path, workload: WorkloadName = "randread") -> BenchSpec:
    f = tmp_path / "d.bin"
    runner.prepare_file(str(f), 8 << 20)
    return BenchSpec(workload, file_size=8 << 20, duration=0.3, file=str(f))


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def test_the_tuned_row_runs_what_the_measurement_chose(tmp_path: Path, xdg: Path) -> None:
    spec = _spec(tmp_path)
    doc = runner.run_bench(spec, ["batched", "+fixedbuf"], with_fio=False, tuned=True, tune_budget=5.0)
    rows: dict[str, Any] = {r["mode"]: r for r in doc["results"]}
    tuned = rows[TUNED]
    assert tuned["status"] == "ok", tuned["reason"]
    assert tuned["api"] == "tuned" and doc["summary"]["best_mode"] in ("batched", "+fixedbuf")
    summary = doc["summary"]["tuned"]
    best = rows[summary["best_mode"]]
    assert summary["vs_best"] == pytest.approx(tuned["iops"] / best["iops"], rel=1e-3)
    cal = summary["calibration"]
    assert cal["target"] == spec.file and cal["elapsed_s"] <= 5.0 + 0.5
    [applied] = load_state().records
    record = applied.record
    chosen = record.best_measurement()
    assert chosen is not None and cal["cache"] and cal["best"] == chosen.settings
    details = tuned["details"]
    assert details["measured"] and any(n.startswith(f"tune: using {spec.file}") for n in details["notes"])
    # every dimension the calibration compared is what the default config's stack did
    batch = record.comparison("batch")
    if batch is not None:
        assert details["batch"] == min(int(batch.best), details["queue_depth_per_worker"])
    fixedbuf = record.comparison("fixedbuf")
    if fixedbuf is not None:
        assert (details["registered_buffers"] > 0) == (fixedbuf.best == "on"), details
    sqpoll = record.comparison("sqpoll")
    if sqpoll is not None:
        assert ("SQPOLL" in details["ring_flags"]) == (sqpoll.best == "on"), details
    workers = record.comparison("workers")
    if workers is not None:
        assert len(details["workers"]) == int(workers.best)
        assert details["queue_depth_per_worker"] == spec.queue_depth // int(workers.best)


def test_other_workloads_get_the_row_skipped_with_the_reason(tmp_path: Path, xdg: Path) -> None:
    doc = runner.run_bench(_spec(tmp_path, "randwrite"), ["batched"], with_fio=False, tuned=True, tune_budget=3.0)
    [row] = [r for r in doc["results"] if r["mode"] == TUNED]
    assert row["status"] == "skipped" and row["reason"].startswith("uringstack tune measures random reads")
    assert doc["summary"]["tuned"]["calibration"] is None and not xdg.exists()


def test_a_failed_calibration_fails_the_row_not_the_ladder(
    tmp_path: Path, xdg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uringstack.tune.runner as tune_runner

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tune_runner, "tune", broken)
    spec = _spec(tmp_path)
    doc = runner.run_bench(spec, ["batched"], with_fio=False, tuned=True, tune_budget=3.0)
    rows = {r["mode"]: r for r in doc["results"]}
    assert rows["batched"]["status"] == "ok"
    assert rows[TUNED]["status"] == "failed"
    assert rows[TUNED]["reason"] == f"uringstack tune {spec.file} failed: OSError: [Errno 28] No space left on device"


def test_a_budget_too_short_names_the_option_it_was_set_with(tmp_path: Path, xdg: Path) -> None:
    """bench's calibration budget is --tune-budget; until session 32 its refusal named
    ``tune``'s --budget, an option bench does not have."""
    doc = runner.run_bench(_spec(tmp_path), ["batched"], with_fio=False, tuned=True, tune_budget=0.2)
    [row] = [r for r in doc["results"] if r["mode"] == TUNED]
    assert row["status"] == "failed"
    assert "--tune-budget 0.2: too short" in row["reason"], row["reason"]
    assert "--budget " not in row["reason"].replace("--tune-budget", ""), row["reason"]
