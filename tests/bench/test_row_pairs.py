"""Row-against-row ratios (issue 14: ``asyncio batch`` over ``batched``, ``asyncio read`` over
``aiofiles``, and ``summary.best_vs_fallback``): with ``--rounds`` each is the median of the
per-round pairs (both rows measured in the same round), as the ratios to fio are."""

from __future__ import annotations

import io
import statistics
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from uringstack.bench import fio as fio_mod
from uringstack.bench import runner
from uringstack.bench.ladder import Rung
from uringstack.bench.metrics import ModeResult
from uringstack.bench.report import render
from uringstack.bench.spec import BenchSpec
from uringstack.testing import make_fake_capabilities

# IOPS of each row per round (one call per round).  The host speeds up round by round, and
# in round 3 `asyncio batch` loses its CPU: the pairs are 0.9, 0.85, 0.833, 0.25, 0.88
# (median 0.85), while the rows' medians give 170 / 300 = 0.567 and the totals 1050 / 1500 = 0.70.
SERIES = {
    "fio io_uring": [1000.0] * 5,
    "batched": [100.0, 200.0, 300.0, 400.0, 500.0],
    "asyncio batch": [90.0, 170.0, 250.0, 100.0, 440.0],
    # pairs 10, 12, 8, 11, 9 -> 10; medians 160 / 20 = 8; totals 1050 / 110 = 9.55
    "asyncio read": [100.0, 120.0, 160.0, 220.0, 450.0],
    "aiofiles": [10.0, 10.0, 20.0, 20.0, 50.0],
    # batched (the best public row) over fallback: pairs 2, 4, 3, 4, 4 -> 4; medians 3; totals 3.53
    "fallback": [50.0, 50.0, 100.0, 100.0, 125.0],
}
PAIRED = {"asyncio batch": 0.85, "asyncio read": 10.0}


def _res(mode: str, iops: float, kind: str) -> ModeResult:
    return ModeResult(
        mode=mode,
        kind=kind,
        api="fio" if kind == "fio" else "tool" if mode == "aiofiles" else "public",
        status="ok",
        ops=int(iops),
        bytes=int(iops) * 4096,
        seconds=1.0,
        iops=iops,
        lat_us={"p50": 1e6 / iops, "p99": 2e6 / iops, "p99_9": 3e6 / iops, "mean": 1e6 / iops},
        cpu_pct=100.0,
        details={},
    )


def _bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rounds: int) -> dict[str, Any]:
    monkeypatch.setattr("uringstack.probe.probe", lambda *a, **k: make_fake_capabilities(cores=[0, 1]))
    calls: dict[str, int] = {}

    def nth(mode: str, kind: str) -> ModeResult:
        n = calls[mode] = calls.get(mode, -1) + 1
        return _res(mode, SERIES[mode][n], kind)

    def fake_fio(path: str, spec: BenchSpec, engine: str, *a: Any, **k: Any) -> ModeResult:
        return nth(f"fio {engine}", "fio")

    def fake_mode(spec: BenchSpec, rung: Rung, caps: Any = None, tick: Any = None, io: bool = True) -> ModeResult:
        return nth(rung.name, "uringstack")

    monkeypatch.setattr(fio_mod, "fio_path", lambda: "fio")
    monkeypatch.setattr(fio_mod, "fio_version", lambda path: "fio-3.33")
    monkeypatch.setattr(fio_mod, "run_fio", fake_fio)
    monkeypatch.setattr(runner, "run_mode", fake_mode)
    monkeypatch.setattr(runner, "fio_engines", lambda *a, **k: ["io_uring"])
    spec = BenchSpec("randread", file=str(tmp_path / "d.bin"), file_size=1 << 20, duration=0.5, direct=False, cpus=[1])
    modes = ["fallback", "batched", "asyncio read", "asyncio batch", "aiofiles"]
    return runner.run_bench(spec, modes, rounds=rounds, settle=0.0)


def test_with_rounds_a_row_against_a_row_is_the_median_of_the_pairs_of_each_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = _bench(tmp_path, monkeypatch, 5)
    rows = {r["mode"]: r for r in doc["results"]}
    for mode, ref in runner.ROW_REFERENCES.items():
        vs = rows[mode]["details"]["vs_row"]
        pairs = [a / b for a, b in zip(SERIES[mode], SERIES[ref], strict=True)]
        assert vs["reference"] == ref
        assert vs["ratio_rounds"]["iops"] == pytest.approx(pairs, abs=1e-4)  # kept, one per round
        assert vs["iops"] == pytest.approx(PAIRED[mode], abs=1e-4) == statistics.median(pairs)
        # neither the rows' totals nor their medians: those mix rounds of different host speeds
        assert vs["iops"] != pytest.approx(rows[mode]["iops"] / rows[ref]["iops"], abs=0.02)
        meds = statistics.median(SERIES[mode]) / statistics.median(SERIES[ref])
        assert vs["iops"] != pytest.approx(meds, abs=0.02)
        # latency pairs too (here each round's p50 is 1/IOPS: the inverse pairs)
        assert vs["p50"] == pytest.approx(statistics.median(1 / p for p in pairs), abs=1e-4)
    assert "vs_row" not in rows["batched"]["details"] and "vs_row" not in rows["fallback"]["details"]
    s = doc["summary"]
    assert s["best_mode"] == "batched" and s["best_vs_fallback"] == pytest.approx(4.0)
    # the table shows the medians and the range of the pairs beside them
    out = io.StringIO()
    render(doc, Console(file=out, width=400))
    text = out.getvalue()
    assert "asyncio batch vs batched: IOPS 0.85x" in text
    assert "(medians of per-round pairs; the pairs: IOPS 0.25-0.90" in text
    assert "asyncio read vs aiofiles: IOPS 10.00x" in text and "4.00x fallback" in text


def test_back_to_back_a_row_against_a_row_is_the_ratio_of_the_two_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = _bench(tmp_path, monkeypatch, 1)
    rows = {r["mode"]: r for r in doc["results"]}
    vs = rows["asyncio batch"]["details"]["vs_row"]
    assert vs["reference"] == "batched" and vs["iops"] == pytest.approx(0.9) and "ratio_rounds" not in vs
    assert rows["asyncio read"]["details"]["vs_row"]["iops"] == pytest.approx(10.0)
    assert doc["summary"]["best_vs_fallback"] == pytest.approx(2.0)
