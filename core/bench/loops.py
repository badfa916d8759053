"""The raw-ring loop, and the window/latency bookkeeping every loop shares.

:func:`uring_loop` is the only loop that is not the public API: it labels
its row "raw ring (not public API)" and shows what the ring itself can do
under the handle API (the public-API loops are in :mod:`.api_loops`, the
tools a Python user would pick instead in :mod:`.tool_loops`).

Each loop runs for ``ramp + duration`` seconds and counts only completions
inside the measured window.  The loops avoid per-op Python work wherever
the API allows it, so what is measured is the I/O path, not the harness:

* offsets are precomputed (:func:`~uringstack.bench.spec.offset_list`) into
  one C array; resubmitting a batch copies its slice of it into the batch's
  offset column (one ``memmove``);
* each batch is a :class:`~uringstack.ring.columns.BatchColumns` whose other
  columns (opcodes, fds, addresses, lengths, flags, buffer indexes) are
  filled once and resubmitted with :meth:`Ring.submit_columns` (the public
  API's prepared I/O, ``FileHandle.prepare_reads``, does the same per
  handle);
* latencies are appended to a flat ``array`` and turned into the HDR
  histogram after the window (a Python HDR ``record_value`` costs about a
  microsecond, a sizeable share of a 12 µs read).
"""

from __future__ import annotations

import os
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from uringstack.bench.metrics import LoopResult, cpu_seconds, new_histogram
from uringstack.bench.spec import BenchSpec, offset_list
from uringstack.ring import Ring
from uringstack.ring.buffers import RegisteredBuffer, address_of, aligned_buffer
from uringstack.ring.columns import BatchColumns
from uringstack.ring.flags import FSYNC_DATASYNC, Op, SqeFlag
from uringstack.ring.native import ffi, lib
from uringstack.stack.uring_backend import UringFileIO

if TYPE_CHECKING:
    from uringstack.bench.ladder import Rung
    from uringstack.stack.handle import FileHandle

RANDOM_POOL = 1 << 18  # precomputed random offsets per worker (2 MiB of C array)
_FLUSH_SAMPLES = 1 << 22  # fold samples into the histogram past this many (bounded memory)


class Clock:
    """The measured window of one loop, in ``perf_counter_ns`` time."""

    def __init__(self, spec: BenchSpec) -> None:
        self.start = time.perf_counter_ns()
        self.measure_from = self.start + int(spec.ramp_s * 1e9)
        self.until = self.measure_from + int(spec.duration * 1e9)


class Meter:
    """The measured window, taken by the thread(s) that see the completions.

    The warm-up starts at the loop's first completion, not when the loop is
    entered, so what a row starts lazily on its first I/O (the fallback plugin's
    thread pool, a ThreadPoolExecutor, aiofiles' executor, an event loop) is
    behind it: the fallback row's first completion came up to 0.14 s after its
    loop began, against a 0.03 s warm-up, and its start-up was measured.  The
    window opens at the first completion past the warm-up (which is not counted:
    it is the window's edge) and lasts ``duration``: an op counts when its
    completion is seen inside ``(opening, opening + duration)``, so a loop
    starved across the warm-up's end (a loaded machine) still gets its whole
    window instead of an empty one.  CPU time and ring enters are sampled by the
    completions at the edges (under a lock: pool threads race for them).  A
    window taken by a bystander thread instead was the "2.23M IOPS" bug: with
    32 pool threads in tight ``os.preadv`` loops, the main thread did not get
    the GIL back before the run ended and measured a window of microseconds.
    """

    def __init__(self, spec: BenchSpec, enters: Callable[[], int] | None = None) -> None:
        self._ramp_ns = int(spec.ramp_s * 1e9)
        self._duration_ns = int(spec.duration * 1e9)
        # 0 until the first completion starts the warm-up (then its end, then the window's edges)
        self.measure_from = self.until = 0
        self._enters = enters
        self._lock = threading.Lock()
        self.t0 = self.t1 = 0
        self.cpu0 = self.cpu1 = 0.0
        self.e0 = self.e1 = 0

    def phase(self, now: int) -> int:
        """0 warming up (or the window's opening completion), 1 measuring (count this
        completion), 2 over (stop)."""
        if not self.t0:
            if not self.measure_from:
                self._begin(now)
            if now < self.measure_from:
                return 0
            self._edge(now, True)
            return 0
        if now < self.until:
            return 1
        if not self.t1:
            self._edge(now, False)
        return 2

    def _begin(self, now: int) -> None:
        with self._lock:
            if not self.measure_from:
                self.measure_from = now + self._ramp_ns
                self.until = self.measure_from + self._duration_ns

    def _edge(self, now: int, start: bool) -> None:
        with self._lock:
            enters = self._enters() if self._enters is not None else 0
            if start and not self.t0:
                self.measure_from, self.until = now, now + self._duration_ns  # before t0: phase reads t0 first
                self.t0, self.cpu0, self.e0 = now, cpu_seconds(), enters
            elif not start and not self.t1:
                if not self.t0:  # the window never opened (an error, or no completion at all)
                    self.measure_from = self.until = now
                    self.t0, self.cpu0, self.e0 = now, cpu_seconds(), enters
                self.t1, self.cpu1, self.e1 = now, cpu_seconds(), enters

    def result(self, ops: int, nbytes: int, hist: Any, errors: list[str]) -> LoopResult:
        """The loop's numbers: ops and bytes over the window the ops were counted in."""
        if not self.t1:  # stopped early (an error): the window ends now
            self._edge(time.perf_counter_ns(), False)
        seconds = (min(self.t1, self.until) - self.measure_from) / 1e9
        sampled = (self.t1 - self.t0) / 1e9
        # CPU was sampled over [t0, t1], within a completion of the counting window:
        # scaled to the counting window, so CPU per I/O is cpu / ops
        cpu = (self.cpu1 - self.cpu0) * (seconds / sampled) if sampled > 0 else 0.0
        return LoopResult(
            ops=ops,
            bytes=nbytes,
            seconds=max(seconds, 0.0),
            hist=hist,
            enters=(self.e1 - self.e0) if self._enters is not None else -1,
            errors=errors,
            cpu=cpu,
        )


