"""The hot loops that drive one worker for one mode.

Each loop runs for ``ramp + duration`` seconds and counts only completions
inside the measured window.  The loops avoid per-op Python work wherever
the API allows it, so what is measured is the I/O path, not the harness:

* offsets are precomputed (:func:`~uringstack.bench.spec.offset_list`) into
  one C array; a batch's offset column is a pointer into it, so resubmitting
  a batch copies nothing;
* each batch's other columns (opcodes, fds, addresses, lengths, flags,
  buffer indexes) are built once and resubmitted with
  :meth:`Ring.submit_arrays` (the handle API rebuilds them per call);
* latencies are appended to a flat ``array`` and turned into the HDR
  histogram after the window (a Python HDR ``record_value`` costs about a
  microsecond, a sizeable share of a 12 µs read).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from uringstack.bench.metrics import LoopResult, cpu_seconds, new_histogram
from uringstack.bench.spec import BenchSpec, offset_list
from uringstack.buffers import RegisteredBuffer, address_of, aligned_buffer
from uringstack.flags import FSYNC_DATASYNC, Op, SqeFlag
from uringstack.native import ffi, lib
from uringstack.ring import Ring
from uringstack.uring_backend import UringFileIO

if TYPE_CHECKING:
    from uringstack.bench.ladder import Rung
    from uringstack.handle import FileHandle

RANDOM_POOL = 1 << 18  # precomputed random offsets per worker (2 MiB of C array)
_FLUSH_SAMPLES = 1 << 22  # fold samples into the histogram past this many (bounded memory)


class Clock:
    """The measured window of one loop, in ``perf_counter_ns`` time."""

    def __init__(self, spec: BenchSpec) -> None:
        self.start = time.perf_counter_ns()
        self.measure_from = self.start + int(spec.ramp_s * 1e9)
        self.until = self.measure_from + int(spec.duration * 1e9)


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

    __slots__ = ("cols", "keep", "lens", "n", "ops", "started")

    def __init__(self, cols: list[Any], keep: list[Any], n: int, ops: int) -> None:
        self.cols = cols
        self.keep = keep
        self.n = n
        self.ops = ops
        self.lens = cols[3]
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
        cols = [
            ffi.new("uint8_t[]", opcodes),
            ffi.new("int32_t[]", [fd] * n),
            ffi.new("uint64_t[]", addrs),
            ffi.new("uint32_t[]", lens),
            ffi.NULL,  # offsets: a pointer into the offset pool, set at each submission
            ffi.new("uint32_t[]", op_flags) if any(op_flags) else ffi.NULL,
            ffi.new("uint8_t[]", sqe_flags) if any(sqe_flags) else ffi.NULL,
            ffi.new("uint16_t[]", buf_index) if rung.fixed else ffi.NULL,
        ]
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
    submit_arrays = ring.submit_arrays
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
        cols = b.cols
        cols[4] = pool + idx
        idx += b.n
        b.started = now_ns()
        submit_arrays(b.n, cols, b.keep, wait=wait_in_submit).tag = j

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


def thread_loop(handle: FileHandle, spec: BenchSpec, worker: int) -> LoopResult:
    """QD threads, each a blocking syscall loop on the handle's fd (the thread-pool baseline)."""
    wl = spec.wl
    fd = handle.fd
    offsets = offset_list(spec, worker, RANDOM_POOL)
    n_off = len(offsets)
    counter = itertools.count()  # next() on a count is atomic under the GIL
    clock = Clock(spec)
    errors: list[str] = []
    parts: list[tuple[int, Samples]] = []
    lock = threading.Lock()
    pair = wl.durable and spec.durability == "fdatasync"

    def make_op(buf: Any) -> Callable[[int], int]:
        if not wl.write:
            return lambda off: os.preadv(fd, [buf], off)
        if wl.durable and not pair:
            return lambda off: os.pwritev(fd, [buf], off, os.RWF_DSYNC)
        if pair:

            def write_sync(off: int) -> int:
                n = os.pwrite(fd, buf, off)
                os.fdatasync(fd)
                return n

            return write_sync
        return lambda off: os.pwrite(fd, buf, off)

    def run() -> None:
        buf = aligned_buffer(spec.block_size)
        if wl.write:
            _fill([buf], spec.seed)
        op = make_op(buf)
        samples = Samples()
        ops = 0
        now_ns = time.perf_counter_ns
        measure_from, until = clock.measure_from, clock.until
        want = spec.block_size
        try:
            while True:
                off = offsets[next(counter) % n_off]
                t0 = now_ns()
                got = op(off)
                t1 = now_ns()
                if got != want:
                    errors.append(f"short transfer {got} of {want} at offset {off}")
                    break
                if t1 >= until:
                    break
                if t1 >= measure_from:
                    samples.add(t1 - t0, 1)
                    ops += 1
        except OSError as exc:
            errors.append(f"{exc.strerror} (errno {exc.errno})")
        with lock:
            parts.append((ops, samples))

    threads = [threading.Thread(target=run, name=f"bench-pool-{i}", daemon=True) for i in range(spec.queue_depth)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, (clock.measure_from - time.perf_counter_ns()) / 1e9))
    cpu0 = cpu_seconds()
    t_start = time.perf_counter_ns()
    time.sleep(max(0.0, (clock.until - time.perf_counter_ns()) / 1e9))
    cpu1 = cpu_seconds()
    t_end = time.perf_counter_ns()
    for t in threads:
        t.join()
    hist = new_histogram()
    ops = 0
    for n, s in parts:
        s.fold()
        hist.add(s.hist)
        ops += n
    return LoopResult(
        ops=ops,
        bytes=ops * spec.block_size,
        seconds=(t_end - t_start) / 1e9,
        hist=hist,
        enters=-1,
        errors=errors,
        cpu=cpu1 - cpu0,
    )


