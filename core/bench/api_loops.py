"""Loops that drive one worker through the public ``FileHandle`` API only.

What a user of uringstack writes is what is measured.  Rungs marked
``prepared`` (batched, +fixedbuf, +sqpoll) prepare each batch's buffers once
(``handle.prepare_reads``/``prepare_writes``, the API for a loop reusing its
buffers) and call ``prepared.run(offsets)`` (submit and wait in one call)
when one batch fills the queue depth, else ``prepared.start(offsets)``
batches kept QD deep and waited on oldest first; the others call
``read_many``/``start_read_many`` (``write_many``/``start_write_many``) the
same way.  Buffers from ``handle.lease_buffers`` (registered buffers when the
rung's stack has fixedbuf on).  Durable writes use ``write_durable``.  The asyncio rows run an event loop on the worker
thread: QD tasks each awaiting ``handle.read(size, off)``, or QD/batch
tasks each awaiting a whole ``read_many_async``.  The ``streamed`` rungs run on rings
whose queue depth (``core.max_in_flight``) is QD and start batches of many more ops
than that, two in turn, so the ring refills each completion's place (docs/bench.md).

Every loop adds up the bytes its reads and writes returned, so a row whose
bytes per I/O is not the block size shows that something was not measured.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import cycle
from typing import TYPE_CHECKING, Any

from uringstack.bench.loops import _FLUSH_SAMPLES, Meter, Samples, _fill
from uringstack.bench.metrics import BatchLatencies, LoopResult
from uringstack.bench.spec import BenchSpec, Durability, offset_list
from uringstack.ring.buffers import RegisteredBuffer

if TYPE_CHECKING:
    from uringstack.bench.ladder import Rung
    from uringstack.ring.pending import Pending
    from uringstack.stack.handle import FileHandle
    from uringstack.stack.prepared import PreparedIO

RANDOM_POOL = 1 << 18  # precomputed random offsets per worker
_EDGE_NS = 1_000_000_000  # a blocking loop looks at its window (and folds its latencies) at least this often


def _enters_of(handle: FileHandle) -> Callable[[], int] | None:
    ring = getattr(handle.io, "ring", None)
    if ring is None or not hasattr(ring, "counters"):
        return None
    return lambda: int(ring.counters()["enters"])


class _Offsets:
    """The worker's precomputed offset stream, handed out in slices (no RNG in the loop)."""

    def __init__(self, spec: BenchSpec, worker: int) -> None:
        self.offs = offset_list(spec, worker, RANDOM_POOL)
        self.n = len(self.offs)
        self.pos = 0

    def take(self, k: int) -> list[int]:
        if self.pos + k > self.n:
            self.pos = 0
        out = self.offs[self.pos : self.pos + k]
        self.pos += k
        if len(out) < k:  # a stream shorter than one batch (tiny sequential region)
            out = [self.offs[(self.pos + i) % self.n] for i in range(k)]
        return out

    def next(self) -> int:
        if self.pos >= self.n:
            self.pos = 0
        off = self.offs[self.pos]
        self.pos += 1
        return off


def _lease(handle: FileHandle, spec: BenchSpec, rung: Rung) -> list[Any]:
    bufs = handle.lease_buffers(rung.buffer_count(spec.queue_depth), size=spec.block_size)
    if rung.fixed and not all(isinstance(b, RegisteredBuffer) for b in bufs):
        handle.release_buffers(bufs)
        raise RuntimeError(
            "lease_buffers gave no registered buffers (see `uringstack plan`: fixedbuf, memlock, "
            f"fixedbuf.buffer_size < {spec.block_size})"
        )
    if spec.wl.write:
        _fill(bufs, spec.seed)
    return bufs


def _groups(bufs: list[Any], per: int) -> list[list[Any]]:
    return [bufs[i : i + per] for i in range(0, len(bufs), per)]


def _check(results: Sequence[int], want: int, errors: list[str]) -> int:
    """Bytes moved by a batch; a failed or short op is recorded (and stops the loop)."""
    total = 0
    for r in results:
        if r != want:
            errors.append(f"op result {r} (want {want})")
            return total
        total += r
    return total


