"""``Ring``: a safe Python object around one io_uring instance.

Ownership rule (the kernel's, see DESIGN.md): a buffer belongs to the kernel
from submission until its completion is reaped.  A :class:`Batch` holds every
object the kernel may touch (buffers, iovec arrays, NVMe command blocks) and
the ring holds every in-flight batch, so dropping the caller's reference to a
buffer mid-flight cannot free it.  ``close()`` cancels what is in flight and
waits for every completion before the ring's memory goes away; that wait is
bounded (:attr:`Ring.close_timeout`), so a lost completion fails with a clear
error instead of hanging.

A ring inherited by a ``fork()`` child is shared with the parent (the queues
are shared memory): every method raises
:class:`~uringstack.errors.ForkedChildError` there, and ``close()`` only drops
the child's mapping and descriptor, never cancelling or unregistering.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from itertools import compress
from typing import Any

from uringstack.errors import AlignmentError, RingClosedError, SubmissionError, UringIOError, WrongThreadError
from uringstack.ring import forking
from uringstack.ring.columns import BatchColumns
from uringstack.ring.flags import SetupFlag, feature_names
from uringstack.ring.handoff import Gate, call_unlocked
from uringstack.ring.interrupts import despite_signals, run_callback_again
from uringstack.ring.kernel import release_before
from uringstack.ring.native import ffi, lib
from uringstack.ring.params import CreatedRing, RingParams, create_raw_ring
from uringstack.ring.pins import pin_buffer

MAX_SLOTS: int = lib.US_MAX_SLOTS
CQ_RESERVE: int = lib.US_CQ_RESERVE
"""CQ entries a ring keeps free of ops (for its own cancel on close): see :attr:`Ring.cq_cap`."""
_CQ_NEEDS_FLUSH: int = lib.US_CQ_NEEDS_FLUSH
_STAND_IN = object()  # the tag of a batch the ring made for a completed slot no batch owned
_NO_BLOCKING = (False,)  # Ring.try_reap's argument to the lock's acquire
_FEAT_EXT_ARG = 1 << 8  # IORING_FEAT_EXT_ARG (5.11): a wait's timeout travels with io_uring_enter
_HOLD_LEADER: int = lib.US_HOLD_LEADER
HOLD_MS = 2
"""How long a wait may hold the ring's lock (its first part: in the submitting syscall, or
the first wait call) on a ring with :attr:`Ring.unlocked_waits`; the rest of the wait lets
the lock go.  Long enough for a device's usual op, so fast ops keep their one syscall and
no hand-off between threads; short enough that an op the device takes long over (or never
completes) holds other threads' calls on the ring back this long, once; and an op longer
than it pays the unlocked wait's few microseconds on milliseconds.  (Without unlocked
waits the first part is one ``wait_tick``, as every later one.)"""

# Batches whose completion could not be confirmed (the ring broke while they
# were in flight).  Their buffers are kept for the life of the process: leaking
# memory is better than letting the kernel write into freed memory.
_ORPHANED: list[Batch] = []


def orphaned_batches() -> list[Batch]:
    """A snapshot of the batches closed rings gave up on (kept for the life of the process)."""
    return list(_ORPHANED)


def _eventfd_register_quiesces(release: str) -> bool:
    """True for kernels whose ``IORING_REGISTER_EVENTFD`` waits until nothing is in flight.

    Before 5.18 registering an eventfd quiesces the ring: the call returns only once
    every request in flight completed, so one that never does (a read of an idle pipe or
    socket, a hung device) blocks it for good, with no bound.  Debian 11's 5.10 does this
    (its io_uring is a backport of a later one, but not of that change): the asyncio
    bridge's first await hung there (checked in the NVMe VM).  An unparsable release
    counts as old."""
    return release_before(release, (5, 18))


EVENTFD_REGISTER_QUIESCES: bool = _eventfd_register_quiesces(os.uname().release)
"""Whether rings register their eventfd at creation (see :func:`_eventfd_register_quiesces`)."""


CANCEL_EACH: bool = release_before(os.uname().release, (5, 19))
"""Whether a ring's close cancels its ops one by one: IORING_ASYNC_CANCEL_ANY came in 5.19,
and older kernels refuse a cancel with it (-EINVAL; checked on Debian 11's 5.10 in the
NVMe VM): before, nothing was cancelled there and every close with an op that could not
complete on its own waited its whole timeout and reported the op lost."""

IntOrSeq = int | Sequence[int]

_OPTIONAL_COLUMNS = ("addrs", "lens", "offs", "op_flags", "sqe_flags", "buf_index")


class SubmittedHere(threading.local):
    """Per thread: ``last``, ``(weakref to the ring, batch)`` of the batch this thread's last
    submission took in (None before the first), recorded before the batch can reach the kernel.

    How a start that raised finds the I/O it started although no pending object
    came back to its caller: a raising signal handler (Ctrl-C) can run right
    after the submission returned, at any call after it, before the caller stored
    what it returned.  :class:`~uringstack.ring.inflight.InflightTracker` reads
    ``last`` before a start and, when the start raises, tracks the batch recorded
    since then (docs/api.md, "Ctrl-C during I/O").  A plain attribute of a
    ``threading.local``: setting and reading it run no Python code, so no signal
    handler runs between the ring taking the batch in and this record.  The ring is held
    weakly (a ring dropped without ``close()`` is still closed when collected)."""

    last: tuple[weakref.ref[Ring], Batch] | None = None


SUBMITTED = SubmittedHere()
"""The one :class:`SubmittedHere`: every :meth:`Ring.submit_columns` of a thread records its batch here."""


class MisalignedOffsetError(AlignmentError):
    """A submission with ``offset_align`` found an offset that is not a multiple of it;
    nothing of it was submitted.  ``align`` is that alignment."""

    def __init__(self, align: int) -> None:
        super().__init__(f"an offset of the batch is not a multiple of {align} (O_DIRECT alignment)")
        self.align = align


class RingBusyError(SubmissionError):
    """A submission with ``wait_room=False`` found no room for its ops under the ring's
    :attr:`~Ring.cq_cap`; nothing of it was submitted.  Retry once completions were reaped."""


def _run_then(
    batch: Batch, then: list[Callable[[Batch], None] | None], error: BaseException | None
) -> BaseException | None:
    """Run the done-callbacks *then* of *batch* after its first (``Batch._then``), in order, one at a
    time; the first exception raised, *error* if it was not None.

    Each is taken off (its entry set to None) just before it runs, with no point for a
    signal handler in between (tests/signal_points.py), and an exception in one (also a
    signal at its entry) does not keep the later ones from running, and one that is
    :class:`~uringstack.ring.interrupts.Repeatable` is run again; a signal at a point of
    this loop leaves the callbacks not yet taken off to the next collection."""
    i = 0
    while i < len(then):
        fn = then[i]
        if fn is not None:
            then[i] = None
            try:
                fn(batch)
            except BaseException as exc:  # the caller re-raises the first
                error = error or exc
                run_callback_again(fn, batch)
        i += 1
    batch._then = None
    return error


class Batch:
    """Ops submitted together; owns everything the kernel may touch until reaped.

    ``results`` holds one CQE result per op (bytes moved, or ``-errno``) once
    :attr:`done` is true.  ``tag`` is free for the caller (e.g. an asyncio
    future).
    """

    __slots__ = ("_arrays", "_keep", "_results", "_then", "finished", "n", "on_done", "slot", "tag")

    def __init__(self, n: int, keep: object, arrays: object = ()) -> None:
        self.n = n
        self.slot = -1
        self.tag: Any = None
        self.finished = False
        # Called (with the batch) by whichever thread reaps the last completion: the first
        # done-callback, and the others in order (None: only one, as most batches have).
        # Kept apart, not chained into one callable, so that the collection takes each
        # off and runs it on its own (docs/api.md, "Ctrl-C during I/O").
        self.on_done: Callable[[Batch], None] | None = None
        self._then: list[Callable[[Batch], None] | None] | None = None
        self._keep = keep
        # The column memory (a BatchColumns or cdata arrays): C reads it only while
        # submitting, but the batch holds it anyway so its pointers stay honest.
        self._arrays = arrays
        self._results = ffi.new("int32_t[]", n)

    @property
    def results(self) -> list[int]:
        """Per-op results: bytes transferred, or ``-errno``."""
        results: list[int] = ffi.unpack(self._results, self.n)
        return results

    @property
    def results_cdata(self) -> Any:
        """The raw ``int32_t[]`` results (for C-side checks without a Python list)."""
        return self._results

    def add_done_callback(self, fn: Callable[[Batch], None]) -> None:
        """Run ``fn(batch)`` when the batch completes, after callbacks added before it.

        Called by whichever thread reaps the last completion, under the ring's
        lock: keep it short and never block in it.  Each callback runs on its own: one
        that raises (or a signal at its entry) does not keep the later ones from running.
        One cut short by a raising signal counts as run, unless it is a
        :class:`~uringstack.ring.interrupts.Repeatable`, which is run again."""
        then = self._then
        if then is not None:
            then.append(fn)
        elif self.on_done is None:
            self.on_done = fn
        else:
            self._then = [fn]

    def has_done_callback(self, fn: Callable[[Batch], None]) -> bool:
        """Whether *fn* is among the done-callbacks still to run (added, not yet taken off to run)."""
        then = self._then
        return fn is self.on_done or (then is not None and any(f is fn for f in then))

    def release(self) -> None:
        """Drop the buffers; only called once the kernel is done with them."""
        self._keep = ()
        self._arrays = ()


class Ring:
    """One io_uring instance.

    Not safe for concurrent use by design: a lock serialises callers so two
    threads never race on the SQ, and a SINGLE_ISSUER ring refuses any thread
    but its creator (the kernel would fail such submissions with EEXIST).
    """

    close_timeout: float = 10.0
    """Seconds :meth:`close` (and :meth:`unregister_buffers`) wait for cancelled
    work to complete before declaring its completion lost."""

    wait_timeout: float | None = 60.0
    """Seconds a blocking :meth:`wait` or :meth:`wait_any` waits for ops the
    kernel still holds (a hung device) before raising :class:`UringIOError`
    (``ETIMEDOUT``); ``None``: no deadline.  The batch stays in flight and
    owns its buffers: waiting again, or :meth:`close`, is safe.  A completion
    that can no longer arrive (see :attr:`wait_tick`) fails at once instead."""

    wait_tick: float = 0.5
    """Seconds between the checks a blocked wait makes: whether the ops it
    waits for still have a completion to come (a CQE consumed outside the
    bookkeeping, or dropped on CQ overflow, never will: that wait raises
    ``ETIMEDOUT`` naming the lost completion) and whether
    :attr:`wait_timeout` passed."""

    owner_closes: bool = False
    """Set by an owner that closes the ring itself (a :class:`~uringstack.stack.Stack`):
    collected unclosed, the ring then leaves its close to that owner, which is collected
    in the same pass and closes its rings in order (after its plugins unregistered their
    buffers and files); a fork child's copy is dropped by its own finalizer all the same."""

    def __init__(self, params: RingParams | None = None, **kwargs: Any) -> None:
        self.params = params if params is not None else RingParams(**kwargs)
        self._fork_gen = forking.generation()
        self._lock = threading.Lock()
        self._weak = weakref.ref(self)  # what SUBMITTED records (no reference cycle, no call per batch)
        self._owner = threading.get_ident()
        self._closed = True
        created: CreatedRing = create_raw_ring(self.params)
        self._ring = created.ring
        self.flags: SetupFlag = created.flags
        # (an IntFlag's & runs enum code, ~1 us: asked before every asyncio prepared restart)
        self.polled: bool = bool(created.flags & SetupFlag.IOPOLL)
        """Created with IORING_SETUP_IOPOLL (:func:`uringstack.ring.polling.is_polled`)."""
        self.features: int = created.features
        self.sq_entries: int = created.sq_entries
        self.cq_entries: int = created.cq_entries
        self.cq_cap: int = max(1, self.cq_entries - CQ_RESERVE)
        """Most ops in flight at once (submitted, completion not reaped): the CQ's entries
        less :data:`CQ_RESERVE`, so every completion fits in the CQ and none depends on the
        kernel's overflow list, or the ring's ``max_in_flight`` when that is lower (its
        queue depth).  A submission past it first reaps, then waits for room (bounded as
        :meth:`wait` is), or with ``wait_room=False`` raises :class:`RingBusyError`; a batch
        larger than the cap streams through it: each op goes to the kernel as a completion
        makes room for it."""
        if self.params.max_in_flight is not None:
            self.cq_cap = min(self.cq_cap, self.params.max_in_flight)
        self.dropped: list[tuple[SetupFlag, str]] = created.dropped
        self.setup_notes: list[str] = created.notes
        self._state = ffi.gc(lib.us_state_new(), lib.us_state_free)
        if self._state == ffi.NULL:
            lib.io_uring_queue_exit(self._ring)
            raise MemoryError("cannot allocate ring bookkeeping")
        # On an IOPOLL ring completions appear only inside io_uring_enter(GETEVENTS),
        # so busy-peeking the CQ can never succeed there: never spin on one.
        spin = 0 if self.flags & SetupFlag.IOPOLL else self.params.spin_us
        lib.us_state_set_spin(self._state, spin)
        lib.us_state_set_cap(self._state, self.cq_cap)
        self._spin_us = spin
        self._counters = lib.us_state_counters(self._state)
        # The bookkeeping the batch path reads between calls, as memory (a read keeps
        # the GIL; every call into the binding releases it: see _collect_done).
        view = ffi.new("struct us_batch_view *")
        lib.us_batch_view(self._ring, self._state, view)
        self._view = view
        self._done_n, self._done, self._remaining = view.done_n, view.done, view.remaining
        self._inflight_n, self._cq_head, self._cq_tail = view.inflight, view.cq_khead, view.cq_ktail
        self._sq_flags = view.sq_kflags
        self._room_ms = view.room_ms  # how long C may wait for CQ room: the first part of a wait (see _retick)
        self._hold = view.hold  # what C may not do under the lock (us_state_t.hold)
        self._inflight: dict[int, Batch] = {}
        self._lost_ops = 0  # ops a drain gave up on (close_timeout): never waited for again
        self._free_slots = list(range(MAX_SLOTS - 1, -1, -1))
        self._one_result = ffi.new("int32_t[1]")  # rw_one's result cell (used under the lock)
        self._tick_seen: float | None = None  # the wait_tick _tick_ms_now was converted from
        self._tick_ms_now = 1
        self._hold_ms = 1  # how long a wait may hold the lock (see _retick)
        # Per-submit work is kept to plain attribute reads: IntFlag arithmetic
        # and cffi allocations cost microseconds on a path that has a few.
        self._single_issuer = bool(self.flags & SetupFlag.SINGLE_ISSUER)
        self.unlocked_waits: bool = bool(self.features & _FEAT_EXT_ARG) and not (self.polled or self._single_issuer)
        """Whether a blocked wait lets the ring's lock go, so other threads submit and
        complete on this ring meanwhile (:meth:`wait`).  Not on an IOPOLL ring, whose
        completions only a poll under the lock finds, nor on a SINGLE_ISSUER one (one
        thread), nor on a kernel without IORING_FEAT_EXT_ARG (mainline before 5.11: a timed wait there
        queues a timeout SQE, which needs the lock)."""
        self._retick()
        self._gate = Gate()  # threads waiting for the leader's drain (_wait_until_locked)
        self._draining = False  # a close or an unregistration waits for the leader, then drains
        self._closed = False
        # [None] once io_uring_queue_exit ran: stored by the C step that runs it (see _exit_locked)
        self._exited: list[None] = []
        self.registered_buffers = 0
        self.registered_files = 0
        self.eventfd: int | None = None
        # Registered now, while nothing is in flight, where a later registration would wait
        # for the ring to go idle (EVENTFD_REGISTER_QUIESCES); the asyncio bridge claims it.
        # (Not on an IOPOLL ring: its completions are polled, never signalled.)
        self._unclaimed_eventfd: int | None = None
        if EVENTFD_REGISTER_QUIESCES and not self.polled:
            self._register_early_eventfd()

    # --- properties --------------------------------------------------------
    @property
    def fd(self) -> int:
        """The ring's file descriptor (for ATTACH_WQ or diagnostics)."""
        self._check_open()
        return int(self._ring.ring_fd)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def inflight(self) -> int:
        """Ops submitted whose completion has not been reaped."""
        return 0 if self._closed or self.inherited else int(self._inflight_n[0])

    def sq_thread(self) -> tuple[int, int] | None:
        """``(tid, cpu)`` of this ring's SQPOLL poller from the kernel's fdinfo, or None.

        Rings sharing a poller through ATTACH_WQ report the same thread; cpu is
        -1 when the poller is not pinned.  Until the poller first runs the
        kernel reports the creating thread; the poller then names itself
        ``iou-sqp-<creator>`` and applies its CPU affinity.

        Some kernels print the poller only when fdinfo gets the ring's lock at
        once (``mutex_trylock``), which a busy poller holds: ``SqThread: -1``
        then means "busy", not "no poller" (Debian 12's 6.1 in the VM: 200 of
        200 reads in the poller's first 0.2 s), so an SQPOLL ring is read
        again for up to ~50 ms.
        """
        self._check_open()
        polled = bool(self.flags & SetupFlag.SQPOLL)
        for _ in range(50 if polled else 1):
            tid = cpu = None
            with open(f"/proc/self/fdinfo/{self.fd}") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key == "SqThread":
                        tid = int(value)
                    elif key == "SqThreadCpu":
                        cpu = int(value)
            if tid is not None and tid >= 0 and cpu is not None:
                return tid, cpu
            if polled:
                time.sleep(0.001)
        return None

    def cq_room(self) -> int:
        """How many more ops fit in flight under :attr:`cq_cap` now (0 when closed).

        Read without the ring's lock: another thread's submission or reap may
        change it at once; a submission with ``wait_room=False`` gives the
        answer that counts."""
        if self._closed or self.inherited:
            return 0
        return int(lib.us_cq_room(self._ring, self._state))

    def feature_names(self) -> list[str]:
        return feature_names(self.features)

    def counters(self) -> dict[str, int]:
        """Counts since creation: io_uring_enter calls, SQEs submitted, CQEs reaped.

        ``short_submits`` counts submissions the kernel stopped early, at an op
        that failed while it was set up; what it left queued was submitted
        again at once."""
        c = self._counters
        return {
            "enters": int(c.enters),
            "submitted": int(c.submitted),
            "reaped": int(c.reaped),
            "stray": int(c.stray),
            "spins": int(c.spins),
            "short_submits": int(c.short_submits),
        }

    # --- guards --------------------------------------------------------------
    def _check_open(self) -> None:
        self._check_fork()
        if self._closed:
            raise RingClosedError("ring is closed")

    def _check_use(self) -> None:
        """:meth:`_check_open` and :meth:`_check_thread` behind one test: the per-op guard of
        paths that do an op's work outside the ring (a cached read copied by the caller)."""
        if self._closed or self._single_issuer or self._fork_gen != forking._generation:
            self._check_open()
            self._check_thread()

    def _check_fork(self) -> None:
        # Before taking the lock: a parent thread may have held it at fork time.
        if self._fork_gen != forking._generation:
            forking.check(self._fork_gen, f"the io_uring ring {self.params.role}")

    @property
    def inherited(self) -> bool:
        """True in a fork() child for a ring its parent created."""
        return forking.inherited(self._fork_gen)

    def _check_thread(self) -> None:
        if self._single_issuer and threading.get_ident() != self._owner:
            raise WrongThreadError(
                "this ring was created with IORING_SETUP_SINGLE_ISSUER and may only be used "
                f"by the thread that created it (thread id {self._owner}); create one ring "
                "per thread, or build it without single_issuer (in a stack with "
                "core.single_issuer = 'on', run the I/O on the handle's worker: "
                "stack.run_on_workers(fn) or handle.worker.call(fn))"
            )

    # --- submission ------------------------------------------------------------
    def submit(
        self,
        opcodes: IntOrSeq,
        fds: IntOrSeq,
        *,
        n: int | None = None,
        addrs: IntOrSeq | None = None,
        lens: IntOrSeq | None = None,
        offsets: IntOrSeq | None = None,
        op_flags: IntOrSeq | None = None,
        sqe_flags: IntOrSeq | None = None,
        buf_index: IntOrSeq | None = None,
        keep: Sequence[object] = (),
        wait: bool = False,
    ) -> Batch:
        """Submit one batch (without waiting unless *wait*); return the :class:`Batch` that tracks it.

        Each column is either one int (the same for every op) or a sequence
        of *n* ints.  ``addrs`` must point into objects listed in *keep* (or
        memory that outlives the batch): the batch holds *keep* until every
        completion is reaped.
        """
        if n is None:
            n = next(
                (len(c) for c in (opcodes, fds, addrs, lens, offsets) if c is not None and not isinstance(c, int)),
                1,
            )
        if n <= 0:
            raise ValueError("a batch needs at least one op")
        cols = BatchColumns(n)
        _put(cols, "opcodes", opcodes, n)
        _put(cols, "fds", fds, n)
        for name, value in zip(_OPTIONAL_COLUMNS, (addrs, lens, offsets, op_flags, sqe_flags, buf_index), strict=True):
            if value is not None:
                _put(cols, name, value, n)
        return self.submit_columns(cols, keep=keep, wait=wait)

    def submit_columns(
        self,
        cols: BatchColumns,
        n: int | None = None,
        keep: object = (),
        *,
        wait: bool = False,
        wait_room: bool = True,
        offset_align: int = 0,
    ) -> Batch:
        """Submit the first *n* ops (default ``cols.n``) described by *cols*; return the tracking :class:`Batch`.

        *keep* is held by the batch until every completion is reaped (the
        buffers the ``addrs`` column points into).  ``wait=True`` lets the
        submitting syscall also wait for the batch's completions (one
        io_uring_enter instead of two; ignored on SQPOLL rings), but for at
        most :attr:`wait_tick`, so a hung op never blocks the submission;
        collect them with :meth:`wait`, which is bounded by :attr:`wait_timeout`.
        Columns whose previous batch is still in flight are refused with
        :class:`~uringstack.errors.BatchInFlightError`.

        At most :attr:`cq_cap` ops are in flight on the ring: without room for
        the batch the call reaps, then waits for completions (bounded as
        :meth:`wait`; a batch larger than the cap goes out in parts, each as
        room frees).  ``wait_room=False`` (for an event loop, which must not
        block on ops it may itself be needed to complete) raises
        :class:`RingBusyError` instead, with nothing submitted, when the ring
        has no room for the batch (or, for one larger than the cap, is not
        idle).

        ``offset_align`` (a power of two; 0: no check): an offset among the
        first *n* that is not a multiple of it (O_DIRECT's logical block size)
        refuses the batch with :class:`MisalignedOffsetError`, checked in the
        submitting call, before anything is queued."""
        if n is None:
            n = cols.n
        elif not 0 < n <= cols.capacity:
            raise ValueError(f"submit_columns: n={n} outside 1..{cols.capacity} (the columns' capacity)")
        if offset_align & (offset_align - 1) or offset_align < 0:
            raise ValueError(f"submit_columns: offset_align={offset_align} is not a power of two")
        batch = Batch(n, keep, cols)
        if self._fork_gen != forking._generation:
            self._check_fork()
        with self._lock:
            if self._closed:
                raise RingClosedError("ring is closed")
            if self._single_issuer:
                self._check_thread()
            prev = cols.batch
            if prev is not None and not prev.finished:
                cols.check_reusable()
            if not cols.ready:
                cols.check_ready()
            cols.batch = batch
            try:
                if not wait_room:
                    self._check_room_locked(n)
                # (the submission's steps in this frame, not a helper's: a frame per batch
                # is a measurable share of a restart's cost)
                free = self._free_slots
                if not free:
                    self._reap_locked()
                    if not free:
                        raise SubmissionError(errno.EBUSY, "submit", None, f"more than {MAX_SLOTS} batches in flight")
                if self.wait_tick is not self._tick_seen:
                    self._retick()
                wait_nr, wait_ms = (n, self._hold_ms) if wait else (0, 0)
                off_mask = offset_align - 1 if offset_align else 0
                slot = free.pop()
                batch.slot = slot
                # Owned before the call: a signal handler that raises as the call returns
                # (Ctrl-C during its wait) must leave the batch in the kernel owned, its
                # buffers pinned and its completion expected (tests/ring/test_audit_signals.py).
                self._inflight[slot] = batch
                # Recorded for this thread's start (SubmittedHere) with no call in between: a
                # start that raises after this point finds the batch there.
                SUBMITTED.last = (self._weak, batch)
                # One call into the binding per batch: it writes the batch's n, slot and
                # results into the columns' desc (no attribute stores through cffi), checks
                # the offsets against *off_mask*, submits, drains what completed and, with
                # *wait*, waits for the batch, but at most one tick: a hung op must never
                # block here, where no lost-completion check or deadline runs (wait() has both).
                desc = cols.desc
                ret = lib.us_batch_start(
                    self._ring, self._state, desc, n, slot, batch._results, off_mask, wait_nr, wait_ms
                )
                if ret:
                    self._submit_unfinished_locked(batch, desc, ret, wait_nr, wait_ms, off_mask)
                return batch
            except BaseException:
                if self._inflight.get(batch.slot) is not batch:  # nothing reached the kernel
                    cols.batch = prev
                raise

    def submit_arrays(self, n: int, arrays: Sequence[Any], keep: Sequence[object] = (), *, wait: bool = False) -> Batch:
        """Submit a batch from eight positional cdata columns (opcodes, fds, addrs, lens, offs,
        op_flags, sqe_flags, buf_index).  Kept for callers that build raw arrays; new code fills a
        :class:`~uringstack.ring.columns.BatchColumns` by name and calls :meth:`submit_columns`."""
        return self.submit_columns(BatchColumns.wrap(n, arrays), n, tuple(keep), wait=wait)

    def _submit_unfinished_locked(
        self, batch: Batch, desc: Any, ret: int, wait_nr: int, wait_ms: int, off_mask: int
    ) -> None:
        """:meth:`submit_columns` after its call into C returned *ret* != 0: submit the ops
        left for want of CQ room (*ret* > 0), or clean up after a failure and raise."""
        slot = batch.slot
        if ret > 0:  # no CQ room for the last *ret* ops: they go out as room frees
            ret = self._submit_rest_locked(batch, desc, ret, wait_nr, wait_ms)
        if ret < 0:
            if self._remaining[slot]:
                # part of the batch reached the kernel: keep it owned until reaped
                self._wait_slot_locked(slot)
                self._reap_locked()
            elif self._inflight.get(slot) is batch:  # (giving up its unqueued ops may have finished it)
                # nothing reached the kernel: finished, so whoever recorded it (SUBMITTED) is not kept waiting
                batch.finished = True
                del self._inflight[slot]
                batch.release()
                self._free_slots.append(slot)
            if ret == -errno.EDOM and off_mask:
                raise MisalignedOffsetError(off_mask + 1)
            raise SubmissionError(-ret, "io_uring_enter", None, "batch submission failed")

    def _check_room_locked(self, n: int) -> None:
        """Raise :class:`RingBusyError` unless *n* ops fit under the cap now (after a reap)."""
        need = min(n, self.cq_cap)
        if lib.us_cq_room(self._ring, self._state) < need:
            self._reap_locked()
            if lib.us_cq_room(self._ring, self._state) < need:
                raise RingBusyError(
                    errno.EBUSY, "submit", None,
                    f"no room for {n} more op(s) in flight on ring {self.params.role} "
                    f"(at most {self.cq_cap}: {self._cap_source()})",
                )  # fmt: skip

    def _cap_source(self) -> str:
        """Where :attr:`cq_cap` comes from, for an error message."""
        cq = f"the CQ's {self.cq_entries} entries less {CQ_RESERVE}"
        if self.cq_cap < self.cq_entries - CQ_RESERVE:
            return f"the ring's max_in_flight; {cq} would allow {self.cq_entries - CQ_RESERVE}"
        return cq

    def _submit_rest_locked(self, batch: Batch, desc: Any, left: int, wait_nr: int, wait_ms: int) -> int:
        """Submit the last *left* ops of *batch* (which found no CQ room) as room frees; 0 or -errno.

        On every other exit, whether the wait for room raises (its deadline, a lost
        completion, Ctrl-C) or the resumed submission fails (-errno, also its own
        argument checks), the ops not yet queued are given up (result ``-ECANCELED``)
        and the part in the kernel stays owned by the batch until its completions
        are reaped (tests/ring/test_cq_cap.py)."""
        started = time.monotonic()
        try:
            while left > 0:
                self._wait_room_locked(started)
                left = lib.us_batch_resume(self._ring, self._state, desc, left, wait_nr, wait_ms)
            return left
        finally:
            if left:
                self._give_up_unqueued_locked(batch)

    def _give_up_unqueued_locked(self, batch: Batch) -> None:
        """Give up the ops of *batch* its submission left unqueued: exactly those the C
        bookkeeping holds unqueued (none when the error exit gave them up already)."""
        slot = batch.slot
        lib.us_forget_unqueued(self._state, slot, batch.n)
        if not self._remaining[slot] and self._inflight.get(slot) is batch:
            # every op that reached the kernel was reaped already: nothing holds the slot
            del self._inflight[slot]
            batch.release()
            batch.finished = True
            self._free_slots.append(slot)

    def _wait_room_locked(self, started: float) -> None:
        """Block until at least one more op fits under :attr:`cq_cap`, reaping (and running the
        callbacks of) what completes; bounded and checked as :meth:`wait` is."""
        if self.wait_tick is not self._tick_seen:
            self._retick()
        tick_ms = self._hold_ms  # the first part (see Ring.wait); whole ticks after it
        while True:
            ret = lib.us_wait_room_for(self._ring, self._state, 1, tick_ms)
            tick_ms = self._tick_ms
            if self._done_n[0]:
                self._collect_done()
            if ret == 0 or ret == -errno.ENOENT:
                return
            if ret == -errno.EALREADY or (ret == -errno.ETIME and self.unlocked_waits):
                if ret == -errno.ETIME:
                    self._check_stuck_locked(int(self._inflight_n[0]), started)
                self._wait_until_locked(self._has_room, started, self._inflight_count)
                return
            if ret == -errno.ETIME:
                self._check_stuck_locked(int(self._inflight_n[0]), started)
            elif ret != -errno.EINTR:
                raise UringIOError(-ret, "io_uring_enter(GETEVENTS)", None, "waiting for CQ room")

    @property
    def _tick_ms(self) -> int:
        return max(1, int(self.wait_tick * 1000))

    # --- completion --------------------------------------------------------------
    def _collect_done(self) -> list[Batch]:
        """Finish the batches of the slots the C side listed done (caller holds the lock): mark
        each finished, drop its buffers, run its callbacks; then acknowledge the list.

        Safe against a raising signal handler (Ctrl-C) at any point: the done list (the
        bookkeeping's memory, read without a call: a call releases the GIL, and with two
        worker threads each release is a hand-off of the GIL and a wait to get it back) is
        consumed only once every slot in it was handled, so a collect cut short leaves it
        for the next one, which handles it again.  Handling twice is harmless: marking
        finished and dropping buffers repeat, and each callback is taken off its batch just
        before it runs, so it runs once (the next collect runs those left): a batch's
        callbacks one at a time (``on_done``, then ``_run_then``), so one that raises, or a
        signal at its entry, costs only that one.  Until the list
        is acknowledged its slots stay out of ``_free_slots``: no new batch can take a slot
        that a re-run would then finish.  The acknowledgement is one C-level step with no
        point for a signal handler in it: the list is reset, the batches leave
        ``_inflight`` and their slots are freed together (tests/ring/test_collect_signals.py).
        """
        k = self._done_n[0]
        if not k:
            return []
        inflight = self._inflight
        if k == 1 and self._done[0] in inflight:
            slot = self._done[0]
            batch = inflight[slot]
            if batch._then is None:  # one batch, one callback at most (most collects): the same steps, unrolled
                batch.finished = True
                batch.release()
                on_done = batch.on_done
                try:
                    if on_done is not None:
                        batch.on_done = None
                        try:
                            on_done(batch)
                        except BaseException:
                            run_callback_again(on_done, batch)
                            raise
                finally:  # acknowledged also when the callback raised (then re-raised)
                    # no point for a signal handler from the del to the end of the append
                    del inflight[slot]
                    self._done_n[0] = 0
                    self._free_slots.append(slot)
                return [batch]
        slots: list[int] = ffi.unpack(self._done, k)
        stand_ins: list[Batch] = []
        try:
            done: list[Batch] = list(map(inflight.__getitem__, slots))
        except KeyError:
            done, stand_ins = self._adopt_unowned_locked(slots)
        # Every completion taken is accounted for before any callback runs: a callback
        # that raises must not leave the batches after it unfinished (their waiters would
        # hang).  The first error is re-raised at the end.
        for batch in done:
            batch.finished = True
            batch.release()
        # Each batch lets go of its callbacks as they run: a finished batch stays referenced
        # (a pooled column set, a lease's in-flight mark, a tracker) and must not keep their
        # closures and results; and a re-run after a signal must not run them again.
        error: BaseException | None = None
        for batch in done:
            on_done = batch.on_done
            if on_done is not None:
                batch.on_done = None
                try:
                    on_done(batch)
                except BaseException as exc:  # re-raised below
                    error = error or exc
                    run_callback_again(on_done, batch)
            then = batch._then
            if then is not None:  # each further callback on its own (_run_then)
                error = _run_then(batch, then, error)
        # Acknowledge: no point for a signal handler from the reset to the end of the
        # extend (a C call running no Python code), so the list is consumed exactly
        # when its slots leave _inflight and become free.
        freed = compress(slots, map(inflight.pop, slots))
        self._done_n[0] = 0
        self._free_slots.extend(freed)
        if error is not None:
            raise error
        if stand_ins:
            return [batch for batch in done if batch not in stand_ins]
        return done

    def _adopt_unowned_locked(self, slots: list[int]) -> tuple[list[Batch], list[Batch]]:
        """The batches of *slots*, after giving each slot no batch owns a stand-in; and the
        stand-ins (in every collection of the slot's list: it may be collected again).

        Such a slot is an op of :meth:`rw_one` that a third raising signal left no
        batch's (docs/api.md, "Ctrl-C during I/O"): its completion came, so the kernel
        is done with its memory and the slot is freed like any other."""
        inflight = self._inflight
        for slot in slots:
            if slot not in inflight:
                stand_in = Batch(1, ())
                stand_in.slot = slot
                stand_in.tag = _STAND_IN
                inflight[slot] = stand_in
        done = list(map(inflight.__getitem__, slots))
        return done, [batch for batch in done if batch.tag is _STAND_IN]

    def _reap_locked(self) -> list[Batch]:
        lib.us_reap_ready(self._ring, self._state)
        return self._collect_done()

    def _wait_slot_locked(self, slot: int, started: float | None = None, ret: int | None = None) -> None:
        """Block until every op of *slot* completed, bounded and checked as :meth:`wait` is.

        *started* and *ret*: when the wait began and what its first ``us_wait_slot_for``
        returned, when the caller made that call itself (:meth:`wait`: no frame of this
        method for a batch that completes within the first tick)."""
        if self.wait_tick is not self._tick_seen:
            self._retick()
        tick_ms = self._tick_ms_now
        if started is None:
            started = time.monotonic()
        while True:
            if ret is None:
                ret = lib.us_wait_slot_for(self._ring, self._state, slot, tick_ms)
            if ret == 0:
                return
            if ret == -errno.EALREADY or (ret == -errno.ETIME and self.unlocked_waits):
                # past the first tick under the lock (or none at all): the rest without it
                if ret == -errno.ETIME:
                    self._check_stuck_locked(int(self._remaining[slot]), started)
                remaining = self._remaining
                self._wait_until_locked(
                    partial(_slot_done, remaining, slot), started, partial(_slot_left, remaining, slot), slot
                )
                return
            if ret == -errno.ETIME:
                self._check_stuck_locked(int(self._remaining[slot]), started)
            elif ret != -errno.EINTR:
                raise UringIOError(-ret, "io_uring_enter(GETEVENTS)")
            ret = None

    # --- waits without the lock -------------------------------------------------------
    def _wait_until_locked(
        self,
        done: Callable[[], bool],
        started: float,
        waiting: Callable[[], int],
        slot: int | None = None,
        collected: list[Batch] | None = None,
    ) -> None:
        """Block until ``done()``, collecting what completes (into *collected* if given), with
        the ring's lock let go while blocked (held on entry and exit); bounded and checked as
        :meth:`wait` is (*waiting*: the count of ops awaited, for the error; *slot*: the one
        awaited, None for any progress).

        One thread at a time, the leader, waits in the kernel (:meth:`_lead_locked`); while it
        is out nobody else drains the CQ, so none of its completions can be consumed behind
        its back.  The others wait at the gate only while a leader is out, and the leader,
        back under the lock, drains and wakes those whose slot completed; it then leads again
        without letting the lock go, or leaves and wakes every waiter left (the first to find
        its op not done and no leader leads): so a sleeping waiter always has a leader that
        will drain for it.  A close or an unregistration in progress (``_draining``) waits
        for the leader, then drains with the lock held: the others wait at the gate until it
        is done."""
        tick_ms = self._tick_ms
        checked = started
        try:
            while True:
                if self._done_n[0]:
                    got = self._collect_done()
                    if collected is not None:
                        collected.extend(got)
                if done():
                    return
                if self._closed and not self._draining:
                    raise RingClosedError(
                        f"ring {self.params.role} was closed while {waiting()} awaited op(s) were in flight"
                    )
                if self._draining or self._hold[0] & _HOLD_LEADER:
                    timed_out = not self._gate.wait(self._lock, tick_ms / 1000, slot)
                else:
                    timed_out = self._lead_locked(tick_ms)
                now = time.monotonic()
                if (timed_out or now - checked >= tick_ms / 1000) and not self._closed:
                    # (also when other completions keep waking this thread: its own deadline holds)
                    checked = now
                    self._check_stuck_locked(waiting(), started)
        finally:
            if self._gate and not self._hold[0] & _HOLD_LEADER:
                # no leader out: nobody would drain for those still waiting
                self._gate.wake_all()

    def _lead_locked(self, tick_ms: int) -> bool:
        """Drain; if that found nothing, wait in the kernel for a CQE (at most *tick_ms*) with the
        lock let go, then drain and open the gate; True if the wait timed out."""
        ring, state, hold = self._ring, self._state, self._hold
        if lib.us_reap_ready(ring, state):
            self._gate.wake_done(self._remaining)
            return False
        try:
            hold[0] |= _HOLD_LEADER
            ret = call_unlocked(self._lock, lib.us_wait_cq, ring, self._spin_us, tick_ms)
        finally:
            # (the lock is held again: call_unlocked took it back)
            hold[0] &= ~_HOLD_LEADER
            lib.us_reap_ready(ring, state)
            self._gate.wake_done(self._remaining)
            if self._closed and not self._draining and not self._exited:
                self._exit_locked()  # its close, cut short by a signal, left that to this thread
        self._counters.enters += 1
        if ret == -errno.ETIME:
            return True
        if ret < 0 and ret != -errno.EINTR:
            raise UringIOError(-ret, "io_uring_enter(GETEVENTS)", None, "waiting for completions")
        return False

    def _quiesce_waits_locked(self) -> None:
        """Wait until no thread waits in the kernel without the lock (the caller set
        ``_draining``, so no new leader starts, and clears it and wakes the gate when done).

        The leader is woken at once, not at the end of its tick, by the cancel of everything
        in flight, which the caller (a close, an unregistration) was going to ask for anyway:
        its CQE wakes the leader (the call returns without waiting, -EALREADY, as the
        leader is out)."""
        if self._hold[0] & _HOLD_LEADER:
            lib.us_cancel_all(self._ring, self._state, 1)
        while self._hold[0] & _HOLD_LEADER:
            self._gate.wait(self._lock, self.wait_tick)

    def _has_room(self) -> bool:
        return not self._closed and lib.us_cq_room(self._ring, self._state) >= 1

    def _inflight_count(self) -> int:
        return int(self._inflight_n[0])

    def _check_stuck_locked(self, waiting: int, started: float) -> None:
        """Between the ticks of a blocked wait: raise if its completions cannot come, or came too late."""
        lost = int(lib.us_lost_completions(self._ring, self._state))
        if lost:
            raise UringIOError(
                errno.ETIMEDOUT, "wait", None,
                f"ring {self.params.role}: {waiting} op(s) awaited, {lost} of the ring's "
                "completions can no longer arrive (a lost completion: its CQE was consumed outside "
                "the ring's bookkeeping or dropped on CQ overflow); the ops stay in flight and keep "
                "their buffers",
            )  # fmt: skip
        timeout = self.wait_timeout
        if timeout is not None and time.monotonic() - started >= timeout:
            raise UringIOError(
                errno.ETIMEDOUT, "wait", None,
                f"ring {self.params.role}: {waiting} op(s) not complete after {timeout:g} s "
                "(Ring.wait_timeout; a hung device?); the kernel still holds them, the batch stays "
                "in flight and keeps its buffers: wait again or close the ring",
            )  # fmt: skip

    def wait(self, batch: Batch) -> list[int]:
        """Block until every op of *batch* completed; return its results.

        A batch that already completed returns its results even after the
        ring was closed."""
        if batch.finished:
            return batch.results
        if self._fork_gen != forking._generation:
            self._check_fork()
        with self._lock:
            if self._closed or self._single_issuer:  # (the checks' plain reads first: a wait per batch)
                self._check_open()
                self._check_thread()
            slot = batch.slot
            if self._inflight.get(slot) is batch:
                # Completed already (drained by its submission or another wait): no call
                if self._remaining[slot]:
                    # the first tick's wait here (returning at once, -EALREADY, when it must
                    # not hold the lock); _wait_slot_locked only when it did not end it
                    if self.wait_tick is not self._tick_seen:
                        self._retick()
                    started = time.monotonic()
                    ret = lib.us_wait_slot_for(self._ring, self._state, slot, self._hold_ms)
                    if ret:
                        self._wait_slot_locked(slot, started, ret)
                self._collect_done()
        return batch.results

    def reap(self) -> list[Batch]:
        """Collect batches that completed, without blocking."""
        self._check_fork()
        with self._lock:
            self._check_open()
            return self._reap_locked()

    def poll(self) -> list[Batch]:
        """One non-blocking pass through the kernel, then collect what completed.

        Needed on IOPOLL rings, whose completions are only found inside
        ``io_uring_enter(GETEVENTS)``; elsewhere it equals :meth:`reap` plus
        flushing unsubmitted SQEs.  :mod:`uringstack.ring.polling` builds the
        non-blocking and asyncio waits of polled rings on it."""
        self._check_fork()
        with self._lock:
            self._check_open()
            ret = lib.us_poll(self._ring, self._state)
            if ret < 0:
                raise UringIOError(-ret, "io_uring_enter(GETEVENTS)", None, "polling the ring")
            return self._collect_done()

    def try_reap(self) -> list[Batch]:
        """Like :meth:`reap`, but return at once if another thread holds the ring.

        That thread is inside submit or wait and will collect (and run the
        callbacks of) whatever completed, so nothing is lost by skipping.
        """
        self._check_fork()
        # Whether the lock was taken is stored by the same C call that takes it (extend
        # calls acquire through map): a signal handler raising right after a plain
        # ``acquire()`` returned would lose the answer and leave the ring locked for good.
        got: list[bool] = []
        try:
            got.extend(map(self._lock.acquire, _NO_BLOCKING))
            if not got[0] or self._closed:
                return []
            # Nothing posted, nothing the kernel holds back (overflow, task work) and
            # nothing drained: answered from memory, without a call
            if self._cq_head[0] == self._cq_tail[0] and not self._sq_flags[0] & _CQ_NEEDS_FLUSH and not self._done_n[0]:
                return []
            return self._reap_locked()
        finally:
            if got and got[0]:
                self._lock.release()

    def wait_any(self) -> list[Batch]:
        """Block until at least one in-flight batch completed; return the completed ones."""
        self._check_fork()
        with self._lock:
            self._check_open()
            self._check_thread()
            done = self._collect_done()
            if self.wait_tick is not self._tick_seen:
                self._retick()
            tick_ms = self._hold_ms  # the first part (see Ring.wait); whole ticks after it
            started = time.monotonic()
            while not done:
                ret = lib.us_wait_any_for(self._ring, self._state, 1, tick_ms)
                tick_ms = self._tick_ms
                if ret == -errno.ENOENT:
                    return []
                if ret == -errno.EALREADY or (ret == -errno.ETIME and self.unlocked_waits):
                    if ret == -errno.ETIME:
                        self._check_stuck_locked(int(self._inflight_n[0]), started)
                    done = self._collect_done()
                    self._wait_until_locked(
                        partial(_any_done, done, self._inflight_n), started, self._inflight_count, None, done
                    )
                    return done
                if ret == -errno.ETIME:
                    self._check_stuck_locked(int(self._inflight_n[0]), started)
                elif ret < 0 and ret != -errno.EINTR:
                    raise UringIOError(-ret, "io_uring_enter(GETEVENTS)")
                done = self._collect_done()
            return done

    def run(self, opcodes: IntOrSeq, fds: IntOrSeq, **kwargs: Any) -> list[int]:
        """Submit a batch and wait for it: the synchronous form of :meth:`submit`."""
        return self.wait(self.submit(opcodes, fds, wait=True, **kwargs))

    def rw_one(
        self, opcode: int, fd: int, buf: Any, length: int, offset: int, sqe_flags: int, buf_index: int, keep: object
    ) -> int:
        """One waited READ/WRITE (or READ_FIXED/WRITE_FIXED) in one call into C; its result (bytes or ``-errno``).

        The single-op form of ``run``: the C side prepares the SQE, submits it
        and waits for it in the same ``io_uring_enter``, and reaps it, with no
        :class:`Batch` or column objects (``us_rw_one``).  The op is tracked in
        a slot like any batch, so other threads' completions reaped meanwhile
        are collected (their callbacks run) and a lost completion is detected.
        *buf* is a cdata pointer to the memory (``ffi.from_buffer``, or an
        address cast to ``char *``) of *length* bytes.  The submitting wait is
        bounded by :attr:`wait_tick`; an op still in flight after it becomes a
        :class:`Batch` owning *keep* (what keeps *buf*'s memory alive) and is
        waited for as :meth:`wait` does (bounded by :attr:`wait_timeout`,
        checked for lost completions)."""
        if self._fork_gen != forking._generation:
            self._check_fork()
        with self._lock:
            free = self._free_slots
            result = self._one_result
            if self.wait_tick is not self._tick_seen:
                self._retick()
            # The slot is chosen (the last free one) before the try and taken inside it: a
            # signal handler raising right after a pop() outside it would lose the slot.
            slot = self._one_slot_locked() if self._closed or self._single_issuer or not free else free[-1]
            try:
                free.pop()
                ret = lib.us_rw_one(
                    self._ring, self._state, slot, opcode, fd, sqe_flags, buf, length, offset, buf_index, result,
                    self._hold_ms,
                )  # fmt: skip
                if ret >= 0:
                    free.append(slot)
                    if ret:
                        self._collect_done()  # other batches completed meanwhile
                    res: int = result[0]
                    return res
                again = partial(
                    lib.us_rw_one, self._ring, self._state, slot, opcode, fd, sqe_flags, buf, length, offset,
                    buf_index, result, self._hold_ms,
                )  # fmt: skip
                return self._rw_one_unfinished(slot, ret, keep, result, again)
            except BaseException:
                # a second raising signal (Ctrl-C twice) must not cut the op's ownership short:
                # the first run inside try (a signal at its entry is caught), then retries
                try:
                    self._rw_one_raised(slot, keep, result)
                except BaseException:
                    despite_signals(self._rw_one_raised, slot, keep, result)
                raise

    def bind_rw_one(
        self, opcode: int, fd: int, buf: Any, length: int, sqe_flags: int, buf_index: int, keep: object
    ) -> Callable[[int], int]:
        """:meth:`rw_one` with every argument but the offset bound: ``f(offset)`` does
        ``rw_one(opcode, fd, buf, length, offset, sqe_flags, buf_index, keep)``.

        For a loop moving the same buffer again and again (a prepared single
        read or write, at QD1): per op, the same checks (fork, closed, thread)
        and one lock, without passing eight arguments through Python.  *keep*
        must keep *buf*'s memory alive while the function is used."""
        ring = self
        lock, free, call = self._lock, self._free_slots, lib.us_rw_one_bound
        # The arguments that never change, in one struct: one pointer for cffi to convert
        # per op instead of nine (the conversion sits between a completion and the next
        # submission).  The pointers stay valid as before: the ring (held by the closure)
        # owns the ring and state memory, and *keep* (held too) the buffer's.
        bound = ffi.new(
            "struct us_rw_bound *",
            {"ring": self._ring, "st": self._state, "buf": buf, "fd": fd, "len": length,
             "buf_index": buf_index, "opcode": opcode, "sqe_flags": sqe_flags},
        )  # fmt: skip
        gen = self._fork_gen

        def rw_one(offset: int) -> int:
            if gen != forking._generation:
                ring._check_fork()
            with lock:
                result = ring._one_result
                if ring.wait_tick is not ring._tick_seen:
                    ring._retick()
                slot = ring._one_slot_locked() if ring._closed or ring._single_issuer or not free else free[-1]
                try:
                    free.pop()  # (as in rw_one: taken inside the try)
                    ret = call(bound, slot, offset, result, ring._hold_ms)
                    if ret >= 0:
                        free.append(slot)
                        if ret:
                            ring._collect_done()  # other batches completed meanwhile
                        res: int = result[0]
                        return res
                    again = partial(call, bound, slot, offset, result, ring._hold_ms)
                    return ring._rw_one_unfinished(slot, ret, keep, result, again)
                except BaseException:
                    try:  # as in rw_one
                        ring._rw_one_raised(slot, keep, result)
                    except BaseException:
                        despite_signals(ring._rw_one_raised, slot, keep, result)
                    raise

        return rw_one

    def _retick(self) -> None:
        """Convert :attr:`wait_tick` for the single-op calls (when it changed: a float
        multiply, truncation and clamp per op would sit on the QD1 path)."""
        tick = self.wait_tick
        self._tick_ms_now = max(1, int(tick * 1000))
        self._hold_ms = self._room_ms[0] = min(self._tick_ms_now, HOLD_MS) if self.unlocked_waits else self._tick_ms_now
        self._tick_seen = tick

    def _one_slot_locked(self) -> int:
        """The free slot :meth:`rw_one`'s op takes (the last one: the caller pops it), after its
        checks (ring open, the right thread)."""
        if self._closed:
            raise RingClosedError("ring is closed")
        if self._single_issuer:
            self._check_thread()
        free = self._free_slots
        if not free:
            self._reap_locked()
            if not free:
                raise SubmissionError(errno.EBUSY, "submit", None, f"more than {MAX_SLOTS} batches in flight")
        return free[-1]

    def _rw_one_raised(self, slot: int, keep: object, result: Any) -> None:
        """:meth:`rw_one` raised (lock held), also from a signal handler as its call into C
        returned (Ctrl-C during its wait; the return value is lost): an op still in the
        kernel must be owned before anything propagates (tests/ring/test_audit_signals.py).
        Idempotent: the callers run it again when a further raising signal cut it short."""
        if slot not in self._free_slots:
            if slot in self._inflight or lib.us_slot_remaining(self._state, slot):
                self._own_rw_one(slot, keep, result)
            else:
                self._free_slots.append(slot)

    def _rw_one_unfinished(self, slot: int, ret: int, keep: object, result: Any, again: Callable[[], int]) -> int:
        """:meth:`rw_one` when its op did not complete in the call (lock held): own it, wait, or fail.

        ``-EBUSY`` with nothing queued: no CQ room under :attr:`cq_cap`; wait for room
        (bounded as :meth:`wait` is) and make the call *again*."""
        if ret == -errno.EBUSY and not lib.us_slot_remaining(self._state, slot):
            started = time.monotonic()
            while ret == -errno.EBUSY and not lib.us_slot_remaining(self._state, slot):
                self._wait_room_locked(started)
                ret = again()
            if ret >= 0:
                self._free_slots.append(slot)
                if ret:
                    self._collect_done()  # other batches completed meanwhile
                return int(result[0])
        if not lib.us_slot_remaining(self._state, slot):  # nothing reached the kernel
            self._free_slots.append(slot)
            raise SubmissionError(-ret, "io_uring_enter", None, "single op submission failed")
        self._own_rw_one(slot, keep, result)
        self._wait_slot_locked(slot)
        self._collect_done()
        if ret not in (-errno.ETIME, -errno.EINTR):
            raise SubmissionError(-ret, "io_uring_enter", None, "single op submission failed")
        return int(result[0])

    def _own_rw_one(self, slot: int, keep: object, result: Any) -> None:
        """From here on a Batch owns the in-flight :meth:`rw_one` op's memory and its result
        cell (the C side writes the result there); the ring gets a new cell.  Idempotent."""
        if self._one_result is result:
            self._one_result = ffi.new("int32_t[1]")
        if slot not in self._inflight:
            batch = Batch(1, keep)
            batch._results = result
            batch.slot = slot
            self._inflight[slot] = batch

    def cancel_ops(self, batch: Batch, ops: Sequence[int] | None = None) -> None:
        """Ask the kernel to cancel ops of *batch* still in flight (*ops*: their indexes in
        the batch; None: all of them), one ``IORING_OP_ASYNC_CANCEL`` per op by its
        user_data, as :meth:`close` does on kernels before 5.19.

        Best effort and without waiting: each op still completes as usual, with
        ``-ECANCELED`` where the kernel cancelled it, else with its own result (an op
        already running on the device cannot be cancelled); only its completion says
        the kernel is done with its memory.  Does nothing for a finished batch, a
        closed or inherited ring, an IOPOLL ring (its ops are the device's, completed
        by polling), or from a thread other than a SINGLE_ISSUER ring's owner."""
        if batch.finished or self.polled or self._fork_gen != forking._generation:
            return
        if self._single_issuer and threading.get_ident() != self._owner:
            return
        with self._lock:
            slot = batch.slot
            if self._closed or self._inflight.get(slot) is not batch:
                return
            each = [(slot << 32) | i for i in (range(batch.n) if ops is None else ops)]
            if each:
                lib.us_cancel_each(self._ring, self._state, ffi.new("uint64_t[]", each), len(each))
            self._collect_done()

    def batches_in_flight(self) -> list[Batch]:
        """The batches submitted and not yet reaped, as a snapshot (no lock: one C step
        under the GIL; a batch may finish or another start right after)."""
        return list(self._inflight.values())

    def batch_holding(self, keep: object) -> Batch | None:
        """The batch in flight that holds *keep* (``None``: none does).

        For a caller of :meth:`rw_one` whose op outlived the call (its wait
        raised): the op then belongs to a :class:`Batch` holding the call's
        *keep*, which this finds, so the caller can track it (refuse to reuse
        the buffer, let a close wait) until it completes."""
        with self._lock:
            return next((b for b in self._inflight.values() if b._keep is keep), None)

    # --- registration ----------------------------------------------------------
    def register_buffers(self, buffers: Iterable[Any]) -> Any:
        """Register buffers for READ_FIXED/WRITE_FIXED; returns the pinning cdata list.

        The caller must keep the returned objects (and the buffers) alive
        until :meth:`unregister_buffers`.  ENOMEM means RLIMIT_MEMLOCK is too
        low on this kernel.
        """
        pins = [pin_buffer(b, True) for b in buffers]
        iov = ffi.new("struct iovec[]", len(pins))
        for i, pin in enumerate(pins):
            iov[i].iov_base = pin
            iov[i].iov_len = len(pin)
        self._check_fork()
        with self._lock:
            self._check_open()
            ret = lib.io_uring_register_buffers(self._ring, iov, len(pins))
        if ret < 0:
            # Let go of the exports now: left to the collector, the pins, the caller's
            # memoryview slices and their mmap were torn down in an order that crashed the
            # interpreter (a segfault in a collection after ENOMEM, [fixedbuf] mode = "on").
            for pin in pins:
                ffi.release(pin)
            detail = "RLIMIT_MEMLOCK too low for registered buffers" if ret == -errno.ENOMEM else ""
            raise UringIOError(-ret, "io_uring_register_buffers", None, detail)
        self.registered_buffers = len(pins)
        return pins

    def unregister_buffers(self) -> None:
        self._check_fork()
        error = None
        with self._lock:
            self._check_open()
            if self._inflight:
                error = self._drain_all_locked()
            ret = lib.io_uring_unregister_buffers(self._ring)
        if ret < 0 and ret != -errno.ENXIO:
            raise UringIOError(-ret, "io_uring_unregister_buffers")
        self.registered_buffers = 0
        if error is not None:
            raise error

    def register_files(self, fds: Sequence[int]) -> None:
        """Register a fixed-file table; -1 entries are empty slots."""
        arr = ffi.new("int[]", list(fds))
        self._check_fork()
        with self._lock:
            self._check_open()
            ret = lib.io_uring_register_files(self._ring, arr, len(fds))
        if ret < 0:
            raise UringIOError(-ret, "io_uring_register_files")
        self.registered_files = len(fds)

    def update_files(self, offset: int, fds: Sequence[int]) -> None:
        """Replace fixed-file slots starting at *offset* (-1 clears a slot)."""
        arr = ffi.new("int[]", list(fds))
        self._check_fork()
        with self._lock:
            self._check_open()
            ret = lib.io_uring_register_files_update(self._ring, offset, arr, len(fds))
        if ret < 0:
            raise UringIOError(-ret, "io_uring_register_files_update")

    def unregister_files(self) -> None:
        self._check_fork()
        with self._lock:
            self._check_open()
            ret = lib.io_uring_unregister_files(self._ring)
        if ret < 0 and ret != -errno.ENXIO:
            raise UringIOError(-ret, "io_uring_unregister_files")
        self.registered_files = 0

    def _register_early_eventfd(self) -> None:
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        ret = lib.io_uring_register_eventfd(self._ring, efd)
        if ret < 0:  # the bridge will try again when it is needed, and say why it failed
            os.close(efd)
            return
        self.eventfd = self._unclaimed_eventfd = efd

    def claim_eventfd(self) -> int | None:
        """The eventfd registered at creation (the caller owns it from now on), or None: the
        caller registers its own (:meth:`register_eventfd`)."""
        with self._lock:
            efd, self._unclaimed_eventfd = self._unclaimed_eventfd, None
        return efd

    def _close_unclaimed_eventfd(self) -> None:
        efd, self._unclaimed_eventfd = self._unclaimed_eventfd, None
        if efd is not None:
            with contextlib.suppress(OSError):
                os.close(efd)

    def register_eventfd(self, fd: int) -> None:
        """Signal *fd* (an eventfd) whenever a completion is posted."""
        self._check_fork()
        with self._lock:
            self._check_open()
            ret = lib.io_uring_register_eventfd(self._ring, fd)
        if ret < 0:
            raise UringIOError(-ret, "io_uring_register_eventfd")
        self.eventfd = fd

    # --- teardown ---------------------------------------------------------------
    def _drain_all_locked(self) -> UringIOError | None:
        """Cancel everything in flight and wait (bounded) for it; the error if some never completed.

        With the lock held throughout, once a thread waiting in the kernel without it came
        back (the other waiters find their ops complete, cancelled, when it is done)."""
        draining = self._draining
        try:
            self._draining = True
            self._quiesce_waits_locked()
            return self._cancel_and_drain_locked()
        finally:
            if not draining:  # (a close keeps it set until the ring is freed: _exit_locked)
                self._draining = False
                self._gate.wake_all()

    def _cancel_and_drain_locked(self) -> UringIOError | None:
        if CANCEL_EACH and self._inflight:
            each = [(slot << 32) | i for slot, batch in self._inflight.items() for i in range(batch.n)]
            lib.us_cancel_each(self._ring, self._state, ffi.new("uint64_t[]", each), len(each))
        ret = lib.us_cancel_all(self._ring, self._state, max(1, int(self.close_timeout * 1000)))
        lost = int(lib.us_inflight(self._state))
        try:
            self._collect_done()
        finally:
            if ret < 0 or self._inflight:
                # Leaking memory is better than letting the kernel write into freed memory.
                _ORPHANED.extend(self._inflight.values())
                self._inflight.clear()
        if ret == -errno.ETIME:
            self._lost_ops = lost
            return UringIOError(
                errno.ETIMEDOUT, "close", None,
                f"ring {self.params.role}: {lost} op(s) did not complete within {self.close_timeout:g} s "
                "of being cancelled (a lost completion, or a hung device); their buffers are kept "
                "for the life of the process",
            )  # fmt: skip
        if ret < 0:
            return UringIOError(-ret, "close", None, f"ring {self.params.role}: waiting for cancelled work")
        return None

    def close(self) -> None:
        """Cancel in-flight work, wait for every completion, and free the ring.

        Idempotent.  After close every method raises :class:`RingClosedError`.
        The wait is bounded by :attr:`close_timeout`: past it the ring is still
        freed, the buffers of the ops that never completed are kept for the
        life of the process, and close raises :class:`UringIOError`
        (``ETIMEDOUT``) saying how many ops were lost.

        In a fork() child, closing an inherited ring (explicitly or by GC)
        only unmaps the child's view and closes its descriptor: nothing is
        cancelled on the ring the parent still uses.
        """
        if self.inherited:
            self._abandon()
            return
        error = None
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                # Waiters let go of the lock (Ring.wait): one may be in the kernel; the
                # others wait at the gate until the ring is freed (_exit_locked opens it).
                self._draining = True
                self._quiesce_waits_locked()
                # (ops an earlier drain gave up on, unregister_buffers' in a stack's teardown,
                # were reported then: waiting for them again doubled close_timeout)
                if self._inflight or lib.us_inflight(self._state) > self._lost_ops:
                    error = self._drain_all_locked()
            finally:
                # Also when a raising signal handler (Ctrl-C) cut the drain short: the ring
                # is freed (else its descriptor and mappings stay for the life of the
                # process, as a closed ring is never closed again), and what the kernel
                # may still touch is kept.
                try:
                    self._exit_locked()
                except BaseException:  # (a signal in it: finished before that propagates)
                    despite_signals(self._exit_locked)
                    raise
        if error is not None:
            raise error

    def _exit_locked(self) -> None:
        """Free the ring once, keeping the batches still listed in flight (safe to repeat).

        A drain that ran to its end left none (each completed, or was orphaned past
        the close timeout); one cut short by a signal may have: their buffers are
        kept for the life of the process, as the kernel may still write into them.
        ``io_uring_queue_exit`` runs inside ``list.extend``, which records it with no
        point for a signal handler in between: a repeat never frees the ring twice
        (a second ``close`` of its descriptor number could close another file's)."""
        if self._inflight:
            _ORPHANED.extend(self._inflight.values())
            self._inflight.clear()
        if not self._exited and not self._hold[0] & _HOLD_LEADER:
            # (a thread still in the kernel without the lock reads the ring's mappings when
            # it comes back: a close cut short while it led leaves the ring to that thread,
            # which frees it once back, in _lead_locked)
            self._exited.extend(map(lib.io_uring_queue_exit, (self._ring,)))
        self._close_unclaimed_eventfd()
        self._draining = False  # the waiters at the gate find the ring closed
        self._gate.wake_all()

    def _abandon(self) -> None:
        """Drop a fork child's copy of the ring without touching the parent's (no lock: it may be held)."""
        if self._closed:
            return
        self._closed = True
        # The kernel completes the parent's in-flight ops into the parent's memory,
        # never into this copy, so nothing here needs to outlive the ring.
        self._exited.extend(map(lib.io_uring_queue_exit, (self._ring,)))  # this process's copies only
        self._close_unclaimed_eventfd()

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and (not self.owner_closes or self.inherited):
            with contextlib.suppress(Exception):  # best effort in a finaliser
                self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._ring.ring_fd}"
        return f"<Ring {self.params.role} {state} flags={self.flags!r} inflight={self.inflight}>"


def _slot_done(remaining: Any, slot: int) -> bool:
    return not remaining[slot]


def _slot_left(remaining: Any, slot: int) -> int:
    return int(remaining[slot])


def _any_done(done: list[Batch], inflight_n: Any) -> bool:
    """wait_any's end: a batch collected, or nothing left in flight to wait for."""
    return bool(done) or not inflight_n[0]


def _put(cols: BatchColumns, name: str, value: IntOrSeq, n: int) -> None:
    if isinstance(value, int):
        cols.fill(name, value)
    elif len(value) != n:
        raise ValueError(f"expected {n} values for the {name} column, got {len(value)}")
    else:
        cols.set(name, value)
