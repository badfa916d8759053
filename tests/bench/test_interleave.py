"""``uringstack bench --rounds``: fio and the rows take turns, ratios are medians of per-round pairs."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.requires import skip_without
from uringstack.bench.interleave import (
    Slot,
    apply_ratios,
    combine,
    round_spec,
    run_rounds,
    slice_spec,
)
from uringstack.bench.metrics import ModeResult, hist_mean, new_histogram
from uringstack.bench.prewarm import warm_device
from uringstack.bench.spec import BenchSpec, offset_list
from uringstack.cli import cli


def _res(mode: str, iops: float, p50: float = 100.0, p99: float = 200.0, kind: str = "uringstack") -> ModeResult:
    secs = 1.0
    ops = int(iops * secs)
    return ModeResult(
        mode=mode,
        kind=kind,
        api="fio" if kind == "fio" else "public",
        status="ok",
        ops=ops,
        bytes=ops * 4096,
        seconds=secs,
        iops=iops,
        lat_us={"p50": p50, "p99": p99, "p99_9": 2 * p99, "mean": p50},
        cpu_pct=50.0,
        enters_per_io=0.25 if kind != "fio" else None,
        details={"clat_us": {"p50": p50 - 5, "p99": p99 - 5}} if kind == "fio" else {"backend": "uring"},
    )


def _slots(series: dict[str, list[ModeResult]], calls: list[str]) -> list[Slot]:
    def slot(name: str) -> Slot:
        it = iter(series[name])

        def run(_rnd: int) -> ModeResult:
            calls.append(name)
            return next(it)

        return Slot(name, run)

    return [slot(n) for n in series]


def test_rounds_alternate_their_order_abba() -> None:
    calls: list[str] = []
    series = {n: [_res(n, 1.0)] * 4 for n in ("fio io_uring", "batched", "+fixedbuf")}
    done = run_rounds(_slots(series, calls), 4)
    fwd = ["fio io_uring", "batched", "+fixedbuf"]
    assert calls == fwd + fwd[::-1] + fwd + fwd[::-1]
    assert done.sequence == [fwd, fwd[::-1], fwd, fwd[::-1]]
    # every slice is kept with its round and its place in the round
    assert [(r, p) for r, p, _, _ in done.slices["batched"]] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert [(r, p) for r, p, _, _ in done.slices["fio io_uring"]] == [(0, 0), (1, 2), (2, 0), (3, 2)]


def test_ratio_is_the_median_of_per_round_pairs_not_the_ratio_of_totals() -> None:
    # the device bursts in round 2 while fio runs: totals say 0.34x, the other rounds pair at 0.95x
    fio = [_res("fio io_uring", v, kind="fio") for v in (100.0, 100.0, 1000.0, 100.0, 100.0)]
    row = [_res("batched", 95.0, p50=p) for p in (110.0, 110.0, 300.0, 90.0, 120.0)]
    done = run_rounds(_slots({"fio io_uring": fio, "batched": row}, []), 5)
    rows = [combine(n, done.slices[n]) for n in ("batched", "fio io_uring")]
    apply_ratios(rows)
    b, f = rows
    assert b.iops / f.iops == pytest.approx(475 / 1400)
    assert b.ratio_iops == pytest.approx(0.95)
    assert b.details["ratio_rounds"]["iops"] == [0.95, 0.95, 0.095, 0.95, 0.95]  # the burst round is an outlier
    # latency: per-round p50 ratios 1.1, 1.1, 3.0, 0.9, 1.2 -> median 1.1
    assert b.ratio_p50 == pytest.approx(1.1)
    assert f.ratio_iops == 1.0 and f.details["ratio_rounds"]["p99"] == [1.0] * 5


def test_combined_row_sums_counters_and_takes_median_percentiles() -> None:
    parts = [_res("batched", v, p50=p) for v, p in ((100.0, 10.0), (300.0, 30.0), (200.0, 50.0))]
    parts[1].cpu_pct = 100.0
    row = combine("batched", [(i, 0, float(i), r) for i, r in enumerate(parts)])
    assert row.status == "ok" and row.ops == 600 and row.bytes == 600 * 4096 and row.seconds == 3.0
    assert row.iops == 200.0 and row.lat_us["p50"] == 30.0  # median of 10, 30, 50
    assert row.cpu_pct == pytest.approx(200.0 / 3)  # weighted by seconds: CPU per I/O stays cpu / ops
    assert row.enters_per_io == pytest.approx(0.25)
    assert row.bytes_check(4096) == "ok"
    assert [rec["iops"] for rec in row.details["rounds"]] == [100.0, 300.0, 200.0]
    fio_parts = [_res("fio io_uring", 1.0, p50=p, kind="fio") for p in (9.0, 7.0, 8.0)]
    fio = combine("fio io_uring", [(i, 0, 0.0, r) for i, r in enumerate(fio_parts)])
    assert fio.details["clat_us"]["p50"] == 3.0  # median of the per-round clat p50s (4, 2, 3)


def test_a_failed_slice_fails_the_row_naming_the_round_and_a_skipped_rung_runs_once() -> None:
    bad = ModeResult(mode="batched", kind="uringstack", status="failed", reason="op result -5 (want 4096)")
    skipped = ModeResult(mode="+iopoll", kind="uringstack", status="skipped", reason="no poll queues")
    calls: list[str] = []
    series = {
        "fio io_uring": [_res("fio io_uring", 1.0, kind="fio")] * 3,
        "batched": [_res("batched", 1.0), bad, _res("batched", 1.0)],
        "+iopoll": [skipped],
    }
    done = run_rounds(_slots(series, calls), 3)
    assert calls.count("+iopoll") == 1 and calls.count("batched") == 3
    row = combine("batched", done.slices["batched"])
    assert row.status == "failed" and "1 of 3 slices failed; round 1: op result -5" in row.reason
    assert combine("+iopoll", done.slices["+iopoll"]).status == "skipped"


def test_slice_spec_splits_the_duration_and_keeps_a_warm_up_for_idle_refills() -> None:
    spec = BenchSpec("randread", duration=8.0)
    one = slice_spec(spec, 8)
    assert one.duration == 1.0 and one.ramp_s == 0.25  # a tenth of 1 s, raised to 0.25 s
    assert slice_spec(BenchSpec("randread", duration=60.0), 4).ramp_s == 0.5
    assert slice_spec(BenchSpec("randread", duration=8.0, ramp=0.0), 8).ramp_s == 0.0


def test_each_round_reads_its_own_offsets() -> None:
    # a row re-reading the same blocks every slice would find them hot in a device cache,
    # while fio draws fresh offsets each run
    one = slice_spec(BenchSpec("randread", duration=4.0, file_size=1 << 30), 4)
    streams = [offset_list(round_spec(one, r), 0, 64) for r in range(4)]
    assert len({tuple(s) for s in streams}) == 4
    assert round_spec(one, 2).duration == one.duration


def test_hist_mean_is_hdrh_mean() -> None:
    h = new_histogram()
    for v in (1_000, 12_345, 12_345, 987_654, 50_000_000, 3):
        h.record_value(v)
    assert hist_mean(h) == h.get_mean_value()
    assert hist_mean(new_histogram()) == 0.0


def test_warm_device_reads_the_whole_file(tmp_path: Path) -> None:
    f = tmp_path / "d.bin"
    f.write_bytes(b"x" * (3 << 20))
    try:
        got = warm_device(str(f), 3 << 20)
    except OSError as exc:  # tmpfs refuses O_DIRECT
        skip_without(f"O_DIRECT on {tmp_path} ({exc.strerror})")
    assert got["bytes"] == 3 << 20 and got["seconds"] >= 0


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(cli, ["bench", "randread", *args], catch_exceptions=False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--no-fio"], "cannot run with --no-fio"),
        (["--scale-workers", "2"], "does not combine with --scale-workers"),
        (["-t", "0.1"], "slices under 0.05 s"),
    ],
)
def test_rounds_usage_errors_are_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    result = _invoke(["--file", str(tmp_path / "x.bin"), "--file-size", "1m", "--rounds", "3", *extra])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "x.bin").exists()  # refused before any file is written


def test_interleaved_run_with_fio(tmp_path: Path) -> None:
    if shutil.which("fio") is None:
        skip_without("fio (apt-get install -y fio)")
    args = ["--file", str(tmp_path / "d.bin"), "--file-size", "8m", "-t", "0.4", "-q", "4", "--rounds", "2"]
    result = _invoke([*args, "--settle", "0.1", "--modes", "batched", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    il = doc["interleave"]
    assert il["rounds"] == 2 and il["slice_s"] == 0.2 and il["reference"] == "fio io_uring"
    assert il["sequence"] == [["fio io_uring", "batched"], ["batched", "fio io_uring"]]
    assert il["settle"]["seconds"] == 0.1 and il["settle"]["status"] == "ok"
    if doc["spec"]["direct"]:
        assert il["device_warm"]["bytes"] == 8 << 20
    rows = {r["mode"]: r for r in doc["results"]}
    assert list(rows) == ["batched", "fio io_uring"]  # no libaio slices: the ratios do not use it
    b, f = rows["batched"], rows["fio io_uring"]
    for r in (b, f):
        assert r["status"] == "ok", r["reason"]
        assert [x["round"] for x in r["details"]["rounds"]] == [0, 1]
        assert r["ops"] == sum(x["ops"] for x in r["details"]["rounds"])
        assert r["bytes_check"] == "ok"
    assert "--runtime=200ms" in f["details"]["command"] and set(f["details"]["clat_us"]) == {"p50", "p99"}
    pairs = [x["iops"] / y["iops"] for x, y in zip(b["details"]["rounds"], f["details"]["rounds"], strict=True)]
    # the JSON rounds ratios to 4 decimals: allow that beside the relative error (a starved
    # slice's ratio can be 0.0027, where 4 decimals are 0.4 % of it)
    assert b["ratio_to_fio"]["iops"] == pytest.approx(statistics.median(pairs), rel=1e-3, abs=5e-5)
    assert b["details"]["ratio_rounds"]["iops"] == pytest.approx(pairs, rel=1e-3, abs=5e-5)
    assert doc["summary"]["best_vs_fio"] == pytest.approx(b["ratio_to_fio"]["iops"], rel=1e-3, abs=5e-5)
