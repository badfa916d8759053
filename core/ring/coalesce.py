"""Coalescing single asyncio reads and writes into one submission per loop iteration.

``await handle.read(n, off)`` from 32 tasks used to cost 32 batches: 32 sets
of C arrays, 32 ``io_uring_enter`` calls, 32 completion callbacks and a
thread-safe wake-up each.  Here every single-op await on an io_uring handle
only queues its op and a future on the ring's :class:`Coalescer`; the first
op queued in a loop iteration schedules :meth:`Coalescer.flush` with
``call_soon``, so the ops that all tasks issue before the loop comes round
again go out as ONE batch (one ``Ring.submit_columns``, one ``io_uring_enter``)
whose completions are reaped on the loop thread and resolve the futures
directly: once the reap released the ring's lock, :meth:`Coalescer.drain` sets
each result and runs the awaiting task's wake-up in place
(:func:`~uringstack.ring.wakeups.resolve`),
with no ``call_soon`` Handle per await.  The ops those woken tasks queue go out in
the flush's next round, in the same loop callback (at most :data:`FLUSH_ROUNDS`
rounds; the rest at the next loop turn).  Reads of a fresh ``bytes`` result go into one arena per flush and
each await gets its bytes with the one copy its result needs.  The arena and
the C column sets are reused by later flushes: an arena once its bytes were
copied out (never while its batch is in the kernel or not yet delivered), a
column set once its batch finished.

Ownership: the batch keeps the arena and every pinned caller buffer until its
completions are reaped (the ring holds the batch), so a task cancelled
mid-flight never frees memory the kernel still writes to.  An op whose task
was cancelled before the flush is never submitted.  Each handle's
:class:`~uringstack.ring.inflight.InflightTracker` takes the flush's
:class:`FlushPending` before submission (one lock step per handle and flush)
or refuses it once closed, so ``handle.close()`` waits for submitted ops (and
for a submission under way) and ops still queued when the handle closed fail
with :class:`~uringstack.errors.RingClosedError`.
"""

from __future__ import annotations

import asyncio
import errno
import functools
from _thread import get_ident
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Protocol

from uringstack.errors import CancelTimeoutError, RingClosedError, SubmissionError
from uringstack.ring import SUBMITTED, RingBusyError, aio, orphaned_batches
from uringstack.ring.buffers import fixed_opcodes_pay, put_opcodes
from uringstack.ring.columns import BatchColumns
from uringstack.ring.flags import Op, SqeFlag
from uringstack.ring.inflight import submitted_since
from uringstack.ring.interrupts import Repeatable, despite_signals
from uringstack.ring.native import ffi
from uringstack.ring.pending import UringPending
from uringstack.ring.settle import settle
from uringstack.ring.wakeups import makes_plain_futures, resolve

if TYPE_CHECKING:
    from uringstack.ring import Batch, Ring
    from uringstack.ring.inflight import InflightTracker

# The arena is overwritten by the kernel before anyone reads it: zero-filling it
# would cost a second pass over every byte.
_alloc_raw = ffi.new_allocator(should_clear_after_alloc=False)

_FIXED_FILE = int(SqeFlag.FIXED_FILE)
_POINTER_SIZE = ffi.sizeof("char *")
_DELIVERED = object()
_FLUSH_TAG = object()  # the first item of a flush's batch's tag: (_FLUSH_TAG, futures, starts)
_READ = int(Op.READ)
_WRITE = int(Op.WRITE)
_READ_FIXED = int(Op.READ_FIXED)
_WRITE_FIXED = int(Op.WRITE_FIXED)

# A column set is reused once its last batch finished (C reads the columns only
# while submitting); at most this many are kept per capacity.
_POOLED_COLUMNS = 4
FLUSH_ROUNDS = 4
"""Flush rounds per loop callback at most (see :meth:`Coalescer.flush`)."""
_MIN_CAPACITY = 32


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
    def direct(self) -> bool:
        """Whether it was opened with O_DIRECT (which decides the opcodes of registered buffers)."""
        ...

    @property
    def completion_hook(self) -> Callable[[str, Ring], Callable[[Batch], None]] | None:
        """The worker's completion hook (one worker, one ring: the same for every file)."""
        ...


# One queued request: (io, tracker, what, offset, future).  ``what`` is an int
# (the size of a read into the arena; the future gets bytes or -errno), the cffi
# pin of the caller's buffer (the future gets the int result), or a tuple of a
# list of pins and their byte lengths with a list of offsets (a read_many/write_many:
# the future gets the list).  A read_many/write_many of registered-buffer leases of
# this ring adds their slots to the tuple (pins, lengths, slots): the pins are the
# leases themselves, submitted at their own addresses (READ_FIXED/WRITE_FIXED on an
# O_DIRECT file: buffers.fixed_opcodes_pay).
QueuedOp = tuple["CoalescedFile", "InflightTracker", Any, Any, "asyncio.Future[Any]"]

# One handle's requests of a flush as columns: (io, whats, offsets, futures), ``whats`` and
# ``offsets`` as QueuedOp has them: the arena reads' sizes and offsets, or the
# read_many/write_many requests' (pins, lengths) pairs and offset lists.
_OneFile = tuple["CoalescedFile", tuple[Any, ...], tuple[Any, ...], list["asyncio.Future[Any]"]]
_future_done = asyncio.Future.done


