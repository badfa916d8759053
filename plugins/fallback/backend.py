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
import concurrent.futures
import contextlib
import errno
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from uringstack.errors import RingClosedError, SubmissionError
from uringstack.ring import forking
from uringstack.ring.arguments import nbytes
from uringstack.ring.buffers import RegisteredBuffer, address_of, check_alignment, lease_view, release_pins
from uringstack.ring.inflight import InflightTracker
from uringstack.ring.interrupts import despite_signals
from uringstack.ring.io_backend import DoneBatch, SyncMethod, write_inline
from uringstack.ring.native import ffi
from uringstack.ring.pending import CompletedPending
from uringstack.stack.targets import logical_block_size, open_target

if TYPE_CHECKING:
    from uringstack.stack import CompletedBatch, CompletionHook, Worker
    from uringstack.types import Target


RESOURCE_KEY = "fallback"
# ffi.from_buffer's default type, passed positionally (its keyword form costs twice as much)
_PIN_TYPE = "char[]"


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
    return [ffi.from_buffer(_as_buffer(b), require_writable=not write) for b in buffers]


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


def _reporting(fn: Any, n: int, flatten: bool, on_done: Callable[[CompletedBatch], None]) -> Any:
    """Wrap a pool op so the batch's last op calls the completion hook before it returns.

    Before, not after: a caller woken by the op's future must find the hook
    already called, as on a ring (whose reaper calls it before the waiter
    returns).  The hook never raises: the plugin manager's listeners log a
    failing plugin (``completion_listeners``), so an op's result stands."""
    values: list[Any] = [None] * n
    remaining = [n]
    lock = threading.Lock()

    def run(fd: int, index: int, *args: Any) -> Any:
        value = fn(fd, *args)
        values[index] = value
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            flat = [int(x) for v in values for x in v] if flatten else [int(v) for v in values]
            on_done(DoneBatch(flat))
        return value

    return run


_TAKEN: list[Any] = []  # a started op's arguments slot (its own list is the op's until it returns)


class _Gate:
    """The ops of one batch on the pool: each runs only if the batch was not abandoned.

    ``ThreadPoolExecutor.submit`` can raise after it queued the op (CPython queues the
    work item, then fails to start a thread: ``can't start new thread`` under a pids
    cgroup or RLIMIT_NPROC), and the ops queued before it run whenever a thread takes
    them.  A batch whose submission failed so is abandoned: an op not yet started
    never starts (it returns ``-ECANCELED`` without its syscall), and the submitter
    waits for those already running before it raises, so nothing of the batch runs
    after its caller was told it failed (a write landing later, a read filling a
    buffer its caller took back)."""

    __slots__ = ("_args", "_idle", "_lock", "abandoned", "running", "values")

    def __init__(self, n: int) -> None:
        # A leaf lock, taken twice per op (the check before its syscall and the count after)
        self._lock = threading.Lock()
        self._args: list[list[Any]] = []  # per op: its arguments until it starts
        self._idle: threading.Event | None = None  # made when abandoned with ops running
        self.abandoned = False
        self.running = 0
        self.values: list[Any] = [None] * n  # per op: what it returned (None: never ran)

    def add(self, args: list[Any]) -> int:
        """Hold the arguments of the next op (before it is queued); its index."""
        self._args.append(args)
        return len(self._args) - 1

    def run(self, fn: Callable[..., Any], fd: int, index: int) -> Any:
        """Op *index*, in a pool thread: ``fn(fd, *args)`` unless the batch was abandoned.

        Its arguments are let go before it returns, so an op's pinned buffer is
        free before its future wakes the caller (the pool's work item, which holds
        only *index*, is kept by its thread until later)."""
        with self._lock:
            if self.abandoned:
                return -errno.ECANCELED
            args = self._args[index]
            self._args[index] = _TAKEN
            self.running += 1
        try:
            value = fn(fd, *args)
            self.values[index] = value
            return value
        finally:
            with self._lock:
                self.running -= 1
                if not self.running and self._idle is not None:
                    self._idle.set()

    def abandon(self) -> None:
        """Let no op that has not started start; the pins of those are let go now (their
        work items may sit in the pool's queue for good: no thread to take them)."""
        with self._lock:  # (safe to repeat: despite_signals)
            if self.running and self._idle is None:
                self._idle = threading.Event()
            self.abandoned = True
            for args in self._args:
                args.clear()

    def wait_idle(self) -> None:
        """Wait until no op of the abandoned batch runs (none will start again)."""
        idle = self._idle
        if idle is not None:
            idle.wait()

    def idle(self) -> bool:
        return not self.running