class Samples:
    """Latency samples (ns, op count) kept flat until the window closes."""

    def __init__(self) -> None:
        self.hist = new_histogram()
        self.lat = array("q")
        self.cnt = array("q")

    def add(self, ns: int, ops: int) -> None:
        self.lat.append(ns)
        self.cnt.append(ops)
        if len(self.lat) >= _FLUSH_SAMPLES:
            self.fold()

    def fold(self) -> None:
        rec = self.hist.record_value
        for v, c in zip(self.lat, self.cnt, strict=True):
            rec(max(1, v), c)
        self.lat = array("q")
        self.cnt = array("q")


def _fill(buffers: Sequence[Any], seed: int) -> None:
    # writes carry non-zero, non-repeating data so no layer can shortcut them
    data = os.urandom(64) * 64
    for buf in buffers:
        view = buf.view if isinstance(buf, RegisteredBuffer) else memoryview(buf)
        for pos in range(0, len(view), len(data)):
            chunk = data[: len(view) - pos]
            view[pos : pos + len(chunk)] = chunk


class _Batch:
    """One prebuilt batch: its C columns and the buffers they point at."""

    __slots__ = ("cols", "keep", "lens", "n", "offs", "ops", "started")

    def __init__(self, cols: BatchColumns, keep: list[Any], n: int, ops: int) -> None:
        self.cols = cols
        self.keep = keep
        self.n = n
        self.ops = ops
        self.lens = cols.column("lens")
        self.offs = cols.column("offs")
        self.started = 0


def uring_ring(handle: FileHandle) -> Ring:
    """The ring behind an io_uring-served handle (the loops drive it directly)."""
    io = handle.io
    if not isinstance(io, UringFileIO):
        raise TypeError(f"{handle.path} is served by {handle.backend!r}, not by an io_uring storage ring")
    return io.ring