def handle_loop(handle: FileHandle, spec: BenchSpec, rung: Rung, worker: int) -> LoopResult:
    """Keep QD ops in flight through the handle API; one worker."""
    wl = spec.wl
    bufs = _lease(handle, spec, rung)
    # streamed: two batches of half the buffers each, started in turn (each start returns
    # once its last op is submitted, so the next one's ops take the places its last ones
    # free), the ring keeping QD of them in flight
    per = len(bufs) // 2 if rung.streamed else spec.batch_size if rung.batched else 1
    groups = _groups(bufs, per)
    # One prepared I/O per group of buffers: pins, lengths and opcodes are built
    # once; each call writes only the offsets (the durable path has no prepared form).
    prepared: list[PreparedIO] = []
    if rung.prepared and not wl.durable:
        prepared = [handle.prepare_writes(g) if wl.write else handle.prepare_reads(g) for g in groups]
    offs = _Offsets(spec, worker)
    meter = Meter(spec, _enters_of(handle))
    samples = Samples()
    errors: list[str] = []
    bs = spec.block_size
    ops = nbytes = 0
    now_ns = time.perf_counter_ns
    try:
        if len(groups) == 1:
            # One batch fills the queue: the blocking call (submit and wait in one syscall)
            g = groups[0]
            call: Callable[[Sequence[int]], Sequence[int]]
            if wl.durable:
                # write_durable: an RWF_DSYNC write, or a write linked to an fdatasync
                call = lambda o: _durable_many(handle, o, g, spec.durability)  # noqa: E731
            elif prepared:
                call = prepared[0].run
            elif wl.write:
                call = lambda o: handle.write_many(o, g)  # noqa: E731
            else:
                call = lambda o: handle.read_many(o, g)  # noqa: E731
            # The loop's own work per batch counts against the row (at QD1 it sits between
            # one completion and the next submission): per batch a C iterator step for the
            # offsets, two clock reads, the call, one bound append for the latency and one
            # compare of the results; the window edges, the fold into the histogram and a
            # failed op are handled past one clock compare (fio: one sample per I/O).
            k = len(g)
            full, kbs = [bs] * k, bs * k
            lats = BatchLatencies(k)
            lat, arr, phase = lats.append, lats.lat, meter.phase
            batches: Iterator[Sequence[int]] = (
                zip(cycle(offs.offs)) if k == 1 else iter(lambda: offs.take(k), None)
            )  # fmt: skip
            edge = meter.measure_from  # the next clock time the loop must look at
            started = False
            short = 0  # bytes a failed batch in the window did not move
            for o in batches:
                t0 = now_ns()
                res = call(o)
                now = now_ns()
                lat(now - t0)
                if now < edge and res == full:
                    continue
                ph = phase(now)
                if ph == 0:
                    del arr[:]  # warming up: nothing counts
                    edge = meter.measure_from  # set by the first completion, then the window's opening
                elif ph == 2:
                    arr.pop()  # this batch completed past the window
                else:
                    if not started:
                        started = True
                        del arr[:-1]  # the warm-up's batches before this one
                    edge = min(meter.until, now + _EDGE_NS)
                    if len(arr) >= lats.limit:
                        ops += len(arr) * k
                        lats.fold(samples.hist)
                if res != full:
                    got = _check(res, bs, errors)
                    if ph == 1:
                        short = kbs - got
                    break
                if ph == 2:
                    break
            ops += len(arr) * k
            nbytes += ops * bs - short
            lats.fold(samples.hist)
        else:
            # Per group its start, bound once (a prepared batch's own start, as the raw loop
            # calls submit_columns, without a lambda frame per batch) and the results of a
            # batch that moved every byte (one C compare per batch, as the raw loop's
            # us_first_short; _check only reads a batch that did not): the loop's own work
            # per batch stays what the raw loop does, so the row differs by the API alone.
            starts: list[Callable[[list[int]], Pending]]
            if wl.durable:
                starts = [partial(_start_durable, handle, bufs=g, sync=spec.durability) for g in groups]
            elif prepared:
                starts = [p.start for p in prepared]
            elif wl.write:
                starts = [partial(handle.start_write_many, buffers=g) for g in groups]
            else:
                starts = [partial(handle.start_read_many, buffers=g) for g in groups]
            pairs = wl.durable and spec.durability == "fdatasync"  # results: write, flush, write, ...
            fulls = [[bs, 0] * len(g) if pairs else [bs] * len(g) for g in groups]
            sizes = [len(g) for g in groups]
            take, phase, add = offs.take, meter.phase, samples.add
            # A streamed batch's time is not its ops' latency (they ran QD at a time, each
            # place refilled as an op completed): its row reports no latency.
            timed = not rung.streamed
            fifo: deque[tuple[int, int, Pending]] = deque()
            for j, k in enumerate(sizes):
                fifo.append((now_ns(), j, starts[j](take(k))))
            until = 0  # the window's end once it is open: before it, meter.phase decides
            stopping = False
            while fifo:
                t0, j, pending = fifo.popleft()
                res = pending.wait()
                now = now_ns()
                k = sizes[j]
                got = k * bs if res == fulls[j] else _check(res[:: 2 if pairs else 1], bs, errors)
                ph = 1 if now < until else phase(now)
                if ph == 1:
                    if timed:
                        add(now - t0, k)
                    ops += k
                    nbytes += got
                elif meter.t0:
                    until = meter.until  # (the window opened at this completion, or is over)
                if ph == 2 or errors:
                    stopping = True
                if not stopping:
                    fifo.append((now_ns(), j, starts[j](take(k))))
    finally:
        for p in prepared:
            p.close()
        handle.release_buffers(bufs)
    samples.fold()
    return meter.result(ops, nbytes, samples.hist, errors)


