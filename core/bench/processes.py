"""Workers as processes: each worker of a row in a process of its own, the rows merged.

Worker threads of one process share a GIL, and each short C call of the
per-batch path hands it over (a futex wake and a sleep per batch:
``scripts/batch-cost.py``); processes are how a Python program scales
CPU-bound work past one GIL.  ``uringstack bench --scale-workers N`` runs
every row both ways.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from typing import Any

from uringstack.bench.children import spawn, stop
from uringstack.bench.metrics import ModeResult
from uringstack.bench.prewarm import warm_file
from uringstack.bench.spec import BenchSpec

START_DELAY_S = 1.5
"""How far ahead of now the processes are told to start: room for their imports, so they start together."""


def merge_processes(rows: list[dict[str, Any]], mode: str) -> ModeResult:
    """One row from the per-process rows: ops, bytes, IOPS and CPU add up; latencies are the worst process's."""
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        return ModeResult(mode=mode, kind="uringstack", status=bad[0]["status"], reason=bad[0]["reason"])
    seconds = max(r["seconds"] for r in rows)
    ops = sum(r["ops"] for r in rows)
    # each process's CPU% is its own over its window: the machine's is their sum
    cpu_pct = sum(r["cpu_pct"] for r in rows)
    enters = [r["enters_per_io"] for r in rows]
    lat = {k: max(r["lat_us"][k] for r in rows) for k in rows[0]["lat_us"]}
    iops = sum(r["iops"] for r in rows)
    return ModeResult(
        mode=mode,
        kind="uringstack",
        status="ok",
        api=rows[0]["api"],
        ops=ops,
        bytes=sum(r["bytes"] for r in rows),
        seconds=seconds,
        iops=iops,
        mb_s=sum(r["mb_s"] for r in rows),
        lat_us=lat,
        cpu_pct=cpu_pct,
        enters_per_io=None if None in enters else sum(e * r["ops"] for e, r in zip(enters, rows, strict=True)) / ops,
        details={
            **rows[0]["details"],
            "workers_as": "processes",
            "processes": len(rows),
            "lat_us_is": "the worst process's percentiles (histograms are per process)",
            "per_process_iops": [r["iops"] for r in rows],
        },
    )


def run_processes(spec: BenchSpec, mode: str) -> ModeResult:
    """Run *mode* with each of the spec's workers as a process of its own; the merged row."""
    if spec.wl.sequential:
        raise ValueError(f"{spec.workload}: workers as processes run random workloads only (each its own seed)")
    if not spec.direct:
        warm_file(spec.file, spec.file_size)  # the hot page cache the bench's rows read
    start_at = time.monotonic() + START_DELAY_S  # CLOCK_MONOTONIC: one clock for every process
    procs: list[subprocess.Popen[str]] = []
    try:
        for i, cpu in enumerate(spec.worker_cpus()):
            # one worker each: a seed of its own, or every process would visit the same offsets
            one = dataclasses.replace(spec, workers=1, cpus=[cpu], seed=spec.seed + 1000 * i)
            cmd = [sys.executable, "-m", "uringstack.bench.child", json.dumps(one.to_json()), mode]
            cmd += ["--start-at", repr(start_at)]
            spawn(cmd, procs)  # a session of its own: stop() signals its process group
        outs = [p.communicate() for p in procs]
    except BaseException:
        for p in procs:
            stop(p)
        raise
    rows = []
    for out, err in outs:
        lines = out.strip().splitlines()
        if not lines:
            raise RuntimeError(f"{mode}: a worker process failed: {err.strip()[-300:]}")
        rows.append(json.loads(lines[-1]))
    return merge_processes(rows, mode)