def pending_loop(handle: FileHandle, spec: BenchSpec, rung: Rung, worker: int) -> LoopResult:
    """Through the public handle API (start_*_many + Pending.wait), for backends whose
    io object has no plain ring to prebuild batches for (IOPOLL, passthrough)."""
    wl = spec.wl
    per = spec.batch_size if rung.batched else 1
    groups = [
        [aligned_buffer(spec.block_size) for _ in range(min(per, spec.queue_depth - i))]
        for i in range(0, spec.queue_depth, per)
    ]
    if wl.write:
        _fill([b for g in groups for b in g], spec.seed)
    offsets = offset_list(spec, worker, RANDOM_POOL)
    n_off = len(offsets)
    pos = 0
    ring = getattr(handle.io, "ring", None)

    def enters() -> int:
        return int(ring.counters()["enters"]) if ring is not None else 0

    def start(g: list[Any]) -> Any:
        nonlocal pos
        offs = [offsets[(pos + k) % n_off] for k in range(len(g))]
        pos += len(g)
        if wl.durable:
            return handle.io.start_write_sync(offs[0], g[0], True) if len(g) == 1 else handle.start_write_many(offs, g)
        return handle.start_write_many(offs, g) if wl.write else handle.start_read_many(offs, g)

    clock = Clock(spec)
    samples = Samples()
    errors: list[str] = []
    fifo: deque[tuple[int, list[Any], Any]] = deque()
    for g in groups:
        fifo.append((time.perf_counter_ns(), g, start(g)))
    ops = 0
    measuring = False
    win_start = win_end = 0
    cpu0 = cpu1 = 0.0
    e0 = e1 = 0
    while fifo:
        t0, g, pending = fifo.popleft()
        results = pending.wait()
        now = time.perf_counter_ns()
        if not measuring and not win_end and now >= clock.measure_from:
            measuring, win_start, cpu0, e0 = True, now, cpu_seconds(), enters()
        if measuring and now >= clock.until:
            measuring, win_end, cpu1, e1 = False, now, cpu_seconds(), enters()
        if any(r < 0 for r in results) or results[0] != spec.block_size:
            errors.append(f"op results {results[:4]}")
        if measuring:
            samples.add(now - t0, len(g))
            ops += len(g)
        if not win_end and not errors:
            fifo.append((time.perf_counter_ns(), g, start(g)))
    if not win_end:
        win_end, cpu1, e1 = time.perf_counter_ns(), cpu_seconds(), enters()
    samples.fold()
    return LoopResult(
        ops=ops,
        bytes=ops * spec.block_size,
        seconds=(win_end - win_start) / 1e9 if win_start else 0.0,
        hist=samples.hist,
        enters=(e1 - e0) if ring is not None else -1,
        errors=errors,
        cpu=cpu1 - cpu0,
    )
