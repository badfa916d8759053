"""WAL benchmark: the WAL, a naive Python WAL and fio's durable QD1 write, in one run.

Absolute numbers on a shared VM are noise (DESIGN.md), so the result carries
ratios to the two references measured on the same disk in the same run:

* **naive**: each appender does ``os.write`` + ``os.fdatasync`` per record on
  one shared ``O_APPEND`` file (what a first Python WAL looks like);
* **fio**: a QD1 4 KiB sequential durable write with the same pattern as the
  log's writes: the engine of the log's backend (``io_uring``, or ``psync``:
  ``pwrite`` like the fallback), the same durability step (``--sync=dsync``:
  O_DSYNC writes, or ``--fdatasync=1``: write then fdatasync) and the same
  O_DIRECT setting, on a file pre-written first, like the WAL's segments
  (fio's own layout would leave unwritten extents, which ext4 writes slower);
* **fio_wal_bytes**: the same fio job writing as many bytes per write as the
  ``wal`` row's flushes did on average, to the nearest whole 4 KiB block
  (when that is more than fio's 4 KiB): a flush rewrites the partial block
  the previous one ended in and a record's 16-byte header spills a 4 KiB
  payload into a second block, so one 4 KiB record is an 8 KiB write.  Its
  ratio to the 4 KiB row is what the log's format costs on this disk; the
  log's ratio to it is what the rest (Python, hand-offs) costs.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from ..bench.children import run_child, terminate_raises
from .config import WalConfig
from .log import Wal
from .segment import BLOCK_BYTES

_WARMUP_S = 0.3


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, 60_000_000, 3)  # 1 us .. 60 s, 3 significant digits


def _summary(hist: HdrHistogram, n: int, record_bytes: int, duration_s: float) -> dict[str, float]:
    return {
        "records": n,
        "records_per_s": n / duration_s,
        "mb_per_s": n * record_bytes / duration_s / 1e6,
        "p50_us": float(hist.get_value_at_percentile(50)),
        "p99_us": float(hist.get_value_at_percentile(99)),
        "p999_us": float(hist.get_value_at_percentile(99.9)),
    }


def _histogram_of(latencies: list[list[int]]) -> HdrHistogram:
    """Build the histogram after the run: ``record_value`` costs ~1 us of Python, as much as a
    quarter of a WAL append's own CPU, and would be charged to the appenders it measures."""
    total = _histogram()
    for lat in latencies:
        for v in lat:
            total.record_value(v)
    return total


