"""The asyncio bridge: completions wake the event loop through an eventfd.

Each ring that serves asyncio callers gets an eventfd registered with
``io_uring_register_eventfd``; the loop watches it with ``add_reader`` and,
when it fires, reaps completed batches without blocking.  No thread is
involved, so ``await handle.read(...)`` costs one loop wake-up per batch of
completions, not a thread hop per I/O.  The bridge also owns the ring's
slot for the ring's :class:`~uringstack.ring.coalesce.Coalescer` (made there on
first use), which sends the single awaits of one loop iteration to the kernel as
one batch.

Completions are reaped by whichever thread gets to the ring first, possibly
after the loop that awaited them was closed (its task was cancelled and
``asyncio.run`` returned).  Such a completion is dropped here: it must never
raise ``Event loop is closed`` in an unrelated caller that happened to reap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from uringstack.ring._futures import set_result_unless_done
from uringstack.ring.interrupts import Repeatable, despite_signals

if TYPE_CHECKING:
    from uringstack.ring import Batch, Ring

_bridges: weakref.WeakKeyDictionary[Ring, Bridge] = weakref.WeakKeyDictionary()
_bridges_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _bridges_lock
    _bridges_lock = threading.Lock()  # a parent thread may have held it at fork time


os.register_at_fork(after_in_child=_reset_after_fork)


def post(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: Any) -> None:
    """Run ``fn(*args)`` on *loop* from any thread; drop it if the loop is closed (nobody awaits any more)."""
    if loop.is_closed():
        return
    if asyncio._get_running_loop() is loop:
        # Reaped on the loop's own thread (its eventfd reader, or a task's
        # submission): no self-pipe write and wake-up needed.
        loop.call_soon(fn, *args)
        return
    with contextlib.suppress(RuntimeError):  # closed between the check and the call
        loop.call_soon_threadsafe(fn, *args)


def _post_results(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[list[int]], done: Batch) -> None:
    # Safe to run again (a Repeatable): a second post of the result is ignored, in C, by
    # set_result_unless_done, which also ignores a future cancelled with its task.
    post(loop, set_result_unless_done, fut, done.results)


def resolver(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[list[int]]) -> Repeatable:
    """The done-callback that resolves *fut* (on *loop*) with its batch's results, from whichever
    thread collects the batch.

    It is the await's only wake-up, so it is :class:`~uringstack.ring.interrupts.Repeatable`:
    a raising signal in the collecting thread (another thread's blocking call on the ring)
    that cut it short, at its entry or inside ``call_soon_threadsafe``, makes the ring run
    it again, where it used to leave the await hanging for good
    (tests/ring/test_await_wakeup_signals.py).  The result is set by
    ``set_result_unless_done`` (C): no point for a signal on the loop's side either."""
    return Repeatable(_post_results, loop, fut)


class LoopBound(Protocol):
    """Per-loop state kept on a bridge (the coalescer): dropped when the loop goes."""

    def drop(self) -> None:
        """Forget queued work nobody can await any more (its loop is closed)."""
        ...

    def reap(self) -> None:
        """Reap the ring without blocking and deliver what completed (on the loop thread)."""
        ...

    def idle(self) -> bool:
        """Nothing queued, scheduled on the loop or reaped and not yet delivered."""
        ...


class Bridge:
    """The ring's eventfd (registered once for the ring's life) and the loop watching it."""

    def __init__(self, ring: Ring, loop: asyncio.AbstractEventLoop) -> None:
        self.ring = ring
        efd = ring.claim_eventfd()  # (registered when the ring was made, on kernels that need it)
        if efd is None:
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            try:
                ring.register_eventfd(efd)
            except BaseException:
                os.close(efd)
                raise
        self.efd = efd
        self.loop = loop
        self.coalescer: LoopBound | None = None
        loop.add_reader(self.efd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            with contextlib.suppress(BlockingIOError):  # another reader drained it
                os.eventfd_read(self.efd)
            self._reap()
        except BaseException:
            # (A signal once the eventfd's count was consumed, before the reap under way
            # took the completions in: no further count wakes the loop for them.)  The
            # next loop turn reaps again; a repeat, when the count was not consumed yet or
            # the reap had scheduled its own, finds nothing to do.
            despite_signals(self.loop.call_soon, self._reap_on, self.loop)
            raise

    def _reap_on(self, loop: asyncio.AbstractEventLoop) -> None:
        # (Scheduled on *loop*, which may since have handed the bridge to another loop
        # (move_to): the coalescer's reap and delivery are that loop's, on its thread.)
        if loop is self.loop:
            self._reap()

    def _reap(self) -> None:
        co = self.coalescer
        if co is not None:
            co.reap()  # delivers its batches once the ring's lock is released
        elif not self.ring.closed:
            self.ring.try_reap()

    def move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch from *loop* now (the previous loop is closed, e.g. a second asyncio.run, or
        left open but not running, with nothing of it on the ring: see :func:`refusal`)."""
        if self.coalescer is not None:
            self.coalescer.drop()  # ops a closed loop never flushed: nobody awaits them (else: idle)
            self.coalescer = None
        old = self.loop
        if not old.is_closed() and not self.ring.inherited:
            # The old loop is not running (no thread is in its select): its reader is taken
            # off here, so if it runs again it never reaps for this loop's coalescer on its
            # thread, and its selector no longer holds the bridge (nor, through it, the ring).
            # (Not in a fork child: its epoll instance is the parent's.)
            old.remove_reader(self.efd)
        self.loop = loop
        loop.add_reader(self.efd, self._on_readable)

    def detach(self) -> None:
        """Stop watching and release the eventfd (the ring is closing).

        From a thread other than the one running the loop (``stack.close()``
        while the loop runs elsewhere), both steps are handed to the loop's
        thread: closed here, the eventfd's number could be reused by another
        thread's ``open()`` before the loop's pending read of it ran, and that
        read would consume 8 bytes of an unrelated file or socket (asyncio's
        ``remove_reader`` is not thread-safe either).  On the loop's thread the
        reader is removed first, which cancels a read already scheduled, then
        the descriptor is closed."""
        if self.ring.inherited:
            # A fork child shares the parent's epoll instance: removing the reader
            # here would remove it for the parent.  Only drop this process's copy.
            with contextlib.suppress(OSError):
                os.close(self.efd)
            return
        loop = self.loop
        if loop.is_running() and asyncio._get_running_loop() is not loop:  # (the test post() makes)
            try:
                loop.call_soon_threadsafe(self._detach_here)
                return
            except RuntimeError:  # the loop closed meanwhile: nothing watches the eventfd
                pass
        self._detach_here()

    def _detach_here(self) -> None:
        if not self.loop.is_closed():
            self.loop.remove_reader(self.efd)
        os.close(self.efd)  # the kernel keeps its own reference until the ring goes


OTHER_LOOP = "this ring already serves another running event loop; use one stack (or one worker) per event loop"
"""Why an await on a ring another running event loop watches is refused (``RuntimeError``)."""

BUSY_LOOP = (
    "this ring serves another event loop, not running now, that has awaits queued on it, or the ring has I/O"
    " in flight; run that loop until they are done (or close it), or use one stack (or one worker) per event loop"
)
"""Why an await on a ring is refused when its loop is open and idle but may still have I/O on it."""


def refusal(bridge: Bridge) -> str | None:
    """Why *bridge*'s loop may not be replaced by another loop (None: it may).

    A closed loop awaits nothing.  Until session 32 any loop not closed kept the ring: one
    made with ``asyncio.new_event_loop()`` and never closed (or dropped, which the bridge's
    reference kept alive) made every later ``asyncio.run`` on the ring fail.  A loop that
    is not running, whose coalescer holds nothing (queued ops need the watching loop's
    flushes and reaps) and while nothing is in flight on the ring, has nothing to receive
    from it either.  (Any op in flight keeps the loop, also another thread's: the ring
    does not tell whose it is.)"""
    loop = bridge.loop
    if loop.is_closed():
        return None
    if loop.is_running():
        return OTHER_LOOP
    co = bridge.coalescer
    if (co is not None and not co.idle()) or bridge.ring.inflight:
        return BUSY_LOOP
    return None


def bridge_for(ring: Ring) -> Bridge:
    """The bridge of *ring* to the running loop (made on first use; moved if its old loop
    closed, or left open with nothing on the ring: :func:`refusal`)."""
    loop = asyncio.get_running_loop()
    with _bridges_lock:
        bridge = _bridges.get(ring)
        if bridge is None:
            bridge = Bridge(ring, loop)
            _bridges[ring] = bridge
        elif bridge.loop is not loop:
            why = refusal(bridge)
            if why is not None:
                raise RuntimeError(why)
            bridge.move_to(loop)
        return bridge


def check_bridge(ring: Ring) -> None:
    """Raise what :func:`bridge_for` would (``RuntimeError``: another loop keeps *ring*),
    without making a bridge: for a caller about to start I/O it will then await.

    Refused only after the start, the I/O would run with nobody told (a read landing in a
    buffer its caller took back on the error, a write its caller was told failed).  No
    ``get_running_loop()`` (a ``getpid`` per call in CPython 3.11) when the bridge's loop
    runs on this thread: a thread runs one loop at a time."""
    bridge = _bridges.get(ring)
    if bridge is None:
        return
    loop = bridge.loop
    if getattr(loop, "_thread_id", None) == threading.get_ident():
        return
    if loop is not asyncio.get_running_loop():
        why = refusal(bridge)
        if why is not None:
            raise RuntimeError(why)


def detach_ring(ring: Ring) -> None:
    """Forget the bridge of *ring* (called when the ring closes)."""
    with _bridges_lock:
        bridge = _bridges.pop(ring, None)
    if bridge is not None:
        bridge.detach()


async def wait_batch(ring: Ring, batch: Batch) -> list[int]:
    """Await the completion of *batch* on *ring* without blocking the loop.

    Always yields to the loop at least once, even when the batch completed
    inside its submission (a page-cache hit does): awaiting a finished batch
    without yielding would let one task that reads in a loop hold the event
    loop for as long as its reads hit the cache, starving every other task.

    A batch whose completions are already in the completion queue (a submission
    that did not wait leaves them there: a page-cache hit completes inside it) is
    reaped first, so it costs that one yield instead of a future, a done-callback,
    a posted wake-up and a second reap (``PreparedIO.run_async``, 4 tasks x 8 hot
    4 KiB reads: 11,786 -> 8,413 user instructions per op, cachegrind; docs/api.md).
    """
    if not batch.finished and not ring.closed:
        ring.try_reap()  # (answered from memory, without a call, when the queue is empty)
    if batch.finished:
        await asyncio.sleep(0)
        return batch.results
    bridge = bridge_for(ring)
    loop = bridge.loop
    fut: asyncio.Future[list[int]] = loop.create_future()
    # (resolver takes the results from the batch it is called with: holding the batch
    # would make a reference cycle, the batch holding its callbacks, that only the
    # cyclic GC frees.)
    batch.add_done_callback(resolver(loop, fut))
    # The batch may have completed between the check above and installing the
    # callback; reaping now either finds it or it is still in flight.
    if not ring.closed:
        ring.try_reap()
    if batch.finished:
        await asyncio.sleep(0)
        return batch.results
    return await fut
