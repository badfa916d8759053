"""The portable backend: a thread pool doing ``os.preadv``/``os.pwritev``/``os.fdatasync``.

Same semantics as the io_uring backend (results are bytes or ``-errno`` per
op, batches may be waited on synchronously or awaited from asyncio), so the
public API and its tests run unchanged on it.  It is what a machine without
io_uring (old kernel, seccomp, not Linux) gets.

A waited buffered write, a waited durable write and a single waited read or
write (``read_into``/``write_from``) are done by the calling thread, not the
pool: the caller blocks until they are done anyway, and the hand-off to a
pool thread and back would add two context switches (what the io_uring
backend does where the kernel would punt such a write to io-wq).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from uringstack.errors import RingClosedError, SubmissionError
from uringstack.plugins.fallback.pool import Latch, ThreadPool
from uringstack.probe.threadlimits import refused_thread, thread_start_hint
from uringstack.ring import forking
from uringstack.ring.arguments import nbytes
from uringstack.ring.buffers import RegisteredBuffer, address_of, check_alignment, lease_view, release_pins
from uringstack.ring.inflight import InflightTracker
from uringstack.ring.interrupts import despite_signals
from uringstack.ring.io_backend import DoneBatch, SyncMethod, write_inline
from uringstack.ring.native import ffi
from uringstack.ring.pending import CompletedPending
from uringstack.ring.pins import pin_buffer
from uringstack.ring.wakeups import set_result_unless_done
from uringstack.stack.targets import close_opened, logical_block_size, open_target

if TYPE_CHECKING:
    from uringstack.stack import CompletedBatch, CompletionHook, Worker
    from uringstack.types import Target


RESOURCE_KEY = "fallback"


def _as_buffer(buf: Any) -> Any:
    return lease_view(buf) if isinstance(buf, RegisteredBuffer) else buf


class _LeaseUse:
    """What a registered lease's ``batch`` is while a queued op of this backend uses it
    (``RegisteredBuffer.in_flight`` asks it, so the pool keeps the lease's memory from
    the next lease until the op is done, as for an io_uring batch)."""

    __slots__ = ("_pending",)

    def __init__(self, pending: ThreadPending) -> None:
        self._pending = pending

    @property
    def finished(self) -> bool:
        return self._pending.done()


def _pins(buffers: Sequence[Any], write: bool) -> list[Any]:
    """Each buffer (a lease: its memory) pinned through a buffer export that its queued op
    holds until it ran: the buffer cannot be resized, cleared, closed or released while the
    op waits for a pool thread (``BufferError``, as io_uring's pins give), so it is never
    read or written after it was freed.  (``memoryview(mv)`` would not do: it shares
    *mv*'s export, and ``mv.release()`` succeeds under it.)  The ops take ``ffi.buffer`` of
    each (:func:`_views`); the pins themselves are kept so a batch whose submission failed
    can let go of them at once (``release_pins``)."""
    return [pin_buffer(_as_buffer(b), not write) for b in buffers]


def _views(pins: Sequence[Any]) -> list[Any]:
    return [ffi.buffer(pin) for pin in pins]


def _mark_leases(buffers: Sequence[Any], pending: ThreadPending) -> None:
    leases = [b for b in buffers if isinstance(b, RegisteredBuffer)]
    if leases:
        use = _LeaseUse(pending)
        for lease in leases:
            (lease.parent or lease).batch = use


def _preadv(fd: int, buf: Any, offset: int) -> int:
    try:
        return os.preadv(fd, [buf], offset)
    except OSError as exc:
        return -(exc.errno or 5)


def _pwritev(fd: int, buf: Any, offset: int, flags: int = 0) -> int:
    try:
        return os.pwritev(fd, [buf], offset, flags) if flags else os.pwritev(fd, [buf], offset)
    except OSError as exc:
        return -(exc.errno or 5)


def _read_one(fd: int, buf: Any, offset: int) -> list[int]:
    return [_preadv(fd, buf, offset)]


def _sync(fd: int, datasync: bool) -> int:
    try:
        (os.fdatasync if datasync else os.fsync)(fd)
        return 0
    except OSError as exc:
        return -(exc.errno or 5)


def _write_durable(fd: int, buf: Any, offset: int, sync: SyncMethod) -> list[int]:
    """One durable write, with the results an io_uring backend reports for it."""
    if sync == "dsync":
        return [_pwritev(fd, buf, offset, os.RWF_DSYNC)]
    written = _pwritev(fd, buf, offset)
    if written < 0 or written < nbytes(buf):
        # as a linked io_uring flush: not run after a failed or short write
        return [written, -errno.ECANCELED]
    return [written, _sync(fd, True)]


_TAKEN: list[Any] = []  # a started op's arguments slot (its own list is the op's until it returns)


class _Batch:
    """The ops of one batch on the pool: each runs only if the batch was not abandoned, and the
    last to end reports the batch (the completion hook) and then wakes its waiters; an
    abandoned batch is reported once none of its ops runs (:meth:`_take_on_done`).

    The pool can refuse an op after it queued it (it queues the op, then fails to
    start a thread: ``can't start new thread`` under a pids cgroup or
    RLIMIT_NPROC), and the ops queued before it run whenever a thread takes them.
    A batch whose submission failed so is abandoned: an op not yet started never
    starts (it ends without its syscall, ``-ECANCELED`` in the error's results),
    and the submitter waits for those already running before it raises, so
    nothing of the batch runs after its caller was told it failed (a write
    landing later, a read filling a buffer its caller took back).

    The submitting thread takes :attr:`_lock` only by a ``with`` statement (a C lock:
    a raising signal cannot leave it held) and waits only on :class:`Latch` es (see
    :mod:`.pool`); everything else here runs in pool threads."""

    __slots__ = (
        "_args",
        "_fd",
        "_fn",
        "_idle",
        "_idle_waiters",
        "_lock",
        "_on_done",
        "_waiters",
        "abandoned",
        "error",
        "finished",
        "flatten",
        "left",
        "running",
        "values",
    )

    def __init__(
        self, fn: Callable[..., Any], fd: int, n: int, flatten: bool, on_done: Callable[[CompletedBatch], None] | None
    ) -> None:
        # A leaf lock, taken twice per op (the check before its syscall and the count after)
        self._lock = threading.Lock()
        self._fn = fn
        self._fd = fd
        self._on_done = on_done
        self._args: list[list[Any]] = []  # per op: its arguments until it starts
        self._idle: Latch | None = None  # made when abandoned with ops running
        # the loops' futures to resolve when no op of the abandoned batch runs any more
        self._idle_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        # the loops' futures to resolve when the batch ends (None once it ended)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] | None = []
        self.abandoned = False
        self.error: BaseException | None = None  # what an op raised (wait() raises it)
        self.finished = Latch()  # set once every op ended and the hook was called
        self.flatten = flatten  # each op returns a list of results (a durable write's)
        self.left = n  # ops not ended yet
        self.running = 0
        self.values: list[Any] = [None] * n  # per op: what it returned (None: never ran)

    def add(self, args: list[Any]) -> int:
        """Hold the arguments of the next op (before it is queued); its index."""
        self._args.append(args)
        return len(self._args) - 1

    @property
    def added(self) -> int:
        """How many ops were handed to the pool (the last may have been refused)."""
        return len(self._args)

    def run(self, index: int) -> None:
        """Op *index*, in a pool thread: ``fn(fd, *args)`` unless the batch was abandoned.

        Its arguments are let go before the batch can end, so an op's pinned
        buffer is free before its caller is woken."""
        with self._lock:
            if self.abandoned:
                return
            args = self._args[index]
            self._args[index] = _TAKEN
            self.running += 1
        try:
            self.values[index] = self._fn(self._fd, *args)
        except BaseException as exc:  # (an op reports OSError as -errno: this is a bug, for wait() to raise)
            if self.error is None:
                self.error = exc
        finally:
            del args
            with self._lock:
                self.running -= 1
                self.left -= 1
                last = not self.left
                idle = self._idle if not self.running else None
                woken = self._idle_waiters if idle is not None else None
                if woken:
                    self._idle_waiters = []
                on_done = self._take_on_done() if last or idle is not None else None
            if on_done is not None:
                self._report(on_done)
            if idle is not None:
                idle.set()  # (once: an abandoned batch starts no op again)
                if woken:
                    _wake(woken)
            if last:
                self._finish()

    def _take_on_done(self) -> Callable[[CompletedBatch], None] | None:
        """The completion hook, taken (under :attr:`_lock`): the batch is reported once, by
        whoever ends it (its last op) or leaves it idle (an abandoned batch's last op
        running, or :meth:`abandon` with none running)."""
        on_done, self._on_done = self._on_done, None
        return on_done

    def _report(self, on_done: Callable[[CompletedBatch], None]) -> None:
        """Hand the batch's results to the completion hook: every op's, ``-ECANCELED`` for an
        op an abandoned batch never started (as a ring reports an op its cancel stopped)."""
        if self.error is not None:
            return
        try:
            on_done(DoneBatch(self.results(cancelled=self.abandoned)))
        except BaseException as exc:  # (the plugin manager's listeners log a failing plugin)
            self.error = exc

    def _finish(self) -> None:
        """In the pool thread that ended the last op (reported already): wake its waiters."""
        with self._lock:
            waiters, self._waiters = self._waiters or [], None
        self.finished.set()
        _wake(waiters)

    def add_waiter(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> bool:
        """Resolve *fut* on *loop* when the batch ends; False (nothing added) if it ended already."""
        with self._lock:
            waiters = self._waiters
            if waiters is None:
                return False
            waiters.append((loop, fut))
            return True

    def remove_waiter(self, fut: asyncio.Future[None]) -> None:
        """Forget *fut* (cancelled with its task: setting it would raise ``InvalidStateError``)."""
        with self._lock:
            waiters = self._waiters
            if waiters is not None:
                self._waiters = [w for w in waiters if w[1] is not fut]

    def results(self, cancelled: bool = False) -> list[int]:
        """Each op's result (bytes or ``-errno``); with *cancelled*, ``-ECANCELED`` for an op that
        never ran (else the batch must have ended).  Raises what an op raised."""
        if self.error is not None:
            raise self.error
        out: list[int] = []
        for v in self.values:
            if v is None and cancelled:
                out.append(-errno.ECANCELED)
            elif self.flatten:
                out.extend(int(x) for x in v)
            else:
                out.append(int(v))
        return out

    def abandon(self) -> None:
        """Let no op that has not started start; the pins of those are let go now (their
        work items may sit in the pool's queue for good: no thread to take them)."""
        with self._lock:  # (safe to repeat: despite_signals)
            if self.running and self._idle is None:
                self._idle = Latch()
            self.abandoned = True
            for args in self._args:
                args.clear()
            # idle already (none of its ops runs, and none will start): reported here (an
            # ended batch was reported by its last op: nothing left to take)
            on_done = self._take_on_done() if not self.running else None
        if on_done is not None:
            self._report(on_done)

    def add_idle_waiter(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> bool:
        """Resolve *fut* on *loop* once no op of this abandoned batch runs; False (nothing
        added) if none runs now (none will start again)."""
        with self._lock:
            if not self.running:
                return False
            self._idle_waiters.append((loop, fut))
            return True

    def remove_idle_waiter(self, fut: asyncio.Future[None]) -> None:
        """Forget *fut* (cancelled with its task)."""
        with self._lock:
            self._idle_waiters = [w for w in self._idle_waiters if w[1] is not fut]

    def wait_idle(self) -> None:
        """Wait until no op of the abandoned batch runs (none will start again)."""
        idle = self._idle
        if idle is not None:
            idle.wait()

    def idle(self) -> bool:
        return not self.running


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    """Resolve each waiter's future on its loop (from a pool thread)."""
    for loop, fut in waiters:
        # A C callback, not a Python one: a raising signal at a Python callback's entry (on
        # the loop's thread) would leave the await pending for good; and not fut.set_result
        # itself, which raises InvalidStateError (logged by the loop) when the task was
        # cancelled after the batch ended and before this runs
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits there any more
            loop.call_soon_threadsafe(set_result_unless_done, fut, None)


class ThreadPending:
    """A batch running on the pool."""

    def __init__(self, batch: _Batch) -> None:
        self._batch = batch
        self.n = len(batch.values)
        self._fork_gen = forking.generation()

    def _check_fork(self) -> None:
        # In a fork() child the pool's threads are gone: a batch still running there never
        # ends, and wait() blocked for good (an io_uring pending raises ForkedChildError)
        if self._fork_gen != forking._generation:
            forking.check(self._fork_gen, "a fallback batch")

    def done(self) -> bool:
        self._check_fork()
        batch = self._batch
        if batch.finished.is_set:
            return True
        # (an abandoned batch's ops not started never run: it never ends, it only goes idle)
        return batch.abandoned and batch.idle()

    def wait(self) -> list[int]:
        self._check_fork()
        batch = self._batch
        if batch.abandoned and not batch.finished.is_set:  # (only the tracker holds such a batch)
            batch.wait_idle()
            return batch.results(cancelled=True)
        batch.finished.wait()
        return batch.results()

    def cancel(self) -> None:
        """Give the batch up (its asyncio await was cancelled): an op not yet started never
        starts (its pin is let go now) and reports ``-ECANCELED``; an op already running in
        a pool thread cannot be stopped and runs to its end (:meth:`wait_async` then waits
        for it, without blocking the loop).  Nothing once the batch ended."""
        batch = self._batch
        if batch.finished.is_set or batch.abandoned:
            return
        batch.abandoned = True  # (first, a plain store: as _queue's refusal gives a batch up)
        try:
            batch.abandon()
        except BaseException:  # a raising signal: finished first (safe to repeat)
            despite_signals(batch.abandon)
            raise

    async def wait_async(self) -> list[int]:
        self._check_fork()
        batch = self._batch
        if batch.abandoned and not batch.finished.is_set:
            # Given up (cancel(), or a refused submission): over once no op of it runs.
            loop = asyncio.get_running_loop()
            idle: asyncio.Future[None] = loop.create_future()
            if batch.add_idle_waiter(loop, idle):
                try:
                    await idle
                except asyncio.CancelledError:
                    batch.remove_idle_waiter(idle)
                    raise
            else:
                await asyncio.sleep(0)  # (yields once, as every await of a batch does)
            return batch.results(cancelled=True)
        if not batch.abandoned:  # (an abandoned batch's wait() does not block on its ops)
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            ended = None
            if not batch.add_waiter(loop, fut):
                # Ended already: the task still yields once, as on a ring, so a task awaiting
                # fast ops in a loop lets the others run (and its buffers' new sizes are
                # judged against what was submitted, as for any op that ran before it resumed)
                ended = loop.call_soon(fut.set_result, None)
            try:
                await fut
            except asyncio.CancelledError:
                # Cancelling the awaiting task cancels only *fut*, which the pool never looks
                # at (until session 32 a cancel reached a pool future not yet started and
                # dropped a write waiting for a thread, with the caller's await long gone):
                # the handle's await then gives the batch up (cancel()) and waits for the ops
                # running (docs/api.md, asyncio).  Nothing must set the cancelled *fut* now.
                if ended is not None:
                    ended.cancel()
                else:
                    batch.remove_waiter(fut)
                raise
        return self.wait()


class FallbackFileIO:
    """A target served by the worker's thread pool.

    The pool resolves the descriptor number only when it runs an op, so
    :meth:`close` waits for every op queued on this object before it releases
    the descriptor (else a queued write lands in whatever file gets the
    number next)."""

    backend = "fallback"

    def __init__(
        self,
        pool: ThreadPool,
        fd: int,
        target: Target,
        block_size: int,
        completion_hook: CompletionHook | None = None,
    ) -> None:
        self._pool = pool
        self.completion_hook = completion_hook
        self.fd = fd
        self.path = target.path
        self.direct = target.direct
        self.block_size = block_size
        self.fixed_index: int | None = None
        self._fork_gen = forking.generation()
        self._inflight = InflightTracker(self.path)

    def _submit(self, op: str, fn: Any, *args: Any, flatten: bool = False) -> ThreadPending:
        forking.check(self._fork_gen, f"the fallback backend of {self.path}")
        on_done = self.completion_hook(op, None) if self.completion_hook is not None else None
        return self._inflight.start(self._queue, op, fn, args, flatten, on_done)

    def _queue(
        self,
        op: str,
        fn: Any,
        calls: Sequence[tuple[Any, ...]],
        flatten: bool,
        on_done: Callable[[CompletedBatch], None] | None,
    ) -> ThreadPending:
        batch = _Batch(fn, self.fd, len(calls), flatten, on_done)
        pending = ThreadPending(batch)
        submit, run = self._pool.submit, batch.run
        try:
            # Tracked before the first op is queued (the first statement of the try: a raising
            # signal at any point from here abandons the batch): a raising signal between two
            # submissions (the tracker's start then gets no pending back) leaves the ops
            # already queued waited for by close().
            self._inflight.keep(pending)
            for a in calls:
                submit(run, batch.add([*a]))
        except BaseException as exc:
            # Also for a raising signal inside submit (after it queued the op, before it
            # returned): that op, and those never queued, must not run; the batch is then
            # done once no op of it runs.  Marked first, by a plain store: no signal point
            # comes before it in this clause, so even a second signal at the entry of the
            # steps below leaves the batch given up (until session 33 one at the retried
            # step's entry left the queued op running untracked); abandon() then lets go
            # of the pins of the ops not started.
            batch.abandoned = True
            try:
                batch.abandon()
            except BaseException:  # a second raising signal: the first exception propagates
                despite_signals(batch.abandon)
            if not isinstance(exc, RuntimeError):
                # A raising signal's (of any type): as for every other start it cuts short,
                # the tracker keeps the batch until its running ops end
                raise
            # The pool's own refusal (what submit raises: can't start new thread, or a pool
            # shut down): the caller is told only once nothing of the batch runs
            batch.wait_idle()
            raise self._failed(op, exc, batch) from exc
        return pending

    def _failed(self, op: str, exc: RuntimeError, batch: _Batch) -> SubmissionError:
        """The error of an abandoned batch whose running ops ended: what the pool refused, and
        per op what ran (``results``: bytes or ``-errno``, ``-ECANCELED`` for an op that never
        ran, as a ring gives the ops a failed submission left unqueued)."""
        n = len(batch.values)
        ran = [i for i, v in enumerate(batch.values) if v is not None]
        err = errno.EAGAIN  # (pthread_create's errno when no thread can be started)
        detail = (
            f"the thread pool refused op {batch.added - 1} of a {n}-op batch ({type(exc).__name__}: {exc}); "
            f"{len(ran)} op(s) ran before it ({', '.join(map(str, ran)) or 'none'}), "
            "the others never run; see results"
        )
        if refused_thread(exc):
            detail += f"; {thread_start_hint()}"  # (the thread limit reached, if any, and the fix)
        error = SubmissionError(err, op, self.path, detail)
        error.results = tuple(batch.results(cancelled=True))
        return error

    def _check(self, write: bool, offset: int, buf: Any) -> None:
        if self.direct:
            pin = pin_buffer(buf, not write)
            addr, length = address_of(pin), len(pin)
            release_pins([pin])  # (only checked here; see release_pins)
            check_alignment("write" if write else "read", self.path, addr, length, offset, self.block_size)

    def start_rw(
        self, write: bool, offsets: Sequence[int], buffers: Sequence[Any], *, wait: bool = False
    ) -> ThreadPending | CompletedPending:
        if len(offsets) != len(buffers):
            raise ValueError(f"{len(offsets)} offsets but {len(buffers)} buffers")
        bufs = [_as_buffer(b) for b in buffers]
        for off, buf in zip(offsets, bufs, strict=True):
            self._check(write, off, buf)
        if write and wait and not self.direct:
            # Done here (see the module docstring); O_DIRECT batches keep the pool,
            # whose threads keep several device writes in flight at once.
            return self._inline("write", write_inline, offsets, bufs)
        fn = _pwritev if write else _preadv
        pins = _pins(bufs, write)
        try:
            pending = self._submit("write" if write else "read", fn, *zip(_views(pins), offsets, strict=True))
        except SubmissionError:
            # Every op of the batch is over, and the error's traceback holds this frame and
            # the pool's queue may hold the ops' work items: let go of the exports now (a
            # caller keeping the error could not resize its buffer; see release_pins)
            release_pins(pins)
            raise
        _mark_leases(buffers, pending)
        return pending

    def run_one(self, write: bool, pin: Any, buf: Any, offset: int) -> int | None:
        """One waited read or write (the handle's ``read_into``/``write_from``), done in this thread.

        Its result, bytes or ``-errno``.  The caller blocks until it is done
        anyway: the pool would add a hand-off and two context switches and
        run one op all the same (see the module docstring).  *pin* is
        ``ffi.from_buffer`` of *buf*, a plain buffer."""
        if self.direct:
            check_alignment(
                "write" if write else "read", self.path, address_of(pin), len(pin), offset, self.block_size, (pin,)
            )
        if write:
            return self._inline("write", write_inline, (offset,), (buf,)).wait()[0]
        return self._inline("read", _read_one, buf, offset).wait()[0]

    def start_sync(self, datasync: bool, *, wait: bool = False) -> ThreadPending:
        return self._submit("fdatasync" if datasync else "fsync", _sync, (datasync,))

    def start_write_durable(
        self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False
    ) -> ThreadPending | CompletedPending:
        buf = _as_buffer(buffer)
        self._check(True, offset, buf)
        if wait:
            # The caller blocks until the device acknowledged the write anyway: a
            # hand-off to a pool thread and back would only add two context switches.
            return self._inline("write_durable", _write_durable, buf, offset, sync)
        pins = _pins([buf], True)
        try:
            pending = self._submit("write_durable", _write_durable, (_views(pins)[0], offset, sync), flatten=True)
        except SubmissionError:
            release_pins(pins)  # (as in start_rw)
            raise
        _mark_leases([buffer], pending)
        return pending

    def durable_writer(self, sync: SyncMethod) -> Callable[[Any, int], list[int]]:
        """``start_write_durable(offset, buf, sync, wait=True).wait()`` with *sync* bound: ``write(buf, offset)``.

        The same checks (fork, closed, O_DIRECT alignment), syscalls, results
        and completion hook, done in this thread, with what can be decided once
        decided here: a log's every flush runs it (``FileHandle.bind_write_durable``).
        Not tracked, as :meth:`_inline`: the write is over when it returns."""
        fd, path, direct, block_size = self.fd, self.path, self.direct, self.block_size
        gen, inflight = self._fork_gen, self._inflight
        flags = os.RWF_DSYNC if sync == "dsync" else 0

        def write(buffer: Any, offset: int) -> list[int]:
            if gen != forking._generation:
                forking.check(gen, f"the fallback backend of {path}")
            if inflight.closed:
                raise RingClosedError(f"{path} is closed")
            buf = buffer if type(buffer) is memoryview else _as_buffer(buffer)
            if direct:
                pin = pin_buffer(buf)
                addr, length = address_of(pin), len(pin)
                if (addr | length | offset) % block_size:
                    release_pins([pin])
                    check_alignment("write", path, addr, length, offset, block_size)
            # _pwritev looked up per call, as _write_durable does (tests replace it)
            results = [_pwritev(fd, buf, offset, flags)] if flags else _write_durable(fd, buf, offset, sync)
            if self.completion_hook is not None:
                self._report("write_durable", results)
            return results

        return write

    def _report(self, op: str, results: list[int]) -> None:
        """Hand an inline op's *results* to the completion hook (set; it logs a failing plugin)."""
        assert self.completion_hook is not None
        self.completion_hook(op, None)(DoneBatch(results))

    def _inline(self, op: str, fn: Callable[..., list[int]], *args: Any) -> CompletedPending:
        """Run ``fn(fd, *args)`` (an op's results) in this thread, as a completed batch.

        Not tracked here: nothing is queued on the pool, and the op is over when
        this returns (the handle's own tracker makes its close() wait for the call)."""
        forking.check(self._fork_gen, f"the fallback backend of {self.path}")
        if self._inflight.closed:  # untracked, so the check _submit gets from the tracker is made here
            raise RingClosedError(f"{self.path} is closed")
        results = fn(self.fd, *args)
        if self.completion_hook is not None:
            self._report(op, results)
        return CompletedPending(results)

    def size(self) -> int:
        st = os.fstat(self.fd)
        return st.st_size or os.lseek(self.fd, 0, os.SEEK_END)

    def close(self) -> None:
        """Wait for every op queued on this object, then release the descriptor.

        Raises :class:`TimeoutError` and keeps the descriptor open if they do
        not finish within :data:`~uringstack.ring.inflight.CLOSE_TIMEOUT_S`.  In a
        fork() child (where the pool's threads do not exist) only the child's
        copy of the descriptor is closed."""
        if forking.inherited(self._fork_gen):
            with contextlib.suppress(OSError):
                os.close(self.fd)
            return
        if self._inflight.closed:
            return
        self._inflight.close()
        os.close(self.fd)


class FallbackBackend:
    """Factory handed out by the plugin's ``uringstack_select_backend``."""

    name = "fallback"

    def __init__(self, reason: str, threads: int) -> None:
        self.reason = reason
        self.threads = threads

    def open(self, target: Target, worker: Worker) -> FallbackFileIO:
        pool = worker.resources.get(RESOURCE_KEY)
        if not isinstance(pool, ThreadPool):
            pool = ThreadPool(self.threads, f"uringstack-fallback-{worker.index}")
            worker.resources[RESOURCE_KEY] = pool
        fd = open_target(target)
        try:
            return FallbackFileIO(pool, fd, target, logical_block_size(target, fd), worker.completion_hook)
        except BaseException:
            close_opened(target, fd)
            raise
