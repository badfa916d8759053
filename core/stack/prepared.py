"""``PreparedIO``: reads or writes of the same buffers at new offsets, with the handle's checks.

What :meth:`uringstack.stack.handle.FileHandle.prepare_reads` and
:meth:`~uringstack.stack.handle.FileHandle.prepare_writes` return.  The backend's
:class:`~uringstack.ring.io_backend.PreparedRW` does the per-batch work (on the
io_uring backend: only the offsets column is written per call); this class
adds what ``read_many``/``write_many`` promise on every backend: the handle's
close waits for the I/O, a short read is completed or is short only at end
of file, a short write is completed or raises, a failed op raises
:class:`~uringstack.errors.UringIOError`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol

from uringstack.errors import BatchInFlightError
from uringstack.ring import SUBMITTED, forking
from uringstack.ring.arguments import nbytes
from uringstack.ring.inflight import InflightTracker, submitted_since
from uringstack.ring.interrupts import despite_signals
from uringstack.ring.io_backend import FileIO, PreparedRW, check_awaitable_io, prepare_rw
from uringstack.ring.pending import Pending
from uringstack.ring.settle import settle_pending


class PreparingHandle(Protocol):
    """What a :class:`PreparedIO` uses of its :class:`~uringstack.stack.handle.FileHandle`.

    A protocol, not the class: the handle module creates prepared batches,
    so this module must not import it back.
    """

    _inflight: InflightTracker

    @property
    def io(self) -> FileIO: ...

    @property
    def _settle_timeout(self) -> float: ...

    @property
    def path(self) -> str: ...

    def _check(self) -> None: ...

    def _finish_reads(
        self, offsets: Sequence[int], buffers: Sequence[Any], results: list[int], exact: bool
    ) -> Generator[Any, int, list[int]]: ...

    def _finish_writes(
        self, offsets: Sequence[int], buffers: Sequence[Any], results: list[int]
    ) -> Generator[Any, int, list[int]]: ...

    def _drive(self, checks: Generator[Any, int, list[int]]) -> list[int]: ...

    async def _drive_async(self, checks: Generator[Any, int, list[int]]) -> list[int]: ...


class PreparedIO:
    """Reads (or writes) of a fixed list of buffers, started again and again at new offsets.

    ``run(offsets)`` is :meth:`FileHandle.read_many` (``write_many``) on the
    prepared buffers; ``start(offsets)`` is ``start_read_many``
    (``start_write_many``): results unchecked.  Exactly :attr:`n` offsets per
    call.  One batch at a time: starting again while the previous batch is
    in flight raises :class:`~uringstack.errors.BatchInFlightError` (the
    buffers are the kernel's until it completed).  Usable until
    :meth:`close` or the handle's close.
    """

    def __init__(self, handle: PreparingHandle, write: bool, buffers: Sequence[Any]) -> None:
        self._handle = handle
        self._closed = False
        self.write = write
        self.buffers: tuple[Any, ...] = tuple(buffers)
        """The prepared buffers; op *i* of every batch moves ``buffers[i]``."""
        self.n = len(self.buffers)
        self._full = list(map(nbytes, self.buffers))
        self._prep: PreparedRW = prepare_rw(handle.io, write, self.buffers)
        self._last: Pending | None = None
        # Held from a start's in-flight check until its batch is submitted (or its single
        # op returned), taken without blocking: another thread's start in that window is
        # refused.  Without it two threads could both pass the check and the backend's
        # shared offsets column got the later thread's offsets before the first submitted:
        # one caller's buffers were read or written at the other's offsets.
        self._claim = threading.Lock()
        # The waited op of a single buffer in one call, without a pending object
        # (UringPrepared.run_one; None: the backend has no such path).
        self._one: Callable[[int], int | None] | None = getattr(self._prep, "run_one", None) if self.n == 1 else None
        # Registered once with the handle's tracker (its close waits until done()),
        # so a start costs the tracker two counter updates instead of a set entry.
        self._tracker = handle._inflight
        # The handle made this object after its own checks, so in its process: a fork()
        # child's use is refused by comparing this generation (its closed check is the
        # tracker's: enter() refuses once the handle's close began, as the handle does).
        self._fork_gen = forking.generation()
        try:
            self._tracker.register(self)
        except BaseException:
            self._prep.close()
            raise

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def done(self) -> bool:
        """True unless the last batch started is still in flight (what the handle's close waits for)."""
        last = self._last
        return last is None or last.done()

    def _in_flight(self) -> BatchInFlightError:
        return BatchInFlightError(
            f"{self._handle.path}: the prepared {'writes' if self.write else 'reads'} are still in "
            f"flight ({self.n} op(s)); wait for them before starting again"
        )

    def _start(self, offsets: Sequence[int], wait: bool) -> Pending:
        # the handle's own check builds a message: only call it when it will raise
        # (a fork child's use; inline, no frame per start)
        if self._fork_gen != forking._generation:
            self._handle._check()
        claim = self._claim
        if not claim.acquire(False):  # another thread is starting these buffers
            raise self._in_flight()
        try:
            return self._start_claimed(offsets, wait)
        finally:
            claim.release()

    def _start_claimed(self, offsets: Sequence[int], wait: bool) -> Pending:
        tracker = self._tracker
        before = SUBMITTED.last  # (no call: a batch the start submits is found after it)
        tracker.enter()  # refused once the handle's close began; close waits for left()
        try:
            last = self._last
            if last is not None and not last.done():
                raise self._in_flight()
            self._last = pending = self._prep.start(offsets, wait=wait)
        except BaseException:
            # The start raised after its I/O started (a raising signal handler right after
            # the submission, or inside a single op's wait): that is the last batch, so
            # done() is false until it completes, set before the start is counted out
            # and through a second raising signal (as run()'s single-op path).
            try:
                self._keep_started(before)
            except BaseException:
                despite_signals(self._keep_started, before)
            tracker.left()
            raise
        tracker.left()  # one C call: no raising signal before the count moves
        return pending

    def start(self, offsets: Sequence[int]) -> Pending:
        """Start one batch at *offsets* without waiting (results unchecked: bytes or ``-errno``).

        A batch larger than the room its ring has (``Ring.cq_cap``, its queue depth)
        is submitted as completions make room, so this returns once its last op went to
        the kernel; a second prepared batch started then takes the places the first
        one's last ops free (the ``streamed`` rows of ``uringstack bench``)."""
        return self._start(offsets, False)

    def run(self, offsets: Sequence[int], *, exact: bool = False) -> list[int]:
        """Move every buffer at its offset (submit and wait in one call); bytes moved per buffer.

        Reads are short only at end of file (``exact=True``: raise
        :class:`~uringstack.errors.ShortIOError` instead); writes complete or raise."""
        one = self._one
        if one is not None and len(offsets) == 1:
            # One buffer in one call (the QD1 loop): the checks and tracking of _start
            # without a pending object.
            if self._fork_gen != forking._generation:
                self._handle._check()
            claim = self._claim
            if not claim.acquire(False):  # another thread is starting these buffers
                raise self._in_flight()
            try:
                res = self._run_one_claimed(one, offsets[0])
            finally:
                claim.release()
            if res == self._full[0]:
                return [res]
            if res is not None:
                return self._handle._drive(self._checks(offsets, [res], exact))
        results = self._start(offsets, True).wait()
        if results == self._full:
            return results
        return self._handle._drive(self._checks(offsets, results, exact))

    def _run_one_claimed(self, one: Callable[[int], int | None], offset: int) -> int | None:
        """The single op of :meth:`run`, or None (the last batch is in flight, or the backend
        takes the batch path): bytes moved or ``-errno``."""
        last = self._last
        if last is not None:
            if not last.done():
                return None  # _start raises BatchInFlightError
            self._last = None
        tracker = self._tracker
        tracker.enter()  # refused once the handle's close began; close waits for left()
        try:
            res = one(offset)
        except BaseException:
            # an op that outlived the call (a hung device): in flight, so done() is false
            # until it completes and the handle's close waits for it; set before the start
            # is counted out, through a second raising signal (as the handle's _one_pinned)
            try:
                self._keep_outlived()
            except BaseException:
                despite_signals(self._keep_outlived)
            tracker.left()
            raise
        tracker.left()
        return res

    def _keep_started(self, before: object) -> None:
        """:meth:`_start` raised: the batch it submitted since ``SUBMITTED.last`` was *before*
        (if any), else an op its single-op path left in flight, becomes the last batch.
        Safe to repeat (despite_signals)."""
        pending = submitted_since(before)
        if pending is not None:
            self._last = pending
            return
        outlived = getattr(self._prep, "outlived", None)
        pending = None if outlived is None else outlived()
        if pending is not None:
            self._last = pending

    def _keep_outlived(self) -> None:
        """The single-op path raised: the op it left in flight, if any, is the last batch
        (``done()`` false until it completes).  Safe to repeat (despite_signals)."""
        outlived = getattr(self._prep, "outlived", None)
        self._last = None if outlived is None else outlived()

    def _checks(self, offsets: Sequence[int], results: list[int], exact: bool) -> Generator[Any, int, list[int]]:
        """The handle's checks of a batch's *results*: short ops completed, failures raised."""
        h = self._handle
        if self.write:
            return h._finish_writes(offsets, self.buffers, results)
        return h._finish_reads(offsets, self.buffers, results, exact)

    async def run_async(self, offsets: Sequence[int], *, exact: bool = False) -> list[int]:
        """asyncio form of :meth:`run`: the event loop runs while the batch is in flight.

        Cancelled, it raises ``CancelledError`` only once the batch is over (its ops in the
        kernel cancelled there and awaited, at most ``core.close_timeout_s``: see
        :meth:`FileHandle.read_into_async`), so the buffers are the caller's again.

        An event loop the ring cannot serve (another open loop watches it) is refused
        with ``RuntimeError`` before the batch starts."""
        check_awaitable_io(self._handle.io)
        pending = self._start(offsets, False)
        try:
            results = await pending.wait_async()
        except asyncio.CancelledError:
            # The prepared buffers are the caller's again only once the batch is over: asked
            # to stop, then waited for (docs/api.md, asyncio, "Cancelling an await").
            h = self._handle
            await settle_pending(pending, h._settle_timeout, "write" if self.write else "read", h.path)
            raise
        if results == self._full:
            return results
        return await self._handle._drive_async(self._checks(offsets, results, exact))

    def close(self) -> None:
        """Drop the prepared state; a batch still in flight keeps its buffers until it completes
        (and the handle's close still waits for it)."""
        last = self._last
        self._closed = True
        self._tracker.unregister(self, last if last is not None and not last.done() else None)
        self._prep.close()

    def __del__(self) -> None:
        # Dropped without close(): the tracker holds this object weakly, so a batch
        # still in flight must be handed to it, or the handle's close would not wait.
        # A raising signal here would be printed and ignored, the handover lost: it is
        # run again (as the handle's _one_pinned does).
        try:
            self._hand_over()
        except BaseException:
            despite_signals(self._hand_over)

    def _hand_over(self) -> None:
        """:meth:`__del__`'s handover of the last batch.  No lock and no reaping: a
        collection may run inside either.  Safe to repeat (a tracked pending twice is one)."""
        last = getattr(self, "_last", None)
        if last is not None:
            self._tracker.dropped(last)

    def __enter__(self) -> PreparedIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "writes" if self.write else "reads"
        return f"<PreparedIO {self.n} {kind} on {self._handle.path}>"