class Coalescer:
    """Single ops queued on one ring during one loop iteration, submitted together.

    Everything here runs on the loop's thread (the queueing awaits, the flush,
    and the delivery of results, which a reaper on another thread posts to the
    loop), so the arena and column sets it reuses need no lock."""

    def __init__(self, ring: Ring, loop: asyncio.AbstractEventLoop, post: Callable[[Callable[[], None]], None]) -> None:
        self.ring = ring
        self.loop = loop
        self._post = post
        self._create_future: Callable[[], asyncio.Future[Any]] = loop.create_future
        self._plain_futures = makes_plain_futures(loop)
        """asyncio's own loops make a plain Future: made directly, ``asyncio.Future(loop=loop)``,
        without the create_future method call (0.38 against 0.24 us per await measured;
        a ``functools.partial`` with the keyword copies its keyword dict per call)."""
        if self._plain_futures:
            self._create_future = functools.partial(asyncio.Future, loop=loop)
        self.thread_loop: Any = loop if isinstance(loop, asyncio.BaseEventLoop) else None
        """The loop, when it tells which thread runs it (asyncio's own loops do: ``_thread_id``).

        ``asyncio._get_running_loop()`` costs a ``getpid`` syscall per call in
        CPython 3.11 (about 1 us here, once per await); comparing the thread that
        runs this loop with the calling thread answers the same question for
        free: one thread runs at most one loop at a time."""
        self._reads: list[QueuedOp] = []  # reads into caller buffers (pins)
        self._arena_reads: list[QueuedOp] = []  # reads into the flush's arena (``await read``)
        self._writes: list[QueuedOp] = []
        self._extra = 0  # ops queued beyond one per request (read_many/write_many lists)
        self._scheduled = False
        # A flush found no CQ room (Ring.cq_cap) for some queued ops: the next reap
        # (the ring's eventfd fires on every completion) flushes again.
        self._waiting_room = False
        self._requeued = 0  # requests put back by the current flush round (see _flush_round)
        # An arena whose batch was delivered (its bytes copied out): the next flush reads into it.
        self._spare: Any = None
        self._spare_size = 0
        self._pool: dict[int, list[BatchColumns]] = {}
        # Deliveries of batches reaped on the loop thread, run by drain() once no
        # ring lock is held (a woken task may submit on the same ring).
        self._ready: list[Callable[[], None]] = []
        self._drain_scheduled = False
        self._draining = False  # (drain() under way: not entered again)
        self._reaping = False  # reap() drains itself: on_done needs no call_soon
        probe = loop.create_future()
        self.direct = isinstance(probe, asyncio.Future) and hasattr(probe, "_callbacks")
        """Whether futures resolve by running their awaiting task's wake-up in place (see
        :func:`~uringstack.ring.wakeups.resolve`)."""
        probe.cancel()
        self.flushes = 0
        """Batches submitted (for tests and diagnostics)."""

    def on_loop_thread(self) -> bool:
        """True when the calling thread is running this coalescer's loop now."""
        tl = self.thread_loop
        if tl is not None:
            return bool(tl._thread_id == get_ident())
        return asyncio._get_running_loop() is self.loop

    def reader(
        self, io: CoalescedFile, tracker: InflightTracker, inline_budget: int, budget: list[int]
    ) -> Callable[[int, int], asyncio.Future[Any] | bytes | None] | None:
        """:meth:`add_read` for *io* and *tracker*, as one plain function of (size, offset)
        that queues only when called on the thread running this loop (else None, nothing
        queued); None when the loop does not tell which thread runs it (see :attr:`thread_loop`)
        or makes its own futures (its reads take :meth:`add_read`, which asks it for each).

        The hot path of ``await handle.read(n, off)`` from many tasks: one Python
        call per await, where a ``functools.partial`` of the bound method was three
        C-level calls and a keyword dict copy for the future.

        With an *inline_budget* (bytes, the stack's ``core.aio_inline_read_budget``), a
        read the page cache holds in full is copied right here, on the loop's thread,
        and its ``bytes`` returned instead of a future (*io*'s ``read_cached``:
        ``preadv2(RWF_NOWAIT)``, which never waits for the device): no future, no
        batch, no wake-up, and the task does not yield.  So that such a task cannot
        keep the loop from its other tasks for long, once *inline_budget* bytes were
        copied the next read goes through the ring (and yields), and the budget
        starts again.  *budget* (a one-item list) holds what is left of it, shared with
        the handle's ``read_many_async``.  A read not all cached (or short: end of
        file; or failed) goes to the ring whole, which reads it again and reports what
        it finds, as without this step."""
        tl = self.thread_loop
        if tl is None or not self._plain_futures:
            return None
        loop = self.loop
        future = asyncio.Future
        call_soon = loop.call_soon
        flush = self.flush
        cached = getattr(io, "read_cached", None) if inline_budget > 0 else None
        enter, done = tracker.enter, tracker.left

        def read(size: int, offset: int) -> asyncio.Future[Any] | bytes | None:
            if tl._thread_id != get_ident():
                return None
            if cached is not None and budget[0] >= size:  # (a bound: a read over what is left yields)
                buf = bytearray(size)
                enter()  # (before the try: it raises only with nothing counted)
                try:
                    res = cached(buf, size, offset)
                finally:
                    done()
                if res == size:
                    budget[0] -= size
                    return bytes(buf)
                # not all of it cached (or at end of file, or failed): the ring reads it
                # all, and reports what it finds in its own words
            budget[0] = inline_budget  # this read yields to the loop
            fut: asyncio.Future[Any] = future(loop=loop)
            self._arena_reads.append((io, tracker, size, offset, fut))
            if not self._scheduled:
                self._scheduled = True
                call_soon(flush)
            return fut

        return read

    def add_read(self, io: CoalescedFile, tracker: InflightTracker, size: int, offset: int) -> asyncio.Future[Any]:
        """Queue a read of *size* bytes into the flush's arena; its future gets ``bytes`` or ``-errno``."""
        fut = self._create_future()
        self._arena_reads.append((io, tracker, size, offset, fut))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)
        return fut

    def add(
        self, io: CoalescedFile, tracker: InflightTracker, write: bool, what: Any, offset: Any
    ) -> asyncio.Future[Any]:
        """Queue one request (see ``QueuedOp``); its future gets the result when the batch completed."""
        if type(what) is int:
            if write:
                raise ValueError("an arena op is a read")
            return self.add_read(io, tracker, what, offset)
        if type(what) is list:
            return self.add_many(io, tracker, write, what, offset, list(map(len, what)))
        fut = self._create_future()
        (self._writes if write else self._reads).append((io, tracker, what, offset, fut))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)
        return fut

    def add_many(
        self,
        io: CoalescedFile,
        tracker: InflightTracker,
        write: bool,
        pins: list[Any],
        offsets: list[int],
        lens: list[int],
        slots: list[int] | None = None,
    ) -> asyncio.Future[Any]:
        """Queue a read_many/write_many of *pins* (``len(pins[i]) == lens[i]``, which the caller
        has already: not measured again); its future gets the list of results.

        With *slots* the pins are registered-buffer leases of this ring and ``slots[i]``
        their indexes (``buffers.fixed_slots``, every one >= 0): READ_FIXED/WRITE_FIXED."""
        fut = self._create_future()
        self._extra += len(pins) - 1
        what = (pins, lens) if slots is None else (pins, lens, slots)
        (self._writes if write else self._reads).append((io, tracker, what, offsets, fut))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)
        return fut

    async def settle(self, fut: asyncio.Future[Any], timeout: float, op: str, path: str | None) -> None:
        """*fut*'s await was cancelled (on the loop thread): return once the kernel is done with
        its request's buffers (docs/api.md, asyncio, "Cancelling an await").

        Still queued (not flushed yet), it is never submitted (the flush drops a done
        future's op): nothing to wait for; likewise once its batch was reaped.  In a batch
        in flight, its ops (and only its: the batch's other requests are other awaits')
        are cancelled in the kernel (:meth:`~uringstack.ring.Ring.cancel_ops`), and the
        batch's completion is awaited through further cancels, bounded by *timeout*
        (:func:`~uringstack.ring.settle.settle`: :class:`~uringstack.errors.CancelTimeoutError`
        past it).  On a closed ring, whose close waited for what was in flight, only an op
        it gave up on (orphaned: its buffers kept for the life of the process) is left:
        :class:`~uringstack.errors.CancelTimeoutError` at once.  The batch is found by
        a scan of the ring's batches in flight for the flush holding *fut* (the batch's
        tag): the cancelled path's cost, none on the others."""
        ring = self.ring
        if ring.closed:
            if _flush_holding(orphaned_batches(), fut) is not None:
                raise CancelTimeoutError(
                    errno.ETIMEDOUT, op, path,
                    "cancelled after its submission, and its ring was closed before it completed: the kernel "
                    "may still use its buffer, kept for the life of the process; do not reuse it",
                )  # fmt: skip
            return
        found = _flush_holding(ring.batches_in_flight(), fut)
        if found is None:
            return
        batch, ops = found
        ring.cancel_ops(batch, ops)
        await settle(UringPending(ring, batch), timeout, op, path)

    def drop(self) -> None:
        """Forget queued ops (their loop closed before it flushed them: nobody awaits them)."""
        self._reads = []
        self._arena_reads = []
        self._writes = []
        self._extra = 0
        self._scheduled = False
        self._waiting_room = False
        self._ready = []
        self._drain_scheduled = False

    def idle(self) -> bool:
        """Nothing queued, waiting for room, scheduled on the loop or reaped and not delivered:
        the loop may hand the ring to another (``aio.refusal``)."""
        return not (
            self._arena_reads
            or self._reads
            or self._writes
            or self._scheduled
            or self._waiting_room
            or self._ready
            or self._drain_scheduled
        )

    def reap(self) -> None:
        """Reap the ring without blocking (on the loop thread), then deliver what completed."""
        ring = self.ring
        try:
            if not ring.closed:
                self._reaping = True
                try:
                    ring.try_reap()
                except BaseException:
                    # A completion callback raised: what was reaped is still delivered first.
                    self._reaping = False
                    self.drain()
                    raise
                self._reaping = False
            self.drain()
        except BaseException:
            # (A signal in the collection, at drain()'s entry: the completions left in the
            # ring, or reaped and not delivered, may have no eventfd count left to wake the
            # loop, which the reader consumed first.)  The next turn reaps and drains again.
            self._reaping = False
            self.loop.call_soon(self.reap)
            raise
        if self._waiting_room and not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self.loop.call_soon(self.drain)

    def drain(self) -> None:
        """Deliver the batches reaped on the loop thread (outside any ring lock).

        Each delivery leaves the list only once it returned: one cut short (a SystemExit
        out of a woken task, a raising signal anywhere in here) stays first in it, with
        those after it, for the next drain (scheduled), which runs it again (safe: it
        resolves only what it has not).  Called again while it runs (a task woken in place
        that drains): a no-op, the drain under way runs what was added."""
        if self._draining:
            return
        ready = self._ready
        try:
            self._draining = True
            self._drain_scheduled = False
            while ready:
                ready[0]()
                del ready[0]
        except BaseException:
            if ready:
                self._schedule_drain()
            raise
        finally:
            self._draining = False

    def _deliver_now(self, deliver: Callable[[], None]) -> None:
        """Deliver a batch now, on the loop thread outside any ring lock (one that another
        thread reaped before its done-callback was in), through :meth:`drain`: cut short
        by a signal, it is kept for the next drain (one is scheduled)."""
        try:
            self._ready.append(deliver)
            self.drain()
        except BaseException:
            if self._ready:
                self._schedule_drain()
            raise

    def _completed(self, deliver: Callable[[], None]) -> None:
        """A flush's batch completed (its done-callback, on the thread that reaped it): have it
        delivered on the loop thread.  Safe to repeat (a delivery queued twice runs once)."""
        if self.on_loop_thread():
            self._on_loop_done(deliver)  # delivered by drain(), outside the ring's lock
        else:
            # Into the drain list from this thread (a list's append is atomic under the
            # GIL; drain() consumes it in place, never swaps it), then the drain posted:
            # a signal at the posted drain's entry leaves the delivery for the next drain
            # (the eventfd reader's reap drains too), where a posted function holding
            # the delivery itself lost it.  A delivery cut short is run again as any.
            self._ready.append(deliver)
            self._post(self.drain)

    def _on_loop_done(self, deliver: Callable[[], None]) -> None:
        """A batch was reaped on the loop thread, maybe inside the ring's lock: deliver it soon."""
        self._ready.append(deliver)
        if not self._reaping:
            self._schedule_drain()

    def flush(self) -> None:
        """Submit what was queued this iteration: one batch of reads, one of writes.

        At most what the ring has room for under its :attr:`~uringstack.ring.Ring.cq_cap`:
        the rest stays queued, in order, and goes out once completions were reaped
        (never a wait on the loop's thread, which may be what completes the ops
        in flight).  A single read_many/write_many larger than the whole cap goes out
        alone once the ring is idle, in parts (its submission waits for room).

        Up to :data:`FLUSH_ROUNDS` rounds in one loop callback: the tasks a round's
        batches woke in place (page-cache hits, complete inside the submission) queue
        their next ops meanwhile, and those go out in the next round at once, not one
        loop turn later (a ``call_soon`` Handle, a ``select`` and a turn of the loop's
        own bookkeeping per flush: 525 of the ~19,200 instructions of a cached 4 KiB
        ``await read`` from 32 tasks at 4 rounds, 362 at 2).
        What the last round's tasks queued goes out at the next loop turn, so other
        callbacks and I/O wait at most that many rounds."""
        rounds = 0
        fresh = True  # (an exception out of a round: whatever is queued gets a flush of its own)
        try:
            while True:
                rounds += 1
                # Ops queued from here (by the tasks this round wakes in place) wait for
                # the next round: no call_soon of a flush of their own.
                self._scheduled = True
                fresh = self._flush_round()
                if not fresh or rounds >= FLUSH_ROUNDS or self._waiting_room:
                    break
        finally:
            # Ops queued during the last round (or before an error) go out next turn;
            # ops only put back for want of CQ room wait for the reap that frees it.
            self._scheduled = fresh and bool(self._arena_reads or self._reads or self._writes)
            if self._scheduled:
                self.loop.call_soon(self.flush)

    def _flush_round(self) -> bool:
        """One round of :meth:`flush`; True when ops were queued meanwhile (not put back for
        want of room: by the tasks its batches woke in place)."""
        self._waiting_room = False
        self._requeued = 0
        held = None
        queued = len(self._arena_reads) + len(self._reads) + len(self._writes) + self._extra
        if queued > self.ring.cq_room() and not self.ring.closed:  # (closed: the submission fails the ops)
            held = self._trim_to_room()
        self._extra = 0
        try:
            self._flush_queued()
        finally:
            if held is not None:
                self._requeue(*held)
        return len(self._arena_reads) + len(self._reads) + len(self._writes) > self._requeued

    def _trim_to_room(self) -> tuple[list[QueuedOp], list[QueuedOp], list[QueuedOp]]:
        """Leave in the queues only the oldest requests that fit in the ring's CQ room; the others, taken out.

        A request :meth:`_admit` will not submit (its future is done: its task was
        cancelled; its handle is closed: refused) takes no room.  Until session 32 such
        requests counted: 600 cancelled awaits at the head of the queue took all of it,
        nothing was submitted, and with nothing in flight no completion came to flush the
        rest (tests/ring/test_coalesce_room.py)."""
        ring = self.ring
        room = ring.cq_room()
        idle = room >= ring.cq_cap
        out: list[list[QueuedOp]] = []
        for queue in (self._arena_reads, self._reads, self._writes):
            keep = 0
            for op in queue:
                if op[4].done() or op[1].closed:
                    keep += 1  # (left queued: the admission drops it)
                    continue
                k = _ops_of(op[2])
                if k > room and not (idle and k > ring.cq_cap and room == ring.cq_cap):
                    break
                room -= min(k, room)
                keep += 1
            out.append(queue[keep:])
            del queue[keep:]
        return out[0], out[1], out[2]

    def _requeue(self, arena: list[QueuedOp], reads: list[QueuedOp], writes: list[QueuedOp]) -> None:
        """Put ops that found no CQ room back at the front of the queues (older than any queued since)."""
        if not (arena or reads or writes):
            return
        for ops in (arena, reads, writes):
            for op in ops:
                self._extra += _ops_of(op[2]) - 1
        self._arena_reads[:0] = arena
        self._reads[:0] = reads
        self._writes[:0] = writes
        ring = self.ring
        if ring.cq_room() >= ring.cq_cap:
            # Nothing in flight, so no completion will wake a reap to flush them: they are
            # not waiting for room but queued, and the flush goes on (the admission refused
            # ops the trim counted: a handle closed meanwhile by another thread).
            return
        self._requeued += len(arena) + len(reads) + len(writes)
        self._waiting_room = True

    def _flush_queued(self) -> None:
        if self._reads:
            self._submit(False)  # (with the arena reads)
        elif self._arena_reads:
            self._submit(False, arena_only=True)
        if self._writes:
            self._submit(True)

    def _submit(self, write: bool, arena_only: bool = False) -> None:
        """Take the queued writes, else the queued reads (with the arena reads unless
        *arena_only*: only those are queued), and submit them as one batch."""
        # Each handle's tracker takes the flush's pending before anything is
        # submitted (one lock step per handle, not an enter and a leave), and
        # refuses it once the handle is closed: those ops fail here.
        pending = FlushPending(self.ring)
        # The ops are taken from the queues only here, with no call before the try: a
        # raising signal handler before this leaves them queued (the next flush takes
        # them), and one in the try fails them, or leaves them to their batch's completions.
        if write:
            ops = self._writes
            self._writes = []
        elif arena_only:
            ops = self._arena_reads
            self._arena_reads = []
        else:
            ops = self._reads
            self._reads = []
            if self._arena_reads:
                ops = self._arena_reads + ops
                self._arena_reads = []
        # (Inside the try: a raising signal handler right after a tracker took the pending
        # must still mark it failed, or that handle's close() waits for it until its timeout.)
        live = ops
        try:
            one = self._one_file(ops, pending, arena_only)
            if one is None:
                live = self._admit(ops, pending)
            if one is not None:
                if arena_only:
                    self._submit_arena(one, pending)
                else:
                    self._submit_lists(one, write, pending)
            elif live:
                self._submit_admitted(live, write, pending)
        except RingBusyError:  # no CQ room after all (another thread took it): nothing was submitted
            arena_ops = [op for op in live if type(op[2]) is int]
            rest = [op for op in live if type(op[2]) is not int]
            self._requeue(arena_ops, [] if write else rest, rest if write else [])
        except Exception as exc:
            if pending.batch is not None:
                raise  # (a signal handler's, after the ring took the batch in): its completions resolve the awaits
            # nothing reached the kernel: every await of the batch raises it
            for op in live:
                if not op[4].done():
                    op[4].set_exception(exc)
        finally:
            if pending.batch is None:
                pending.failed = True  # nothing in flight: a close() waiting on it may go on

    def _admit(self, ops: list[QueuedOp], pending: FlushPending) -> list[QueuedOp]:
        """The ops to submit: their handle's tracker took *pending*; the others' awaits fail
        (closed handle) or were cancelled (never submitted).  Sets ``pending.trackers``."""
        tracked: dict[InflightTracker, bool] = {}
        live: list[QueuedOp] = []
        last: InflightTracker | None = None
        ok = False
        for op in ops:
            fut = op[4]
            if fut.done():
                continue  # its task was cancelled before the flush: never submitted
            tracker = op[1]
            if tracker is not last:  # (the ops of one handle come in runs: one dict step per run)
                last = tracker
                got = tracked.get(tracker)
                if got is None:
                    try:
                        tracker.track(pending)
                        got = True
                    except RingClosedError:
                        got = False
                    tracked[tracker] = got
                ok = got
            if ok:
                live.append(op)
            else:
                fut.set_exception(RingClosedError(f"{op[0].path} was closed before this op was submitted"))
        pending.trackers = [tracker for tracker, ok in tracked.items() if ok]
        return live

    def _one_file(self, ops: list[QueuedOp], pending: FlushPending, arena_only: bool) -> _OneFile | None:
        """Requests all from one handle, none cancelled, admitted by its tracker, as whole
        columns: arena reads (*arena_only*: ``await read(n, off)`` from many tasks on one
        handle), else read_many/write_many requests of plain pins (``*_many_async`` of
        lease_buffers' leases from many tasks); else None (nothing tracked: :meth:`_admit`
        sorts them out op by op)."""
        if not self._plain_futures:
            return None  # (done() below is asyncio.Future's)
        ios, trackers, whats, offs, futures = zip(*ops, strict=True)
        n = len(ops)
        io, tracker = ios[0], trackers[0]
        if ios.count(io) != n or trackers.count(tracker) != n or any(map(_future_done, futures)):
            return None
        # (Not arena reads: every request a list, no single pin, all of one kind: plain pins
        # (pins, lengths) or registered leases of this ring (pins, lengths, slots).)
        if not arena_only and (set(map(type, whats)) != {tuple} or len(set(map(len, whats))) != 1):
            return None
        try:
            tracker.track(pending)
        except RingClosedError:
            return None
        pending.trackers = [tracker]
        return io, whats, offs, list(futures)

    def _columns(self, n: int) -> BatchColumns:
        """Idle columns for *n* ops: a pooled set whose batch finished, else a new one."""
        cap = max(_MIN_CAPACITY, 1 << (n - 1).bit_length())
        pool = self._pool.get(cap)
        if pool is None:
            pool = self._pool[cap] = []
        for cols in pool:
            last = cols.batch
            if last is None or last.finished:
                return cols
        cols = BatchColumns(cap)
        if len(pool) < _POOLED_COLUMNS:
            pool.append(cols)
        return cols

    def _arena(self, need: int) -> tuple[Any, int]:
        """An arena of at least *need* bytes and its size: the spare one if it is big enough."""
        spare = self._spare
        if spare is not None and self._spare_size >= need:
            self._spare = None
            return spare, self._spare_size
        return _alloc_raw("char[]", need), need

    def _submit_admitted(self, ops: list[QueuedOp], write: bool, pending: FlushPending) -> None:
        fds: list[int] = []
        flags: list[int] = []
        addrs: list[int] = []
        lens: list[int] = []
        offs: list[int] = []
        keep: list[Any] = []
        need = sum(op[2] for op in ops if type(op[2]) is int)  # (the arena reads' sizes)
        arena, arena_size = self._arena(need) if need else (None, 0)
        base = int(ffi.cast("uintptr_t", arena)) if arena is not None else 0
        starts: list[int] = []  # per request: its arena offset, else -1 (-1 - count for a list)
        # Caller buffers' addresses are written from their pins by _put_pins, in C: one
        # int(ffi.cast(...)) per pin cost about 0.5 us.  Flat (start, count) pairs of the
        # addrs positions that take keep's pins, in order (adjacent runs merged).
        runs: list[int] = []
        leases: list[Any] = []  # registered-buffer leases (READ_FIXED/WRITE_FIXED)
        fixed: list[Any] = []  # flat (addrs position, slots) pairs of their ops
        lists = False
        pos = 0
        last_io: CoalescedFile | None = None
        fd = flag = 0
        for io, _tracker, what, offset, _fut in ops:
            if io is not last_io:
                last_io = io
                index = io.fixed_index
                fd, flag = (io.fd, 0) if index is None else (index, _FIXED_FILE)
            if type(what) is int:
                fds.append(fd)
                flags.append(flag)
                addrs.append(base + pos)
                lens.append(what)
                offs.append(offset)
                starts.append(pos)
                pos += what
                continue
            at = len(addrs)
            if type(what) is tuple:
                pins, pin_lens = what[0], what[1]
                k = len(pins)
                fds.extend([fd] * k)
                flags.extend([flag] * k)
                lens.extend(pin_lens)
                offs.extend(offset)
                starts.append(-k - 1)
                lists = True
                if len(what) == 3:  # leases: their own addresses, no pin to write (not in runs)
                    addrs.extend([b.addr for b in pins])
                    leases.extend(pins)
                    if fixed_opcodes_pay(io.direct):
                        fixed += (at, what[2])
                    continue
                addrs.extend([0] * k)
                keep.extend(pins)
            else:
                k = 1
                fds.append(fd)
                flags.append(flag)
                addrs.append(0)
                lens.append(len(what))
                offs.append(offset)
                keep.append(what)
                starts.append(-1)
            if runs and runs[-2] + runs[-1] == at:
                runs[-1] += k
            else:
                runs += (at, k)
        n = len(offs)
        if arena is not None:
            keep.append(arena)
        cols = self._columns(n)
        plain = _WRITE if write else _READ
        if fixed:
            # The leases' slots in the batch's positions, opcodes as the sync batch path puts them.
            slots = [-1] * n
            for r in range(0, len(fixed), 2):
                at, lease_slots = fixed[r], fixed[r + 1]
                slots[at : at + len(lease_slots)] = lease_slots
            put_opcodes(cols, slots, plain, _WRITE_FIXED if write else _READ_FIXED, True)  # (slots: O_DIRECT files')
        else:
            cols.fill("opcodes", plain)
        _put_same(cols, "fds", fds)
        if max(flags) or cols.is_set("sqe_flags"):
            _put_same(cols, "sqe_flags", flags)
        cols.set("addrs", addrs)
        if runs:
            _put_pins(cols, runs, keep)
        cols.set("lens", lens)
        cols.set("offs", offs)
        if leases:
            keep += leases  # (after the pins _put_pins took: it reads keep from the start)
        futures = [op[4] for op in ops]
        self._launch(futures, ops[0][0], write, pending, cols, n, keep, arena, arena_size, starts, lists, leases)

    def _submit_lists(self, requests: _OneFile, write: bool, pending: FlushPending) -> None:
        """Submit read_many/write_many requests of one kind from one file (see :meth:`_one_file`):
        plain pins, or registered leases of this ring (READ_FIXED/WRITE_FIXED at their own
        addresses, marked in flight as :meth:`_submit_admitted` does); columns built by
        whole-list steps, no per-request loop of appends."""
        io, whats, offsets, futures = requests
        pins = [pin for what in whats for pin in what[0]]
        lens = [k for what in whats for k in what[1]]
        offs = [off for run in offsets for off in run]
        n = len(offs)
        index = io.fixed_index
        fd, flag = (io.fd, 0) if index is None else (index, _FIXED_FILE)
        cols = self._columns(n)
        leases = None
        if len(whats[0]) == 3:  # registered leases: their slots, every one >= 0 (add_many)
            leases = pins
            if fixed_opcodes_pay(io.direct):  # (put_opcodes' rule, for slots known all >= 0)
                cols.fill("opcodes", _WRITE_FIXED if write else _READ_FIXED)
                cols.set("buf_index", [slot for what in whats for slot in what[2]])
            else:
                cols.fill("opcodes", _WRITE if write else _READ)
            cols.set("addrs", [lease.addr for lease in leases])
        else:
            cols.fill("opcodes", _WRITE if write else _READ)
            _put_pins(cols, [0, n], pins)
        cols.fill("fds", fd)
        if flag or cols.is_set("sqe_flags"):
            cols.fill("sqe_flags", flag)
        size = lens[0]
        if lens.count(size) == n:  # (buffers of one size, the common case: kept across flushes)
            cols.fill("lens", size)
        else:
            cols.set("lens", lens)
        cols.set("offs", offs)
        starts = [-1 - len(what[0]) for what in whats]
        self._launch(futures, io, write, pending, cols, n, pins, None, 0, starts, True, leases)

    def _submit_arena(self, reads: _OneFile, pending: FlushPending) -> None:
        """Submit reads that all go into the arena, from one file: columns built by whole-list steps,
        no per-op loop of appends."""
        io, sizes, offs, futures = reads
        arena, arena_size = self._arena(sum(sizes))
        base = int(ffi.cast("uintptr_t", arena))
        n = len(futures)
        index = io.fixed_index
        fd, flag = (io.fd, 0) if index is None else (index, _FIXED_FILE)
        cols = self._columns(n)
        cols.fill("opcodes", _READ)
        cols.fill("fds", fd)
        if flag or cols.is_set("sqe_flags"):
            cols.fill("sqe_flags", flag)
        size = sizes[0]
        starts: Sequence[int]
        if sizes.count(size) == n:
            # Reads of one size (the common case): lengths and arena addresses are
            # progressions the pooled columns keep while the arena is reused, not
            # 2 x n ints converted into C per flush.
            starts = range(0, n * size, size)
            cols.fill("lens", size)
            cols.fill_range("addrs", base, size)
        else:
            starts = list(accumulate(sizes, initial=0))
            starts.pop()  # (the end of the last read)
            cols.set("addrs", [base + start for start in starts])
            cols.set("lens", sizes)
        cols.set("offs", offs)
        self._launch(futures, io, False, pending, cols, n, [arena], arena, arena_size, starts, False, in_arena=True)

    def _launch(
        self,
        futures: list[asyncio.Future[Any]],
        io: CoalescedFile,
        write: bool,
        pending: FlushPending,
        cols: BatchColumns,
        n: int,
        keep: list[Any],
        arena: Any,
        arena_size: int,
        starts: Sequence[int],
        lists: bool,
        leases: list[Any] | None = None,
        in_arena: bool = False,
    ) -> None:
        """Submit the *n* ops of *cols* (*keep* owns their memory) and deliver their results to
        *futures*, one per request (*io*: the first request's file).

        *leases* (registered buffers in the batch) are marked in flight with it, as the
        sync batch path does: their pool defers a release until the batch finished.
        *in_arena*: every request is one read into the arena at its start."""
        pending.n = n
        ring = self.ring
        # deliver() holds no caller buffer: the batch's keep (dropped when reaped) is their only owner.
        # The arena is ours: once its bytes are copied out it is the next flush's.
        # deliver() reaches the batch through state only, and lets go of it once run:
        # the batch holds deliver (its done-callback), so capturing the batch would make
        # every flush a reference cycle (batch, closures, futures, lists) that only the
        # cyclic GC frees (about 0.5 us per op of collections measured).
        # (The pending too, for the same reason: it holds the batch.)
        # Everything the batch's completion runs is made before it is submitted: once the
        # ring took it in, only follow() (below) is left to do, and it can be run again.
        state: list[Any] = [arena, None, pending]
        failure: list[BaseException] = []  # the submission's error, when it failed part-way

        def deliver() -> None:
            # On the loop thread, from drain() (a batch reaped there or appended by another
            # thread) or the check below.  Safe to run again after a raising signal cut it
            # short anywhere (drain() keeps it for the next drain): the flush is marked
            # delivered only once every future is resolved (a later run returns at once),
            # and a run again resolves only the futures not yet done, from the same values.
            own, done, flushed = state
            if own is _DELIVERED:
                return
            results = done.results
            view = ffi.buffer(own) if own is not None else None
            if lists:
                values = _list_values(futures, starts, results, view)
            elif view is None:
                values = results
            elif in_arena:  # (every request is a read into the arena: no start to check)
                values = [
                    view[start : start + res] if res >= 0 else res for start, res in zip(starts, results, strict=True)
                ]
            else:
                values = [
                    view[start : start + res] if start >= 0 and res >= 0 else res
                    for start, res in zip(starts, results, strict=True)
                ]
            if failure:
                _fail_unsubmitted(futures, values, failure[0])
            resolve(futures, values, self.direct and asyncio.current_task(self.loop) is None, self._plain_futures)
            # Every future is resolved: from here a signal only skips what it saves (a spare
            # arena, an early forget), never an await.
            state[0] = _DELIVERED
            state[1] = state[2] = None
            # The batch stays referenced after delivery (by a pooled column set until
            # its reuse, by its leases' in-flight mark); the ring drops its done-callbacks
            # (and so deliver) once they ran, but deliver may also run from _launch's
            # check or a drain list.  Holding every result that long kept ~8 MiB of a
            # 32-task read loop's bytes alive and made malloc grow and trim its heap in
            # turn: a fresh page, so a page fault, for most reads.
            futures.clear()
            if own is not None and arena_size >= self._spare_size:
                # The arena goes to the next flush only now: a run again of a cut-short
                # delivery reads its values out of it.  (The tasks woken above queue their
                # ops meanwhile; a flush submits them only once this returned.)
                self._spare, self._spare_size = own, arena_size
            # And the trackers let go of the flush now, not at their next prune: until
            # then each delivered flush (pending, batch, closures) was ~10 objects for
            # the cyclic GC to count and walk (~0.2-0.3 us per op of collections).
            for tracker in flushed.trackers:
                tracker.forget(flushed)

        # The flush's only way to its awaits, run by whichever thread collects the batch: a
        # Repeatable, which the ring runs again when a raising signal cut it short there
        # (at its entry included: until session 40 that lost the delivery for good).
        on_done = Repeatable(_flush_done, self, deliver)

        tag = (_FLUSH_TAG, futures, starts)
        hook = io.completion_hook  # one worker, one ring: the same hook for every handle
        # The stack's hook first, then on_done: two callbacks, each run on its own by the
        # ring, so a signal at the hook's entry still lets on_done resolve the awaits.
        done_cbs = (on_done,) if hook is None else (hook("write" if write else "read", ring), on_done)

        def follow(batch: Batch) -> None:
            # What a submitted batch needs for its completions to reach the awaits; safe to
            # repeat (despite_signals): every step sets what it sets, once.
            state[1] = pending.batch = batch
            batch.tag = tag  # (how a cancelled await finds its ops: settle())
            if leases:
                for lease in leases:
                    (lease.parent or lease).batch = batch
            if not batch.finished:
                for cb in done_cbs:
                    if not batch.has_done_callback(cb):
                        batch.add_done_callback(cb)

        before = SUBMITTED.last  # (no call: a batch this submission took in is found below)
        try:
            batch = ring.submit_columns(cols, n, keep, wait_room=False)
            follow(batch)
        except SubmissionError as exc:
            # The ring refused the submission (io_uring_enter failed: EPERM under a seccomp
            # filter, ...), not a signal: it already waited for what reached the kernel, so
            # the batch it recorded is finished.  Nothing reached it: raised, and _submit
            # fails every await with this error.  Part did: those ops' awaits get their
            # results, the others this error (never the -ECANCELED their results hold).
            # (Until session 32 the batch found through SUBMITTED was taken for one a signal
            # cut short: every await failed with ECANCELED and the error escaped the flush.)
            found = None if isinstance(exc, RingBusyError) else submitted_since(before)
            if found is None or found.ring is not ring or found.batch.n != n or not _ran_in_part(found.batch):
                raise
            failure.append(exc)
            batch = found.batch
            follow(batch)
        except BaseException:
            # A raising signal handler (Ctrl-C) anywhere after the ring took the batch in
            # (inside submit_columns after its C call, or here before follow() ended):
            # the batch is in the kernel, so it stays the flush's, tracked by each handle
            # (a close waits for it) and its completions resolve the awaits; the
            # exception then propagates.  (pending.batch None: nothing reached the kernel.)
            if pending.batch is None:
                submitted = submitted_since(before)
                if submitted is not None and submitted.ring is ring:
                    pending.batch = submitted.batch
            if pending.batch is not None:

                def rescue(batch: Batch) -> None:
                    follow(batch)
                    if batch.finished:  # (reaped before its callback was in: delivered by the next drain)
                        self._on_loop_done(deliver)

                despite_signals(rescue, pending.batch)
            raise
        # From here the kernel owns the memory: nothing below may fail the awaits early.
        self.flushes += 1
        self.reap()  # page-cache hits completed inside the submission
        if batch.finished and state[0] is not _DELIVERED:
            # Another thread may have reaped it before on_done was installed.  (Checked
            # here: most flushes were delivered by the reap above, a call for nothing.)
            # Through the drain list: a delivery cut short is kept for the next drain.
            self._deliver_now(deliver)


