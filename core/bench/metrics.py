"""Measurements of one mode: an HDR latency histogram plus counters, and the result row.

Latencies are recorded in nanoseconds into an HDR histogram (3 significant
digits, up to 60 s) so percentiles come from every completion without
storing every sample.  A batch's ops share one latency: the time from just
before its submission to the reap that saw it complete, which is what the
caller waiting on that batch experiences (fio's ``lat``, submit to reap).
"""

from __future__ import annotations

import concurrent.futures
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

_MAX_NS = 60_000_000_000


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in nanoseconds (1 ns .. 60 s, 3 significant digits)."""
    return HdrHistogram(1, _MAX_NS, 3)


def cpu_seconds() -> float:
    """User + system CPU time of this whole process so far (every thread, including
    io_uring's SQPOLL and io-wq threads, which belong to the process).

    ``CLOCK_PROCESS_CPUTIME_ID`` (nanoseconds), not ``os.times()``: that counts in clock
    ticks (10 ms), so a short window's CPU was off by up to a tick, and a window whose
    loop used under a tick (a starved worker's few ops) measured 0 % CPU."""
    return time.process_time()


class BatchLatencies:
    """Latencies (ns) of batches that all have *ops* ops, appended by a hot loop.

    The loop's whole accounting per batch is one ``append`` (bound once, as fio
    adds one sample per I/O); :meth:`fold` records them into a histogram,
    each counted *ops* times, and empties the array in place (the bound
    ``append`` stays valid).  The loop folds past *limit* samples (bounded
    memory)."""

    def __init__(self, ops: int, limit: int = 1 << 22) -> None:
        self.ops = ops
        self.limit = limit
        self.lat = array("q")
        self.append = self.lat.append

    def fold(self, hist: HdrHistogram) -> None:
        rec = hist.record_value
        ops = self.ops
        for v in self.lat:
            rec(max(1, v), ops)
        del self.lat[:]


@dataclass
class Window:
    """Counters taken when measuring starts (after the warm-up) and ends."""

    wall: float = 0.0
    cpu: float = 0.0
    enters: int = 0

    @classmethod
    def now(cls, enters: int = 0) -> Window:
        return cls(time.perf_counter(), cpu_seconds(), enters)


@dataclass
class LoopResult:
    """What one worker's hot loop measured (merged across workers by :func:`merge`)."""

    ops: int
    bytes: int
    seconds: float
    hist: HdrHistogram
    enters: int = 0  # io_uring_enter calls in the window; -1 = not an io_uring mode
    errors: list[str] = field(default_factory=list)
    cpu: float = 0.0  # process CPU seconds (user + sys, every thread) over the window


def merge(parts: list[LoopResult]) -> LoopResult:
    """Sum workers: ops and bytes add up, the window is the longest, histograms merge."""
    hist = new_histogram()
    for p in parts:
        hist.add(p.hist)
    return LoopResult(
        ops=sum(p.ops for p in parts),
        bytes=sum(p.bytes for p in parts),
        seconds=max((p.seconds for p in parts), default=0.0),
        hist=hist,
        enters=-1 if any(p.enters < 0 for p in parts) else sum(p.enters for p in parts),
        errors=[e for p in parts for e in p.errors],
        # CPU time is process-wide and the workers' windows coincide: do not add them up
        cpu=max((p.cpu for p in parts), default=0.0),
    )


def hist_mean(hist: HdrHistogram) -> float:
    """The histogram's mean, as ``get_mean_value`` computes it (each count at the middle of
    its bucket), from the non-empty buckets only: the library's iterator walks every bucket
    up to the largest value in Python, a second per call with millisecond outliers, which
    an interleaved run paid between slices while the device idled."""
    if not hist.total_count:
        return 0.0
    total = 0
    for index, count in enumerate(hist.counts[: hist.counts_len]):
        if count:
            value = int(hist.get_value_from_index(index))
            low = int(hist.get_lowest_equivalent_value(value))
            total += int(count) * (low + ((int(hist.get_highest_equivalent_value(value)) - low + 1) >> 1))
    return total / int(hist.total_count)


def percentiles_us(hist: HdrHistogram) -> dict[str, float]:
    """p50/p99/p99.9 (and mean) in microseconds."""
    return {
        "p50": hist.get_value_at_percentile(50.0) / 1000.0,
        "p99": hist.get_value_at_percentile(99.0) / 1000.0,
        "p99_9": hist.get_value_at_percentile(99.9) / 1000.0,
        "mean": hist_mean(hist) / 1000.0,
    }


@dataclass
class ModeResult:
    """One row of the result table (a ladder rung or a fio job).  ``to_json`` is the
    stable schema documented in docs/bench.md."""

    mode: str
    kind: str  # "uringstack" or "fio"
    status: str  # "ok", "skipped" or "failed"
    reason: str = ""
    api: str = "public"  # "public" (FileHandle), "tool" (not uringstack), "raw" (the ring under the API), "fio"
    ops: int = 0
    bytes: int = 0  # bytes the ops returned (reads) or wrote, counted by the loop
    seconds: float = 0.0
    iops: float = 0.0
    mb_s: float = 0.0
    lat_us: dict[str, float] = field(default_factory=dict)
    cpu_pct: float = 0.0
    enters_per_io: float | None = None
    syscalls_per_io: float | None = None
    ratio_iops: float | None = None
    ratio_p50: float | None = None
    ratio_p99: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_per_io(self) -> float | None:
        return self.bytes / self.ops if self.ops else None

    @property
    def cpu_us_per_io(self) -> float | None:
        """Process CPU time (user + sys, all threads) per I/O, in microseconds."""
        return self.cpu_pct / 100.0 * self.seconds / self.ops * 1e6 if self.ops else None

    def bytes_check(self, block_size: int) -> str:
        """``ok`` when every I/O moved one block, else what is wrong (the figure is suspect)."""
        if self.status != "ok" or not self.ops:
            return ""
        per = self.bytes / self.ops
        # the bench's loops add up every result: exact.  fio's io_bytes and total_ios are
        # counted at slightly different moments around the ramp: within 2 %
        tolerance = 0.02 if self.kind == "fio" else 1e-9
        if abs(per - block_size) > tolerance * block_size:
            return f"bytes/IO {per:.1f} is not the block size {block_size}: the figure is suspect"
        return "ok"

    def to_json(self, block_size: int = 4096) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "kind": self.kind,
            "api": self.api,
            "status": self.status,
            "reason": self.reason,
            "ops": self.ops,
            "bytes": self.bytes,
            "bytes_per_io": None if self.bytes_per_io is None else round(self.bytes_per_io, 3),
            "bytes_check": self.bytes_check(block_size),
            "seconds": round(self.seconds, 6),
            "iops": round(self.iops, 1),
            "mb_s": round(self.mb_s, 3),
            "lat_us": {k: round(v, 3) for k, v in self.lat_us.items()},
            "cpu_pct": round(self.cpu_pct, 1),
            "cpu_us_per_io": None if self.cpu_us_per_io is None else round(self.cpu_us_per_io, 3),
            "enters_per_io": None if self.enters_per_io is None else round(self.enters_per_io, 5),
            "syscalls_per_io": None if self.syscalls_per_io is None else round(self.syscalls_per_io, 4),
            "ratio_to_fio": {
                "iops": _r(self.ratio_iops),
                "p50": _r(self.ratio_p50),
                "p99": _r(self.ratio_p99),
            },
            "details": self.details,
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def result_from_loop(mode: str, loop: LoopResult) -> ModeResult:
    """The table row for a measured loop."""
    secs = loop.seconds
    iops = loop.ops / secs if secs > 0 else 0.0
    row = ModeResult(
        mode=mode,
        kind="uringstack",
        status="ok" if loop.ops and not loop.errors else "failed",
        reason="; ".join(loop.errors[:3])
        if loop.errors
        else ""
        if loop.ops
        else "no op completed inside the measured window",
        ops=loop.ops,
        bytes=loop.bytes,
        seconds=secs,
        iops=iops,
        mb_s=loop.bytes / secs / 1e6 if secs > 0 else 0.0,
        lat_us=percentiles_us(loop.hist) if loop.ops and loop.hist.total_count else {},
        cpu_pct=100.0 * loop.cpu / secs if secs > 0 else 0.0,
    )
    if loop.enters >= 0 and loop.ops:
        row.enters_per_io = loop.enters / loop.ops
    return row


def wait_loops(
    futures: list[concurrent.futures.Future[LoopResult]], tick: Callable[[], None] | None
) -> list[LoopResult]:
    """The workers' loop results, in order; *tick* (the progress bar) runs every 0.2 s meanwhile."""
    while True:
        _, pending = concurrent.futures.wait(futures, timeout=0.2)
        if not pending:
            return [f.result() for f in futures]
        if tick is not None:
            tick()
