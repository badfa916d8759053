"""scripts/benchmarks-md.py: BENCHMARKS.md's tables come from the JSON, medians of per-run ratios."""
# ruff: noqa: RUF001  (the generated Markdown has multiplication signs and en dashes)

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.script_loader import load_script


def _script() -> ModuleType:
    return load_script("benchmarks-md.py", "benchmarks_md")


def _row(mode: str, iops: float, api: str = "public", p50: float = 100.0) -> dict[str, Any]:
    return {
        "mode": mode,
        "kind": "fio" if api == "fio" else "uringstack",
        "api": api,
        "status": "ok",
        "reason": "",
        "iops": iops,
        "bytes_per_io": 4096.0,
        "bytes_check": "ok",
        "cpu_us_per_io": 10.0,
        "lat_us": {"p50": p50, "p99": 2 * p50},
    }


def _doc(when: str, batched: float, fio: float) -> dict[str, Any]:
    return {
        "started_at": when,
        "command": "uringstack bench randread --buffered -t 3 --json",
        "spec": {"workload": "randread", "block_size": 4096, "queue_depth": 32, "workers": 1, "direct": False},
        "file": {"path": "/f", "block_device": False, "device": {"block": "vda"}},
        "machine": {"kernel": "6.x", "nproc": 2, "cpu_model": "cpu"},
        "fio": {"version": "fio-3.33"},
        "worker_cpus": {"cpus": [1], "reason": "irq"},
        "results": [_row("batched", batched), _row("fio io_uring", fio, "fio")],
        "summary": {},
    }


def test_medians_of_per_run_ratios_and_markers(tmp_path: Path) -> None:
    mod = _script()
    # per-run ratios 0.5, 1.0, 0.9 -> median 0.90; the ratio of the medians would be 0.75
    runs = [_doc("2026-01-01T00:00:00", 50, 100), _doc("2026-01-01T00:01:00", 200, 200), _doc("t3", 90, 100)]
    paths = []
    for i, d in enumerate(runs):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(d))
        paths.append(p)
    md = tmp_path / "B.md"
    md.write_text(f"head\n{mod.BEGIN}\nold generated\n{mod.END}\ntail hand-written\n")
    assert mod.main([*map(str, paths), "--md", str(md), "--png-dir", str(tmp_path)]) == 0
    text = md.read_text()
    assert text.startswith("head\n") and text.rstrip().endswith("tail hand-written")
    assert "old generated" not in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| batched |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[2] == "90 (50\u2013200)" and cells[3] == "0.90" and cells[-1] == "3/3"
    # the target row for the buffered QD32 group reads the same median, and says it is met
    target = next(ln for ln in text.splitlines() if "buffered hot QD32" in ln)
    assert "batched: 0.90" in target and "**yes**" in target


def test_a_ratio_that_misses_its_target_never_reads_as_meeting_it(tmp_path: Path) -> None:
    """sha256 hot's median 0.997 was shown "1.00" beside "**no**" against ≥ 1.0 (session 47)."""
    mod = _script()
    assert mod._judged(0.997, 1.0) == "0.997"
    assert mod._judged(0.9496, 0.95) == "0.9496"  # three decimals would still read "0.950"
    assert mod._judged(1.004, 1.0) == "1.00" and mod._judged(0.8, 0.8) == "0.80"
    assert mod._judged(0.93, 0.95) == "0.93" and mod._judged(None, 1.0) == "-"
    # through a target row: per-run ratios 0.897 each against ≥ 0.90
    paths = []
    for i in range(3):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(_doc(f"2026-01-01T00:0{i}:00", 897, 1000)))
        paths.append(p)
    md = tmp_path / "B.md"
    md.write_text(f"{mod.BEGIN}\n{mod.END}\n")
    assert mod.main([*map(str, paths), "--md", str(md), "--png-dir", str(tmp_path)]) == 0
    target = next(ln for ln in md.read_text().splitlines() if "buffered hot QD32" in ln)
    assert "batched: 0.897" in target and "**no**" in target


