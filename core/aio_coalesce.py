"""Coalescing single asyncio reads and writes into one submission per loop iteration.

``await handle.read(n, off)`` from 32 tasks used to cost 32 batches: 32 sets
of C arrays, 32 ``io_uring_enter`` calls, 32 completion callbacks and a
thread-safe wake-up each.  Here every single-op await on an io_uring handle
only queues its op and a future on the ring's :class:`Coalescer`; the first
op queued in a loop iteration schedules :meth:`Coalescer.flush` with
``call_soon``, so the ops that all tasks issue before the loop comes round
again go out as ONE batch (one ``Ring.submit_arrays``, one ``io_uring_enter``)
whose completions are reaped on the loop thread and resolve the futures
directly.  Reads of a fresh ``bytes`` result go into one arena per flush and
each await gets its bytes with the one copy its result needs.

Ownership: the batch keeps the arena and every pinned caller buffer until its
completions are reaped (the ring holds the batch), so a task cancelled
mid-flight never frees memory the kernel still writes to.  An op whose task
was cancelled before the flush is never submitted.  Each handle's
:class:`~uringstack.inflight.InflightTracker` admits the ops before
submission and tracks the batch after, so ``handle.close()`` waits for
submitted ops and ops still queued when the handle closed fail with
:class:`~uringstack.errors.RingClosedError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uringstack.errors import RingClosedError
from uringstack.flags import Op, SqeFlag
from uringstack.native import ffi

if TYPE_CHECKING:
    from uringstack.inflight import InflightTracker
    from uringstack.ring import Batch, Ring
    from uringstack.uring_backend import UringFileIO

# The arena is overwritten by the kernel before anyone reads it: zero-filling it
# would cost a second pass over every byte.
_alloc_raw = ffi.new_allocator(should_clear_after_alloc=False)

_FIXED_FILE = int(SqeFlag.FIXED_FILE)
_READ = int(Op.READ)
_WRITE = int(Op.WRITE)

# One queued op: (io, tracker, write, size_or_pin, offset, future).  An int in the
# third-from-last place is the size of a read into the arena; anything else is
# the cffi pin of the caller's buffer.
QueuedOp = tuple["UringFileIO", "InflightTracker", bool, Any, int, "asyncio.Future[Any]"]


class _BatchPending:
    """The coalesced batch as one handle's tracker sees it (``close()`` waits on it)."""

    __slots__ = ("batch", "n", "ring")

    def __init__(self, ring: Ring, batch: Batch, n: int) -> None:
        self.ring = ring
        self.batch = batch
        self.n = n

    def done(self) -> bool:
        if not self.batch.finished and not self.ring.closed:
            self.ring.try_reap()
        return self.batch.finished

    def wait(self) -> list[int]:
        return self.ring.wait(self.batch)

    async def wait_async(self) -> list[int]:
        from uringstack.aio import wait_batch

        return await wait_batch(self.ring, self.batch)


