"""``FileHandle``: what ``Stack.open`` returns; the same semantics on every backend.

Reads return the bytes they moved: a short read is retried for the rest and
is only ever short at end of file (``read_many(..., exact=True)`` turns that
into :class:`~uringstack.errors.ShortIOError` too).  Writes are retried until
complete or fail with ``ShortIOError``; a failed op raises
:class:`~uringstack.errors.UringIOError` with errno, operation and file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import operator
import os
import threading
import traceback
import weakref
from _thread import get_ident
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast

from uringstack import reaper
from uringstack.errors import RingClosedError, ShortIOError, SubmissionError, UringIOError
from uringstack.in_progress import InProgress
from uringstack.probe.threadlimits import op_error
from uringstack.ring import Ring, coalesce, forking
from uringstack.ring.arguments import OFFSET_LIMIT, check_offset, check_offsets, nbytes
from uringstack.ring.buffers import (
    BufferProvider,
    LeasedBuffer,
    RegisteredBuffer,
    address_of,
    check_alignment,
    fixed_slots,
    lease_view,
    release_pins,
)
from uringstack.ring.inflight import InflightTracker
from uringstack.ring.interrupts import FAILURES, despite_signals, run_to_end
from uringstack.ring.io_backend import SYNC_METHODS, FileIO, RingFileIO, SyncMethod, check_awaitable_io
from uringstack.ring.native import ffi
from uringstack.ring.pending import CompletedPending, Pending
from uringstack.ring.pins import pin_buffer
from uringstack.ring.settle import settle_pending
from uringstack.ring.sigmask import with_signals_held
from uringstack.stack.prepared import PreparedIO
from uringstack.stack.uring_backend import MAX_RW_COUNT, UringFileIO
from uringstack.types import WorkerView

if TYPE_CHECKING:
    from uringstack.ring.coalesce import Coalescer


# How many times an op the kernel cancelled on its own (it never ran) is run again before
# its ECANCELED is raised (FileHandle._rerun_cancelled).  A rerun is submitted with the
# thread's signals blocked, so a pending signal cannot fail it again: the reruns are for
# the rarer causes (a thread creation that failed for memory), and a cause no rerun
# fixes (a thread limit) costs this many failed thread creations before the error.
KERNEL_CANCEL_RERUNS = 3
_CANCELLED = -errno.ECANCELED
R = TypeVar("R", bound=int | None)
T = TypeVar("T")


class RunOne(NamedTuple):
    """One read or write that checking results needs run: of *buf* at *offset*; *held*: submitted
    with this thread's signals blocked (the rerun of an op the kernel cancelled on its own)."""

    write: bool
    offset: int
    buf: Any
    held: bool


# A result check (completing a short op, running a cancelled one again) written once as a
# generator: it yields each op it needs run and is sent that op's result.  The synchronous
# API drives it with waited ops (FileHandle._drive), the asyncio API with awaited ones
# (FileHandle._drive_async), so an await never blocks its event loop on one.
Checks = Generator[RunOne, int, T]


class HandleOwner(Protocol):
    """What a handle uses of its :class:`~uringstack.stack.Stack` (which creates handles, so is not imported)."""

    def open(
        self,
        path: str,
        *,
        direct: bool | None = None,
        writable: bool = True,
        create: bool = False,
        core: int | None = None,
        **options: Any,
    ) -> FileHandle:
        """Open another handle on the same stack (``uringstack.open``'s buffered twin)."""
        ...

    def _handle_closed(self, handle: FileHandle) -> None: ...

    @property
    def close_timeout_s(self) -> float:
        """How long a handle's close waits for its I/O (``core.close_timeout_s``)."""
        ...

    @property
    def aio_inline_read_budget(self) -> int:
        """Bytes of cached reads an asyncio ``await read`` copies before one yields
        (``core.aio_inline_read_budget``)."""
        ...


_lease_pin = operator.attrgetter("_uringstack_pin")  # a LeasedBuffer's pin (AttributeError: any other buffer)


def _view(buf: Any) -> memoryview:
    return lease_view(buf) if isinstance(buf, RegisteredBuffer) else memoryview(buf).cast("B")


def _check_batch(path: str, offsets: Sequence[int], buffers: Sequence[Any]) -> Sequence[int]:
    """Refuse a malformed batch before anything is submitted, the same way on every backend;
    return the offsets as ints (:func:`~uringstack.ring.arguments.check_offsets`)."""
    if len(offsets) != len(buffers):
        raise ValueError(f"{path}: {len(offsets)} offsets but {len(buffers)} buffers")
    return check_offsets(path, offsets)