def _plain(buf: Any) -> Any:
    # a backend's start_write_durable takes plain buffers (never WRITE_FIXED): a lease's
    # memory is passed as one (the handle's write_durable converts a lease itself)
    return buf.view if isinstance(buf, RegisteredBuffer) else buf


def _durable_many(handle: FileHandle, offsets: Sequence[int], bufs: list[Any], sync: Durability) -> list[int]:
    return [handle.write_durable(_plain(b), o, sync=sync) for o, b in zip(offsets, bufs, strict=True)]


class _Group:
    """Several started write+flush pairs waited on as one (durable batches of > 1 op)."""

    def __init__(self, parts: list[Pending]) -> None:
        self.parts = parts

    def wait(self) -> list[int]:
        return [r for p in self.parts for r in p.wait()]


def _start_durable(handle: FileHandle, offsets: list[int], bufs: list[Any], sync: Durability) -> Any:
    # The public API has no non-blocking durable write (write_durable blocks): the
    # backend's start_write_durable is what write_durable runs, once per op.
    return _Group([handle.io.start_write_durable(o, _plain(b), sync) for o, b in zip(offsets, bufs, strict=True)])


def asyncio_loop(handle: FileHandle, spec: BenchSpec, rung: Rung, worker: int) -> LoopResult:
    """QD asyncio tasks, each ``await handle.read(size, off)`` (or ``await handle.write``) in turn."""
    return asyncio.run(_asyncio_main(handle, spec, worker, batch=False))


def asyncio_batch_loop(handle: FileHandle, spec: BenchSpec, rung: Rung, worker: int) -> LoopResult:
    """QD/batch asyncio tasks, each awaiting a whole ``read_many_async`` (``write_many_async``)."""
    return asyncio.run(_asyncio_main(handle, spec, worker, batch=True))