def test_missing_result_file_is_one_line_error(tmp_path: Path, capsys: Any) -> None:
    assert _script().main([str(tmp_path / "nope.json"), "--stdout"]) == 2
    assert "no such result file" in capsys.readouterr().err


def _vm_doc(path: str, kernel: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    doc = _doc("2026-12-01T04:00:00", 100, 100)
    doc.update(
        command=f"uringstack bench randread --target {path} -t 2 --json",
        spec={"workload": "randread", "block_size": 4096, "queue_depth": 32, "workers": 1, "direct": True},
        file={"path": path, "block_device": True, "device": {"block": path.rsplit("/", 1)[1]}},
        machine={"kernel": kernel, "nproc": 2, "cpu_model": "QEMU TCG"},
        results=[_row("fio io_uring", 1000, "fio"), *rows],
    )
    return doc


def test_nvme_vm_targets_are_judged_from_the_612_runs_against_their_own_fio_jobs(tmp_path: Path) -> None:
    mod = _script()
    nvme = [
        # per-run ratios to fio io_uring_cmd: 0.9, 0.7, 0.85 -> median 0.85 (met)
        _vm_doc("/dev/nvme0n1", "6.12.118+deb13-amd64",
                [_row("+passthrough", p), _row("fio io_uring_cmd", c, "fio"),
                 _row("+iopoll", 50), _row("fio io_uring hipri", 100, "fio")])
        for p, c in ((90, 100), (70, 100), (170, 200))
    ]  # fmt: skip
    nullb = [
        _vm_doc("/dev/nullb0", "6.12.118+deb13-amd64", [_row("+iopoll", i), _row("fio io_uring hipri", 100, "fio")])
        for i in (60, 70)
    ]
    # a 6.1 run of the same namespace is its own group and never judges the 6.12 target
    old = _vm_doc("/dev/nvme0n1", "6.1.0-57-amd64", [_row("+passthrough", 10), _row("fio io_uring_cmd", 100, "fio")])
    # a run with other batches than the default is its own group, not a run of the target's
    big = _vm_doc("/dev/nvme0n1", "6.12.118+deb13-amd64", [_row("+passthrough", 1), _row("fio io_uring_cmd", 9, "fio")])
    big["spec"]["batch"] = 16
    paths = []
    for i, d in enumerate([big, *nvme, *nullb, old]):
        p = tmp_path / f"vm{i}.json"
        p.write_text(json.dumps(d))
        paths.append(p)
    text = mod.generate(paths, None)
    passthrough = next(ln for ln in text.splitlines() if "passthrough handle" in ln)
    # shown, not judged: the bigger batches and the 6.1 run
    assert (
        "| +passthrough: 0.85; `--batch 16`: 0.11 (1 run(s)); "
        "on 6.1 (1 run(s), not judged): +passthrough: 0.10 | **yes** |" in passthrough
    )
    iopoll = next(ln for ln in text.splitlines() if "IOPOLL handle" in ln)
    assert "+iopoll: 0.65; on the emulated NVMe namespace: +iopoll: 0.50" in iopoll and "**no**" in iopoll
    assert "/dev/nvme0n1, kernel 6.1.0-57-amd64" in text and "/dev/nvme0n1, kernel 6.12.118+deb13-amd64" in text
    assert "/dev/nvme0n1, kernel 6.12.118+deb13-amd64, --batch 16" in text


def test_the_handle_targets_are_judged_on_the_better_of_the_batched_and_streamed_rows(tmp_path: Path) -> None:
    """``+iopoll`` and ``streamed +iopoll`` are the same handle driven two ways through the
    public API: the target takes the better one (as the O_DIRECT target takes the best public
    mode) and shows the other beside it."""
    mod = _script()
    nullb = [
        _vm_doc("/dev/nullb0", "6.12.118+deb13-amd64",
                [_row("+iopoll", 20), _row("streamed +iopoll", s), _row("fio io_uring hipri", 100, "fio")])
        for s in (150, 190, 170)
    ]  # fmt: skip
    nvme = [
        _vm_doc("/dev/nvme0n1", "6.12.118+deb13-amd64",
                [_row("+passthrough", 50), _row("streamed +passthrough", 40), _row("fio io_uring_cmd", 100, "fio")])
    ]  # fmt: skip
    paths = []
    for i, d in enumerate([*nullb, *nvme]):
        p = tmp_path / f"vm{i}.json"
        p.write_text(json.dumps(d))
        paths.append(p)
    lines = mod.generate(paths, None).splitlines()
    iopoll = next(ln for ln in lines if "IOPOLL handle" in ln)
    assert "| streamed +iopoll: 1.70 (+iopoll 0.20) | **yes** |" in iopoll, iopoll
    passthrough = next(ln for ln in lines if "passthrough handle" in ln)
    assert "| +passthrough: 0.50 (streamed +passthrough 0.40) | **no** |" in passthrough, passthrough


def test_a_bigger_batch_run_of_the_hot_workload_is_shown_beside_the_target_never_judged(tmp_path: Path) -> None:
    mod = _script()
    # default batches: per-run ratios 0.5 and 0.7 -> median 0.60 (missed)
    default = [_doc("2026-12-01T00:00:00", b, 100) for b in (50, 70)]
    # --batch 32 first in the files (the generator once judged whichever group came first): 1.4, shown only
    big = _doc("2026-12-01T00:10:00", 140, 100)
    big["spec"]["batch"] = 32
    paths = []
    for i, d in enumerate([big, *default]):
        p = tmp_path / f"hot{i}.json"
        p.write_text(json.dumps(d))
        paths.append(p)
    text = mod.generate(paths, None)
    line = next(ln for ln in text.splitlines() if "buffered hot QD32, 1 worker" in ln)
    assert "| batched: 0.60; `--batch 32`: batched 1.40 | **no** |" in line, line


def _wal_doc(when: str, appenders: int, size: int, **rows: dict[str, float]) -> dict[str, Any]:
    wal = {"backend": "fallback", "backend_reason": "auto: fallback", "records_per_s": 1000.0, "p50_us": 100.0,
           "p99_us": 200.0, "p999_us": 300.0, "records_per_flush": 1.0}  # fmt: skip
    return {
        "schema": "uringstack.bench-wal/1", "workload": "wal", "started_at": when,
        "command": f"uringstack bench wal --appenders {appenders} --json",
        "machine": {"kernel": "6.x", "nproc": 2, "cpu_model": "cpu"},
        "params": {"appenders": appenders, "record_size": size, "backend": "auto", "asyncio": "wal_asyncio" in rows},
        "wal": wal, "naive": dict(wal), "fio": {"records_per_s": 900.0, "p99_us": 100.0, "pattern": "psync"},
        "ratios": rows.pop("ratios", {}), **rows,
    }  # fmt: skip


def test_wal_targets_are_judged_from_bench_wal_documents(tmp_path: Path) -> None:
    mod = _script()
    measured = ((170e3, 8), (150e3, 30), (180e3, 9))
    aio = [{"records_per_s": r, "p50_us": 1.0, "p99_us": 2.0, "enqueue_p99_us": e} for r, e in measured]
    docs = [
        *(_wal_doc(f"2026-12-01T00:0{i}:00", 32, 256, wal_asyncio=a) for i, a in enumerate(aio)),
        _wal_doc("2026-12-01T00:09:00", 1, 4096, ratios={"p99_vs_fio": 1.3}),
        _doc("2026-12-01T00:10:00", 100, 100),  # a randread run: the WAL rows sit in its targets table
    ]
    # a 4 KiB run whose flushes wrote 8 KiB: the fio row at the log's bytes splits the gap
    eight = _wal_doc("2026-12-01T00:11:00", 1, 4096, ratios={"p99_vs_fio": 1.5, "fio_wal_bytes_p99_vs_fio": 1.05,
                                                             "p99_vs_fio_wal_bytes": 1.43})  # fmt: skip
    eight["fio_wal_bytes"] = {"records_per_s": 800.0, "p50_us": 90.0, "p99_us": 105.0, "bs": 8192}
    eight["wal"].update(cycle_us_per_flush=142.0, write_us_per_flush=125.0)
    docs.append(eight)
    # an `--async-flush loop` run: shown beside the target, never part of the default's median
    on_loop = _wal_doc("2026-12-01T00:12:00", 32, 256, wal_asyncio={**aio[0], "records_per_s": 999e3})
    on_loop["params"]["async_flush"] = "loop"
    docs.append(on_loop)
    paths = []
    for i, d in enumerate(docs):
        p = tmp_path / f"w{i}.json"
        p.write_text(json.dumps(d))
        paths.append(p)
    text = mod.generate(paths, None)
    line = {k: next(ln for ln in text.splitlines() if k in ln) for k in ("160k", "fio's p99", "enqueue: p99")}
    assert "170,000 records/s (3 run(s)" in line["160k"] and "**yes**" in line["160k"]  # median of 170k, 150k, 180k
    assert "with `--async-flush loop`" in line["160k"] and "999,000 records/s (1 run(s))" in line["160k"]
    assert "async_flush loop, WAL backend" in text and "async_flush thread, WAL backend" in text
    split = "fio writing the log's bytes per flush: 1.05\u00d7 fio's p99, the WAL 1.43\u00d7 that"
    assert f"1.40\u00d7 (2 run(s)); {split}" in line["fio's p99"]  # median of 1.3 and 1.5
    assert "**no**" in line["fio's p99"]
    assert "| fio, 8 KiB per write (the log's per flush) | 800 | 90.0 | 105.0 |" in text
    assert "| 142.0 / 125.0 |" in text
    assert "9.0 µs (3 run(s))" in line["enqueue: p99"] and "**yes**" in line["enqueue: p99"]
    assert "### WAL: durable appends" in text and "| wal_asyncio | 170,000 |" in text


def _il_row(mode: str, per_round: list[tuple[float, float, float]], api: str = "public") -> dict[str, Any]:
    """A row of an interleaved run: (IOPS, p50, p99) per round; the totals are what the bench writes."""
    r = _row(mode, sum(x[0] for x in per_round) / len(per_round), api, p50=per_round[0][1])
    r["details"] = {
        "rounds": [
            {"round": i, "position": 0, "status": "ok", "iops": v, "ops": int(v), "seconds": 1.0,
             "lat_us": {"p50": p50, "p99": p99}}
            for i, (v, p50, p99) in enumerate(per_round)
        ]
    }  # fmt: skip
    return r


def _il_doc(when: str, qd: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    doc = _doc(when, 100, 100)
    doc.update(
        command=f"uringstack bench randread -q {qd} --rounds 4 -t 4 --json",
        spec={"workload": "randread", "block_size": 4096, "queue_depth": qd, "workers": 1, "direct": True},
        interleave={"rounds": 4, "slice_s": 1.0, "ramp_s": 0.25, "reference": "fio io_uring"},
        results=rows,
    )
    return doc


def _write(tmp_path: Path, docs: list[dict[str, Any]]) -> list[Path]:
    paths = []
    for i, d in enumerate(docs):
        p = tmp_path / f"d{i}.json"
        p.write_text(json.dumps(d))
        paths.append(p)
    return paths


def test_o_direct_qd32_is_judged_on_interleaved_runs_by_their_per_round_pairs(tmp_path: Path) -> None:
    mod = _script()
    # fio's device bursts in one round of each run: the totals give batched about 0.3x, while
    # every other round pairs at 0.95-0.99x: the per-run medians are 0.97, 0.955, 0.98 -> 0.97 (met)
    fio = [(100.0, 300.0, 900.0), (1000.0, 30.0, 90.0), (100.0, 300.0, 900.0), (100.0, 300.0, 900.0)]
    runs = []
    for when, ok_ratios in (("t1", (0.97, 0.97, 0.97)), ("t2", (0.95, 0.96, 0.97)), ("t3", (0.98, 0.98, 0.99))):
        mine = [(100.0 * ok_ratios[0], 310.0, 950.0), (100.0, 300.0, 900.0)]
        mine += [(100.0 * k, 310.0, 950.0) for k in ok_ratios[1:]]
        runs.append(_il_doc(when, 32, [_il_row("batched", mine), _il_row("fio io_uring", fio, "fio")]))
    # a back-to-back O_DIRECT run on the same disk: 2.0x, but it measured two devices: not judged
    b2b = _doc("t0", 200, 100)
    b2b["spec"]["direct"] = True
    text = mod.generate(_write(tmp_path, [b2b, *runs]), None)
    line = next(ln for ln in text.splitlines() if "O_DIRECT QD32" in ln)
    assert "batched: 0.97 (3 run(s) × 4 rounds; rounds 0.10–0.99)" in line and line.endswith("| **yes** |"), line
    # the group of interleaved runs is its own, and its table shows each run's per-round ratios
    assert "a file on vda, interleaved" in text
    assert "| t2 | 4 × 1 s | batched | 0.95 0.10 0.96 0.97 |" in text
    table = next(ln for ln in text.splitlines() if ln.startswith("| batched |") and "0.97" in ln)
    assert table.split("|")[4].strip() == "0.97"  # the group table's IOPS ratio is the same median


def test_qd1_latency_target_reads_the_per_round_percentile_pairs(tmp_path: Path) -> None:
    mod = _script()
    fio = [(10_000.0, 50.0, 100.0), (10_000.0, 60.0, 400.0), (10_000.0, 50.0, 100.0), (10_000.0, 55.0, 110.0)]
    # p50 pairs 1.04, 1.05, 1.06, 1.02 -> 1.045; p99 pairs 1.2, 0.3, 1.3, 1.3 -> 1.25: the p99 misses
    mine = [(9_000.0, 52.0, 120.0), (9_000.0, 63.0, 120.0), (9_000.0, 53.0, 130.0), (9_000.0, 56.1, 143.0)]
    docs = [_il_doc("t1", 1, [_il_row("batched", mine), _il_row("fio io_uring", fio, "fio")])]
    text = mod.generate(_write(tmp_path, docs), None)
    line = next(ln for ln in text.splitlines() if "QD1" in ln and "p50 and p99" in ln)
    assert "p50 1.04 (1 run(s) × 4 rounds; rounds 1.02–1.06), p99 1.25 (" in line, line
    assert line.endswith("| **no** |")
    # without any interleaved run, both device-bound targets say how to measure them
    only_b2b = _doc("t0", 100, 100)
    only_b2b["spec"]["direct"] = True
    text = mod.generate(_write(tmp_path, [only_b2b]), None)
    for key in ("O_DIRECT QD32", "O_DIRECT QD1"):
        line = next(ln for ln in text.splitlines() if key in ln)
        assert "--rounds N" in line and line.endswith("| not measured |"), line


def test_worker_threads_and_worker_processes_are_judged_apart(tmp_path: Path) -> None:
    mod = _script()
    doc = _doc("2026-12-01T00:00:00", 100, 100)
    doc["summary"]["scaling"] = {
        "workers": 2,
        "ratios": {"batched": 0.6, "batched (processes)": 1.9, "fio io_uring": 1.95},
    }
    p = tmp_path / "s.json"
    p.write_text(json.dumps(doc))
    lines = mod.generate([p], None).splitlines()
    threads = next(ln for ln in lines if "2 workers vs 1" in ln and "worker threads" in ln)
    procs = next(ln for ln in lines if "2 workers vs 1" in ln and "as processes" in ln)
    # the processes row's 1.9 must not make the threads' target met, nor show among the threads
    assert "batched 0.60" in threads and "processes" not in threads.split("|")[2] and "**no**" in threads, threads
    assert "batched (processes) 1.90" in procs and "**yes**" in procs, procs


def test_scaling_keys_process_rows_apart() -> None:
    from uringstack.bench.metrics import ModeResult
    from uringstack.bench.runner import PROCESSES, scaling

    base = ModeResult(mode="batched", kind="uringstack", status="ok", iops=100.0)
    threads = ModeResult(mode="batched x2", kind="uringstack", status="ok", iops=60.0,
                         details={"scaled_from": "batched"})  # fmt: skip
    procs = ModeResult(mode="batched x2" + PROCESSES, kind="uringstack", status="ok", iops=190.0,
                       details={"scaled_from": "batched", "workers_as": "processes"})  # fmt: skip
    assert scaling([base, threads, procs], 2) == {"batched": 0.6, "batched" + PROCESSES: 1.9}


def test_scaled_and_tuned_runs_never_decide_a_one_worker_target(tmp_path: Path) -> None:
    mod = _script()
    # the plain runs: batched 0.50x fio (missed)
    plain = [_doc(f"2026-12-01T00:0{i}:00", 50, 100) for i in range(2)]
    # a --scale-workers run whose 'x2 (processes)' row ran at 1.9x fio's one-worker job
    scaled = _doc("2026-12-01T00:05:00", 50, 100)
    scaled["results"].append(_row("batched x2 (processes)", 190))
    scaled["summary"]["scaling"] = {"workers": 2, "ratios": {"batched (processes)": 3.8}}
    # a --tuned run of older code: asyncio rows that must not mix into today's medians
    tuned = _doc("2026-11-30T00:00:00", 500, 100)
    tuned["results"] += [_row("asyncio read", 1000), _row("aiofiles", 10)]
    tuned["summary"]["tuned"] = {"vs_best": 1.0}
    text = mod.generate(_write(tmp_path, [scaled, tuned, *plain]), None)
    line = next(ln for ln in text.splitlines() if "buffered hot QD32, 1 worker" in ln)
    assert "| batched: 0.50 |" in line and line.endswith("| **no** |"), line
    aio = next(ln for ln in text.splitlines() if "asyncio `await f.read" in ln)
    assert "| - IOPS, -× aiofiles |" in aio or "not measured" in aio, aio
    procs = next(ln for ln in text.splitlines() if "as processes" in ln)
    assert "batched (processes) 3.80" in procs, procs
    assert "a file on vda, --scale-workers 2" in text and "a file on vda, --tuned" in text


def test_qd1_target_takes_the_best_public_mode_by_p50_and_shows_sqpoll_beside_fio_sqpoll(tmp_path: Path) -> None:
    mod = _script()
    fio = [(10_000.0, 50.0, 100.0)] * 4
    # batched: p50 pairs 1.2 (missed); +sqpoll: p50 0.7, p99 0.65 (the best p50 ratio: judged, met)
    batched = _il_row("batched", [(9_000.0, 60.0, 120.0)] * 4)
    batched["cpu_us_per_io"] = 38.4
    sqpoll = _il_row("+sqpoll", [(14_000.0, 35.0, 65.0)] * 4)
    sqpoll["cpu_us_per_io"] = 82.5
    sqpoll["details"]["ring_flags"] = ["SQPOLL", "SQ_AFF"]
    # fio's own SQPOLL job: +sqpoll's p50 over it 35/31.25 = 1.12, p99 65/50 = 1.30
    fio_sq = _il_row("fio io_uring sqpoll", [(15_000.0, 31.25, 50.0)] * 4, "fio")
    fio_sq["cpu_us_per_io"] = 70.0
    plain = _il_row("fio io_uring", fio, "fio")
    plain["cpu_us_per_io"] = 27.0
    docs = [_il_doc("t1", 1, [batched, sqpoll, plain, fio_sq])]
    text = mod.generate(_write(tmp_path, docs), None)
    line = next(ln for ln in text.splitlines() if "QD1" in ln and "p50 and p99" in ln)
    assert "| +sqpoll: p50 0.70 (1 run(s) × 4 rounds; rounds 0.70–0.70), p99 0.65 (" in line, line
    assert line.endswith("| **yes** |"), line
    # every public mode with its p50 / p99 ratios and CPU per I/O, fio's CPU beside them
    assert "batched 1.20 / 1.20 / 38.4, +sqpoll 0.70 / 0.65 / 82.5 (fio io_uring: 27.0 µs per I/O)" in line
    assert "+sqpoll / fio io_uring sqpoll (SQPOLL on both sides): IOPS 0.93, p50 1.12, p99 1.30" in line
    assert "fio's SQPOLL job 70.0 µs per I/O" in line and "SQPOLL costs a second CPU" in line
    # the group's tables: the like-for-like medians under the table, the per-round pairs in the rounds table
    assert "+sqpoll / fio io_uring sqpoll (fio with `--sqthread_poll=1`" in text
    assert "| t1 | 4 × 1 s | +sqpoll / fio io_uring sqpoll | 0.93 0.93 0.93 0.93 | 1.12 1.12 1.12 1.12 |" in text
    # without an SQPOLL row the QD1 target is batched's alone and says nothing of SQPOLL
    text = mod.generate(_write(tmp_path, [_il_doc("t1", 1, [batched, plain])]), None)
    line = next(ln for ln in text.splitlines() if "QD1" in ln and "p50 and p99" in ln)
    assert "| batched: p50 1.20 (" in line and line.endswith("| **no** |") and "SQPOLL" not in line, line


def test_qd1_target_takes_the_mode_best_on_both_percentiles_not_on_p50_alone(tmp_path: Path) -> None:
    # +sqpoll has the best p50 but misses p99 (its poller lost time slices); batched meets
    # both: the target is met, by batched
    mod = _script()
    batched = _il_row("batched", [(9_500.0, 52.5, 105.0)] * 4)
    sqpoll = _il_row("+sqpoll", [(14_000.0, 35.0, 500.0)] * 4)
    sqpoll["details"]["ring_flags"] = ["SQPOLL"]
    plain = _il_row("fio io_uring", [(10_000.0, 50.0, 100.0)] * 4, "fio")
    text = mod.generate(_write(tmp_path, [_il_doc("t1", 1, [batched, sqpoll, plain])]), None)
    line = next(ln for ln in text.splitlines() if "QD1" in ln and "p50 and p99" in ln)
    assert "| batched: p50 1.05 (" in line and line.endswith("| **yes** |"), line
    assert "+sqpoll 0.70 / 5.00" in line, line


def test_row_against_row_targets_are_judged_on_the_pairs_of_interleaved_runs(tmp_path: Path) -> None:
    mod = _script()

    def hot_il(when: str) -> dict[str, Any]:
        # per round (IOPS, p50, p99): the host speeds up round by round, and `asyncio batch`
        # loses its CPU in round 3: pairs 0.9, 0.85, 0.83, 0.25, 0.88 -> 0.85, while the
        # totals give 0.70; `asyncio read` / aiofiles pairs 10, 12, 8, 11, 9 -> 10 (totals 9.5)
        def il(mode: str, iops: list[float], api: str = "public") -> dict[str, Any]:
            return _il_row(mode, [(v, 1e6 / v, 2e6 / v) for v in iops], api)

        rows = [
            il("batched", [100e3, 200e3, 300e3, 400e3, 500e3]),
            il("asyncio read", [100e3, 120e3, 160e3, 220e3, 450e3]),
            il("asyncio batch", [90e3, 170e3, 250e3, 100e3, 440e3]),
            il("aiofiles", [10e3, 10e3, 20e3, 20e3, 50e3], "tool"),
            il("fio io_uring", [600e3] * 5, "fio"),
        ]
        rows[1]["details"]["vs_row"] = {"reference": "aiofiles"}
        rows[2]["details"]["vs_row"] = {"reference": "batched"}
        doc = _il_doc(when, 32, rows)
        doc["spec"]["direct"] = False
        doc["interleave"]["rounds"] = 5
        return doc

    # a back-to-back run first in the files: asyncio batch 0.5x batched, asyncio read 5x aiofiles
    b2b = _doc("t0", 300e3, 600e3)
    b2b["results"] += [_row("asyncio batch", 150e3), _row("asyncio read", 200e3), _row("aiofiles", 40e3, "tool")]
    text = mod.generate(_write(tmp_path, [b2b, hot_il("t1"), hot_il("t2")]), None)
    line = next(ln for ln in text.splitlines() if "asyncio batch (`await read_many_async`)" in ln)
    assert "| 0.85 (2 run(s) × 5 rounds; rounds 0.25–0.90) | **yes** |" in line, line
    line = next(ln for ln in text.splitlines() if "≥ 10× aiofiles" in ln)
    assert "210,000 IOPS, 10.00× aiofiles (2 run(s) × 5 rounds; rounds 8.00–12.00) | **yes** |" in line, line
    # the fio target keeps the back-to-back ladder (it has every sync mode)
    line = next(ln for ln in text.splitlines() if "buffered hot QD32, 1 worker" in ln)
    assert "batched: 0.50" in line, line
    # each run's pairs are listed under the interleaved group, beside the pairs with fio
    assert "| t1 | 5 × 1 s | asyncio batch / batched | 0.90 0.85 0.83 0.25 0.88 |" in text
    assert "| t2 | 5 × 1 s | asyncio read / aiofiles | 10.00 12.00 8.00 11.00 9.00 |" in text
    # without an interleaved run, the back-to-back runs judge them (the ratio of their totals)
    text = mod.generate(_write(tmp_path, [b2b]), None)
    line = next(ln for ln in text.splitlines() if "asyncio batch (`await read_many_async`)" in ln)
    assert "| 0.50 | **no** |" in line, line


def test_a_row_without_latency_is_shown_and_judged_by_its_iops(tmp_path: Path) -> None:
    """A streamed row reports no latency (a batch's time is not its ops'): its table cells
    for it read "-", and it still competes for the O_DIRECT QD32 target by its IOPS."""
    mod = _script()
    fio = [(100.0, 300.0, 900.0)] * 4
    runs = []
    for when in ("t1", "t2", "t3"):
        streamed = _il_row("streamed", [(97.0, 0.0, 0.0)] * 4)
        streamed["lat_us"] = {}
        for rnd in streamed["details"]["rounds"]:
            rnd["lat_us"] = {}
        rows = [_il_row("batched", [(80.0, 310.0, 950.0)] * 4), streamed, _il_row("fio io_uring", fio, "fio")]
        runs.append(_il_doc(when, 32, rows))
    text = mod.generate(_write(tmp_path, runs), None)
    target = next(ln for ln in text.splitlines() if "O_DIRECT QD32" in ln)
    assert "streamed: 0.97" in target and target.endswith("| **yes** |"), target
    row = next(ln for ln in text.splitlines() if ln.startswith("| streamed |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[3] == "0.97" and cells[5:9] == ["-", "-", "-", "-"], cells


def test_groups_whose_keys_share_a_long_prefix_get_plots_of_their_own() -> None:
    """Two groups of one workload differ only at the end of their keys (the kernel, --batch,
    --scale-workers): each must get its own plot file, not overwrite the other's."""
    mod = _script()
    base = "randread 4 KiB QD32, 1 worker(s), buffered, hot page cache, a file on vda"
    keys = [base, f"{base}, interleaved", f"{base}, --batch 32, --scale-workers 2", f"{base}, --tuned"]
    slugs = [mod.slug(k) for k in keys]
    assert len(set(slugs)) == len(keys), slugs
    assert all(s == mod.slug(k) and s.startswith("randread-4-kib-qd32") for s, k in zip(slugs, keys, strict=True))