def _flush_done(co: Coalescer, deliver: Callable[[], None], done: Batch) -> None:
    """A flush's batch completed (its done-callback, as a :class:`Repeatable`): have it
    delivered on the loop's thread.  Safe to repeat: a delivery queued twice runs once."""
    # Finished: no cancelled await looks for its ops any more (settle()), and a batch
    # kept by a pooled column set must not keep the futures (nor their tasks) of a flush
    # never delivered (its loop closed).
    done.tag = None
    co._completed(deliver)


class FlushPending:
    """One flush's batch as each handle's tracker sees it: tracked before it is submitted.

    ``done()`` is False while the submission may still be under way (a close()
    in another thread then waits), True once the batch finished or nothing was
    submitted (``failed``)."""

    __slots__ = ("batch", "failed", "n", "ring", "trackers")

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.batch: Batch | None = None
        self.failed = False
        self.n = 0
        self.trackers: list[InflightTracker] = []
        """The handles' trackers that took it (each forgets it once it is delivered)."""

    def done(self) -> bool:
        batch = self.batch
        if batch is None:
            return self.failed
        if not batch.finished and not self.ring.closed:
            self.ring.try_reap()
        return batch.finished

    def wait(self) -> list[int]:
        return self.ring.wait(self._submitted())

    async def wait_async(self) -> list[int]:
        return await aio.wait_batch(self.ring, self._submitted())

    def _submitted(self) -> Batch:
        if self.batch is None:
            raise RuntimeError("this flush submitted nothing: there is no batch to wait for")
        return self.batch