class Coalescer:
    """Single ops queued on one ring during one loop iteration, submitted together."""

    def __init__(self, ring: Ring, loop: asyncio.AbstractEventLoop, post: Callable[[Callable[[], None]], None]) -> None:
        self.ring = ring
        self.loop = loop
        self._post = post
        self._queue: list[QueuedOp] = []
        self._scheduled = False
        self.flushes = 0
        """Batches submitted (for tests and diagnostics)."""

    def add(self, io: UringFileIO, tracker: InflightTracker, write: bool, what: Any, offset: int) -> asyncio.Future[Any]:
        """Queue one op; the future gets ``bytes`` (a full or short arena read) or an ``int`` result."""
        fut = self.loop.create_future()
        self._queue.append((io, tracker, write, what, offset, fut))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)
        return fut

    def drop(self) -> None:
        """Forget queued ops (their loop closed before it flushed them: nobody awaits them)."""
        self._queue = []
        self._scheduled = False

    def flush(self) -> None:
        """Submit what was queued this iteration: one batch of reads, one of writes."""
        self._scheduled = False
        ops, self._queue = self._queue, []
        reads = [op for op in ops if not op[2] and not op[5].done()]
        writes = [op for op in ops if op[2] and not op[5].done()]
        for group in (reads, writes):
            if group:
                self._submit(group)

    def _admit(self, ops: list[QueuedOp]) -> tuple[list[QueuedOp], list[InflightTracker]]:
        """Ops whose handle is still open (each tracker entered once); fail the others."""
        entered: dict[InflightTracker, bool] = {}
        keep: list[QueuedOp] = []
        for op in ops:
            tracker = op[1]
            ok = entered.get(tracker)
            if ok is None:
                try:
                    tracker._enter()
                    ok = True
                except RingClosedError:
                    ok = False
                entered[tracker] = ok
            if ok:
                keep.append(op)
            else:
                op[5].set_exception(RingClosedError(f"{op[0].path} was closed before this op was submitted"))
        return keep, [t for t, ok in entered.items() if ok]

    def _submit(self, ops: list[QueuedOp]) -> None:
        ops, trackers = self._admit(ops)
        pending: _BatchPending | None = None
        try:
            if ops:
                pending = self._submit_admitted(ops)
        except Exception as exc:  # nothing reached the kernel: every await of the batch raises it
            for op in ops:
                if not op[5].done():
                    op[5].set_exception(exc)
        finally:
            for tracker in trackers:
                tracker._leave(pending)

    def _submit_admitted(self, ops: list[QueuedOp]) -> _BatchPending:
        n = len(ops)
        write = ops[0][2]
        fds: list[int] = []
        flags: list[int] = []
        addrs: list[int] = []
        lens: list[int] = []
        offs: list[int] = []
        keep: list[Any] = []
        arena_size = sum(op[3] for op in ops if type(op[3]) is int)
        arena = _alloc_raw("char[]", arena_size) if arena_size else None
        base = int(ffi.cast("uintptr_t", arena)) if arena is not None else 0
        starts: list[int] = []
        pos = 0
        any_flags = False
        for io, _tracker, _write, what, offset, _fut in ops:
            index = io.fixed_index
            if index is None:
                fds.append(io.fd)
                flags.append(0)
            else:
                fds.append(index)
                flags.append(_FIXED_FILE)
                any_flags = True
            if type(what) is int:
                addrs.append(base + pos)
                lens.append(what)
                starts.append(pos)
                pos += what
            else:
                addrs.append(int(ffi.cast("uintptr_t", what)))
                lens.append(len(what))
                keep.append(what)
                starts.append(-1)
            offs.append(offset)
        if arena is not None:
            keep.append(arena)
        arrays = [
            ffi.new("uint8_t[]", [_WRITE if write else _READ] * n),
            ffi.new("int32_t[]", fds),
            ffi.new("uint64_t[]", addrs),
            ffi.new("uint32_t[]", lens),
            ffi.new("uint64_t[]", offs),
            ffi.NULL,
            ffi.new("uint8_t[]", flags) if any_flags else ffi.NULL,
            ffi.NULL,
        ]
        ring = self.ring
        batch = ring.submit_arrays(n, arrays, keep)
        self.flushes += 1
        # From here the kernel owns the memory: nothing below may fail the awaits early.
        view = ffi.buffer(arena) if arena is not None else None
        loop = self.loop

        delivered = [False]

        def deliver() -> None:
            # Runs once, on the loop thread, from the done-callback or the check below.
            if delivered[0]:
                return
            delivered[0] = True
            results = batch.results
            for i, op in enumerate(ops):
                fut = op[5]
                if fut.done():
                    continue  # the awaiting task was cancelled
                res = results[i]
                start = starts[i]
                if start >= 0 and res >= 0:
                    assert view is not None
                    fut.set_result(view[start : start + res])
                else:
                    fut.set_result(res)

        def on_done(_: Batch) -> None:
            if asyncio._get_running_loop() is loop:
                deliver()  # reaped on the loop thread: no hop, the futures resolve now
            else:
                self._post(deliver)

        hook = ops[0][0].completion_hook
        if hook is not None:
            batch.add_done_callback(hook("write" if write else "read", ring))
        batch.add_done_callback(on_done)
        if not ring.closed:
            ring.try_reap()  # page-cache hits completed inside the submission
        if batch.finished:
            # Another thread may have reaped it before on_done was installed.
            deliver()
        return _BatchPending(ring, batch, n)
