"""WAL benchmark: the WAL, a naive Python WAL and fio's durable QD1 write, in one run.

Absolute numbers on a shared VM are noise (DESIGN.md), so the result carries
ratios to the two references measured on the same disk in the same run:

* **naive**: each appender does ``os.write`` + ``os.fdatasync`` per record on
  one shared ``O_APPEND`` file (what a first Python WAL looks like);
* **fio**: ``--ioengine=io_uring --rw=write --bs=4k --iodepth=1 --direct=1
  --sync=dsync`` on a file pre-written first, like the WAL's segments (fio's
  own layout would leave unwritten extents, which ext4 writes slower).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from .config import WalConfig
from .log import Wal

_WARMUP_S = 0.3


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, 60_000_000, 3)  # 1 us .. 60 s, 3 significant digits


def _drive(
    appenders: int, duration_s: float, op: Callable[[bytes], object], record: bytes
) -> dict[str, float]:
    """Run *op* from *appenders* threads; latency per call into one histogram."""
    hists = [_histogram() for _ in range(appenders)]
    counts = [0] * appenders
    start = time.perf_counter() + _WARMUP_S
    stop = start + duration_s
    errors: list[BaseException] = []

    def work(i: int) -> None:
        h, n, clock = hists[i], 0, time.perf_counter_ns
        try:
            while True:
                t0 = clock()
                op(record)
                t1 = clock()
                now = t1 / 1e9
                if now >= stop:
                    break
                if now >= start:
                    h.record_value(max(1, (t1 - t0) // 1000))
                    n += 1
        except BaseException as e:
            errors.append(e)
        counts[i] = n

    threads = [threading.Thread(target=work, args=(i,)) for i in range(appenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    total = _histogram()
    for h in hists:
        total.add(h)
    n = sum(counts)
    return {
        "records": n,
        "records_per_s": n / duration_s,
        "mb_per_s": n * len(record) / duration_s / 1e6,
        "p50_us": float(total.get_value_at_percentile(50)),
        "p99_us": float(total.get_value_at_percentile(99)),
        "p999_us": float(total.get_value_at_percentile(99.9)),
    }


def _naive(directory: Path, appenders: int, record: bytes, duration_s: float) -> dict[str, Any]:
    path = directory / "naive.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:

        def op(rec: bytes) -> None:
            os.write(fd, rec)
            os.fdatasync(fd)

        return _drive(appenders, duration_s, op, record)
    finally:
        os.close(fd)
        path.unlink()


def _fio(directory: Path, duration_s: float) -> dict[str, Any]:
    fio = shutil.which("fio")
    if fio is None:
        return {"skipped": "fio not installed"}
    path = directory / "fio.dat"
    size = 256 << 20
    with open(path, "wb") as f:  # pre-written, like a WAL segment
        chunk = bytes(1 << 20)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    cmd = [
        fio, "--name=wal-ref", f"--filename={path}", f"--size={size}", "--ioengine=io_uring",
        "--rw=write", "--bs=4k", "--iodepth=1", "--direct=1", "--sync=dsync",
        "--time_based", f"--runtime={max(1, round(duration_s))}", f"--ramp_time={_WARMUP_S}",
        "--output-format=json",
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as e:
        return {"skipped": f"fio failed: {e.stderr.strip()[:200]}"}
    finally:
        path.unlink(missing_ok=True)
    job = json.loads(out[out.index("{") :])["jobs"][0]["write"]
    pct = job["clat_ns"]["percentile"]
    # fio's clat excludes submission; lat_ns is submit-to-completion, closer to an append's ack
    lat = job.get("lat_ns", job["clat_ns"])
    return {
        "records_per_s": float(job["iops"]),
        "mb_per_s": float(job["bw_bytes"]) / 1e6,
        "p50_us": pct["50.000000"] / 1000,
        "p99_us": pct["99.000000"] / 1000,
        "p999_us": pct["99.900000"] / 1000,
        "mean_lat_us": float(lat["mean"]) / 1000,
        "command": " ".join(cmd[1:]),
    }


def run_wal_bench(
    directory: str | Path,
    appenders: int = 1,
    record_size: int = 4096,
    duration_s: float = 5.0,
    backend: str = "auto",
    config: WalConfig | None = None,
) -> dict[str, Any]:
    """Measure the WAL, the naive baseline and fio; return rows and ratios.

    *directory* must be on the file system under test; the function creates
    and removes its files there.
    """
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    record = os.urandom(record_size)
    cfg = config if config is not None else WalConfig()
    wal_dir = base / "bench-wal"
    shutil.rmtree(wal_dir, ignore_errors=True)
    with Wal.open(wal_dir, cfg, backend=backend) as wal:
        before = wal.counters()
        wal_row: dict[str, Any] = dict(_drive(appenders, duration_s, wal.append, record))
        after = wal.counters()
        wal_row["backend"] = wal.backend.name
        wal_row["direct_io"] = wal.direct_io
        flushes = after["flushes"] - before["flushes"]
        wal_row["records_per_flush"] = (wal.durable_lsn / flushes) if flushes else 0.0
    shutil.rmtree(wal_dir, ignore_errors=True)
    naive = _naive(base, appenders, record, duration_s)
    fio = _fio(base, duration_s)
    ratios: dict[str, float] = {
        "records_per_s_vs_naive": wal_row["records_per_s"] / max(naive["records_per_s"], 1e-9),
        "p99_vs_naive": wal_row["p99_us"] / max(naive["p99_us"], 1e-9),
    }
    if "skipped" not in fio:
        ratios["p99_vs_fio"] = wal_row["p99_us"] / fio["p99_us"]
        ratios["p50_vs_fio"] = wal_row["p50_us"] / fio["p50_us"]
        ratios["records_per_s_vs_fio"] = wal_row["records_per_s"] / fio["records_per_s"]
    return {
        "params": {
            "appenders": appenders, "record_size": record_size, "duration_s": duration_s,
            "backend": backend, "directory": str(base),
        },
        "wal": wal_row,
        "naive": naive,
        "fio": fio,
        "ratios": ratios,
    }  # fmt: skip
