"""Tracking the I/O a handle started, so that closing it can wait for that I/O first.

A descriptor released while ops on it are queued or in flight is reused by
the next ``open``, and those ops then read or write that unrelated file (a
thread pool resolves the number when it runs the op; an SQPOLL ring when its
poller picks the SQE up).  So a close marks the tracker closed (new starts
are refused), waits until starts already past the check have handed over
their pending objects, waits for those to complete, and only then may the
caller release the descriptor.
"""

from __future__ import annotations

import itertools
import operator
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from uringstack.errors import RingClosedError
from uringstack.ring import SUBMITTED
from uringstack.ring.interrupts import despite_signals
from uringstack.ring.pending import Pending, UringPending, pending_for

P = TypeVar("P", bound=Pending)


class Completable(Protocol):
    """What a close waits on: ``done()`` (non-blocking; may reap) and ``n``, the ops it counts."""

    @property
    def n(self) -> int: ...

    def done(self) -> bool: ...


def submitted_since(before: object) -> UringPending | None:
    """The pending of the batch this thread submitted last, if that happened after
    :data:`~uringstack.ring.SUBMITTED` read *before* (``SUBMITTED.last`` then); else None.

    For a start that raised before its own pending came back (a raising signal
    handler right after the submission): tracked in its place until it completes."""
    last = SUBMITTED.last
    if last is None or last is before:
        return None
    ring = last[0]()
    if ring is None:  # collected, so closed: nothing of it is in flight
        return None
    return pending_for(ring, last[1])


CLOSE_TIMEOUT_S = 10.0
"""How long a close waits for in-flight I/O before it reports a lost completion."""

_PRUNE_MIN = 64

_ATOMIC_NEXT = getattr(sys, "_is_gil_enabled", lambda: True)()
"""Whether ``next()`` on an ``itertools.count`` is atomic (the GIL serializes it): the
tracker then counts starts without a lock.  Without a GIL it takes its lock."""


