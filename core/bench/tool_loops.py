"""What a Python user would pick instead of uringstack, at the same queue depth.

* :func:`thread_loop`: a ``concurrent.futures.ThreadPoolExecutor`` of QD threads
  running ``os.preadv`` / ``os.pwritev``; the caller keeps QD futures in
  flight and waits for the oldest (``fut.result()``), then submits the next.
* :func:`aiofiles_loop`: QD asyncio tasks, each with its own
  ``aiofiles.open(..., buffering=0)`` file, doing ``await f.seek(off)`` then
  ``await f.readinto(buf)`` (aiofiles has no positional read), on the event
  loop's default executor as aiofiles does.

Both run on the row's pinned worker thread, so the threads they start
inherit its CPU affinity: the same CPUs fio gets with ``--cpus_allowed``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uringstack.bench.api_loops import _check, _Offsets
from uringstack.bench.loops import Meter, Samples, _fill
from uringstack.bench.metrics import LoopResult
from uringstack.bench.spec import BenchSpec
from uringstack.ring.buffers import aligned_buffer

if TYPE_CHECKING:
    from uringstack.stack.handle import FileHandle


def _syscall_op(spec: BenchSpec, fd: int, buf: Any) -> Callable[[int], int]:
    wl = spec.wl
    if not wl.write:
        return lambda off: os.preadv(fd, [buf], off)
    if wl.durable and spec.durability == "dsync":
        return lambda off: os.pwritev(fd, [buf], off, os.RWF_DSYNC)
    if wl.durable:

        def write_sync(off: int) -> int:
            n = os.pwrite(fd, buf, off)
            os.fdatasync(fd)
            return n

        return write_sync
    return lambda off: os.pwrite(fd, buf, off)


def thread_loop(handle: FileHandle, spec: BenchSpec, worker: int) -> LoopResult:
    """A ThreadPoolExecutor of QD threads doing blocking syscalls on the handle's fd."""
    bs = spec.block_size
    bufs = [aligned_buffer(bs) for _ in range(spec.queue_depth)]
    if spec.wl.write:
        _fill(bufs, spec.seed)
    fns = [_syscall_op(spec, handle.fd, b) for b in bufs]
    offs = _Offsets(spec, worker)
    meter = Meter(spec)
    samples = Samples()
    errors: list[str] = []
    ops = nbytes = 0
    now_ns = time.perf_counter_ns
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=spec.queue_depth, thread_name_prefix="bench-pool")
    try:
        fifo: deque[tuple[int, int, concurrent.futures.Future[int]]] = deque()
        for slot, fn in enumerate(fns):
            fifo.append((now_ns(), slot, pool.submit(fn, offs.next())))
        stopping = False
        while fifo:
            t0, slot, fut = fifo.popleft()
            try:
                res = fut.result()
            except OSError as exc:
                errors.append(f"{exc.strerror} (errno {exc.errno})")
                res = -1
            now = now_ns()
            got = _check([res], bs, errors)
            ph = meter.phase(now)
            if ph == 1:
                samples.add(now - t0, 1)
                ops += 1
                nbytes += got
            stopping = stopping or ph == 2 or bool(errors)
            if not stopping:
                fifo.append((now_ns(), slot, pool.submit(fns[slot], offs.next())))
    finally:
        pool.shutdown(wait=True)
    samples.fold()
    return meter.result(ops, nbytes, samples.hist, errors)


def aiofiles_available() -> str | None:
    """None when aiofiles can be imported, else why not."""
    try:
        import aiofiles  # noqa: F401
    except ImportError:
        return "aiofiles is not installed (pip install 'uringstack[bench]')"
    return None


def aiofiles_loop(handle: FileHandle, spec: BenchSpec, worker: int) -> LoopResult:
    """QD asyncio tasks, each on its own aiofiles file: seek, then readinto (or write)."""
    return asyncio.run(_aiofiles_main(handle.path, spec, worker))


async def _aiofiles_main(path: str, spec: BenchSpec, worker: int) -> LoopResult:
    import aiofiles

    wl = spec.wl
    bs = spec.block_size
    offs = _Offsets(spec, worker)
    meter = Meter(spec)
    samples = Samples()
    errors: list[str] = []
    counts = [0, 0]
    now_ns = time.perf_counter_ns
    extra = (os.O_DIRECT if spec.direct else 0) | (os.O_DSYNC if wl.durable else 0)

    def opener(p: str, flags: int) -> int:
        return os.open(p, flags | extra)

    async def one() -> None:
        buf = aligned_buffer(bs)  # O_DIRECT needs an aligned buffer: readinto, not read()
        if wl.write:
            _fill([buf], spec.seed)
        async with aiofiles.open(path, "r+b" if wl.write else "rb", buffering=0, opener=opener) as f:
            while True:
                off = offs.next()
                t0 = now_ns()
                await f.seek(off)
                n = await (f.write(buf) if wl.write else f.readinto(buf))
                now = now_ns()
                got = _check([n or 0], bs, errors)
                ph = meter.phase(now)
                if ph == 1:
                    samples.add(now - t0, 1)
                    counts[0] += 1
                    counts[1] += got
                if ph == 2 or errors:
                    return

    await asyncio.gather(*(one() for _ in range(spec.queue_depth)))
    samples.fold()
    return meter.result(counts[0], counts[1], samples.hist, errors)