def _build_batches(handle: FileHandle, spec: BenchSpec, rung: Rung) -> tuple[list[_Batch], list[Any]]:
    """QD ops split into batches; returns the batches and the leased buffers to release."""
    wl = spec.wl
    bs = spec.block_size
    qd = spec.queue_depth
    per = spec.batch_size if rung.batched else 1
    pair = wl.durable and spec.durability == "fdatasync"
    ring = uring_ring(handle)
    leased: list[Any] = []
    if rung.fixed:
        leased = handle.lease_buffers(qd, size=bs)
        if not all(isinstance(b, RegisteredBuffer) and b.ring_id == id(ring) for b in leased):
            handle.release_buffers(leased)
            raise RuntimeError(
                "fixedbuf gave no registered buffers for this ring (see `uringstack plan`: memlock "
                f"or fixedbuf.buffer_size < {bs})"
            )
        if handle.fixed_index is None:
            handle.release_buffers(leased)
            raise RuntimeError("fixedbuf registered no fixed-file slot for the file")
        buffers: list[Any] = leased
        fd, file_flag = handle.fixed_index, int(SqeFlag.FIXED_FILE)
    else:
        buffers = [aligned_buffer(bs) for _ in range(qd)]
        fd, file_flag = handle.fd, 0
    if wl.write:
        _fill(buffers, spec.seed)
    rw = {(False, False): Op.READ, (False, True): Op.READ_FIXED, (True, False): Op.WRITE, (True, True): Op.WRITE_FIXED}[
        (wl.write, rung.fixed)
    ]
    dsync = int(os.RWF_DSYNC) if wl.durable and not pair else 0
    batches: list[_Batch] = []
    for first in range(0, qd, per):
        group = buffers[first : first + per]
        opcodes: list[int] = []
        addrs: list[int] = []
        lens: list[int] = []
        op_flags: list[int] = []
        sqe_flags: list[int] = []
        buf_index: list[int] = []
        keep: list[Any] = []
        for buf in group:
            if isinstance(buf, RegisteredBuffer):
                addr, index = buf.addr, buf.index
                keep.append(buf)
            else:
                pin = ffi.from_buffer(buf, require_writable=not wl.write)
                keep.extend((pin, buf))
                addr, index = address_of(pin), 0
            opcodes.append(rw)
            addrs.append(addr)
            lens.append(bs)
            op_flags.append(dsync)
            buf_index.append(index)
            if pair:
                # io_uring does not order SQEs: the flush is linked to its write
                sqe_flags.extend((file_flag | int(SqeFlag.IO_LINK), file_flag))
                opcodes.append(Op.FSYNC)
                addrs.append(0)
                lens.append(0)
                op_flags.append(FSYNC_DATASYNC)
                buf_index.append(0)
            else:
                sqe_flags.append(file_flag)
        n = len(opcodes)
        cols = BatchColumns(n)
        cols.set("opcodes", opcodes)
        cols.fill("fds", fd)
        cols.set("addrs", addrs)
        cols.set("lens", lens)
        cols.column("offs")  # copied from the offset pool at each submission
        if any(op_flags):
            cols.set("op_flags", op_flags)
        if any(sqe_flags):
            cols.set("sqe_flags", sqe_flags)
        if rung.fixed:
            cols.set("buf_index", buf_index)
        batches.append(_Batch(cols, keep, n, len(group)))
    return batches, leased


def uring_loop(handle: FileHandle, spec: BenchSpec, rung: Rung, worker: int) -> LoopResult:
    """Keep QD ops in flight on the handle's ring with prebuilt batches; one worker."""
    ring = uring_ring(handle)
    batches, leased = _build_batches(handle, spec, rung)
    sqes_per_op = 2 if spec.wl.durable and spec.durability == "fdatasync" else 1
    offsets = offset_list(spec, worker, RANDOM_POOL)
    pool_list = [o for o in offsets for _ in range(sqes_per_op)]
    pool = ffi.new("uint64_t[]", pool_list)
    pool_n = len(pool_list)
    idx = 0
    samples = Samples()
    errors: list[str] = []
    submit_columns = ring.submit_columns
    memmove = ffi.memmove
    # With one batch in flight nothing else can complete meanwhile: submit and
    # wait in the same io_uring_enter, as FileHandle.read_many does.
    wait_in_submit = len(batches) == 1
    first_short = lib.us_first_short
    now_ns = time.perf_counter_ns

    def submit(j: int) -> None:
        nonlocal idx
        b = batches[j]
        if idx + b.n > pool_n:
            idx = 0
        memmove(b.offs, pool + idx, 8 * b.n)
        idx += b.n
        b.started = now_ns()
        submit_columns(b.cols, b.n, b.keep, wait=wait_in_submit).tag = j

    clock = Clock(spec)
    ops = 0
    measuring = False
    win_start = win_end = 0
    cpu0 = cpu1 = 0.0
    enters0 = enters1 = 0
    try:
        for j in range(len(batches)):
            submit(j)
        while True:
            done = ring.wait_any()
            if not done:
                break
            now = now_ns()
            if not measuring and now >= clock.measure_from and not win_end:
                measuring = True
                win_start, cpu0, enters0 = now, cpu_seconds(), ring.counters()["enters"]
            if measuring and now >= clock.until:
                measuring = False
                win_end, cpu1, enters1 = now, cpu_seconds(), ring.counters()["enters"]
            for batch in done:
                j = batch.tag
                b = batches[j]
                bad = first_short(batch.results_cdata, b.lens, b.n)
                if bad >= 0:
                    res = batch.results[bad]
                    errors.append(
                        f"op result {res} (want {b.lens[bad]})" + (f": {os.strerror(-res)}" if res < 0 else "")
                    )
                if measuring:
                    samples.add(now - b.started, b.ops)
                    ops += b.ops
                if not win_end and not errors:
                    submit(j)
            if ring.inflight == 0:
                break
    finally:
        if ring.inflight and not ring.closed:
            while ring.inflight and ring.wait_any():
                pass
        handle.release_buffers(leased)
    if not win_end:  # stopped early by an error
        win_end, cpu1, enters1 = now_ns(), cpu_seconds(), ring.counters()["enters"]
    samples.fold()
    secs = (win_end - win_start) / 1e9 if win_start else 0.0
    return LoopResult(
        ops=ops,
        bytes=ops * spec.block_size,
        seconds=secs,
        hist=samples.hist,
        enters=enters1 - enters0,
        errors=errors,
        cpu=cpu1 - cpu0,
    )