class FileHandle:
    """An open file, block device or NVMe namespace on a stack's worker.

    Close it (:meth:`close`, or ``with``).  One dropped unclosed is closed when
    collected, with a ``ResourceWarning``, by the reaper thread
    (:mod:`uringstack.reaper`) once the I/O started through it has ended."""

    if TYPE_CHECKING:

        @property
        def closed(self) -> bool:
            """True once :meth:`close` refuses new I/O (right after the layered objects' flush)."""
            ...

    else:
        # A getter in C, no Python frame (a file object's hot checks read it), read-only.
        closed = property(operator.attrgetter("_closed"), doc="True once close() refuses new I/O.")

    # Weak references to the callbacks of watch_close: (closed, flush or None) pairs; a
    # tuple, so a handle nobody watches allocates nothing.
    _close_watchers: tuple[
        tuple[weakref.WeakMethod[Callable[[], object]], weakref.WeakMethod[Callable[[], object]] | None], ...
    ] = ()

    def __init__(self, io: FileIO, worker: WorkerView, stack: HandleOwner, backend_reason: str = "") -> None:
        self._io = io
        # Looked up once: a runtime protocol check costs microseconds, and the backend never changes.
        self._ring = io.ring if isinstance(io, RingFileIO) and isinstance(io.ring, Ring) else None
        self.worker = worker
        self._stack = stack
        self._closed = False
        self._fork_gen = forking.generation()
        self._inflight = InflightTracker(io.path)
        self.backend_reason = backend_reason
        """Why this backend serves the handle (the backend factory's reason)."""
        # Plain buffers lease_buffers handed out, so release_buffers can refuse foreign ones.
        self._plain_leases: weakref.WeakSet[Any] = weakref.WeakSet()
        # Registered-buffer leases handed out and not released: each a fresh object over a
        # pool buffer (its parent), retired by release_buffers (see there).  Held strongly:
        # a lease dropped unreleased keeps its pool buffer too.
        self._fixed_leases: set[RegisteredBuffer] = set()
        # Prepared I/O made on this handle (weakly: one dropped cannot start again).
        self._prepared: weakref.WeakSet[PreparedIO] = weakref.WeakSet()
        self._lease_lock = threading.Lock()  # release_buffers' checks and releases, as one
        # Single asyncio ops on a plain io_uring backend are coalesced per loop
        # iteration (uringstack.ring.coalesce); other backends take the batch path.
        self._uring_io = io if type(io) is UringFileIO else None
        # The backend's single waited op (read_into/write_from), where it has one:
        # run_one(write, pin, buf, offset) -> bytes or -errno, None to take the batch path.
        self._one: Callable[[bool, Any, Any, int], int | None] | None = getattr(io, "run_one", None)
        # Reads at the file position (uringstack.FileIO.readinto): read_cached(buf, want), the
        # page-cache part copied by the caller, then read_here(pin, buf, got) for the rest.
        self._cached: Callable[[Any, int], int | None] | None = getattr(io, "read_cached", None)
        self._here: Callable[[Any, Any, int], int | None] | None = getattr(io, "read_here", None)
        # outlived_op(keep) -> the pending of a run_one op still in flight after its call raised
        self._outlived: Callable[[object], Pending | None] | None = getattr(io, "outlived_op", None)
        self._coalescer_cache: Coalescer | None = None
        # The same coalescer when plain ``await read(n, off)`` may skip every check
        # but the cheap ones (a buffered io_uring handle): set by the first read.
        self._fast_reads: Coalescer | None = None
        # Its add_read for this handle's file and tracker, which queues only on the
        # loop's thread (Coalescer.reader; set with _fast_reads).
        self._add_read: Callable[[int, int], asyncio.Future[Any] | bytes | None] | None = None
        # core.aio_inline_read_budget for this handle's asyncio reads, and what is left of it
        # (set with _fast_reads: 0 under O_DIRECT; see Coalescer.reader and _copy_cached)
        self._inline_budget = 0
        self._inline_left = [0]
        # write_durable's bound writers, per sync method (bind_write_durable)
        self._durable_writers: dict[str, Callable[[Any, int], int]] = {}

    # --- description -------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._io.path

    @property
    def backend(self) -> str:
        """Name of the backend serving this handle (``uring``, ``fallback``, ...)."""
        return self._io.backend

    @property
    def fd(self) -> int:
        return self._io.fd

    @property
    def fixed_index(self) -> int | None:
        return self._io.fixed_index

    @fixed_index.setter
    def fixed_index(self, value: int | None) -> None:
        self._io.fixed_index = value

    @property
    def direct(self) -> bool:
        return self._io.direct

    @property
    def block_size(self) -> int:
        """Alignment required for buffers, offsets and lengths when ``direct``."""
        return self._io.block_size

    @property
    def io(self) -> FileIO:
        """The backend object (for benchmarks and plugins)."""
        return self._io

    @property
    def ring(self) -> Ring | None:
        """The worker's ring this handle's I/O goes to (``None``: not an io_uring backend)."""
        return self._ring

    def lease_buffers(self, count: int, size: int = 4096) -> list[Any]:
        """*count* buffers of *size* bytes from the worker's registered pool (fixed
        buffers, READ_FIXED/WRITE_FIXED), or page-aligned plain buffers when no pool
        serves this handle (fixedbuf off, memlock too low, another backend).  Give
        them back with :meth:`release_buffers`.  ``RingClosedError`` after :meth:`close`."""
        from uringstack.ring.buffers import leased_buffer

        self._check()  # (a closed handle's leases could never be used, and took pool buffers)

        if type(count) is not int or type(size) is not int:
            try:
                count, size = operator.index(count), operator.index(size)
            except TypeError:
                raise TypeError(f"lease_buffers(count={count!r}, size={size!r}): count and size are ints") from None
        if count < 0 or size <= 0:
            raise ValueError(f"lease_buffers(count={count}, size={size}): count must be >= 0 and size > 0")
        pool = self.worker.buffers.for_ring(self.ring)
        if pool is None or self.backend != "uring" or size > pool.buffer_size:
            # Pinned once (see LeasedBuffer) where one op moves it whole.
            plain = [leased_buffer(size, size <= MAX_RW_COUNT) for _ in range(count)]
            self._plain_leases.update(plain)
            return plain
        if count > pool.count:
            raise BufferError(
                f"lease_buffers({count}): the registered pool of worker {self.worker.index} has "
                f"{pool.count} buffers in all; raise [fixedbuf] count or lease fewer"
            )
        leases: list[RegisteredBuffer] = []
        try:
            for _ in range(count):
                leases.append(pool.lease())
        except BaseException:
            # All or nothing: a partial lease would leave the pool short for good.
            for lease in leases:
                pool.release(lease)
            raise
        # A fresh object per lease, whatever the pool hands out (the built-in pool hands out
        # the same object for a buffer each time): a reference kept past release_buffers
        # is then this object, retired, and not the next lease of the same memory.
        mine = [b.sub(0, size) for b in leases]
        self._fixed_leases.update(mine)
        return mine

    def release_buffers(self, buffers: Sequence[Any]) -> None:
        """Return buffers from :meth:`lease_buffers`.

        A buffer this handle's :meth:`lease_buffers` did not hand out (or one
        released already, or one given twice) raises ``ValueError`` before any
        buffer is returned, as does a registered buffer that an open
        :meth:`prepare_reads`/:meth:`prepare_writes` holds (close that first:
        it could start again on memory the pool has leased out since).  A
        released registered buffer is retired: I/O on it is refused
        (``ValueError``) and its ``view`` is released, since its memory goes
        to the next lease."""
        pool = self.worker.buffers.for_ring(self.ring)
        # One release at a time: another thread's, between this one's checks and its
        # releases, could make it release some buffers and then raise (all or nothing)
        with self._lease_lock:
            self._check_releasable(buffers, pool)
            for buf in buffers:
                if isinstance(buf, RegisteredBuffer):
                    self._fixed_leases.discard(buf)
                    if pool is not None:  # (None: the pool went with its stack; nothing to give back)
                        pool.release(buf.parent or buf)
                    buf.retire()
                else:
                    self._plain_leases.discard(buf)
                    if isinstance(buf, LeasedBuffer) and hasattr(buf, "_uringstack_pin"):
                        del buf._uringstack_pin  # the caller may close it now (a batch in flight keeps its own)

    def _check_releasable(self, buffers: Sequence[Any], pool: BufferProvider | None) -> None:
        """Raise what :meth:`release_buffers` refuses in *buffers*, before any is released."""
        if len({id(b) for b in buffers}) != len(buffers):
            raise ValueError("release_buffers: a buffer is given twice")
        held = {id(b) for p in self._prepared if not p.closed for b in p.buffers} if self._prepared else set()
        for buf in buffers:
            if isinstance(buf, RegisteredBuffer):
                if buf not in self._fixed_leases or (pool is not None and not pool.owns(buf.parent or buf)):
                    raise ValueError(
                        f"release_buffers: {buf!r} is not a lease of this handle's buffer pool "
                        "(or was released already)"
                    )
                if id(buf) in held:
                    raise ValueError(
                        f"release_buffers: registered buffer {buf.index} is held by an open prepared I/O "
                        "(prepare_reads/prepare_writes): close it first"
                    )
            elif buf not in self._plain_leases:
                raise ValueError(
                    f"release_buffers: a {type(buf).__name__} that lease_buffers did not hand out "
                    "(or that was released already)"
                )

    def size(self) -> int:
        self._check()
        return self._io.size()

    @property
    def _settle_timeout(self) -> float:
        """How long a cancelled await waits for its op (``core.close_timeout_s``)."""
        return self._stack.close_timeout_s

    def _op_error(self, err: int, op: str, detail: str = "") -> UringIOError:
        """The error of this handle's op whose result was ``-err``.  An ECANCELED is the
        kernel's own (io-wq could not start a worker: :func:`~uringstack.probe.threadlimits.op_error`
        adds the thread-limit hint) unless the handle or its ring is closed, whose
        cancellation it then is."""
        if self._cancelled_here():
            return UringIOError(err, op, self.path, detail)
        return op_error(err, op, self.path, detail)

    def _cancelled_here(self) -> bool:
        """Whether an ECANCELED this handle's op got now is the library's own: the handle or
        its ring closed (a ring's close cancels what is in flight).  A waited call of this
        handle cancels nothing else: an interrupted wait raises instead of returning results."""
        ring = getattr(self._io, "ring", None)
        return self._closed or (ring is not None and ring.closed)

    def _may_rerun(self, res: int | None, reruns: int) -> bool:
        """Whether an op whose result is *res*, run again *reruns* times already, is run again:
        the kernel cancelled it on its own (see :meth:`_rerun_cancelled`)."""
        return res == _CANCELLED and reruns < KERNEL_CANCEL_RERUNS and not self._cancelled_here()

    def _run_held(self, start: Callable[..., Pending], *args: Any) -> int:
        """The result of one op started by ``start(*args)`` with this thread's signals blocked
        for its submission (:func:`~uringstack.ring.sigmask.with_signals_held`), then waited for."""
        return self._run(with_signals_held(start), *args)[0]

    def _rerun_rw(self, res: int, write: bool, offset: int, buf: Any) -> int:
        """*res*, the result of one read or write of *buf* at *offset*, or of its reruns
        where the kernel cancelled it on its own (:meth:`_rerun_cancelled`), waited for."""
        return self._drive(self._rerun_steps(res, write, offset, buf))

    def _rerun_steps(self, res: int, write: bool, offset: int, buf: Any) -> Checks[int]:
        """:meth:`_rerun_rw` as :data:`Checks` (the loop of :meth:`_rerun_cancelled`)."""
        reruns = 0
        while self._may_rerun(res, reruns):
            reruns += 1
            res = yield RunOne(write, offset, buf, True)
        return res

    def _drive(self, checks: Checks[T]) -> T:
        """Run each op *checks* yields, waited for in this thread; its outcome."""
        try:
            op = next(checks)
            while True:
                if op.held:
                    res = self._run_held(self._io.start_rw, op.write, [op.offset], [op.buf])
                else:
                    res = self._run(self._io.start_rw, op.write, [op.offset], [op.buf], wait=True)[0]
                op = checks.send(res)
        except StopIteration as done:
            return cast(T, done.value)

    async def _drive_async(self, checks: Checks[T]) -> T:
        """Run each op *checks* yields, awaited (:meth:`_rw_batch_async`: the event loop runs
        meanwhile, and a cancel waits until the op no longer uses its buffer); its outcome."""
        try:
            op = next(checks)
            while True:
                results, _ = await self._rw_batch_async(op.write, [op.offset], [op.buf], held=op.held)
                op = checks.send(results[0])
        except StopIteration as done:
            return cast(T, done.value)

    def _rerun_cancelled(self, res: R, again: Callable[[], R]) -> R:
        """*res*, an op's result; where the kernel cancelled the op on its own, the result of
        running it again (``again()``), up to :data:`KERNEL_CANCEL_RERUNS` times.

        io_uring hands an op it cannot do at once (``fdatasync``, a read of
        uncached data, a buffered write on most filesystems) to an io-wq worker
        thread, which the submitting thread creates on first need.  A signal
        pending in that thread makes the thread's creation fail, and kernels
        that bound the creation's retries without backing off (Debian's 5.10,
        6.1 and 6.12: docs/api.md, "An op the kernel cancelled on its own")
        then cancel the queued ops: ``-ECANCELED`` for an op that never ran.  A
        process at its thread limit gets the same.  Since the op never ran,
        running it again is not a retry of a failure: a flush that did run and
        failed is never run again (``fsync``'s rule), and an op the library
        cancelled (its handle or ring closed) is not either.

        *again* submits with this thread's signals blocked (:meth:`_run_held`,
        :mod:`uringstack.ring.sigmask`): a blocked signal does not fail the
        worker's creation, so a thread that signals keep reaching (measured: a
        storm of them on Debian's 5.10 failed eight plain reruns in a row) gets
        its op done; only its submission waits for them, not the op."""
        reruns = 0
        while self._may_rerun(res, reruns):
            reruns += 1
            res = again()
        return res

    def _check(self) -> None:
        forking.check(self._fork_gen, f"the handle of {self.path}")
        if self._closed:
            raise RingClosedError(f"{self.path} is closed")

    # --- starting I/O: every op goes through the tracker so close() can wait for it ----
    def _start(self, fn: Callable[..., Pending], *args: Any, **kwargs: Any) -> Pending:
        return self._inflight.start(fn, *args, **kwargs)

    def _run(self, fn: Callable[..., Pending], *args: Any, **kwargs: Any) -> list[int]:
        return self._inflight.run(fn, *args, **kwargs)

    async def _run_async(self, fn: Callable[..., Pending], *args: Any, **kwargs: Any) -> list[int]:
        check_awaitable_io(self._io)  # (a refused await after the start: I/O its caller was told failed)
        pending = self._inflight.start(fn, *args, **kwargs)
        try:
            return await pending.wait_async()
        finally:
            # a cancelled await leaves the op in flight: close() still waits for it
            self._inflight.forget(pending)

    # --- result checking -----------------------------------------------------------
    def _finish_reads(
        self,
        offsets: Sequence[int],
        buffers: Sequence[Any],
        results: list[int],
        exact: bool,
        submitted: Sequence[int] | None = None,
    ) -> Checks[list[int]]:
        """Complete short reads; raise the first failure (:data:`Checks`: driven by
        :meth:`_drive` or :meth:`_drive_async`).  *submitted*: each op's byte length when
        it was started, where the buffer may have been resized since."""
        out = results
        for i, res in enumerate(results):
            if res < 0:
                res = out[i] = yield from self._rerun_steps(res, False, offsets[i], buffers[i])
                if res < 0:
                    raise self._op_error(-res, "read", f"at offset {offsets[i]}")
            buf = buffers[i]
            want = len(buf) if type(buf) is bytearray else nbytes(buf)
            if submitted is not None and submitted[i] != want:
                want = self._resized(False, offsets[i], submitted[i], res)
            if res < want:
                out[i] = yield from self._complete_short(False, offsets[i], buffers[i], res, exact)
        return out

    def _resized(self, write: bool, offset: int, submitted: int, res: int) -> int:
        """The length to judge an op by whose buffer was resized after it ran: the submitted
        one when the op moved it all; a short op cannot be completed into a buffer that is
        no longer the one it was given (``BufferError``, as a resize during the op gets)."""
        if res >= submitted:
            return submitted
        op = "write" if write else "read"
        raise BufferError(
            f"{self.path}: the buffer of the {op} at offset {offset} was resized after the op moved "
            f"{res} of its {submitted} bytes; the rest was not {'written' if write else 'read'}"
        )

    def _finish_writes(
        self,
        offsets: Sequence[int],
        buffers: Sequence[Any],
        results: list[int],
        gathered: bool = False,
        submitted: Sequence[int] | None = None,
    ) -> Checks[list[int]]:
        """Complete short writes; raise the first failure (:data:`Checks`).  *gathered*
        (buffers back to back from ``offsets[0]``): the failure's ``transferred`` counts
        from there, the buffers before the failed one included (checked in order, so each
        was written whole).  *submitted*: as for :meth:`_finish_reads`."""
        for i, res in enumerate(results):
            try:
                if res < 0:
                    res = results[i] = yield from self._rerun_steps(res, True, offsets[i], buffers[i])
                    if res < 0:
                        raise self._op_error(-res, "write", f"at offset {offsets[i]}")
                buf = buffers[i]
                want = len(buf) if type(buf) is bytes else nbytes(buf)
                if submitted is not None and submitted[i] != want:
                    want = self._resized(True, offsets[i], submitted[i], res)
                if res < want:
                    results[i] = yield from self._complete_short(True, offsets[i], buffers[i], res, True)
            except UringIOError as exc:
                if gathered:
                    exc.transferred += offsets[i] - offsets[0]
                raise
        return results

    def _ends_inside_a_block(self, done: int) -> bool:
        """True when an O_DIRECT transfer stopped *done* bytes in, inside a logical block."""
        io = self._io
        return io.direct and done % io.block_size != 0

    def _complete_short(self, write: bool, offset: int, buf: Any, done: int, exact: bool) -> Checks[int]:
        """Retry the rest of a short transfer until it completes, hits EOF or fails (:data:`Checks`)."""
        view = _view(buf)
        total = len(view)
        op = "write" if write else "read"
        if done == 0 and not write:
            # A read that returned 0 is at or past the end of the file (read(2)): asking
            # again costs a waited submission per such read (31 of a 32-read batch past a
            # 4 KiB file's end were re-read one by one) and says the same
            if exact:
                cut = ShortIOError(op, self.path, total, 0, offset)
                cut.transferred = 0
                raise cut
            return 0
        while done < total:
            if self._ends_inside_a_block(done):
                # O_DIRECT moves whole blocks: the rest would start inside one (its address and
                # offset misaligned, an AlignmentError after data moved).  A read ends there at
                # the end of the file (whose size is not a multiple of the block); a write cut
                # there (a file size limit) cannot be completed.
                if not (write or exact):
                    return done
                cut = ShortIOError(op, self.path, total, done, offset)
                cut.transferred = done
                raise cut
            rest = view[done:]
            res = yield RunOne(write, offset + done, rest, False)
            if res < 0:
                res = yield from self._rerun_steps(res, write, offset + done, rest)
            if res <= 0:
                if res == 0 and not (write or exact):
                    return done  # end of file
                exc = (
                    self._op_error(-res, op, f"at offset {offset + done}")
                    if res < 0
                    else ShortIOError(op, self.path, total, done, offset)
                )
                exc.transferred = done  # (the first part moved: write(2) would have returned it)
                raise exc
            done += res
        return done

    # --- synchronous API ------------------------------------------------------------
    def read_into(self, buf: Any, offset: int) -> int:
        """Read ``len(buf)`` bytes at *offset* into *buf*; returns bytes read (short only at EOF)."""
        pin = self._pin_one(buf, True)
        if pin is None:
            return self.read_many([offset], [buf])[0]
        return self._one_pinned(False, pin, buf, offset)

    def write_from(self, buf: Any, offset: int) -> int:
        """Write all of *buf* at *offset*; returns ``len(buf)`` or raises."""
        pin = self._pin_one(buf, False)
        if pin is None:
            return self.write_many([offset], [buf])[0]
        return self._one_pinned(True, pin, buf, offset)

    def _pin_one(self, buf: Any, writable: bool) -> Any:
        """*buf* pinned for the backend's single-op path, or None: take the batch path
        (no such path, a registered-buffer lease, or not a buffer: the batch path reports it)."""
        if self._one is None or isinstance(buf, RegisteredBuffer):
            return None
        try:
            return pin_buffer(buf, writable)
        except (TypeError, BufferError):
            return None

    def _one_pinned(self, write: bool, pin: Any, buf: Any, offset: int) -> int:
        """:meth:`read_into`/:meth:`write_from` of *buf*, pinned as *pin* (``uringstack.FileIO`` pins it first).

        One waited op through the backend's ``run_one``, counted by the
        handle's tracker while it runs (close() waits for it), and tracked
        after it if the op outlived a call that raised (``outlived_op``: the
        kernel may still use the buffer and the descriptor); the batch path
        when ``run_one`` does not take it (``None``) or for a bad offset."""
        one = self._one
        res = None
        if one is not None and type(offset) is int and 0 <= offset < OFFSET_LIMIT:
            if self._closed or self._fork_gen != forking._generation:
                self._check()
            inflight = self._inflight
            inflight.enter()
            try:
                res = one(write, pin, buf, offset)
            except BaseException:
                # The op the kernel may still hold is tracked before the start is counted
                # out, and a second raising signal (Ctrl-C twice) must not cut that short:
                # the first run inside try (a signal at its entry is caught), then retries.
                try:
                    self._keep_outlived(pin)
                except BaseException:
                    despite_signals(self._keep_outlived, pin)
                inflight.left()
                raise
            inflight.left()  # (not in a finally: that would count out even when keeping the op escaped)
            if res == len(pin):
                return res
        if res is None:
            try:
                return (self.write_many if write else self.read_many)([offset], [buf])[0]
            except BaseException:
                release_pins((pin,))  # (a misaligned O_DIRECT buffer, refused there: see release_pins)
                raise
        if write:
            return self._drive(self._finish_writes([offset], [ffi.buffer(pin)], [res]))[0]
        return self._drive(self._finish_reads([offset], [ffi.buffer(pin)], [res], False))[0]

    def _keep_outlived(self, pin: Any) -> None:
        """A single op on *pin* raised: if the kernel still holds it (``outlived_op``), the
        tracker keeps it until it completes.  Safe to repeat (despite_signals)."""
        if self._outlived is not None:
            pending = self._outlived(pin)
            if pending is not None:
                self._inflight.keep(pending)

    def _read_here(self, buf: Any, want: int, pin: Any = None, copied: int | None = -1) -> int | None:
        """One waited read of *want* bytes (*buf*'s length, > 0) into *buf* at the
        descriptor's file position, which moves past what was read, as read(2) does
        (``uringstack.FileIO.readinto``).

        Bytes read: short only at end of file, or where read(2) would be short.
        ``None`` when the backend cannot read at the file position (the caller
        looks the position up and reads there).  What the page cache holds is
        copied by this thread without pinning *buf* (the backend's ``read_cached``:
        ``preadv`` takes the buffer itself); *buf* is pinned (unless *pin* is given)
        only for what goes to the ring (``read_here``).  Tracked as :meth:`_one_pinned`
        is (the same lines, inline in both: a shared helper would cost a Python call per op).

        *copied*: what the caller's own page-cache step already did for this read
        (``uringstack.FileIO``'s C ``readinto``): bytes copied (the position moved past
        them), or ``None`` for nothing cached; the ring then reads the rest or all of
        it, with no second copy attempt.  -1 (the default): this call copies first."""
        here = self._here
        if here is None:
            return None
        if self._closed or self._fork_gen != forking._generation:
            self._check()
        inflight = self._inflight
        inflight.enter()
        try:
            if copied == -1:
                cached = self._cached
                res = cached(buf, want) if cached is not None else None
            else:
                res = copied
            if res is None or 0 < res < want:
                if pin is None:
                    pin = pin_buffer(buf, True)
                copied = res or 0
                res = here(pin, buf, copied)
                if res == _CANCELLED:  # (the kernel's own cancellation: see _rerun_cancelled)
                    # (its submission and wait are one call, held whole: a file's read)
                    again = functools.partial(with_signals_held(here), pin, buf, copied)
                    res = self._rerun_cancelled(cast("int | None", res), again)  # (== narrowed it to int)
        except BaseException:
            if pin is not None:  # as in _one_pinned
                try:
                    self._keep_outlived(pin)
                except BaseException:
                    despite_signals(self._keep_outlived, pin)
            inflight.left()
            raise
        inflight.left()
        if res is not None and res < 0:
            raise self._op_error(-res, "read", "at the file position")
        return res

    def read_many(self, offsets: Sequence[int], buffers: Sequence[Any], *, exact: bool = False) -> list[int]:
        """Read each buffer at its offset in one batch; returns bytes read per buffer.

        On a ring, at most its queue depth is in flight at once (``Ring.cq_cap``,
        ``core.max_in_flight``): a larger batch streams through it, each op submitted
        as a completion makes room (docs/api.md)."""
        self._check()
        offsets = _check_batch(self.path, offsets, buffers)
        if not offsets:
            return []
        results = self._run(self._io.start_rw, False, offsets, buffers, wait=True)
        return self._drive(self._finish_reads(offsets, buffers, results, exact))

    def write_many(self, offsets: Sequence[int], buffers: Sequence[Any]) -> list[int]:
        """Write each buffer at its offset in one batch (no ordering between them)."""
        return self._write_many(offsets, buffers, False)

    def _write_many(self, offsets: Sequence[int], buffers: Sequence[Any], gathered: bool) -> list[int]:
        self._check()
        offsets = _check_batch(self.path, offsets, buffers)
        if not offsets:
            return []
        try:
            results = self._run(self._io.start_rw, True, offsets, buffers, wait=True)
        except SubmissionError as exc:
            # A submission that failed after part of the batch ran (the fallback's pool; its
            # results say which part): what write(2) would have returned, where that is one count
            if exc.results and (gathered or len(offsets) == 1):
                exc.transferred = _written_back_to_back(exc.results, buffers)
            raise
        return self._drive(self._finish_writes(offsets, buffers, results, gathered))

    def prepare_reads(self, buffers: Sequence[Any]) -> PreparedIO:
        """Prepare reads into *buffers* once, then ``.run(offsets)``/``.start(offsets)`` them repeatedly.

        The fast form of :meth:`read_many` for a loop reusing the same buffers:
        pins, lengths, opcodes (READ_FIXED for this handle's registered-buffer
        leases) and O_DIRECT buffer alignment are done here, not per call.
        Same results and errors as :meth:`read_many`; see
        :class:`~uringstack.stack.prepared.PreparedIO`."""
        return self._prepare(False, buffers)

    def prepare_writes(self, buffers: Sequence[Any]) -> PreparedIO:
        """Prepare writes from *buffers* once (the fast form of :meth:`write_many`); see :meth:`prepare_reads`."""
        return self._prepare(True, buffers)

    def _prepare(self, write: bool, buffers: Sequence[Any]) -> PreparedIO:
        self._check()
        if not buffers:
            raise ValueError(f"{self.path}: nothing to prepare (no buffers)")
        prepared = PreparedIO(self, write, buffers)
        self._prepared.add(prepared)
        return prepared

    def readv_into(self, buffers: Sequence[Any], offset: int) -> int:
        """Scatter read: fill *buffers* in order from *offset*; returns total bytes read."""
        offsets = _consecutive(self.path, offset, buffers)
        got = self.read_many(offsets, buffers)
        total = 0
        for n, buf in zip(got, buffers, strict=True):
            total += n
            if n < nbytes(buf):
                break  # EOF inside this buffer: later ones hold nothing valid
        return total

    def writev_from(self, buffers: Sequence[Any], offset: int) -> int:
        """Gather write: write *buffers* back to back from *offset*; returns total bytes.

        A failure's ``transferred`` counts the bytes written back to back from *offset*
        before it (what ``pwritev(2)`` would have returned)."""
        return sum(self._write_many(_consecutive(self.path, offset, buffers), buffers, True))

    def fsync(self) -> None:
        """Flush data and metadata to stable storage.  A failure is not retryable."""
        self._sync(False)

    def fdatasync(self) -> None:
        """Flush data (and the metadata needed to read it) to stable storage."""
        self._sync(True)

    def _sync(self, datasync: bool) -> None:
        self._check()
        res = self._run(self._io.start_sync, datasync, wait=True)[0]
        if res < 0:
            # (an op that never ran: no retry of a failed flush)
            res = self._rerun_cancelled(res, functools.partial(self._run_held, self._io.start_sync, datasync))
            if res < 0:
                raise self._op_error(-res, "fdatasync" if datasync else "fsync")

    def write_durable(self, buf: Any, offset: int, *, sync: SyncMethod = "fdatasync") -> int:
        """Write all of *buf* at *offset* durably; returns ``len(buf)`` once it is on stable storage.

        ``sync="fdatasync"`` (default): each write is followed by a flush
        ordered after it (linked with ``IOSQE_IO_LINK`` on io_uring);
        ``sync="dsync"``: each write is itself durable (``RWF_DSYNC``, FUA on
        NVMe).  A short write is completed by further durable writes of the
        rest (the flush linked to a short write never ran: the kernel
        cancelled it, so issuing a new one is not a retry).  A failed write
        raises :class:`~uringstack.errors.UringIOError` (op ``write``), a
        zero-byte one :class:`~uringstack.errors.ShortIOError`, and a failed
        flush ``UringIOError`` (op ``fdatasync``): it is never retried, since
        after a failed flush the kernel may have dropped the dirty pages
        (PostgreSQL's "fsyncgate"), and the data must be treated as lost.
        """
        write = self._durable_writers.get(sync) if type(sync) is str else None
        if write is None:
            self._check()
            write = self.bind_write_durable(sync)
            self._durable_writers[sync] = write
        return write(buf, offset)

    def bind_write_durable(self, sync: SyncMethod = "fdatasync") -> Callable[[Any, int], int]:
        """:meth:`write_durable` with *sync* checked and bound once: ``write(buf, offset) -> len(buf)``.

        Each call makes every check :meth:`write_durable` makes (a closed
        handle, a handle inherited through ``fork()``, a negative offset,
        O_DIRECT alignment), the same writes and flushes, and raises the same
        errors: a write or flush that failed is never reported as done.  What
        is decided once (the sync method, the backend's durable write) is
        decided here: a write-ahead log binds it per segment, so every flush
        takes the shortest path to the syscall.  The callable stays bound to
        this handle (it refuses writes once the handle is closed)."""
        if sync not in SYNC_METHODS:
            raise ValueError(f"{self.path}: write_durable sync={sync!r}; allowed: {', '.join(SYNC_METHODS)}")
        path, inflight, dsync = self.path, self._inflight, sync == "dsync"
        finish = self._finish_durable
        # A backend that does a waited durable write in this thread binds it (the fallback's
        # durable_writer): over when it returns, so counted while it runs, never left in flight.
        bind: Callable[[SyncMethod], Callable[[Any, int], list[int]]] | None = getattr(self._io, "durable_writer", None)
        if bind is not None:
            one = bind(sync)

            def run(buf: Any, offset: int) -> list[int]:
                inflight.enter()
                try:
                    return one(buf, offset)
                finally:
                    inflight.left()  # one C call: no raising signal before the count moves

        else:
            start = self._io.start_write_durable
            track = inflight.run

            def run(buf: Any, offset: int) -> list[int]:
                # an interrupted wait leaves the op tracked: close() waits for it
                return track(start, offset, buf, sync, wait=True)

        def write(buf: Any, offset: int) -> int:
            if self._closed or self._fork_gen != forking._generation:
                self._check()
            if type(offset) is not int or not 0 <= offset < OFFSET_LIMIT:
                offset = check_offset(path, offset)
            # The common case, one complete write, builds no view and no list.
            if type(buf) is memoryview:
                total = buf.nbytes
            else:
                if type(buf) is RegisteredBuffer:
                    buf = lease_view(buf)  # a plain write from the lease's memory (no WRITE_FIXED here)
                total = len(_view(buf))
            res = run(buf, offset)
            if res[0] == total and (dsync or res[1] == 0):
                return total
            return finish(buf, offset, sync, total, res)

        return write

    def _finish_durable(self, buf: Any, offset: int, sync: SyncMethod, total: int, res: list[int]) -> int:
        """Check a durable write's results; complete a short one with further durable writes."""
        view = _view(buf)
        done = reruns = 0
        while True:
            written = res[0]
            if self._may_rerun(written, reruns):
                # The kernel cancelled the write before it ran (see _rerun_cancelled), and
                # with it the flush linked to it: the pair is issued again.
                reruns += 1
                res = self._run(with_signals_held(self._io.start_write_durable), offset + done, view[done:], sync)
                continue
            if written < 0:
                raise self._op_error(-written, "write", f"{total - done} bytes at offset {offset + done}")
            if sync == "fdatasync":
                flushed = res[1]
                if flushed == _CANCELLED and done + written >= total:
                    # The write ran whole and the kernel cancelled its flush before it ran
                    # (see _rerun_cancelled): flushing now is no retry of a failed flush.
                    flushed = self._rerun_cancelled(
                        flushed, functools.partial(self._run_held, self._io.start_sync, True)
                    )
                # A flush after a short write was cancelled, never run; any other error is final.
                if flushed < 0 and not (flushed == -errno.ECANCELED and done + written < total):
                    raise self._op_error(-flushed, "fdatasync", f"after a write at offset {offset + done}")
            if written == 0 and total:
                raise ShortIOError("write", self.path, total, done, offset)
            done += written
            if done >= total:
                return total
            if self._ends_inside_a_block(done):  # (see _complete_short)
                exc = ShortIOError("write", self.path, total, done, offset)
                exc.transferred = done
                raise exc
            res = self._run(self._io.start_write_durable, offset + done, view[done:], sync, wait=True)

    # --- asynchronous API -----------------------------------------------------------
    def start_read_many(self, offsets: Sequence[int], buffers: Sequence[Any]) -> Pending:
        """Start a batch of reads without waiting (results unchecked: bytes or ``-errno``)."""
        self._check()
        offsets = _check_batch(self.path, offsets, buffers)
        if not offsets:  # (as read_many: a ring refuses a batch of no ops)
            return CompletedPending([])
        return self._start(self._io.start_rw, False, offsets, buffers)

    def start_write_many(self, offsets: Sequence[int], buffers: Sequence[Any]) -> Pending:
        """Start a batch of writes without waiting (results unchecked: bytes or ``-errno``)."""
        self._check()
        offsets = _check_batch(self.path, offsets, buffers)
        if not offsets:  # (as write_many: a ring refuses a batch of no ops)
            return CompletedPending([])
        return self._start(self._io.start_rw, True, offsets, buffers)

    def finish_writes(self, offsets: Sequence[int], buffers: Sequence[Any], results: list[int]) -> list[int]:
        """Check a :meth:`start_write_many` batch's *results* as :meth:`write_many` does: a
        short write is completed (waited), the first failure raised (``UringIOError``, its
        ``transferred`` what reached the file); returns the bytes written per buffer."""
        self._check()
        return self._drive(self._finish_writes(offsets, buffers, results))

    def _coalescer(self, offset: Any) -> tuple[Coalescer | None, int]:
        """The running loop's coalescer for a single op at *offset*, or None (take the batch path)."""
        io = self._uring_io
        if io is None or (type(offset) is not int and not hasattr(offset, "__index__")):
            return None, offset
        offset = operator.index(offset)
        if not 0 <= offset < OFFSET_LIMIT:
            return None, offset  # the batch path reports it (a negative offset is a ValueError)
        co = self._coalescer_cache
        if co is None or not co.on_loop_thread():  # (asyncio.get_running_loop() costs a getpid)
            co = self._coalescer_cache = coalesce.coalescer_for(io.ring)
            self._fast_reads = None if io.direct else co
            budget = 0 if io.direct else self._stack.aio_inline_read_budget
            self._inline_budget = budget
            self._inline_left = [budget]  # (shared by read's reader and read_many_async)
            self._add_read = None if io.direct else co.reader(io, self._inflight, budget, self._inline_left)
        return co, offset

    async def read_into_async(self, buf: Any, offset: int) -> int:
        """asyncio form of :meth:`read_into`: queued with the other single ops of this loop
        iteration and submitted with them in one batch (see ``docs/api.md``, asyncio).

        Cancelled, it raises ``CancelledError`` only once nothing writes into *buf* any
        more: an op still queued is never submitted; one in the kernel is cancelled there
        and its completion awaited (at most ``core.close_timeout_s``: then
        :class:`~uringstack.errors.CancelTimeoutError`, *buf* still the kernel's)."""
        self._check()
        co, offset = self._coalescer(offset)
        if co is not None and not isinstance(buf, RegisteredBuffer):
            pin = pin_buffer(buf, True)
            n = len(pin)
            if n <= MAX_RW_COUNT:
                if self._io.direct:
                    check_alignment("read", self.path, address_of(pin), n, offset, self._io.block_size, (pin,))
                fut = co.add(cast(UringFileIO, self._io), self._inflight, False, pin, offset)
                try:
                    res: int = await fut
                except asyncio.CancelledError:
                    await co.settle(fut, self._stack.close_timeout_s, "read", self.path)
                    raise
                if res == n:
                    return res
                return (await self._drive_async(self._finish_reads([offset], [buf], [res], False)))[0]
        return (await self.read_many_async([offset], [buf]))[0]

    async def read(self, size: int, offset: int) -> bytes:
        """``await handle.read(n, off)``: read up to *size* bytes at *offset* (short only at EOF).

        On a buffered io_uring handle, bytes the page cache holds in full are
        copied at once on the loop's thread (``preadv2(RWF_NOWAIT)``, which never
        waits for the device) and returned without yielding, up to a budget per
        handle (``core.aio_inline_read_budget``: then one read yields).  Otherwise
        the read is queued with the other single reads and writes that the loop's
        tasks issue in the same iteration, and all go to the kernel as one batch;
        the result is the one copy of the bytes."""
        add = self._add_read
        # The hot path (32 tasks each awaiting 4 KiB reads spend most of their CPU
        # here): only checks that cost no call; anything else takes _read below.
        if (
            add is not None
            and type(size) is int
            and 0 < size <= MAX_RW_COUNT
            and type(offset) is int
            and 0 <= offset < OFFSET_LIMIT
            and not self._closed
            and self._fork_gen == forking._generation
            and (fut := add(size, offset)) is not None  # this thread runs the loop (Coalescer.reader)
        ):
            if isinstance(fut, bytes):
                return fut  # all of it was in the page cache: copied, no await
            data = await fut
            if type(data) is bytes and len(data) == size:
                return data
            return await self._read_rest(data, size, offset)
        return await self._read(size, offset)

    async def _read(self, size: int, offset: int) -> bytes:
        if size < 0:
            raise ValueError(f"{self.path}: read size {size} is negative")
        if size == 0:
            self._check()
            (offset,) = _check_batch(self.path, [offset], [b""])
            if self._io.direct:
                # (as read_into's zero-length read checks it: its O_DIRECT offset is still checked)
                check_alignment("read", self.path, 0, 0, offset, self._io.block_size)
            return b""
        if self._io.direct:
            from uringstack.ring.buffers import aligned_buffer

            block = self._io.block_size
            buf: Any = aligned_buffer(max(block, -(-size // block) * block))
            got = await self.read_into_async(buf, offset)
            return bytes(buf[: min(got, size)])
        self._check()
        co, offset = self._coalescer(offset)
        if co is not None and size <= MAX_RW_COUNT:
            add = self._add_read  # (set by _coalescer: a handle's first read takes this path too)
            if add is None or (fut := add(size, offset)) is None:
                fut = co.add_read(cast(UringFileIO, self._io), self._inflight, size, offset)
            elif isinstance(fut, bytes):
                return fut
            data = await fut
            if type(data) is bytes and len(data) == size:
                return data
            return await self._read_rest(data, size, offset)
        buf = bytearray(size)
        got = await self.read_into_async(buf, offset)
        return bytes(buf) if got == size else bytes(buf[:got])

    async def _read_rest(self, data: bytes | int, size: int, offset: int) -> bytes:
        """A coalesced read that failed (``-errno``) or came back short: raise, or read the rest,
        awaited (a read the kernel cancelled on its own is run again: see
        :meth:`_rerun_cancelled`)."""
        buf = bytearray(size)
        if isinstance(data, int):
            done = await self._drive_async(self._rerun_steps(data, False, offset, buf))
            if done < 0:
                raise self._op_error(-done, "read", f"at offset {offset}")
        else:
            buf[: len(data)] = data
            done = len(data)
        if done < size:
            done = await self._drive_async(self._complete_short(False, offset, buf, done, False))
        return bytes(buf[:done])

    def _fixed_slots(self, buffers: Sequence[Any]) -> list[int] | None:
        """The registered-buffer slots of *buffers* when every one is a lease of this handle's
        ring (they go out as READ_FIXED/WRITE_FIXED), else None."""
        if not buffers or not isinstance(buffers[0], RegisteredBuffer) or self._ring is None:
            return None
        slots = fixed_slots(buffers, self._ring)
        return slots if min(slots) >= 0 else None

    def _pin_many(
        self, write: bool, offsets: Sequence[int], buffers: Sequence[Any]
    ) -> tuple[Coalescer | None, list[Any], list[int], list[int], list[int] | None]:
        """Pins, offsets, byte lengths and registered-buffer slots (None: plain ops) for a
        coalesced batch, or a None coalescer (take the batch path)."""
        if self._uring_io is None or not offsets:
            return None, [], [], [], None
        co, _ = self._coalescer(0)
        if co is None:
            return None, [], [], [], None
        slots = None
        try:
            # Leases of lease_buffers carry their pin (writable: serves writes too).
            pins = list(map(_lease_pin, buffers))  # (O_DIRECT: checked below)
        except AttributeError:
            slots = self._fixed_slots(buffers)
            if slots is not None:
                pins = list(buffers)  # leases of this ring: READ_FIXED/WRITE_FIXED
            elif any(isinstance(b, RegisteredBuffer) for b in buffers):
                return None, [], [], [], None  # mixed with other buffers: start_rw sorts them out
            else:
                writable = not write
                pins = [pin_buffer(b, writable) for b in buffers]
        offs = list(map(operator.index, offsets))
        if max(offs) >= OFFSET_LIMIT:
            return None, [], [], [], None
        lens = list(map(len, pins))
        if max(lens) > MAX_RW_COUNT:
            return None, [], [], [], None
        if self._io.direct:
            block = self._io.block_size
            for pin, off in zip(pins, offs, strict=True):
                addr = pin.addr if slots is not None else address_of(pin)
                check_alignment("write" if write else "read", self.path, addr, len(pin), off, block, pins)
        return co, pins, offs, lens, slots

    def _queue_many(
        self, write: bool, offsets: Sequence[int], buffers: Sequence[Any]
    ) -> tuple[asyncio.Future[Any] | None, list[int]]:
        """A ``*_many_async`` queued on the coalescer: its future and the buffers' byte lengths,
        or a None future (take the batch path).  Bad input raises here, before queuing.

        The hot path, in this one frame (a helper's call and its returned tuple cost
        about as much as its checks): a buffered io_uring handle, open, in its own
        process, on its loop's thread (as in read); leases of lease_buffers carry
        their pin (pinned only when one op moves them whole), or are registered
        buffers of this handle's ring (their slots: READ_FIXED/WRITE_FIXED); offsets
        pair with buffers and none is negative.  Checked with no call that can fail;
        anything else takes the checked path, which raises what is wrong."""
        co = self._fast_reads
        io = self._uring_io
        if (
            co is not None
            and io is not None
            and not self._closed
            and self._fork_gen == forking._generation
            and (tl := co.thread_loop) is not None
            and tl._thread_id == get_ident()
        ):
            slots = None
            pins: list[Any] = []
            if buffers and type(buffers[0]) is RegisteredBuffer:
                # (Checked first: an AttributeError raised and caught per await cost ~1 us.)
                slots = self._fixed_slots(buffers)
                if slots is not None:
                    pins = list(buffers)
                    lens = [b.size for b in pins]  # (len() would call RegisteredBuffer.__len__ per lease)
            else:
                try:
                    pins = [b._uringstack_pin for b in buffers]
                except AttributeError:
                    pass
                else:
                    lens = list(map(len, pins))
            if pins:
                offs = list(map(operator.index, offsets))
                if len(offs) == len(pins) and min(offs) >= 0 and max(offs) < OFFSET_LIMIT:
                    return co.add_many(io, self._inflight, write, pins, offs, lens, slots), lens
        self._check()
        offsets = _check_batch(self.path, offsets, buffers)
        if not offsets:  # nothing to do (a ring refuses a batch of no ops)
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result([])
            return done, []
        maybe, pins, offs, lens, slots = self._pin_many(write, offsets, buffers)
        if maybe is None:
            return None, lens
        return maybe.add_many(cast(UringFileIO, self._io), self._inflight, write, pins, offs, lens, slots), lens

    def _copy_cached(self, offsets: Sequence[int], buffers: Sequence[Any], limit: int) -> list[int] | None:
        """A ``read_many_async`` copied from the page cache on the loop's thread (the backend's
        ``read_cached`` per op, ``preadv2(RWF_NOWAIT)``: never a wait for the device), as
        :meth:`read` does for one op (``Coalescer.reader``): the byte counts, or None when
        anything is not all cached (or at end of file, or failing; the ring then reads the
        whole batch again and reports what it finds), or the batch is not one this path
        takes (the queued path checks it and raises what is wrong), or it is more than
        *limit* bytes (what is left of the handle's ``aio_inline_read_budget``).

        Only on the thread running the handle's loop, with offsets in range and buffers
        of one kind it copies into as they are: leases (``lease_buffers``, plain or
        registered) or ``bytearray``."""
        co = self._fast_reads
        io = self._uring_io
        if (
            co is None
            or io is None
            or self._closed
            or self._fork_gen != forking._generation
            or (tl := co.thread_loop) is None
            or tl._thread_id != get_ident()
            or not buffers
            or len(offsets) != len(buffers)
        ):
            return None
        kinds = set(map(type, buffers))
        if len(kinds) != 1:
            return None
        kind = kinds.pop()
        if kind is RegisteredBuffer:
            buffers = list(map(lease_view, buffers))  # (a released lease: its error)
        elif kind is not LeasedBuffer and kind is not bytearray:
            return None
        if sum(map(len, buffers)) > limit:
            return None  # (the documented budget is a bound: a batch over it yields)
        try:
            if min(offsets) < 0 or max(offsets) >= OFFSET_LIMIT:
                return None  # (a negative offset would fail with EINVAL, which read_cached takes for a refusal)
        except TypeError:
            return None
        cached = io.read_cached
        counts: list[int] = []
        inflight = self._inflight
        inflight.enter()  # (before the try: it raises only with nothing counted)
        try:
            for buf, offset in zip(buffers, offsets, strict=True):
                want = len(buf)
                if cached(buf, want, offset) != want:
                    return None
                counts.append(want)
        except TypeError:
            return None  # (an offset preadv does not take: the queued path raises what is wrong)
        finally:
            inflight.left()
        return counts

    async def read_many_async(
        self, offsets: Sequence[int], buffers: Sequence[Any], *, exact: bool = False
    ) -> list[int]:
        """asyncio form of :meth:`read_many`; on an io_uring handle its ops join the batch of
        this loop iteration's other asyncio ops (one submission for all).

        On a buffered io_uring handle, a batch the page cache holds in full is copied at
        once on the loop's thread instead (:meth:`_copy_cached`), within the handle's
        ``core.aio_inline_read_budget``, shared with :meth:`read`.

        Cancelled, it raises ``CancelledError`` only once nothing writes into *buffers*
        any more (as :meth:`read_into_async`)."""
        left = self._inline_left
        if left[0] > 0:
            copied = self._copy_cached(offsets, buffers, left[0])
            if copied is not None:
                left[0] -= sum(copied)
                return copied
        left[0] = self._inline_budget  # (this batch yields to the loop)
        fut, lens = self._queue_many(False, offsets, buffers)
        if fut is not None:
            try:
                results: list[int] = await fut
            except asyncio.CancelledError:
                await self._settle_queued(fut, "read")
                raise
            if results == lens:  # every op moved its whole buffer (one list compare, in C)
                return results
        else:
            results, submitted = await self._rw_batch_async(False, offsets, buffers)
            return await self._drive_async(self._finish_reads(offsets, buffers, results, exact, submitted))
        # (buffers counted in bytes: an 8-item array of doubles read 8 bytes was "complete"
        # by len() and returned short with exact=True until session 27)
        return await self._drive_async(self._finish_reads(offsets, buffers, results, exact))

    async def write(self, buf: Any, offset: int) -> int:
        """``await handle.write(buf, off)``: write all of *buf* (coalesced like :meth:`read`).

        Cancelled, it raises ``CancelledError`` only once nothing reads *buf* any more:
        what the file then holds at *offset* is the old bytes or (part of) those of
        *buf* at the cancel, never what the caller puts in *buf* afterwards (as
        :meth:`read_into_async`: an op in the kernel is cancelled there and its
        completion awaited, at most ``core.close_timeout_s``)."""
        self._check()
        co, offset = self._coalescer(offset)
        if co is not None and not isinstance(buf, RegisteredBuffer):
            pin = pin_buffer(buf, False)
            n = len(pin)
            if n <= MAX_RW_COUNT:
                if self._io.direct:
                    check_alignment("write", self.path, address_of(pin), n, offset, self._io.block_size, (pin,))
                fut = co.add(cast(UringFileIO, self._io), self._inflight, True, pin, offset)
                try:
                    res: int = await fut
                except asyncio.CancelledError:
                    await co.settle(fut, self._stack.close_timeout_s, "write", self.path)
                    raise
                if res == n:
                    return res
                return (await self._drive_async(self._finish_writes([offset], [buf], [res])))[0]
        return (await self.write_many_async([offset], [buf]))[0]

    async def write_many_async(self, offsets: Sequence[int], buffers: Sequence[Any]) -> list[int]:
        """asyncio form of :meth:`write_many` (coalesced like :meth:`read_many_async`; cancelled,
        it raises ``CancelledError`` only once nothing reads *buffers* any more, as :meth:`write`)."""
        fut, _ = self._queue_many(True, offsets, buffers)
        if fut is not None:
            try:
                results: list[int] = await fut
            except asyncio.CancelledError:
                await self._settle_queued(fut, "write")
                raise
        else:
            results, submitted = await self._rw_batch_async(True, offsets, buffers)
            return await self._drive_async(self._finish_writes(offsets, buffers, results, submitted=submitted))
        return await self._drive_async(self._finish_writes(offsets, buffers, results))

    async def _rw_batch_async(
        self, write: bool, offsets: Sequence[int], buffers: Sequence[Any], *, held: bool = False
    ) -> tuple[list[int], list[int]]:
        """A batch awaited through the backend's ``start_rw`` (no coalescer: the fallback,
        O_DIRECT odd cases, other threads): its results and the byte lengths it was
        submitted with.  A pool backend releases each buffer when its op ran, before
        the awaiting task resumes (so an ``mmap`` can be closed at once), so the
        caller may resize a buffer in between: the op's outcome is judged against
        what was submitted, never the new size (a bytearray grown by 8 KiB after its
        4 KiB write ran had the 8 KiB written too, as a "short" write's rest).  *held*:
        submitted with this thread's signals blocked (:meth:`_rerun_cancelled`)."""
        submitted = [nbytes(b) for b in buffers]
        check_awaitable_io(self._io)  # (a refused await after the start: I/O its caller was told failed)
        start = with_signals_held(self._io.start_rw) if held else self._io.start_rw
        pending = self._inflight.start(start, write, offsets, buffers)
        try:
            return await pending.wait_async(), submitted
        except asyncio.CancelledError:
            # The caller's buffers are its own again only once the batch is over: asked to
            # stop, then waited for (docs/api.md, asyncio, "Cancelling an await").
            await settle_pending(pending, self._stack.close_timeout_s, "write" if write else "read", self.path)
            raise
        finally:
            # an await given up past the bound leaves the op in flight: close() still waits for it
            self._inflight.forget(pending)

    async def _settle_queued(self, fut: asyncio.Future[Any], op: str) -> None:
        """A coalesced ``*_many_async`` await of *fut* was cancelled: see :meth:`Coalescer.settle`."""
        co = self._coalescer_cache
        if co is not None:
            await co.settle(fut, self._stack.close_timeout_s, op, self.path)

    async def fdatasync_async(self) -> None:
        self._check()
        res = (await self._run_async(self._io.start_sync, True))[0]
        reruns = 0
        while self._may_rerun(res, reruns):  # (see _rerun_cancelled)
            reruns += 1
            res = (await self._run_async(with_signals_held(self._io.start_sync), True))[0]
        if res < 0:
            raise self._op_error(-res, "fdatasync")

    # --- lifetime ----------------------------------------------------------------------
    def watch_close(
        self, callback: Callable[[], object], *, flush: Callable[[], object] | None = None, owner: bool = False
    ) -> None:
        """Have :meth:`close` call *flush*, then *callback* (bound methods, held weakly) as it begins.

        For an object layered over the handle that holds bytes of its own and
        answers ``closed`` from a flag of its own (``uringstack.FileIO`` and the
        buffered layer ``uringstack.open`` put over it): *flush* writes what the
        object holds while the handle still serves I/O, so a handle closed
        directly loses nothing; it runs only in the process that opened the
        handle (a ``fork()`` child never writes its parent's bytes a second
        time), and what it raises, :meth:`close` raises once the handle is
        closed.  *callback* then marks the object closed (also in a fork child:
        a handle closed by a stack closing there still makes it closed); it must
        not raise.  Each runs once, in the thread that closes.

        *owner*: the watching object holds the handle and closes it when it is
        collected itself, warning as it sees fit (``uringstack.FileIO``): the
        reaper then leaves it alone.  Without an owner, a handle dropped unclosed is
        closed by the reaper (:mod:`uringstack.reaper`)."""
        ref = weakref.WeakMethod(flush) if flush is not None else None
        self._close_watchers = (*self._close_watchers, (weakref.WeakMethod(callback), ref))
        if owner:
            self._leave_close_to_owner()

    def close(self) -> None:
        """Close the handle (idempotent): write what layered objects hold, wait for its I/O,
        let plugins detach, release the descriptor.

        First the objects layered over the handle that hold bytes (a file
        object's buffer: :meth:`watch_close`'s *flush*) write them, while the
        handle still serves I/O; if that fails, the handle is closed all the
        same (as the built-in file's close after a failed flush) and the error
        is raised at the end: those bytes were not written.  Then new I/O is
        refused.  I/O started through the handle and still in flight
        (``start_*`` batches, cancelled ``await``s, other threads' calls,
        including those started while the layered objects wrote) completes
        first, with its real results.  If that I/O does not complete within the
        stack's ``core.close_timeout_s`` (a lost completion, a hung device) close
        raises :class:`TimeoutError` and leaves the descriptor open, so the stuck
        ops can never land in a file opened later (a flush error is raised
        instead, with the ``TimeoutError`` as its context).

        In a ``fork()`` child the inherited handle only drops the child's copy
        of the descriptor (nothing is flushed); the parent's handle is untouched.
        """
        # Claimed in one C call: a second close() while the first runs (a flush closing a
        # layer, another thread's close) returns at once.  The claim says when the close
        # ended, for Stack.close(), which waits for another thread's close before its teardown.
        claim = InProgress()
        try:
            if self.__dict__.setdefault("_close_claim", claim) is not claim:
                return
            self._close_steps()
        except BaseException as exc:
            if self.__dict__.get("_close_claim") is not claim:
                raise  # (a signal before the claim: nothing began, as before the call)
            if not isinstance(exc, FAILURES):
                # a raising signal (Ctrl-C) cut it short: a second close() would return at
                # once, so the steps left run now, then the signal's exception propagates
                despite_signals(self._close_rest)
            failed, self._close_failed = self._close_failed, None
            if failed is None:
                raise
            try:
                raise failed  # those bytes were not written: that comes first (exc is its context)
            finally:
                failed = None  # no cycle through this frame
        finally:
            claim.end()
        failed, self._close_failed = self._close_failed, None
        if failed is not None:
            try:
                raise failed
            finally:
                failed = None

    # A close cut short by a raising signal is finished by _close_rest: each step runs
    # again until done (a flush, the watchers' callbacks, the wait for I/O) or runs at
    # most once (the plugins' hook, the descriptor's release), by the flags below.
    _flushed = 0  # the watchers whose flush ran to its end
    _close_failed: BaseException | None = None  # the first flush's failure: close() raises it
    _plugins_told = False
    _released = False

    def _close_steps(self) -> None:
        watchers = self._close_watchers
        child = forking.inherited(self._fork_gen)
        if not child:
            while self._flushed < len(watchers):
                flush_ref = watchers[self._flushed][1]
                flush = flush_ref() if flush_ref is not None else None
                if flush is not None:
                    # run to its end through raising signals: the handle closes all the
                    # same after a failure (as the built-in file after a failed flush)
                    exc = run_to_end(flush)
                    if exc is not None and self._close_failed is None:
                        self._close_failed = exc
                self._flushed += 1
        self._closed = True
        for ref, _ in watchers:
            watcher = ref()
            if watcher is not None:
                try:
                    watcher()  # marks the layered object closed: safe to run again
                except Exception as exc:  # (against its contract) the close goes on: raised at the end
                    # Until session 32 a raising callback left the descriptor open for good:
                    # the steps below never ran, and a second close() returns at once.
                    if self._close_failed is None:
                        traceback.clear_frames(exc.__traceback__)
                        self._close_failed = exc
        if child:
            if not self._released:
                self._released = True
                with contextlib.suppress(OSError):  # the child's copy only: the parent's stays open
                    os.close(self._io.fd)
        else:
            self._inflight.close(self._stack.close_timeout_s)  # TimeoutError: the descriptor stays open
            try:
                if not self._plugins_told:
                    self._plugins_told = True
                    self._stack._handle_closed(self)  # fixed-file slots are detached only once nothing uses them
            finally:
                if not self._released:
                    self._released = True
                    self._io.close()
        self._close_watchers = ()
        self._leave_close_to_owner()

    def _close_rest(self) -> None:
        """The close's steps not yet done, after a raising signal; a failure is kept for close()."""
        try:
            self._close_steps()
        except FAILURES as exc:
            if self._close_failed is None:
                self._close_failed = exc

    def _never_opened(self) -> None:
        """The open that made this handle failed (the opener closes the backend object)."""
        self.__dict__.setdefault("_close_claim", None)
        self._closed = True

    # --- dropped without close() ---------------------------------------------------------
    # Closed as an unclosed file is, with a ResourceWarning, but not where the last reference
    # went: close() waits for the handle's I/O and takes its stack's lock, and that may be
    # any thread (one holding that lock, a signal handler's frame).  The reaper thread closes
    # it, once the I/O started through it ended (a pending its caller still holds, a
    # cancelled await's op): an op in flight keeps the descriptor and the fixed-file slot.
    # Not a __del__: the reaper's weak reference runs no Python code when the handle goes
    # (a closed handle's collection, at every close path's end, would be a point where a
    # raising signal is lost), so the handle itself is gone by then: a stand-in over the
    # same backend object is closed in its place (_close_dropped).
    _drop_token: weakref.ref[Any] | None = None

    def _close_when_dropped(self) -> None:
        """(:meth:`Stack.open`) Have the reaper close this handle if it is dropped unclosed."""
        closer = functools.partial(_close_dropped, self._io, self.worker, self._stack, self._inflight)
        warn = f"unclosed {self!r}: closed when collected; call close() (or use `with stack.open(...)`)"
        self._drop_token = reaper.watch(
            self,
            closer,
            f"FileHandle {self.path}",
            self._inflight.idle,
            warn=warn,
            patience=self._stack.close_timeout_s,
            group=self._stack,  # (Stack.close waits for its dropped handles' closes)
        )

    def _leave_close_to_owner(self) -> None:
        """Nothing for the reaper to do: closed, or an owner closes it (safe to repeat)."""
        token = self._drop_token
        if token is not None:
            reaper.unwatch(token)
            self._drop_token = None  # (then no callback queues it when the handle goes)

    def __enter__(self) -> FileHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FileHandle {self.path} backend={self.backend} direct={self.direct}>"


def _close_dropped(io: FileIO, worker: WorkerView, stack: HandleOwner, inflight: InflightTracker) -> None:
    """The reaper's close of a handle collected unclosed: a stand-in over the same backend
    object and tracker closes as the handle would have (the plugins' ``file_closed`` gets
    the stand-in: the handle is gone)."""
    stand_in = FileHandle(io, worker, stack)
    stand_in._inflight = inflight
    stand_in.close()


def _written_back_to_back(results: Sequence[int], buffers: Sequence[Any]) -> int:
    """Bytes written back to back from the first buffer's offset: the leading buffers
    written whole, and the first part of the next one."""
    total = 0
    for res, buf in zip(results, buffers, strict=False):
        if res > 0:
            total += res
        if res < nbytes(buf):
            break
    return total


def _consecutive(path: str, offset: int, buffers: Sequence[Any]) -> list[int]:
    if type(offset) is not int:
        offset = check_offset(path, offset)  # (before any sum: "16" + 4 is no offset error)
    offsets = []
    for buf in buffers:
        offsets.append(offset)
        offset += nbytes(buf)  # (bytes, not items: an array('d') of 4 covers 32)
    return offsets
