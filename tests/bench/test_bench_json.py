"""``uringstack bench --json`` on tiny runs: schema, consistency of the numbers, no progress noise."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from uringstack.cli import cli

ROW_KEYS = {
    "mode",
    "kind",
    "api",
    "status",
    "reason",
    "ops",
    "bytes",
    "bytes_per_io",
    "bytes_check",
    "seconds",
    "iops",
    "mb_s",
    "lat_us",
    "cpu_pct",
    "cpu_us_per_io",
    "enters_per_io",
    "syscalls_per_io",
    "ratio_to_fio",
    "details",
}
TOP_KEYS = {
    "schema", "started_at", "command", "spec", "file", "worker_cpus", "machine", "fio", "strace", "results", "summary",
    "interleave",
}  # fmt: skip


def _direct_ok(path: Path) -> bool:
    probe = path / "odirect-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


def _bench(args: list[str]) -> tuple[dict[str, Any], str]:
    result = CliRunner().invoke(cli, ["bench", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # stdout is exactly one JSON document: no progress bar, no table
    return json.loads(result.stdout), result.stderr


def _check_row(row: dict[str, Any], block_size: int) -> None:
    assert set(row) == ROW_KEYS
    assert row["status"] == "ok", row["reason"]
    assert row["ops"] > 0 and row["seconds"] > 0 and row["iops"] > 0
    # ops = IOPS x measured seconds (both from the same window)
    assert row["ops"] == pytest.approx(row["iops"] * row["seconds"], rel=0.01)
    assert row["mb_s"] == pytest.approx(row["iops"] * block_size / 1e6, rel=0.02)
    lat = row["lat_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p99_9"]
    # cpu_pct is rounded to 0.1 %: a starved row's few ops can round to 0.0, its CPU per I/O cannot
    assert row["cpu_pct"] >= 0 and row["cpu_us_per_io"] > 0
    # every row counts the bytes its ops returned: one block per I/O
    assert row["bytes_check"] == "ok"
    assert row["bytes_per_io"] == (pytest.approx(block_size, rel=0.02) if row["kind"] == "fio" else block_size)
    per_pct = 1 / 100 * row["seconds"] / row["ops"] * 1e6  # CPU µs per I/O of 1 % CPU
    assert row["cpu_us_per_io"] == pytest.approx(row["cpu_pct"] * per_pct, rel=0.02, abs=0.05 * per_pct)
    assert set(row["ratio_to_fio"]) == {"iops", "p50", "p99"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


def test_randread_json_no_fio(data_dir: Path) -> None:
    direct = _direct_ok(data_dir)
    f = data_dir / "data.bin"
    args = [
        "randread",
        "--file",
        str(f),
        "--file-size",
        "8m",
        "-t",
        "0.6",
        "-q",
        "8",
        "--batch",
        "4",
        "--modes",
        "fallback,uring-single,batched",
        "--no-fio",
    ]
    doc, stderr = _bench(args + ([] if direct else ["--buffered"]))
    assert stderr == ""
    assert set(doc) == TOP_KEYS
    assert doc["schema"] == "uringstack.bench/2"
    assert doc["spec"]["queue_depth"] == 8 and doc["spec"]["workload"] == "randread"
    assert f.stat().st_size == 8 << 20 and doc["file"]["created"] is True
    assert doc["fio"] == {"available": False, "version": None, "reason": "--no-fio"}
    assert doc["interleave"] is None  # back to back, not --rounds
    rows = {r["mode"]: r for r in doc["results"]}
    assert list(rows) == ["fallback", "uring-single", "batched"]
    for row in rows.values():
        _check_row(row, 4096)
        assert row["ratio_to_fio"] == {"iops": None, "p50": None, "p99": None}
    # the fallback plugin's handle makes no io_uring_enter calls; one-op-per-submit makes one per op
    assert rows["fallback"]["details"]["backend"] == "fallback"
    assert rows["fallback"]["enters_per_io"] is None
    assert rows["uring-single"]["enters_per_io"] >= 1.0
    assert 0 < rows["batched"]["enters_per_io"] < rows["uring-single"]["enters_per_io"]
    assert rows["batched"]["details"]["batch"] == 4
    assert doc["summary"]["best_mode"] in rows
    assert doc["summary"]["best_vs_fallback"] > 0
    # the file is reused, not rewritten, when it has the right size
    doc2, _ = _bench(args[:-3] + ["--modes", "batched", "--no-fio"] + ([] if direct else ["--buffered"]))
    assert doc2["file"]["created"] is False


def test_fixedbuf_and_durable_append(data_dir: Path) -> None:
    f = data_dir / "wal.bin"
    doc, _ = _bench(
        [
            "durable-append",
            "--file",
            str(f),
            "--file-size",
            "4m",
            "-t",
            "1.0",
            "--modes",
            "batched,+fixedbuf",
            "--no-fio",
            "--buffered",
        ]
    )
    assert doc["spec"]["queue_depth"] == 1  # durable-append defaults to QD 1
    rows = {r["mode"]: r for r in doc["results"]}
    for row in rows.values():
        _check_row(row, 4096)
    assert rows["+fixedbuf"]["details"]["registered_buffers"] >= 1
    assert rows["+fixedbuf"]["details"]["registered_files"] >= 1


def test_unavailable_rungs_are_skipped_with_a_reason(data_dir: Path) -> None:
    doc, _ = _bench(
        [
            "randread",
            "--file",
            str(data_dir / "d.bin"),
            "--file-size",
            "4m",
            "-t",
            "0.3",
            "--modes",
            "+iopoll,+passthrough,batched",
            "--no-fio",
            "--buffered",
        ]
    )
    for row in doc["results"]:
        assert row["status"] in ("ok", "skipped")
        if row["status"] == "skipped":
            assert row["reason"] and row["ops"] == 0


def test_unknown_mode_is_a_usage_error(data_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "randread", "--modes", "turbo", "--file", str(data_dir / "x")])
    assert result.exit_code == 2
    assert "turbo" in result.output


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed (apt-get install -y fio)")
def test_randread_json_with_fio(data_dir: Path) -> None:
    direct = _direct_ok(data_dir)
    doc, _ = _bench(
        [
            "randread",
            "--file",
            str(data_dir / "d.bin"),
            "--file-size",
            "8m",
            "-t",
            "0.3",
            "-q",
            "4",
            "--modes",
            "batched",
        ]
        + ([] if direct else ["--buffered"])
    )
    assert doc["fio"]["available"] is True and doc["fio"]["version"].startswith("fio")
    rows = {r["mode"]: r for r in doc["results"]}
    assert list(rows) == ["batched", "fio io_uring", "fio libaio"]
    for row in rows.values():
        _check_row(row, 4096)
    fio = rows["fio io_uring"]
    assert fio["kind"] == "fio" and fio["ratio_to_fio"]["iops"] == 1.0
    assert "--iodepth=4" in fio["details"]["command"]
    b = rows["batched"]
    assert b["ratio_to_fio"]["iops"] == pytest.approx(b["iops"] / fio["iops"], rel=1e-3, abs=5e-5)
    assert b["ratio_to_fio"]["p99"] == pytest.approx(b["lat_us"]["p99"] / fio["lat_us"]["p99"], rel=1e-2)
    assert doc["summary"]["best_vs_fio"] == pytest.approx(b["ratio_to_fio"]["iops"], rel=1e-3, abs=5e-5)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_syscalls_under_strace(data_dir: Path) -> None:
    doc, _ = _bench(
        [
            "randread",
            "--file",
            str(data_dir / "d.bin"),
            "--file-size",
            "4m",
            # each mode runs twice (a row, then traced under strace), each window must see
            # completions: under load a fallback row's first completion came 0.14 s after its
            # loop started (pool start-up, the ramp is 0.03 s), a traced fallback run saw 55 ops
            # in 0.3 s, and a 0.3 s window was left empty (a "failed" row, no strace counts)
            "-t",
            "1.0",
            "-q",
            "4",
            "--modes",
            "fallback,batched",
            "--no-fio",
            "--buffered",
            "--syscalls",
        ]
    )
    rows = {r["mode"]: r for r in doc["results"]}
    for row in rows.values():
        assert row["status"] == "ok", f"{row['mode']}: {row['reason']}"
        assert "strace" in row["details"], f"{row['mode']}: {row['details'].get('strace_error')}"
        raw = row["details"]["strace"]
        assert raw["traced_calls"] > raw["startup_calls"] > 0 and raw["traced_ops"] > 0
        assert row["syscalls_per_io"] > 0
    # every fallback read is at least one preadv
    assert rows["fallback"]["syscalls_per_io"] >= 1.0
