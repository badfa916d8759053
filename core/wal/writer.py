"""Group commit: many concurrent appends become one write and one flush.

Appenders take their LSN under the lock (so LSN order is file order) and
queue the payload (``bytes``; any other buffer is copied first); the thread
that stages a batch frames all of it into the staging buffer with one C call
(:class:`~uringstack.wal.record.BatchFramer`).  Whoever flushes takes everything queued (bounded by
``max_batch_bytes`` and the room left in the segment), copies it behind the
partial tail block of the previous flush into one block-aligned buffer, and
hands that single write to the segment's
:class:`~uringstack.stack.handle.FileHandle` (``write_durable``), which returns once
it is durable.
Only then does the durable-LSN watermark move and are the appenders woken.
While a flush is in flight the next batch accumulates, so the number of
flushes adapts to the device's flush latency without a timer.

Who flushes:

* **the appending thread itself** when it finds no flush in progress (and
  ``max_delay_us`` is 0): a lone appender pays no hand-off to another thread
  and back, which on a 2-vCPU VM costs more than the Python around the write;
* **the flusher thread** otherwise: appends that arrive during a flush are
  flushed by it next, in a loop that needs no wake-up while the load lasts.
  An inline flusher that finds records queued behind it when it is done
  wakes the flusher thread once, then returns to its caller;
* **the event loop** with ``async_flush = "loop"``, in the wake-up it runs
  after a tick's ``append_async`` calls, when nobody is flushing: as an
  inline flusher, for its tasks' batch (no thread hand-offs; the loop is
  blocked for the write).

Waking appenders is what bounds thread throughput in CPython: every append
needs its thread woken and given the GIL.  The appenders of one batch share a
:class:`_Gate` and are woken as a relay (each wakes the next), so they do not
all queue for the GIL at once.  asyncio futures of a batch are resolved with
one ``call_soon_threadsafe`` per event loop.  Under load the flusher takes
and stages the next batch *before* waking the appenders of the one it just
wrote, so its next write does not wait for the GIL behind them.

There is at most one write in flight (``_busy``) and it never crosses a
segment: the recovery code relies on that to tell a torn tail from
corruption.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import threading
import time
from _thread import get_ident
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from uringstack.probe.threadlimits import start_thread
from uringstack.ring.interrupts import close_stored, despite_signals, open_stored
from uringstack.ring.wakeups import makes_plain_futures, resolve
from uringstack.stack.handle import FileHandle

from .config import WalConfig
from .errors import WalClosedError, WalFailedError, failed_from
from .io import WalIO
from .record import ALIGN_BYTES, HEADER_BYTES, MAX_PAYLOAD_BYTES, BatchFramer, padded_size
from .recovery import SegmentScan
from .segment import (
    BLOCK_BYTES,
    SegmentHeader,
    activate_spare,
    create_segment,
    drop_cached_pages,
    prepare_spare,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

_AsyncWaiters = list[tuple[int, "asyncio.Future[int]"]]
_Future = asyncio.Future

# Padding of a flush to whole blocks (less than one block), without allocating zeros per flush.
_ZEROS = memoryview(bytes(BLOCK_BYTES))


def _reject(waiters: _AsyncWaiters, exc: BaseException) -> None:
    for _lsn, fut in waiters:
        if not fut.done():
            fut.set_exception(exc)


def _open_gates(gates: list[_Gate]) -> dict[asyncio.AbstractEventLoop, _AsyncWaiters]:
    """Open *gates* (their blocking waiters' relays start) and return their asyncio waiters by loop.

    Safe to run again: opening a gate again does nothing, and the caller's posting
    of the same futures again finds them done."""
    by_loop: dict[asyncio.AbstractEventLoop, _AsyncWaiters] = {}
    for gate in gates:
        gate.open()
        for loop, waiters in gate.loops.items():
            if not waiters:  # armed by _resolved, but the loop appended nothing to this gate
                continue
            # (a list of its own when more than one gate has waiters of the loop: a gate's stays as it is)
            by_loop[loop] = by_loop[loop] + waiters if loop in by_loop else waiters
    return by_loop


def _resolve_rest(waiters: _AsyncWaiters) -> None:
    """The plain way, every future of *waiters* still pending (after a signal cut a resolve short)."""
    for lsn, fut in waiters:
        if not fut.done():
            fut.set_result(lsn)


class _Gate:
    """Everyone waiting for one group of records: opened once, when its last LSN is durable.

    Each blocking appender waits on its own pre-acquired lock.  Opening
    releases only the first; each woken appender releases the next (a relay).
    Under the GIL the woken threads run one at a time anyway; waking them all
    at once (one release per waiter by the flusher, or one eventfd write for
    all) makes them queue for the GIL, each paying an extra futex sleep and
    wake-up: measured with 32 appenders and a 100 us fake flush, 2.9 (burst of
    releases) or 3.5 (one eventfd) voluntary context switches per record
    against 2.1 for the relay, and 36k (eventfd) / 41-47k (burst) / 47-53k
    (relay) records/s.
    """

    __slots__ = ("last_lsn", "locks", "loops", "reached")

    def __init__(self) -> None:
        self.last_lsn = 0  # set when the gate stops taking waiters
        self.locks: list[threading.Lock] = []
        self.loops: dict[asyncio.AbstractEventLoop, _AsyncWaiters] = {}
        self.reached = -1  # the waiter whose lock the relay released last (-1: not opened)

    def add_sync(self) -> None:
        """Register one blocking waiter (under the writer lock) as waiter ``len(locks)``.

        Its slot exists once this returns, or once a signal cut it short right
        after the append: a caller that will not :meth:`wait` for it (an
        exception, anywhere) must :meth:`abandon` it."""
        lk = threading.Lock()
        lk.acquire()
        self.locks.append(lk)

    def wait(self, i: int) -> None:
        """Block until the relay reaches waiter *i*, then pass it on."""
        self.locks[i].acquire()
        self._pass(i)

    def abandon(self, i: int) -> None:
        """Waiter *i* will not wait (or was interrupted in :meth:`wait`): the relay must still
        reach the waiters behind it, but only once it reached *i*.  Safe to run again: the
        relay is passed on once (a run again after a thread was started starts another,
        which never gets the lock: only two signals in a row cost a parked thread)."""
        if self.reached >= i:  # released to us already (we may or may not hold it)
            self._pass(i)
        else:  # not yet: then we do not hold its lock, and a thread can wait for it
            start_thread(threading.Thread(target=self.wait, args=(i,), name="wal-relay", daemon=True))

    def _pass(self, i: int) -> None:
        """Waiter *i* passes the relay on to the next (once: the first caller does)."""
        if self.reached == i:
            n = len(self.locks)
            # no call between the mark and the release: a signal lands before both or after both
            self.reached = i + 1
            if i + 1 < n:
                self.locks[i + 1].release()

    def open(self) -> None:
        """Start the relay (after the watermark moved, or after a failure or close); once."""
        if self.reached < 0:
            self.reached = 0
            if self.locks:
                self.locks[0].release()


# What became of a taken batch (_Taken.state): the steps a raising signal can cut short.
_TAKEN = 0  # taken from the queue, maybe staged, not yet handed to the write: can be given back
_WRITING = 1  # handed to the durable write (or a roll): cut short, its outcome is unknown
_WRITTEN = 2  # the write returned: it must be made part of the log (_finish)
_ACKED = 3  # part of the log: the watermark moved past it
_RETURNED = 4  # given back to the queue unwritten (_abandon_lead)


class _Taken:
    """One batch taken by the flushing thread: payloads, framed bytes, its first LSN, or a roll."""

    __slots__ = ("first_lsn", "length", "nbytes", "nxt", "opened", "records", "roll", "state", "write_at", "write_ns")

    def __init__(self, first_lsn: int) -> None:
        self.records: list[bytes] = []  # payloads, framed by _stage; moved in by _take_locked
        self.nbytes = 0
        self.first_lsn = first_lsn
        self.roll = False
        self.state = _TAKEN
        self.length = 0  # bytes staged in the buffer (0: not staged yet)
        self.write_at = 0
        self.write_ns = 0
        self.opened: list[_Gate] = []  # the gates its acknowledgement opens (kept for a run again)
        self.nxt: _Taken | None = None  # the batch its acknowledgement took next (chained flushes)


class Writer:
    """Owns the active segment, the staging buffer, the batching state and the flusher thread."""

    def __init__(
        self,
        directory: Path,
        config: WalConfig,
        io: WalIO,
        segments: list[SegmentScan],
        next_lsn: int,
    ) -> None:
        self.directory = directory
        self.config = config
        self.io = io
        self._sync = config.sync
        self.flushes = 0
        self.bytes_written = 0
        self.write_ns = 0  # time inside the durable writes (the device's share of a flush cycle)
        self.segments = segments  # shared with the Wal; mutated under self.lock
        self.lock = threading.Lock()
        self._work = threading.Condition(self.lock)
        self._pending: list[bytes] = []  # payloads not yet taken, in LSN order (framed when staged)
        self._pending_bytes = 0  # their framed size
        self._gate: _Gate | None = None  # collects waiters for records queued from now on
        self._gates: deque[_Gate] = deque()  # closed gates, in LSN order, awaiting durability
        self._busy = False  # a thread is flushing (the only one allowed to write)
        self._lead_lsn = 0  # while an appending thread flushes inline (_lead): the LSN it waits for
        self._taken: _Taken | None = None  # the batch the busy thread took last (see _abandon_lead)
        self._kicked = False  # the flusher thread was notified and has not looked yet
        # The event loop of the last append_async, when it tells which thread runs it (see
        # _running_loop): read and replaced without the lock, checked before every use.
        self._last_loop: Any = None
        # That loop again when it makes exact asyncio.Futures (makes_plain_futures): its
        # futures are made directly, without the create_future method's Python frame.
        self._plain_loop: Any = None
        # With a delay the flusher thread must gather; an inline flush would not wait.
        self._inline = config.max_delay_us == 0
        # (WalConfig allows async_flush='loop' only with max_delay_us 0)
        self._loop_flush = config.async_flush == "loop" and self._inline
        self.next_lsn = next_lsn
        self.durable_lsn = next_lsn - 1
        self.failed: WalFailedError | None = None
        self._closing = False
        self.direct = False
        self._handle: FileHandle | None = None
        # the active handle's write_durable, bound with the log's sync when the segment opens
        self._write_durable: Callable[[memoryview, int], int] | None = None
        self._tail = b""
        self._max_record = config.max_batch_bytes
        # the largest payload that fits max_batch_bytes once framed (see _payload)
        self._largest = min(self._max_record - self._max_record % ALIGN_BYTES - HEADER_BYTES, MAX_PAYLOAD_BYTES)
        self._max_write = config.max_write_bytes
        # mmap: page aligned, as O_DIRECT requires of the buffer address.
        self._buf = mmap.mmap(-1, self._max_write)
        self._view = memoryview(self._buf)  # sliced per flush; released before the buffer is closed
        self._framer = BatchFramer(self._buf)
        self._spare: Path | None = None
        self._spare_error: BaseException | None = None
        self._spare_thread: threading.Thread | None = None
        self._open_active(self._initial_segment())
        self._start_spare()
        self._thread = threading.Thread(target=self._run, name="wal-flusher", daemon=True)
        start_thread(self._thread)

    @property
    def handle(self) -> FileHandle | None:
        """The active segment's handle (None once closed)."""
        return self._handle

    # --- segments ----------------------------------------------------------------
    def _header(self, first_lsn: int) -> SegmentHeader:
        return SegmentHeader(first_lsn, self.config.segment_size_bytes, self._max_write)

    def _initial_segment(self) -> SegmentScan:
        last = self.segments[-1] if self.segments else None
        want = self._header(self.next_lsn)
        replace = False
        if last is not None:
            h = last.header
            compatible = (h.segment_bytes, h.max_write_bytes, h.block_bytes) == (
                want.segment_bytes, want.max_write_bytes, want.block_bytes,
            )  # fmt: skip
            if compatible:
                # Keep appending where the log ends; a full segment too: the first append that
                # does not fit rolls to the spare.  (Making its successor here, before any
                # append asked for one, made a full disk an error at open: the log's records
                # could no longer be read through it.)
                return last
            if last.records == 0:
                # an empty segment has the new one's name: replaced by the rename, never unlinked
                # first (its sealed predecessor would point at nothing after a crash in between)
                self.segments.pop()
                replace = True
        seg = SegmentScan(create_segment(self.directory, want, replace), want)
        self.segments.append(seg)
        return seg

    def _open_active(self, seg: SegmentScan) -> None:
        base = os.O_RDWR | os.O_CLOEXEC
        path = os.fspath(seg.path)
        # Stored as it is opened and closed by close_stored: a raising signal (Ctrl-C during
        # Wal.open) anywhere here leaks no descriptor and closes none twice; the handle
        # serves a duplicate of its own (Stack.open's contract).
        opened: list[int] = []
        direct = False
        try:
            if self.config.direct_io != "off":
                try:
                    open_stored(opened, path, base | os.O_DIRECT)
                    direct = True
                except OSError as e:
                    if self.config.direct_io == "on" or e.errno != errno.EINVAL:
                        raise
            if not opened:
                open_stored(opened, path, base)
            handle = self.io.open_segment(seg.path, opened[0], direct)
        finally:
            close_stored(opened)
        if self._handle is not None:
            self.io.close_segment(self._handle)
        self._handle = handle
        self._write_durable = handle.bind_write_durable(self._sync)
        self.direct = direct
        self.active = seg
        # The partial last block is rewritten by the next flush, so keep its bytes
        # (read through a buffered file: O_DIRECT reads need aligned buffers).
        start = seg.end_offset - seg.end_offset % BLOCK_BYTES
        self._tail = b""
        if seg.end_offset > start:
            with open(seg.path, "rb") as f:
                f.seek(start)
                self._tail = f.read(seg.end_offset - start)
        if direct:
            # Recovery's reads, the header stamp and the tail read cached pages that every
            # O_DIRECT flush would otherwise have to invalidate inside its write.
            drop_cached_pages(handle.fd)

    def _start_spare(self) -> None:
        def prepare() -> None:
            try:
                self._spare = prepare_spare(self.directory, self.config.segment_size_bytes)
            except BaseException as e:  # reported at rollover, where it fails the log
                self._spare_error = e

        self._spare, self._spare_error = None, None
        self._spare_thread = threading.Thread(target=prepare, name="wal-spare", daemon=True)
        start_thread(self._spare_thread)

    def wait_spare(self, timeout: float | None = None) -> bool:
        """Wait until the background preparation of the next segment is over; False on timeout."""
        t = self._spare_thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    def _roll(self, first_lsn: int) -> None:
        assert self._spare_thread is not None
        self._spare_thread.join()
        if self._spare_error is not None or self._spare is None:
            # The background preparation failed (a full disk, most likely). Room may have been
            # made since (a checkpoint's truncate_before, another file removed): try once more,
            # here on the append path, before the log fails; if it fails again, that fails it.
            self._spare = prepare_spare(self.directory, self.config.segment_size_bytes)
            self._spare_error = None
        try:
            path = activate_spare(self._spare, self._header(first_lsn))
        except BaseException:
            with contextlib.suppress(OSError):  # the log fails; a full-size spare would only take space
                os.unlink(self._spare)
            raise
        seg = SegmentScan(path, self._header(first_lsn))
        with self.lock:
            self.segments.append(seg)
        self._open_active(seg)
        self._start_spare()

    # --- appending ------------------------------------------------------------------
    def _payload(self, payload: object, index: int | None = None) -> bytes | bytearray | memoryview:
        """*payload* as bytes ready to frame, or raise before anything is queued.

        Any other buffer (memoryview, array, mmap) is viewed as bytes: ``len`` of
        a wide one counts items, which would frame the wrong length.  The limit is on the framed record
        (16-byte header, padding to 8), as ``max_batch_bytes`` bounds one write.
        """
        which = "record" if index is None else f"record {index}"
        if not isinstance(payload, bytes | bytearray):
            try:  # any buffer (memoryview, array, mmap): framed by its bytes
                # memoryview() itself decides what is a buffer: the cast only tells mypy so
                view = payload if isinstance(payload, memoryview) else memoryview(cast("Buffer", payload))
            except TypeError:
                raise TypeError(
                    f"{which}: expected a bytes-like object (bytes, bytearray, memoryview), "
                    f"got {type(payload).__name__}"
                ) from None
            if not view.c_contiguous:
                raise TypeError(f"{which}: a non-contiguous buffer cannot be appended")
            payload = view if view.format == "B" and view.ndim == 1 else view.cast("B")
        n = len(payload)
        if padded_size(n) > self._max_record or n > MAX_PAYLOAD_BYTES:
            largest = self._largest
            raise ValueError(
                f"{which} of {n} bytes is {padded_size(n)} bytes framed, more than "
                f"max_batch_bytes={self._max_record}: the largest payload is {largest} bytes"
            )
        return payload

    def _check(self) -> None:
        if self.failed is not None:
            raise self.failed
        if self._closing:
            raise WalClosedError("WAL is closed")

    def _queue_locked(self, payload: bytes) -> int:
        size = (HEADER_BYTES + len(payload) + ALIGN_BYTES - 1) & -ALIGN_BYTES
        lsn = self.next_lsn
        # the append is the only call, and last: a raising signal finds the record queued whole or not at all
        self.next_lsn = lsn + 1
        self._pending_bytes += size
        self._pending.append(payload)
        return lsn

    def _gate_locked(self) -> _Gate:
        gate = self._gate
        if gate is None:
            gate = self._gate = _Gate()
        return gate

    def _kick_locked(self) -> None:
        """Wake the flusher thread only when it has something to do: nobody is flushing
        (a busy flusher takes the next batch by itself) and nobody woke it yet (an event
        loop queues a whole batch before the flusher gets the GIL: one notify, not one
        per record), or a delayed batch is full."""
        if not self._busy:
            if not self._kicked:
                self._work.notify()
                self._kicked = True  # (after: a signal inside notify() leaves the next kick to notify)
        elif self._pending_bytes >= self._max_record:
            self._work.notify()

    def append(self, payload: bytes | bytearray | memoryview) -> int:
        """Queue one record and block until it is durable; return its LSN."""
        if type(payload) is bytes and len(payload) <= self._largest:  # checked as _payload would
            return self._append_sync((payload,))
        p = self._payload(payload)
        return self._append_sync((p if type(p) is bytes else bytes(p),))

    def append_many(self, payloads: Iterable[bytes | bytearray | memoryview]) -> list[int]:
        """Queue several records under one lock hold and block once, until the last is durable.

        They get consecutive LSNs (returned in order).  Each record is durable
        on its own; a crash may keep a prefix of them (never a gap), like any
        appends in flight.
        """
        # every record is checked before any is queued: a bad one in the middle
        # must not leave the ones before it durable with LSNs the caller never learns
        items = [p if type(p) is bytes else bytes(p) for p in (self._payload(p, i) for i, p in enumerate(payloads))]
        if not items:
            return []
        last = self._append_sync(items)
        return list(range(last - len(items) + 1, last + 1))

    def _append_sync(self, payloads: Iterable[bytes]) -> int:
        """Queue *payloads*, then flush them ourselves or wait for them; return the last LSN.

        A raising signal (Ctrl-C) anywhere in here propagates once the log is
        consistent again: a batch this call took to flush inline and had not
        handed to the write goes back to the queue (the flusher thread writes it),
        one whose write returned is made part of the log, and a relay place in a
        gate is passed on.  Only a signal inside the durable write (or a segment
        roll) fails the log, whose outcome on disk is then unknown (docs/wal.md).
        """
        lead = 0
        gate: _Gate | None = None
        idx = -1  # our place in gate's relay, once known
        try:
            with self.lock:
                if self.failed is not None or self._closing:
                    self._check()
                for p in payloads:
                    lsn = self._queue_locked(p)
                if self._inline and not self._busy:
                    # no call between these stores: a signal finds _busy with its lead set, or neither
                    self._busy = True
                    self._lead_lsn = lead = lsn
                    taken = self._take_locked()  # in the same lock hold: a lone append takes the lock twice
                else:
                    gate = self._gate_locked()
                    idx = len(gate.locks)
                    gate.add_sync()
                    self._kick_locked()
            if lead:
                self._lead(lsn, taken)
            else:
                assert gate is not None
                gate.wait(idx)  # opened by _finish, _fail or close
        except BaseException:
            if lead:
                despite_signals(self._abandon_lead, lead)
            elif gate is not None and 0 <= idx < len(gate.locks):
                despite_signals(gate.abandon, idx)
            raise
        if self.durable_lsn >= lsn:
            return lsn
        if self.failed is not None:
            raise self.failed
        raise WalClosedError("WAL closed before the record was flushed")

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The caller's running loop (``RuntimeError`` if none), remembered for the next append.

        ``asyncio.get_running_loop()`` makes a ``getpid`` syscall per call in
        CPython 3.11 (32 per flush cycle with 32 appender tasks: ``strace -c``,
        docs/wal.md).  An asyncio loop records the thread running it
        (``_thread_id``, None once it stopped), and a thread runs at most one loop
        at a time, so a remembered loop whose thread is the caller's is the
        running loop, with no call (as the asyncio coalescer checks its loop).
        Loops that do not record it (not ``BaseEventLoop``s) are asked every time."""
        loop = asyncio.get_running_loop()
        if isinstance(loop, asyncio.BaseEventLoop):
            self._plain_loop = loop if makes_plain_futures(loop) else None
            self._last_loop = loop
        return loop

    def submit_async(self, payload: bytes | bytearray | memoryview) -> asyncio.Future[int]:
        """Queue one record; the future resolves to its LSN once durable (from whoever flushes it).

        Never flushes inside the call (by default never on the loop at all: that
        would block the event loop for a device flush; ``async_flush = "loop"``
        opts in, in the wake-up below) and never wakes the flusher thread from
        inside the call: the
        first record of a batch from this loop schedules one wake-up with
        ``call_soon``, which runs once the loop has run what was ready, so the
        appends of that tick join the batch and the loop is not preempted by a
        woken thread in the middle of an append.  When a flush resolves this
        loop's futures, that callback schedules the next wake-up itself
        (:meth:`_resolved`), so the appends of the woken tasks find it done.

        The record is framed (header, CRC) by the thread that stages the
        batch, as every record is, not here: this call only takes an LSN and queues the payload
        (a ``bytes`` object, immutable; any other buffer is copied first, as
        the caller may reuse it before the flush).  Its enqueue latency
        is the event loop's, and was measured dominated by the first append
        after each wake-up (BENCHMARKS.md).
        """
        if type(payload) is not bytes or len(payload) > self._largest:
            payload = bytes(self._payload(payload))
        loop = self._last_loop
        if loop is None or loop._thread_id != get_ident():
            loop = self._running_loop()
        # (another thread's loop may have replaced _plain_loop meanwhile: then create_future)
        fut: asyncio.Future[int] = _Future(loop=loop) if loop is self._plain_loop else loop.create_future()
        size = (HEADER_BYTES + len(payload) + ALIGN_BYTES - 1) & -ALIGN_BYTES
        with self.lock:
            if self.failed is not None or self._closing:
                self._check()
            lsn = self.next_lsn
            # (as _queue_locked: the queue's append is the only call, and last)
            self.next_lsn = lsn + 1
            self._pending_bytes += size
            self._pending.append(payload)
            gate = self._gate or self._gate_locked()
            waiters = gate.loops.get(loop)
            if waiters is None:
                # the wake-up first: a loop's entry in a gate means one is scheduled
                loop.call_soon(self._kick, gate, loop)
                waiters = gate.loops[loop] = []
            elif self._pending_bytes >= self._max_record:
                self._kick_locked()  # a delayed batch is full: do not wait for the tick to end
            waiters.append((lsn, fut))
        return fut

    def _kick(self, gate: _Gate, loop: asyncio.AbstractEventLoop) -> None:
        """Have the records waiting flushed (scheduled on *loop* for *gate*): wake the flusher
        thread, or with ``async_flush = "loop"`` write them here, on the loop, when nobody is
        flushing.

        A wake-up scheduled ahead by :meth:`_resolved` that finds no append of
        *loop* in *gate* is withdrawn, so the next append from *loop* schedules
        its own (else that append would wait for a wake-up that already ran).
        Run to its end through raising signals (a loop callback's entry aside:
        docs/wal.md), as an append of *loop* relies on it; that rerun only wakes
        the flusher thread (it never starts a write of its own under a signal).
        """
        try:
            self._kick_step(gate, loop, self._loop_flush)
        except BaseException:
            despite_signals(self._kick_step, gate, loop, False)
            raise

    def _kick_step(self, gate: _Gate, loop: asyncio.AbstractEventLoop, may_flush: bool) -> None:
        lead = 0
        try:
            with self.lock:
                if gate is self._gate and gate.loops.get(loop) == []:
                    del gate.loops[loop]
                if self._pending:
                    if may_flush and not self._busy and self.failed is None and not self._closing:
                        # as an inline append takes it: no call between these stores
                        self._busy = True
                        self._lead_lsn = lead = self.next_lsn - 1
                        taken = self._take_locked()
                    else:
                        self._kick_locked()
            if lead:
                # The appender tasks of this loop wait for this flush anyway; writing it here
                # saves the two thread hand-offs (the kick to the flusher, its wake-up of the
                # loop) at the price of blocking the loop for the durable write.
                self._lead(lead, taken)
        except BaseException:
            if lead:  # (set with _busy, under the lock: a signal finds both or neither)
                despite_signals(self._abandon_lead, lead)
            raise

    def _resolved(self, loop: asyncio.AbstractEventLoop, waiters: _AsyncWaiters) -> None:
        """On *loop*: schedule the wake-up for the next batch, then resolve a flushed batch's futures.

        The tasks woken here usually append again at once: the wake-up (and
        the gate's entry for this loop) is set up first, once per batch,
        instead of in the first of those appends, and runs after them
        (``call_soon`` order), as if that append had scheduled it.  On
        asyncio's own loops each awaiting task's wake-up runs in place
        (:func:`~uringstack.ring.wakeups.resolve`, as the asyncio coalescer's
        delivery does), so the woken tasks append inside this callback, not
        one loop turn later through a ``call_soon`` Handle per record:
        measured with 32 appender tasks and the durable write stubbed out,
        26,100 -> 19,900 user instructions per record (cachegrind).  A raising
        signal in here still leaves every future resolved (the callback's entry
        aside: docs/wal.md).
        """
        try:
            with self.lock:
                if self.failed is None and not self._closing:
                    gate = self._gate or self._gate_locked()
                    if loop not in gate.loops:
                        loop.call_soon(self._kick, gate, loop)  # (first: as in submit_async)
                        gate.loops[loop] = []
            # (only ever a loop callback, from call_soon_threadsafe: never inside a task, as in place requires)
            plain = makes_plain_futures(loop)
            resolve([fut for _, fut in waiters], [lsn for lsn, _ in waiters], plain, plain)
        except BaseException:
            despite_signals(_resolve_rest, waiters)
            raise

    # --- flushing ---------------------------------------------------------------------
    def _take_locked(self) -> _Taken:
        """Under the lock, by the busy thread: take one batch (empty + roll when the segment is full).

        It is recorded as the busy thread's (``_taken``) before any record moves,
        and the records move with no call in between: a raising signal finds
        every record either queued or in ``_taken`` (see :meth:`_abandon_lead`)."""
        taken = self._taken = _Taken(self.durable_lsn + 1)
        gate = self._gate
        if gate is not None:  # later appends wait for a later flush
            gate.last_lsn = self.next_lsn - 1
            self._gate = None
            self._gates.append(gate)
        room = self.active.header.segment_bytes - self.active.end_offset
        total = self._pending_bytes
        if total <= self._max_record and total <= room:
            taken.records, self._pending = self._pending, []  # the common case: everything fits
        else:
            limit = min(self._max_record, room)
            total = k = 0
            for rec in self._pending:
                size = padded_size(len(rec))
                if total + size > limit:
                    break
                total += size
                k += 1
            taken.records = self._pending[:k]
            del self._pending[:k]
        self._pending_bytes -= total
        taken.nbytes = total
        taken.roll = not taken.records
        return taken

    def _commit(self, taken: _Taken, chain: bool = False, lead: int = 0) -> tuple[bool, _Taken | None]:
        """Flush (or roll for) one taken batch and acknowledge it; False if the log failed.

        With *chain*, what queued during this flush is taken and staged as the
        next batch *before* this one's appenders are woken, and returned: once
        woken they compete for the GIL, and the next write should not wait
        behind all of them (that would serialize flushing and their Python).
        With *lead* (an inline flusher's LSN), ``_busy`` is given up in the
        acknowledgement's lock hold once that LSN is durable (see :meth:`_lead`).

        An exception (a raising signal, in an inline flush) after the write
        returned propagates once the acknowledgement ran to its end; before the
        batch reached the write, it propagates with the batch untouched (the
        lead's :meth:`_abandon_lead` gives it back).  One inside the write or a
        roll (or before the write in the flusher thread) fails the log: it
        cannot tell what reached the disk, and a write is never retried.  The
        log's error then stands for an ``Exception``; a ``KeyboardInterrupt``
        or ``SystemExit`` propagates itself.
        """
        try:
            if taken.roll:
                taken.state = _WRITING  # a roll cut short: its file steps are not repeatable
                self._roll(taken.first_lsn)
                taken.state = _ACKED
                return True, None
            if not taken.length:
                self._stage(taken)
            self._write(taken)
            return True, self._finish(taken, chain, lead)
        except BaseException as e:
            if taken.state == _WRITTEN or taken.state == _ACKED:
                # Written whole: made part of the log and its waiters woken, through further signals.
                # (The lead's _abandon_lead cannot: _finish may have given up _busy before the gates
                # were opened, and then nothing tells it the batch was its own.)
                despite_signals(self._finish, taken, chain, lead)
                raise
            if lead and taken.state == _TAKEN:
                raise  # nothing written: the lead's _abandon_lead gives the batch back
            where = "rolling to a new segment" if taken.roll else f"segment {self.active.path}"
            despite_signals(self._fail, failed_from(e, "roll" if taken.roll else "write", where))
            if not isinstance(e, Exception):
                raise
            return False, None

    def _lead(self, lsn: int, taken: _Taken) -> None:
        """Flush inline, starting with *taken*, until *lsn* is durable; we hold ``_busy`` on entry
        and give it up on exit (an exception: the caller's :meth:`_abandon_lead`).

        A lone append's flush takes the writer lock once more after the one that
        queued and took its record: the acknowledgement that makes *lsn* durable
        also gives up ``_busy`` in the same hold (:meth:`_finish`).  Every
        statement on this path runs once per append, after a blocking syscall
        that leaves the CPU's caches cold: measured, the log's Python per append
        then cost 2-4x its warm time (docs/wal.md, issue 14).
        """
        while True:
            if not self._commit(taken, lead=lsn)[0]:
                self._abandon_lead(lsn)  # the log failed: only _busy to give up
                return
            if self.durable_lsn >= lsn:
                return  # _finish gave up _busy
            with self.lock:
                taken = self._take_locked()

    def _abandon_lead(self, lead: int) -> None:
        """An inline flush for LSN *lead* ends early (an exception, or the log failed): leave the
        log consistent and give up ``_busy``, if still ours.  Safe to run again.

        The batch it took, if taken but never handed to the write: its records go back to the front of
        the queue, with the same LSNs, for the flusher thread to write (dropped,
        the next batch would be framed with their LSNs: the log on disk would no
        longer match the LSNs appends returned).  An exception can also land
        after the acknowledgement gave ``_busy`` up, when another thread may
        already be flushing: then nothing here is ours."""
        with self.lock:
            if self._lead_lsn != lead:
                return
            taken = self._taken
            if taken is not None and taken.state == _TAKEN:
                # no call in here: a signal finds the records back in the queue, or still taken
                self._pending[:0] = taken.records
                self._pending_bytes += taken.nbytes
                taken.state = _RETURNED
            self._release_lead_locked()

    def _release_lead_locked(self) -> None:
        self._lead_lsn = 0
        self._busy = False
        if self._pending or self._closing or self.failed is not None:
            self._work.notify()  # hand what queued behind us to the flusher thread

    def _run(self) -> None:
        delay_s = self.config.max_delay_us / 1e6
        while True:
            with self.lock:
                while self._busy or not self._pending:
                    if not self._busy and (self.failed is not None or (self._closing and not self._pending)):
                        return
                    self._work.wait()
                # Looked at the queue: a kick sent while this thread was not waiting (just after a
                # flush, or before its first look) was consumed here, not by a wait(); left set it
                # would suppress every later kick and the next idle wait would never end.
                self._kicked = False
                self._busy = True
                if delay_s and self._pending_bytes < self._max_record and not self._closing:
                    deadline = time.monotonic() + delay_s
                    while self._pending_bytes < self._max_record and not self._closing:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._work.wait(left)
                taken = self._take_locked()
            ok, nxt = self._commit(taken, chain=not delay_s)
            while ok and nxt is not None:  # under load: no wait, no wake-up between flushes
                ok, nxt = self._commit(nxt, chain=True)
            with self.lock:
                # cleared here, not at the top of the loop: an inline leader may
                # already hold _busy when this thread first runs
                self._busy = False
            if not ok:
                return

    def _stage(self, taken: _Taken) -> None:
        """Copy the kept tail block and the batch into the aligned buffer."""
        batch, total = taken.records, taken.nbytes
        seg = self.active
        write_at = seg.end_offset - seg.end_offset % BLOCK_BYTES
        buf = self._buf
        t = len(self._tail)
        buf[:t] = self._tail
        pos = self._framer.frame(t, taken.first_lsn, batch)  # the whole batch in one C call
        assert pos == t + total
        length = (pos + BLOCK_BYTES - 1) // BLOCK_BYTES * BLOCK_BYTES
        buf[pos:length] = _ZEROS[: length - pos]  # stale bytes of an older batch must not leak
        assert length <= self._max_write and write_at + length <= seg.header.segment_bytes
        taken.length, taken.write_at = length, write_at

    def _write(self, taken: _Taken) -> None:
        """Write the staged batch durably (``_WRITING`` while the write runs, ``_WRITTEN`` once it returned)."""
        write = self._write_durable
        assert write is not None
        self.flushes += 1
        t0 = time.perf_counter_ns()
        taken.state = _WRITING
        write(self._view[: taken.length], taken.write_at)  # handle.write_durable(..., sync=self._sync)
        taken.state = _WRITTEN  # (a Python call's return is no signal point: nothing lands in between)
        taken.write_ns = time.perf_counter_ns() - t0

    def _finish(self, taken: _Taken, chain: bool, lead: int = 0) -> _Taken | None:
        """Make the written *taken* part of its segment and move the watermark to its last LSN,
        wake whoever waited for it; with *chain*, take and stage the next batch first and return
        it.  With *lead* (an inline flusher's LSN) give up ``_busy`` in the same lock hold once
        that LSN is durable.

        Safe to run again after a raising signal cut it short anywhere (:meth:`_commit`): each
        step is done once (the batch's state, the gates it opened and the batch it took next are
        kept on it), opening a gate again does nothing, and a loop's futures are resolved once."""
        seg = self.active
        n = len(taken.records)
        lsn = taken.first_lsn + n - 1
        if taken.state == _WRITTEN:  # the segment's end moves with the watermark, below
            new_end = seg.end_offset + taken.nbytes
            tail_from = new_end - new_end % BLOCK_BYTES
            self._tail = self._buf[tail_from - taken.write_at : new_end - taken.write_at]  # a bytes copy
        opened = taken.opened
        with self.lock:
            if taken.state == _WRITTEN:
                # no call in here: a signal finds the batch acknowledged whole, or not at all
                seg.end_offset += taken.nbytes
                seg.records += n
                self.durable_lsn = lsn
                self.write_ns += taken.write_ns
                self.bytes_written += taken.length
                taken.state = _ACKED
            if lead and lsn >= lead and self._lead_lsn == lead:
                self._release_lead_locked()
            gates = self._gates
            while gates and gates[0].last_lsn <= lsn:
                gate = gates[0]
                if not opened or opened[-1] is not gate:
                    opened.append(gate)
                gates.popleft()
            if chain and taken.nxt is None and self._pending:
                taken.nxt = self._take_locked()
        nxt = taken.nxt
        if nxt is not None and not nxt.roll and not nxt.length:
            self._stage(nxt)
        if opened:  # (a lone append's flush has no gate: no call)
            me = get_ident()
            for loop, waiters in _open_gates(opened).items():
                with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                    if getattr(loop, "_thread_id", None) == me:
                        # flushed on the loop itself (async_flush = "loop"): no self-pipe wake-up
                        loop.call_soon(self._resolved, loop, waiters)
                    else:
                        loop.call_soon_threadsafe(self._resolved, loop, waiters)
        return nxt

    def _release_all(self, exc: BaseException) -> None:
        """Open every gate still waiting and fail its asyncio futures with *exc* (at failure or
        close), then detach them.  Safe to run again: a gate is detached only once opened and its
        futures posted, and opening one again or rejecting a future already done does nothing."""
        with self.lock:
            gates = list(self._gates)
            if self._gate is not None:
                gates.append(self._gate)
        # (sync waiters find durable_lsn short of their LSN and raise)
        for loop, waiters in _open_gates(gates).items():
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(_reject, waiters, exc)
        with self.lock:
            for gate in gates:
                if gate is self._gate:
                    self._gate = None
                elif gate in self._gates:
                    self._gates.remove(gate)

    def _fail(self, exc: WalFailedError) -> None:
        """The log failed: nothing more is written; everyone waiting gets the (first) failure.
        Safe to run again."""
        with self.lock:
            if self.failed is None:
                self.failed = exc
            self._pending.clear()
            self._pending_bytes = 0
        self._release_all(self.failed)

    # --- shutdown -----------------------------------------------------------------------
    def close(self) -> None:
        """Flush what is queued, stop the flusher, release the file and buffer.

        Run to its end through raising signals (a Ctrl-C while it waits for the
        last flush), then the first one propagates: returning early would leave
        the flusher writing to a segment whose directory the log releases."""
        try:
            self._close_step()
        except BaseException:
            despite_signals(self._close_step)
            raise

    def _close_step(self) -> None:
        with self.lock:
            self._closing = True
            self._work.notify_all()
        self._thread.join()
        # normally none left: close flushes everything queued first
        self._release_all(WalClosedError("WAL closed before the record was flushed"))
        if self._spare_thread is not None:
            self._spare_thread.join()
        if self._handle is not None:
            self.io.close_segment(self._handle)
            self._handle = None
            self._write_durable = None
        self._framer.close()
        self._view.release()
        # A write cut short by an exception leaves a slice of the buffer in its traceback's frames
        # (the caller may be closing inside its `except` or `with`): then the buffer is freed when
        # the last slice goes, not here.
        with contextlib.suppress(BufferError):
            self._buf.close()