class InflightTracker:
    """Pending objects started through one handle (or one backend object) that may not be done."""

    def __init__(self, what: str) -> None:
        self.what = what
        # A leaf lock: never held while calling into a ring, a pool or a pending.
        self._lock = threading.Lock()
        # Starts in progress = next(_entered) - next(_left), read under the lock (see
        # _starts).  A start bumps _entered and then reads _closed; close() sets _closed
        # and then reads the counts: whichever comes first, the start either is
        # counted (close waits for it) or sees the close (refused).  next() on a
        # count is one atomic step under the GIL, so the fast paths take no lock.
        self._entered = itertools.count()
        self._left = itertools.count()
        # Count one admitted start out, as one C call under the GIL: a raising signal
        # handler runs only once the call returned (the count moved), never between
        # the call and the count, which a Python method would allow (at its entry).
        self.left: Callable[[], object] = self._left.__next__ if _ATOMIC_NEXT else self._left_locked
        self._closed = False
        self._pending: set[Pending] = set()
        # Long-lived starters (prepared batches) registered once instead of a set
        # entry per start: close() waits until each reports done().  Weak: an owner
        # dropped without unregister() hands its last pending over when collected.
        self._owners: weakref.WeakSet[Completable] = weakref.WeakSet()
        self._dropped: deque[Pending] = deque()  # appended by finalizers: no lock
        self._prune_at = _PRUNE_MIN

    if TYPE_CHECKING:

        @property
        def closed(self) -> bool:
            """True once :meth:`close` began: new starts are refused from then on."""
            ...

    else:
        # A getter in C, no Python frame: the fallback's bound durable write (every log
        # flush) reads it per call.  Read-only.
        closed = property(operator.attrgetter("_closed"), doc="True once close() began: new starts are refused.")

    def _starts(self) -> int:
        """Starts admitted that have not left (caller holds the lock).

        _left is read before _entered: a start leaving in between is still
        counted (an over-count, gone at the next read), never one missed.  Both
        are read in one step (unpacking a ``map``: C calls only, so no point
        for a raising signal handler between them): read as two statements, a
        signal after the first moved ``_left`` alone, after which every read
        was one start short for good (session 41's stress run: a close run again
        after Ctrl-C waited 10 s for a start that never was; with a call
        running, a close would have released the descriptor under it)."""
        left, entered = map(next, (self._left, self._entered))
        return entered - left  # both grew by one: the difference holds

    def enter(self) -> None:
        """Admit one start (refused once closed); pair with :attr:`left`.

        For a registered owner's starts and a handle's single waited ops: no
        lock on this path (see ``_entered``), two counter steps per op.  Raises
        (refused, or a raising signal handler) only with nothing left counted:
        the caller's ``try`` begins after this returns, so an exception that
        escaped with the start counted would keep it counted forever (close()
        would wait for it until its timeout)."""
        if _ATOMIC_NEXT:
            try:
                next(self._entered)  # a signal handler can raise only after this call: counted
                if self._closed:
                    raise RingClosedError(f"{self.what} is closed")
            except BaseException:
                next(self._left)  # (one C call: no signal before it)
                raise
            return
        with self._lock:
            try:
                next(self._entered)
                if self._closed:
                    raise RingClosedError(f"{self.what} is closed")
            except BaseException:
                next(self._left)
                raise

    def _left_locked(self) -> None:
        """:attr:`left` without a GIL (``next()`` on a count is then not atomic)."""
        with self._lock:
            next(self._left)

    def keep(self, pending: Pending) -> None:
        """Track *pending*, an op that may still be in flight although the call that started
        it raised (its wait was interrupted or timed out), until it completes.

        Safe to repeat (a set entry), so a caller runs it again when a further
        raising signal cuts it short (:func:`~uringstack.ring.interrupts.despite_signals`),
        and only then counts its start out with :attr:`left`."""
        self._add(pending)

    def _add(self, pending: Pending) -> bool:
        """:meth:`keep`; whether the set grew enough to prune it."""
        with self._lock:
            self._pending.add(pending)
            return len(self._pending) >= self._prune_at

    def track(self, pending: Pending) -> None:
        """Track *pending*, whose I/O is about to start, unless closed (then ``RingClosedError``).

        One step for a caller whose pending exists before its I/O starts (the
        asyncio coalescer's flush): ``pending.done()`` must stay False until that
        I/O completed or failed to start, so a close() meanwhile waits for it."""
        with self._lock:
            if self._closed:
                raise RingClosedError(f"{self.what} is closed")
            self._pending.add(pending)
            prune = len(self._pending) >= self._prune_at
        if prune:
            self._prune()

    def start(self, fn: Callable[..., P], *args: Any, **kwargs: Any) -> P:
        """Run ``fn(*args, **kwargs)`` (which starts I/O and returns its pending) unless closed; track it.

        If the call raises after its I/O started (a raising signal handler right
        after the submission, before the pending came back), the batch it
        submitted on a ring is tracked instead (:func:`submitted_since`)."""
        pending: P | None = None
        before = SUBMITTED.last  # (no call: nothing submitted by this start can be missed)
        self.enter()
        try:
            pending = fn(*args, **kwargs)
            prune = self._add(pending)
        except BaseException:
            # tracked before the start is counted out: close() then sees it
            try:
                self._keep_started(pending, before)
            except BaseException:  # a second raising signal: the first one propagates
                despite_signals(self._keep_started, pending, before)
            self.left()
            raise
        self.left()
        if prune:
            self._prune()
        return pending

    def _keep_started(self, pending: Pending | None, before: object) -> None:
        """:meth:`keep` what a start (or its wait) that raised may have left in flight: *pending*,
        and the batch submitted last since ``SUBMITTED.last`` was *before* unless that is
        *pending*'s own (a wait can submit one more: IOPOLL's flush after its write,
        interrupted before it stored it).  Safe to repeat."""
        if pending is not None:
            self._add(pending)
        submitted = submitted_since(before)
        if submitted is not None and getattr(pending, "batch", None) is not submitted.batch:
            self._add(submitted)

    def register(self, owner: Completable) -> None:
        """Track *owner* until :meth:`unregister`: :meth:`close` waits until ``owner.done()``.

        For an object that starts I/O again and again (a prepared batch): its
        starts then only :meth:`enter` and :meth:`leave`, without a set entry
        per start."""
        with self._lock:
            if self._closed:
                raise RingClosedError(f"{self.what} is closed")
            self._owners.add(owner)

    def unregister(self, owner: Completable, last: Pending | None = None) -> None:
        """Stop tracking *owner*; *last*, its pending if it may still be in flight, is tracked instead."""
        with self._lock:
            if last is not None:  # first: a raising signal between the two steps leaves both tracked
                self._pending.add(last)
            self._owners.discard(owner)

    def dropped(self, last: Pending) -> None:
        """A registered owner was collected without :meth:`unregister`: track its *last* pending.

        Safe in a finalizer (a deque append: no lock, no reaping)."""
        self._dropped.append(last)

    def leave(self, outlived: Pending | None = None) -> None:
        """:meth:`keep` *outlived* (if given), then :attr:`left`: the start admitted by :meth:`enter` returned.

        Kept for plugins.  A caller in ``core/`` calls :attr:`left` itself: a
        raising signal handler can run at the entry of this method, which in a
        ``finally`` would leave the start counted; and an *outlived* op must be
        kept (retried through signals) before the start is counted out."""
        if outlived is not None:
            self.keep(outlived)
        self.left()

    def run(self, fn: Callable[..., Pending], *args: Any, **kwargs: Any) -> list[int]:
        """Start I/O with ``fn(*args, **kwargs)`` and wait for it; close() waits for this call to return.

        The synchronous path: counted while it runs instead of entering the set,
        unless the call raises (a signal) with its op in flight: its pending, or
        without one the batch it submitted (:func:`submitted_since`), is then tracked."""
        pending: Pending | None = None
        before = SUBMITTED.last
        self.enter()
        try:
            pending = fn(*args, **kwargs)
            results = pending.wait()
        except BaseException:
            # as in start(): the start or its wait raised, the op may be in flight
            try:
                self._keep_started(pending, before)
            except BaseException:
                despite_signals(self._keep_started, pending, before)
            self.left()
            raise
        self.left()
        return results

    def forget(self, pending: Pending) -> None:
        """Stop tracking *pending* if it completed (an ``await`` on it just returned or was cancelled)."""
        if pending.done():
            with self._lock:
                self._pending.discard(pending)

    def _take_dropped(self) -> None:
        """Move what finalizers handed over into the tracked set (caller holds the lock)."""
        while self._dropped:
            self._pending.add(self._dropped.popleft())

    def _prune(self) -> None:
        with self._lock:
            self._take_dropped()
            snapshot = list(self._pending)
        done = {p for p in snapshot if p.done()}  # outside the lock: done() may reap
        with self._lock:
            self._pending -= done
            self._prune_at = max(_PRUNE_MIN, 2 * len(self._pending))

    def idle(self) -> bool:
        """True when nothing started is still in flight (no start under way, every tracked
        pending done), so :meth:`close` would not wait.  Polls (``done()`` may reap): for
        a closer that must not block on a slow op, such as the reaper's."""
        with self._lock:
            if self._starts():
                return False
            self._take_dropped()
            pending: list[Completable] = [*self._pending, *self._owners]
        return all(p.done() for p in pending)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new starts, then wait until everything started has completed.

        Raises :class:`TimeoutError` (naming what is stuck) if that takes longer
        than *timeout* (default :data:`CLOSE_TIMEOUT_S`): a lost completion or a hung device.  The tracker stays
        closed either way; the caller must then keep the descriptor open."""
        if timeout is None:
            timeout = CLOSE_TIMEOUT_S
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
        # Polled, as wait_all polls: a start counted out by left() wakes nobody, so a
        # raising signal between a count and a wake-up can never make this wait past it.
        delay = 0.0001
        while True:
            with self._lock:
                if not self._starts():
                    self._take_dropped()
                    pending: list[Completable] = [*self._pending, *self._owners]
                    break
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.what}: an I/O call in another thread ran past {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        stuck = wait_all(pending, deadline)
        with self._lock:
            finished = {id(p) for p in pending} - {id(p) for p in stuck}
            self._pending = {p for p in self._pending if id(p) not in finished}
            for p in [p for p in self._owners if id(p) in finished]:
                self._owners.discard(p)
        if stuck:
            ops = sum(p.n for p in stuck)
            raise TimeoutError(
                f"{self.what}: {ops} op(s) in {len(stuck)} batch(es) still not complete {timeout:g} s after "
                "close() began (a lost completion or a hung device); the descriptor is left open so they "
                "cannot land in another file"
            )


C = TypeVar("C", bound=Completable)


def wait_all(pending: list[C], deadline: float) -> list[C]:
    """Poll each pending until it is done or *deadline* passes; return those still not done.

    ``done()`` reaps (and on IOPOLL rings polls) without blocking, so the wait
    works on every backend and never blocks past the deadline, even when a
    completion was lost."""
    delay = 0.0001
    left = [p for p in pending if not p.done()]
    while left and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.01)
        left = [p for p in left if not p.done()]
    return left
