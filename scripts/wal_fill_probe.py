"""Append latency during and outside a segment roll's background zero-fill, A/B.

Usage: ``python scripts/wal_fill_probe.py --python A=/work/main/.venv/bin/python
--python B=.venv/bin/python --pairs 6 --slice 5 --segment-mib 32``

Each slice runs one child (``--child``) with that interpreter: one thread appends
4 KiB records through the public API (``Wal.append``) for ``--slice`` seconds on a
log with small segments, so it rolls several times; before each append it asks
``wal.wait_spare(0)`` whether the next segment's fill is still running and marks
the append "in fill".  The children alternate A, B, A, B... in the same window.
Printed per side: medians over slices of p50/p99 in and out of fills, overall
p99/p99.9/max, CPU per append (``time.process_time`` of the child: includes the
fill thread's CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _summary(inside: list[float], outside: list[float], cpu_us: float) -> dict[str, float]:
    every = inside + outside
    return {
        "n": len(every),
        "n_in": len(inside),
        "in_p50": _pct(inside, 0.5),
        "in_p99": _pct(inside, 0.99),
        "in_max": max(inside, default=float("nan")),
        "out_p50": _pct(outside, 0.5),
        "out_p99": _pct(outside, 0.99),
        "p99": _pct(every, 0.99),
        "p999": _pct(every, 0.999),
        "p9999": _pct(every, 0.9999),
        "max": max(every),
        "cpu_us": cpu_us,
    }


def child(seconds: float, segment_mib: int, directory: str, piece_kib: int) -> None:
    from uringstack.wal import Wal, WalConfig, segment

    if piece_kib:  # a variant of the paced fill (the old code has no such constant)
        segment.FILL_PIECE_BYTES = piece_kib << 10

    cfg = WalConfig(segment_size_bytes=segment_mib << 20)
    rec = bytes(4096)
    inside: list[float] = []
    outside: list[float] = []
    with Wal.open(directory, cfg) as wal:
        wal.wait_spare()
        cpu0, t_end = time.process_time(), time.monotonic() + seconds
        while time.monotonic() < t_end:
            filling = not wal.wait_spare(0)
            t0 = time.perf_counter_ns()
            wal.append(rec)
            dt = (time.perf_counter_ns() - t0) / 1000
            (inside if filling else outside).append(dt)
        cpu = time.process_time() - cpu0
    out = {"cpu_us": cpu / (len(inside) + len(outside)) * 1e6, "raw_in": inside, "raw_out": outside}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--python", action="append", default=[], help="NAME=interpreter[,piece KiB of the paced fill] (two or more)"
    )
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--slice", type=float, default=5.0)
    ap.add_argument("--segment-mib", type=int, default=32)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--child-dir", default="")
    ap.add_argument("--piece-kib", type=int, default=0)
    a = ap.parse_args()
    if a.child:
        child(a.slice, a.segment_mib, a.child_dir, a.piece_kib)
        return
    sides = [p.split("=", 1) for p in a.python]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sides}
    for i in range(a.pairs):
        order = sides if i % 2 == 0 else sides[::-1]
        for name, spec in order:
            exe, _, piece = spec.partition(",")
            with tempfile.TemporaryDirectory(dir=a.dir) as d:
                cmd = [exe, __file__, "--child", "--slice", str(a.slice), "--segment-mib", str(a.segment_mib)]
                cmd += ["--piece-kib", piece or "0", "--child-dir", d]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows[name].append(r)
            one = _summary(r["raw_in"], r["raw_out"], r["cpu_us"])
            print(name, json.dumps({k: round(v, 1) for k, v in one.items()}), flush=True)
    print("pooled over slices (us; CPU: median of slices):")
    for name, rs in rows.items():
        pin = [x for r in rs for x in r["raw_in"]]
        pout = [x for r in rs for x in r["raw_out"]]
        pooled = _summary(pin, pout, statistics.median(r["cpu_us"] for r in rs))
        print(name, json.dumps({k: round(v, 1) for k, v in pooled.items()}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