def _drive(appenders: int, duration_s: float, op: Callable[[bytes], object], record: bytes) -> tuple[HdrHistogram, int]:
    """Run *op* from *appenders* threads; return the latency histogram and the call count."""
    lats: list[list[int]] = [[] for _ in range(appenders)]
    start = time.perf_counter() + _WARMUP_S
    stop = start + duration_s
    errors: list[BaseException] = []

    def work(i: int) -> None:
        lat, clock = lats[i], time.perf_counter_ns
        keep = lat.append
        try:
            while True:
                t0 = clock()
                op(record)
                t1 = clock()
                now = t1 / 1e9
                if now >= stop:
                    break
                if now >= start:
                    keep(max(1, (t1 - t0) // 1000))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(appenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return _histogram_of(lats), sum(map(len, lats))


def _drive_async(
    appenders: int,
    duration_s: float,
    op: Callable[[bytes], Awaitable[object]],
    record: bytes,
    enqueued: list[int] | None = None,
) -> tuple[HdrHistogram, int]:
    """Run *op* from *appenders* asyncio tasks on one event loop (a fresh one, in this thread).

    *enqueued* (if given) gets the time of each ``op(record)`` call itself, in
    ns: from the call to the awaitable returned (``append_async``'s enqueue).
    """
    lats: list[list[int]] = [[] for _ in range(appenders)]
    enq = enqueued if enqueued is not None else []

    async def main() -> None:
        start = time.perf_counter() + _WARMUP_S
        stop = start + duration_s

        async def work(i: int) -> None:
            lat, clock = lats[i], time.perf_counter_ns
            keep, keep_enq = lat.append, enq.append
            while True:
                t0 = clock()
                fut = op(record)
                te = clock()
                await fut
                t1 = clock()
                now = t1 / 1e9
                if now >= stop:
                    break
                if now >= start:
                    keep(max(1, (t1 - t0) // 1000))
                    keep_enq(te - t0)

        await asyncio.gather(*(work(i) for i in range(appenders)))

    asyncio.run(main())
    return _histogram_of(lats), sum(map(len, lats))


def _naive(directory: Path, appenders: int, record: bytes, duration_s: float) -> tuple[HdrHistogram, int]:
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


_FIO_FILE_BYTES = 256 << 20


def _prepare_fio_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:  # pre-written, like a WAL segment
        chunk = bytes(1 << 20)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def _fio_pattern(backend: str, sync: str, direct: bool) -> list[str]:
    """fio options for the write pattern the log uses: its backend's engine, durability step and O_DIRECT."""
    engine = "io_uring" if backend == "uring" else "psync"  # the fallback issues pwrite(v) from a thread
    durable = "--sync=dsync" if sync == "dsync" else "--fdatasync=1"
    return [f"--ioengine={engine}", durable, f"--direct={int(direct)}"]


def _fio(fio: str, path: Path, size: int, duration_s: float, pattern: list[str], bs: int = 4096) -> dict[str, Any]:
    cmd = [
        fio, "--name=wal-ref", f"--filename={path}", f"--size={size}", *pattern,
        "--rw=write", f"--bs={bs // 1024}k", "--iodepth=1",
        "--time_based", f"--runtime={max(1, round(duration_s))}", f"--ramp_time={_WARMUP_S}",
        "--lat_percentiles=1", "--output-format=json",
    ]  # fmt: skip
    proc = run_child(cmd)  # stopped and reaped if the bench is interrupted
    if proc.returncode != 0:
        return {"skipped": f"fio failed: {proc.stderr.strip()[:200]}"}
    out = proc.stdout
    job = json.loads(out[out.index("{") :])["jobs"][0]["write"]
    # An append's latency runs from the call to the acknowledgement, submission
    # included: compare with fio's lat (submit to completion, percentiles from
    # --lat_percentiles=1), not clat, which starts after the submit syscall.
    # clat's percentiles are kept for reference.
    clat = job["clat_ns"]["percentile"]
    lat = job["lat_ns"]
    pct = lat.get("percentile", clat)
    return {
        "records_per_s": float(job["iops"]),
        "mb_per_s": float(job["bw_bytes"]) / 1e6,
        "p50_us": pct["50.000000"] / 1000,
        "p99_us": pct["99.000000"] / 1000,
        "p999_us": pct["99.900000"] / 1000,
        "clat_p50_us": clat["50.000000"] / 1000,
        "clat_p99_us": clat["99.000000"] / 1000,
        "mean_lat_us": float(lat["mean"]) / 1000,
        "percentiles_of": "lat" if "percentile" in lat else "clat",  # an old fio has no lat percentiles
        "command": " ".join(cmd[1:]),
        "pattern": " ".join(o.removeprefix("--") for o in pattern),
        "bs": bs,
    }


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


_FIO_KEYS = ("records_per_s", "mb_per_s", "p50_us", "p99_us", "p999_us", "clat_p50_us", "clat_p99_us", "mean_lat_us")


def _fio_row(per_round: list[dict[str, Any]], key: str, skipped: str | None) -> dict[str, Any]:
    """One fio row over the rounds: the medians of its per-round numbers (or why it is missing)."""
    if skipped is not None:
        return {"skipped": skipped}
    got = [r[key] for r in per_round if key in r and "skipped" not in r[key]]
    if not got:
        return next((r[key] for r in per_round if key in r), {"skipped": "fio failed"})
    row: dict[str, Any] = {k: _median([float(r[k]) for r in got]) for k in _FIO_KEYS}
    for k in ("command", "pattern", "percentiles_of", "bs"):
        row[k] = got[0][k]
    return row


def _block_bytes_per_write(written: int, flushes: int) -> int:
    """The mean bytes per flush to the nearest whole block (what fio writes to compare): small
    records cross a block boundary now and then (a 4,160-byte mean is still 4 KiB writes)."""
    mean = written / flushes if flushes else BLOCK_BYTES
    return max(1, round(mean / BLOCK_BYTES)) * BLOCK_BYTES


@terminate_raises()
def run_wal_bench(
    directory: str | Path,
    appenders: int = 1,
    record_size: int = 4096,
    duration_s: float = 5.0,
    backend: str = "auto",
    config: WalConfig | None = None,
    rounds: int = 3,
    fio_file_bytes: int = _FIO_FILE_BYTES,
    use_asyncio: bool = False,
) -> dict[str, Any]:
    """Measure the WAL, the naive baseline and fio; return rows and ratios.

    Shared VMs drift by 10x within a minute, so the rows are interleaved:
    *rounds* rounds of WAL, naive and fio (and, with *use_asyncio*, the WAL
    driven by *appenders* asyncio tasks through ``append_async`` on one event
    loop), each ``duration_s / rounds`` long, in rotating order. Rows merge the
    rounds (HDR histograms; fio's medians of its per-round percentiles);
    ratios are the median of the per-round ratios, so a noisy minute hits all
    rows alike. *directory* must be on the file system under test; the files go
    in a new directory made in it (``uringstack-bench-wal-*``), removed at the
    end: nothing already in *directory* is written or removed (it used to
    take fixed names there, ``bench-wal``, ``fio.dat``, ``naive.log``, and
    remove them). *directory* must exist (``FileNotFoundError``).
    """
    if not Path(directory).is_dir():
        # (it used to be made, parents too, and left behind: a mistyped --dir made a tree)
        raise FileNotFoundError(errno.ENOENT, "no such directory for the WAL benchmark", str(directory))
    base = Path(tempfile.mkdtemp(prefix="uringstack-bench-wal-", dir=directory))
    try:
        result = _run_in(base, appenders, record_size, duration_s, backend, config, rounds, fio_file_bytes, use_asyncio)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result["params"]["directory"] = str(directory)
    return result


def _run_in(
    base: Path,
    appenders: int,
    record_size: int,
    duration_s: float,
    backend: str,
    config: WalConfig | None,
    rounds: int,
    fio_file_bytes: int,
    use_asyncio: bool,
) -> dict[str, Any]:
    record = os.urandom(record_size)
    cfg = config if config is not None else WalConfig()
    slice_s = duration_s / rounds
    wal_dir = base / "bench-wal"
    fio = shutil.which("fio")
    fio_path = base / "fio.dat"
    if fio is not None:
        _prepare_fio_file(fio_path, fio_file_bytes)
    walrows = ["wal", "wal_asyncio"] if use_asyncio else ["wal"]
    hists = {k: _histogram() for k in [*walrows, "naive"]}
    counts = dict.fromkeys(hists, 0)
    flushes = dict.fromkeys(walrows, 0)
    appended = dict.fromkeys(walrows, 0)
    written = dict.fromkeys(walrows, 0)
    write_ns = dict.fromkeys(walrows, 0)  # inside the durable writes
    busy_ns = dict.fromkeys(walrows, 0)  # wall time of the rows (warm-up included, as the counters)
    same_bs = 0  # fio_wal_bytes's block size: the first `wal` row's mean flush (round 0 starts with it)
    per_round: list[dict[str, Any]] = []
    enqueued: list[int] = []  # ns per append_async call, over every round
    try:
        with Wal.open(wal_dir, cfg, backend=backend) as wal:
            info: dict[str, Any] = {
                "backend": wal.backend,
                "backend_reason": wal.backend_reason,
                "direct_io": wal.direct_io,
            }
            pattern = _fio_pattern(wal.backend, cfg.sync, wal.direct_io)
            # Setup, like fio's pre-written file: opening the log zero-fills its next segment in
            # the background (a whole segment of writes and an fdatasync), which would land in
            # the first round's rows. Rollovers during the rounds still prepare theirs: measured.
            if not wal.wait_spare(120):
                raise TimeoutError(f"{wal_dir}: the WAL's next segment was not ready after 120 s")
            for rnd in range(rounds):
                got: dict[str, Any] = {}
                order = [*walrows, "naive", "fio", "fio_wal_bytes"]
                order = order[rnd % len(order) :] + order[: rnd % len(order)]
                for what in order:
                    if what == "fio":
                        if fio is not None:
                            got["fio"] = _fio(fio, fio_path, fio_file_bytes, slice_s, pattern)
                        continue
                    if what == "fio_wal_bytes":
                        if fio is not None and same_bs > BLOCK_BYTES:
                            got[what] = _fio(fio, fio_path, fio_file_bytes, slice_s, pattern, same_bs)
                        continue
                    if what == "naive":
                        h, n = _naive(base, appenders, record, slice_s)
                    else:
                        c0, l0, t0 = wal.counters(), wal.durable_lsn, time.perf_counter_ns()
                        if what == "wal":
                            h, n = _drive(appenders, slice_s, wal.append, record)
                        else:
                            h, n = _drive_async(appenders, slice_s, wal.append_async, record, enqueued)
                        c1 = wal.counters()
                        busy_ns[what] += time.perf_counter_ns() - t0
                        write_ns[what] += c1["write_ns"] - c0["write_ns"]
                        flushes[what] += c1["flushes"] - c0["flushes"]
                        written[what] += c1["bytes"] - c0["bytes"]
                        appended[what] += wal.durable_lsn - l0
                        if what == "wal" and not same_bs:
                            same_bs = _block_bytes_per_write(written["wal"], flushes["wal"])
                    hists[what].add(h)
                    counts[what] += n
                    got[what] = _summary(h, n, record_size, slice_s)
                per_round.append(got)
    finally:
        shutil.rmtree(wal_dir, ignore_errors=True)
        fio_path.unlink(missing_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    for k in walrows:
        rows[k] = {**info, **_summary(hists[k], counts[k], record_size, duration_s)}
        rows[k]["records_per_flush"] = appended[k] / flushes[k] if flushes[k] else 0.0
        rows[k]["bytes_per_flush"] = written[k] / flushes[k] if flushes[k] else 0.0
        # a flush cycle: the durable write (the device) and the rest (Python, thread hand-offs)
        rows[k]["cycle_us_per_flush"] = busy_ns[k] / flushes[k] / 1000 if flushes[k] else 0.0
        rows[k]["write_us_per_flush"] = write_ns[k] / flushes[k] / 1000 if flushes[k] else 0.0
    if enqueued:
        enqueued.sort()
        rows["wal_asyncio"]["enqueue_p50_us"] = enqueued[len(enqueued) // 2] / 1000
        rows["wal_asyncio"]["enqueue_p99_us"] = enqueued[int(len(enqueued) * 0.99)] / 1000
    naive_row = _summary(hists["naive"], counts["naive"], record_size, duration_s)
    fio_rounds = [r["fio"] for r in per_round if "fio" in r and "skipped" not in r["fio"]]
    fio_row = _fio_row(per_round, "fio", None if fio is not None else "fio not installed")
    same_row = _fio_row(
        per_round, "fio_wal_bytes",
        "fio not installed" if fio is None else None if same_bs > BLOCK_BYTES
        else f"the log's writes are {same_bs} bytes, as the fio row's",
    )  # fmt: skip

    def ratio(a: str, b: str, key: str) -> float:
        vals = [r[a][key] / r[b][key] for r in per_round
                if a in r and b in r and "skipped" not in r[a] and "skipped" not in r[b] and r[b][key]]  # fmt: skip
        return _median(vals)

    ratios: dict[str, float] = {}
    for k in walrows:
        pre = "" if k == "wal" else "asyncio_"
        ratios[pre + "records_per_s_vs_naive"] = ratio(k, "naive", "records_per_s")
        ratios[pre + "p99_vs_naive"] = ratio(k, "naive", "p99_us")
        if fio_rounds:
            ratios[pre + "p99_vs_fio"] = ratio(k, "fio", "p99_us")
            ratios[pre + "p50_vs_fio"] = ratio(k, "fio", "p50_us")
            ratios[pre + "records_per_s_vs_fio"] = ratio(k, "fio", "records_per_s")
    if "skipped" not in same_row:
        # the format's cost (fio at the log's bytes per write vs at 4 KiB) and the rest (the log vs the former)
        ratios["fio_wal_bytes_p99_vs_fio"] = ratio("fio_wal_bytes", "fio", "p99_us")
        ratios["fio_wal_bytes_p50_vs_fio"] = ratio("fio_wal_bytes", "fio", "p50_us")
        ratios["p99_vs_fio_wal_bytes"] = ratio("wal", "fio_wal_bytes", "p99_us")
        ratios["p50_vs_fio_wal_bytes"] = ratio("wal", "fio_wal_bytes", "p50_us")
    return {
        "params": {
            "appenders": appenders, "record_size": record_size, "duration_s": duration_s,
            "backend": backend, "rounds": rounds, "asyncio": use_asyncio,
            "async_flush": (config or WalConfig()).async_flush,
        },
        **rows,
        "naive": naive_row,
        "fio": fio_row,
        "fio_wal_bytes": same_row,
        "ratios": ratios,
        "rounds": per_round,
    }  # fmt: skip