def _ran_in_part(batch: Batch) -> bool:
    """Whether an op of *batch*, whose submission failed, reached the kernel (the others'
    results are the ring's ``-ECANCELED``)."""
    return any(res != -errno.ECANCELED for res in batch.results)


def _fail_unsubmitted(futures: list[asyncio.Future[Any]], values: list[Any], error: BaseException) -> None:
    """Fail with *error* the awaits of a batch whose submission failed part-way that hold an
    op the ring never submitted (its result ``-ECANCELED``); the others are resolved as usual.

    (An op that reached the kernel and was cancelled there reads the same: it fails with
    the submission's error too, which is what made it not complete.)"""
    cancelled = -errno.ECANCELED
    for fut, value in zip(futures, values, strict=True):
        unsubmitted = value == cancelled if type(value) is int else type(value) is list and cancelled in value
        if unsubmitted and not fut.done():
            fut.set_exception(error)


def _flush_holding(batches: list[Batch], fut: asyncio.Future[Any]) -> tuple[Batch, list[int]] | None:
    """The flush's batch among *batches*, not finished, that holds *fut*'s request, and that
    request's ops (their indexes in the batch); None when none holds it."""
    for batch in batches:
        tag = batch.tag
        if type(tag) is not tuple or tag[0] is not _FLUSH_TAG or batch.finished:
            continue
        futures, starts = tag[1], tag[2]
        for i, other in enumerate(futures):
            if other is fut:
                at = sum(-1 - start if start < -1 else 1 for start in starts[:i])
                start = starts[i]
                return batch, list(range(at, at + (-1 - start if start < -1 else 1)))
    return None


