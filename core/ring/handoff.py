"""Waiting with a lock let go: the steps a ring's waits use so a thread blocked on
I/O does not hold the ring's lock (docs/architecture.md, "Waits and the ring's lock").

Both steps are entered and left with the lock held, and let it go only while they
block.  A raising signal handler (Ctrl-C) can interrupt them anywhere, so each
step knows whether it let the lock go and takes it back before anything
propagates: the caller's ``with lock:`` must find it held (releasing a lock
that is not held raises, and one left unreleased stops the ring for good)."""

from __future__ import annotations

import _thread
from collections.abc import Callable, Sequence
from typing import TypeVar

from uringstack.ring.interrupts import despite_signals

T = TypeVar("T")

_release = _thread.LockType.release
_BLOCKING = (True,)


def call_unlocked(lock: _thread.LockType, step: Callable[..., T], *args: object) -> T:
    """Run ``step(*args)`` with *lock* (held by the caller) let go; *lock* is held again on return.

    Whether the lock was let go, and whether it was taken back, are stored by
    the C calls that do it (``list.extend`` over ``map``): no point for a signal
    handler lies between a release or an acquire and its record.  An acquire
    interrupted by a raising handler does not take the lock, and is run again
    (:func:`despite_signals`) before the exception propagates."""
    released: list[None] = []
    relocked: list[bool] = []
    try:
        released.extend(map(_release, (lock,)))
        return step(*args)
    finally:
        if released and not relocked:
            try:
                relocked.extend(map(lock.acquire, _BLOCKING))
            except BaseException:
                despite_signals(_relock, lock, relocked)
                raise


def _relock(lock: _thread.LockType, relocked: list[bool]) -> None:
    if not relocked:
        relocked.extend(map(lock.acquire, _BLOCKING))


class Gate:
    """Where threads wait, the lock let go, for another thread to wake them.

    The threads of a ring that wait while another one (the leader) waits in
    the kernel sleep here, each for the slot it awaits (or for any progress:
    ``slot=None``).  The leader, once it drained, wakes those whose slot
    completed (:meth:`wake_done`); a waiter leaving wakes one more
    (:meth:`wake_one`), to lead in its place.  Waking only those keeps the
    threads of a busy ring from all waking for every completion."""

    def __init__(self) -> None:
        self._waiting: list[tuple[_thread.LockType, int | None]] = []

    def wait(self, lock: _thread.LockType, timeout: float, slot: int | None = None) -> bool:
        """Let *lock* (held) go until woken or *timeout* seconds passed; False on the timeout.

        *lock* is held again on return, also when a raising signal ends the wait."""
        waiter = _thread.allocate_lock()
        waiter.acquire()
        entry = (waiter, slot)
        self._waiting.append(entry)
        try:
            return call_unlocked(lock, waiter.acquire, True, timeout)
        finally:
            # (gone already when a wake took it; an entry left behind by a signal here
            # is woken later, to no one)
            if entry in self._waiting:
                self._waiting.remove(entry)

    def wake_done(self, remaining: Sequence[int]) -> None:
        """Wake the waiters whose slot has no op left in *remaining*, and those waiting for
        any progress (the caller holds the lock they wait with)."""
        waiting = self._waiting
        if not waiting:
            return
        woken = [entry for entry in waiting if entry[1] is None or not remaining[entry[1]]]
        for entry in woken:
            waiting.remove(entry)
            entry[0].release()

    def wake_one(self) -> None:
        """Wake the longest waiting thread, if any: one to lead when the leader leaves."""
        if self._waiting:
            self._waiting.pop(0)[0].release()

    def wake_all(self) -> None:
        """Wake every thread waiting now."""
        waiting, self._waiting = self._waiting, []
        for waiter, _ in waiting:
            waiter.release()

    def __len__(self) -> int:
        return len(self._waiting)
