"""Coalescing single asyncio reads and writes into one submission per loop iteration.

``await handle.read(n, off)`` from 32 tasks used to cost 32 batches: 32 sets
of C arrays, 32 ``io_uring_enter`` calls, 32 completion callbacks and a
thread-safe wake-up each.  Here every single-op await on an io_uring handle
only queues its op and a future on the ring's :class:`Coalescer`; the first
op queued in a loop iteration schedules :meth:`Coalescer.flush` with
``call_soon``, so the ops that all tasks issue before the loop comes round
again go out as ONE batch (one ``Ring.submit_columns``, one ``io_uring_enter``)
whose completions are reaped on the loop thread and resolve the futures
directly.  Reads of a fresh ``bytes`` result go into one arena per flush and
each await gets its bytes with the one copy its result needs.

Ownership: the batch keeps the arena and every pinned caller buffer until its
completions are reaped (the ring holds the batch), so a task cancelled
mid-flight never frees memory the kernel still writes to.  An op whose task
was cancelled before the flush is never submitted.  Each handle's
:class:`~uringstack.ring.inflight.InflightTracker` admits the ops before
submission and tracks the batch after, so ``handle.close()`` waits for
submitted ops and ops still queued when the handle closed fail with
:class:`~uringstack.errors.RingClosedError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from uringstack.errors import RingClosedError
from uringstack.ring import aio
from uringstack.ring.columns import BatchColumns
from uringstack.ring.flags import Op, SqeFlag
from uringstack.ring.native import ffi
from uringstack.ring.pending import UringPending

if TYPE_CHECKING:
    from uringstack.ring import Batch, Ring
    from uringstack.ring.inflight import InflightTracker

# The arena is overwritten by the kernel before anyone reads it: zero-filling it
# would cost a second pass over every byte.
_alloc_raw = ffi.new_allocator(should_clear_after_alloc=False)

_FIXED_FILE = int(SqeFlag.FIXED_FILE)
_DELIVERED = object()
_READ = int(Op.READ)
_WRITE = int(Op.WRITE)

# One queued request: (io, tracker, write, what, offset, future).  ``what`` is an
# int (the size of a read into the arena; the future gets bytes or -errno), the
# cffi pin of the caller's buffer (the future gets the int result), or a list of
# pins with a list of offsets (a read_many/write_many: the future gets the list).
class CoalescedFile(Protocol):
    """What the coalescer reads of a file served by the ring (the uring backend's FileIO)."""

    @property
    def path(self) -> str:
        """The file's path (for error messages)."""
        ...

    @property
    def fd(self) -> int:
        """The file's descriptor."""
        ...

    @property
    def fixed_index(self) -> int | None:
        """Its index in the ring's registered files, or None."""
        ...

    @property
    def completion_hook(self) -> Callable[[str, Ring], Callable[[Batch], None]] | None:
        """The worker's completion hook (one worker, one ring: the same for every file)."""
        ...


QueuedOp = tuple["CoalescedFile", "InflightTracker", bool, Any, Any, "asyncio.Future[Any]"]


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

    def add(
        self, io: CoalescedFile, tracker: InflightTracker, write: bool, what: Any, offset: Any
    ) -> asyncio.Future[Any]:
        """Queue one request (see ``QueuedOp``); its future gets the result when the batch completed."""
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
        pending: UringPending | None = None
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

    def _submit_admitted(self, ops: list[QueuedOp]) -> UringPending:
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
        starts: list[int] = []  # per request: its arena offset, else -1
        pos = 0
        any_flags = False
        for io, _tracker, _write, what, offset, _fut in ops:
            index = io.fixed_index
            fd, flag = (io.fd, 0) if index is None else (index, _FIXED_FILE)
            any_flags = any_flags or index is not None
            if type(what) is int:
                fds.append(fd)
                flags.append(flag)
                addrs.append(base + pos)
                lens.append(what)
                offs.append(offset)
                starts.append(pos)
                pos += what
            elif type(what) is list:
                k = len(what)
                fds.extend([fd] * k)
                flags.extend([flag] * k)
                for pin in what:
                    addrs.append(int(ffi.cast("uintptr_t", pin)))
                    lens.append(len(pin))
                offs.extend(offset)
                keep.extend(what)
                starts.append(-len(what) - 1)  # -1 - count: a list result of that many ops
            else:
                fds.append(fd)
                flags.append(flag)
                addrs.append(int(ffi.cast("uintptr_t", what)))
                lens.append(len(what))
                offs.append(offset)
                keep.append(what)
                starts.append(-1)
        n = len(offs)
        if arena is not None:
            keep.append(arena)
        cols = BatchColumns(n)
        cols.fill("opcodes", _WRITE if write else _READ)
        cols.set("fds", fds)
        cols.set("addrs", addrs)
        cols.set("lens", lens)
        cols.set("offs", offs)
        if any_flags:
            cols.set("sqe_flags", flags)
        ring = self.ring
        batch = ring.submit_columns(cols, n, keep)
        self.flushes += 1
        # From here the kernel owns the memory: nothing below may fail the awaits early.
        view = ffi.buffer(arena) if arena is not None else None
        loop = self.loop

        futures = [op[5] for op in ops]
        # deliver() holds no buffer: the batch's keep (dropped when reaped) is their only owner.
        state: list[Any] = [view]

        def deliver() -> None:
            # Runs once, on the loop thread, from the done-callback or the check below.
            arena_view = state[0]
            if arena_view is _DELIVERED:
                return
            state[0] = _DELIVERED
            results = batch.results
            i = 0
            for fut, start in zip(futures, starts, strict=True):
                if start < -1:
                    k = -1 - start
                    if not fut.done():  # else the awaiting task was cancelled
                        fut.set_result(results[i : i + k])
                    i += k
                    continue
                if not fut.done():
                    res = results[i]
                    if start >= 0 and res >= 0:
                        fut.set_result(arena_view[start : start + res])
                    else:
                        fut.set_result(res)
                i += 1

        def on_done(_: Batch) -> None:
            if asyncio._get_running_loop() is loop:
                deliver()  # reaped on the loop thread: no hop, the futures resolve now
            else:
                self._post(deliver)

        hook = ops[0][0].completion_hook  # one worker, one ring: the same hook for every handle
        if hook is not None:
            batch.add_done_callback(hook("write" if write else "read", ring))
        batch.add_done_callback(on_done)
        if not ring.closed:
            ring.try_reap()  # page-cache hits completed inside the submission
        if batch.finished:
            # Another thread may have reaped it before on_done was installed.
            deliver()
        return UringPending(ring, batch)


def coalescer_for(ring: Ring) -> Coalescer:
    """The running loop's coalescer of *ring* (made on first use, kept on the ring's bridge)."""
    bridge = aio.bridge_for(ring)
    co = bridge.coalescer
    if not isinstance(co, Coalescer):
        loop = bridge.loop
        co = Coalescer(ring, loop, lambda fn: aio.post(loop, fn))
        bridge.coalescer = co
    return co