def _ops_of(what: Any) -> int:
    """How many ops one queued request takes (see ``QueuedOp``)."""
    return len(what[0]) if type(what) is tuple else 1


def _put_same(cols: BatchColumns, name: str, values: list[int]) -> None:
    """One value for every op (kept across flushes: no write at all), else one per op."""
    first = values[0]
    if values.count(first) == len(values):
        cols.fill(name, first)
    else:
        cols.set(name, values)


def _put_pins(cols: BatchColumns, runs: list[int], pins: list[Any]) -> None:
    """Write the addresses of *pins* (in order) into the ``addrs`` positions that *runs* names."""
    column = cols.column("addrs")
    if _POINTER_SIZE == 8:  # a uint64_t slot holds a pointer: cffi converts the pins in C
        slots = ffi.cast("char **", column)
        j = 0
        for r in range(0, len(runs), 2):
            at, k = runs[r], runs[r + 1]
            slots[at : at + k] = pins[j : j + k]
            j += k
        return
    j = 0
    for r in range(0, len(runs), 2):
        at, k = runs[r], runs[r + 1]
        column[at : at + k] = [int(ffi.cast("uintptr_t", pin)) for pin in pins[j : j + k]]
        j += k


def _list_values(futures: list[asyncio.Future[Any]], starts: Sequence[int], results: list[int], view: Any) -> list[Any]:
    """Per request, its future's value in a batch holding read_many/write_many requests beside single ops."""
    values: list[Any] = []
    i = 0
    for start in starts:
        if start < -1:
            k = -1 - start
            values.append(results[i : i + k])
            i += k
            continue
        res = results[i]
        values.append(view[start : start + res] if start >= 0 and res >= 0 else res)
        i += 1
    return values


def coalescer_for(ring: Ring) -> Coalescer:
    """The running loop's coalescer of *ring* (made on first use, kept on the ring's bridge)."""
    bridge = aio.bridge_for(ring)
    co = bridge.coalescer
    if not isinstance(co, Coalescer):
        loop = bridge.loop
        co = Coalescer(ring, loop, lambda fn: aio.post(loop, fn))
        bridge.coalescer = co
    return co