class ThreadPending:
    """A batch running on the pool: one future per op (or one for the whole op list)."""

    def __init__(
        self,
        futures: list[concurrent.futures.Future[Any]],
        flatten: bool = False,
        n: int | None = None,
        gate: _Gate | None = None,
    ) -> None:
        self._futures = futures  # (filled as the ops are queued when *n*, their number, is given)
        self._flatten = flatten
        self.n = len(futures) if n is None else n
        self._fork_gen = forking.generation()
        self._gate = gate

    def _check_fork(self) -> None:
        # In a fork() child the pool's threads are gone: a future still pending there is
        # never set, and wait() blocked for good (an io_uring pending raises ForkedChildError)
        if self._fork_gen != forking._generation:
            forking.check(self._fork_gen, "a fallback batch")

    def done(self) -> bool:
        self._check_fork()
        gate = self._gate
        if gate is not None and gate.abandoned:
            # (its ops not started never run, and their futures may never be set: no thread)
            return gate.idle()
        return all(f.done() for f in self._futures)

    def _collect(self, values: list[Any]) -> list[int]:
        if self._flatten:
            return [int(x) for v in values for x in v]
        return [int(v) for v in values]

    def wait(self) -> list[int]:
        self._check_fork()
        return self._collect([f.result() for f in self._futures])

    async def wait_async(self) -> list[int]:
        self._check_fork()
        # Shielded: cancelling the awaiting task must not cancel the ops (docs/api.md, as on
        # io_uring). wrap_future passes a cancel on to a pool future not yet started, and a
        # write waiting for a pool thread was dropped without a word until session 32.
        values = await asyncio.shield(asyncio.gather(*(asyncio.wrap_future(f) for f in self._futures)))
        return self._collect(list(values))


class FallbackFileIO:
    """A target served by the worker's thread pool.

    The pool resolves the descriptor number only when it runs an op, so
    :meth:`close` waits for every op queued on this object before it releases
    the descriptor (else a queued write lands in whatever file gets the
    number next)."""

    backend = "fallback"

    def __init__(
        self,
        pool: concurrent.futures.ThreadPoolExecutor,
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
        if on_done is not None:
            fn = _reporting(fn, len(calls), flatten, on_done)
            calls = [(i, *a) for i, a in enumerate(calls)]
        # Tracked before the first op is queued, its futures added as they are: a raising
        # signal between two submissions (the tracker's start then gets no pending back)
        # leaves the ops already queued waited for by close().
        futures: list[concurrent.futures.Future[Any]] = []
        gate = _Gate(len(calls))
        pending = ThreadPending(futures, flatten, len(calls), gate)
        self._inflight.keep(pending)
        submit, fd, run = self._pool.submit, self.fd, gate.run
        try:
            for a in calls:
                # (not submit(fn, fd, *a): a call with *args returns through C, and a signal
                # handler may raise there, before the future is appended)
                futures.append(submit(run, fn, fd, gate.add([*a])))
        except BaseException as exc:
            # Also for a raising signal inside submit (after it queued the op, before the
            # future came back): that op, never waited for, must not run either
            try:
                gate.abandon()
            except BaseException:  # a second raising signal: the first exception propagates
                despite_signals(gate.abandon)
            if not isinstance(exc, RuntimeError):
                # A raising signal's (of any type): as for every other start it cuts short,
                # the tracker keeps the batch until its running ops end
                raise
            # The pool's own refusal (what submit raises: can't start new thread, or a pool
            # shut down): the caller is told only once nothing of the batch runs
            gate.wait_idle()
            raise self._failed(op, exc, gate, len(futures), flatten) from exc
        return pending

    def _failed(self, op: str, exc: RuntimeError, gate: _Gate, queued: int, flatten: bool) -> SubmissionError:
        """The error of an abandoned batch whose running ops ended: what the pool refused, and
        per op what ran (``results``: bytes or ``-errno``, ``-ECANCELED`` for an op that never
        ran, as a ring gives the ops a failed submission left unqueued)."""
        n = len(gate.values)
        ran = [i for i, v in enumerate(gate.values) if v is not None]
        err = errno.EAGAIN  # (pthread_create's errno when no thread can be started)
        detail = (
            f"the thread pool refused op {queued} of a {n}-op batch ({type(exc).__name__}: {exc}); "
            f"{len(ran)} op(s) ran before it ({', '.join(map(str, ran)) or 'none'}), "
            "the others never run; see results"
        )
        error = SubmissionError(err, op, self.path, detail)
        results: list[int] = []
        for v in gate.values:
            if v is None:
                results.append(-errno.ECANCELED)
            elif flatten:
                results.extend(int(x) for x in v)
            else:
                results.append(int(v))
        error.results = tuple(results)
        return error

    def _check(self, write: bool, offset: int, buf: Any) -> None:
        if self.direct:
            pin = ffi.from_buffer(buf, require_writable=not write)
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
                pin = ffi.from_buffer(_PIN_TYPE, buf)
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
        if not isinstance(pool, concurrent.futures.ThreadPoolExecutor):
            pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix=f"uringstack-fallback-{worker.index}"
            )
            worker.resources[RESOURCE_KEY] = pool
        fd = open_target(target)
        return FallbackFileIO(pool, fd, target, logical_block_size(target, fd), worker.completion_hook)