async def _asyncio_main(handle: FileHandle, spec: BenchSpec, worker: int, batch: bool) -> LoopResult:
    wl = spec.wl
    bs = spec.block_size
    offs = _Offsets(spec, worker)
    meter = Meter(spec, _enters_of(handle))
    samples = Samples()
    errors: list[str] = []
    counts = [0, 0]  # ops, bytes (one event loop thread: no lock needed)
    now_ns = time.perf_counter_ns
    bufs = handle.lease_buffers(spec.queue_depth, size=bs) if (wl.write or batch) else []
    if wl.write:
        _fill(bufs, spec.seed)

    def account(t0: int, n: int, got: int) -> bool:
        now = now_ns()
        ph = meter.phase(now)
        if ph == 1:
            samples.add(now - t0, n)
            counts[0] += n
            counts[1] += got
        return ph == 2 or bool(errors)

    # The single-read row: its per-op Python counts against the row, so one
    # perf_counter_ns per op (an op's end is the next op's start: its latency
    # includes this bookkeeping, ~0.1 us), offsets from a C iterator, and the
    # window's edges checked inline (Meter.phase only outside the window or at
    # its first completion).  Samples are kept flat and folded like Samples does.
    lat = array("q")
    totals = [0, 0]  # ops, bytes of this row (counts stays the other rows')
    until = 0  # the window's end once it is open (Meter.phase sets it at the opening completion)
    stream = cycle(offs.offs)

    async def one_read() -> None:
        nonlocal until
        read = handle.read
        take = stream.__next__
        add = lat.append
        ops = got = 0
        t0 = now_ns()
        try:
            while True:
                n = len(await read(bs, take()))
                now = now_ns()
                if n != bs:  # (as _check: recorded, no bytes counted, the loop stops)
                    errors.append(f"op result {n} (want {bs})")
                    n = 0
                if now < until:
                    add(now - t0)
                    ops += 1
                    got += n
                    if errors:
                        return
                else:
                    ph = meter.phase(now)
                    if ph == 1:
                        add(now - t0)
                        ops += 1
                        got += n
                    if ph == 2 or errors:
                        return
                    if meter.t0:
                        until = meter.until
                if len(lat) >= _FLUSH_SAMPLES:
                    _fold_flat(lat, samples)  # (emptied in place: every task's add stays bound to it)
                t0 = now
        finally:
            totals[0] += ops
            totals[1] += got

    async def one(slot: int) -> None:
        buf = bufs[slot] if bufs else None
        while True:
            off = offs.next()
            t0 = now_ns()
            if wl.write:
                n = await handle.write(buf, off)
                if wl.durable:
                    await handle.fdatasync_async()
            else:
                n = len(await handle.read(bs, off))
            if account(t0, 1, _check([n], bs, errors)):
                return

    async def many(group: list[Any]) -> None:
        # The batch row's own work per await is what the sync handle loop does per batch
        # (one C compare of the results, _check only for a batch that did not move every
        # byte, the window's end inline, Meter.phase only outside it), so the row differs
        # from `batched` by the API alone.
        nonlocal until
        k = len(group)
        full, kbs = [bs] * k, bs * k
        take, add, phase = offs.take, samples.add, meter.phase
        call = handle.write_many_async if wl.write else handle.read_many_async
        sync = handle.fdatasync_async if wl.durable else None
        while True:
            o = take(k)
            t0 = now_ns()
            res = await call(o, group)
            if sync is not None:
                await sync()
            now = now_ns()
            got = kbs if res == full else _check(res, bs, errors)
            ph = 1 if now < until else phase(now)
            if ph == 1:
                add(now - t0, k)
                counts[0] += k
                counts[1] += got
            elif meter.t0:
                until = meter.until  # (the window opened at this completion, or is over)
            if ph == 2 or errors:
                return

    try:
        if batch:
            coros = [many(g) for g in _groups(bufs, spec.batch_size)]
        elif not wl.write:
            coros = [one_read() for _ in range(spec.queue_depth)]
        else:
            coros = [one(i) for i in range(spec.queue_depth)]
        await asyncio.gather(*coros)
    finally:
        if bufs:
            handle.release_buffers(bufs)
    _fold_flat(lat, samples)
    samples.fold()
    return meter.result(counts[0] + totals[0], counts[1] + totals[1], samples.hist, errors)


def _fold_flat(lat: array[int], samples: Samples) -> None:
    """Fold single-op latencies (ns, one op each) into *samples*' histogram."""
    rec = samples.hist.record_value
    for v in lat:
        rec(max(1, v), 1)
    del lat[:]
