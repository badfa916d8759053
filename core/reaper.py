"""The one thread per process that closes what was dropped without ``close()``.

A finalizer (``__del__``, ``weakref.finalize``) runs wherever the last reference
went or the cyclic GC ran: any thread, at any allocation, inside a signal
handler's frame, on the dropped object's own worker or flusher thread.  Closing
there could join the very thread that runs it, or wait for a lock the
interrupted frame holds.  So a finalizer only hands the close over
(:func:`dispose`: a ``queue.SimpleQueue.put``, documented as reentrant, safe in
a finalizer) to this module's daemon thread, which closes it the normal way.

Used by every finalizer of the library: a dropped :class:`~uringstack.wal.Wal`,
:class:`~uringstack.stack.handle.FileHandle` and :class:`~uringstack.stack.Stack`.
The thread is started by :func:`start` when such an object is opened (starting a
thread takes locks, which a finalizer must not).  A close whose object still has
I/O in flight waits on this thread, not in it (``ready``): a slow op does not hold
up the others.  The others run in the order they were handed over.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any

from uringstack.in_progress import InProgress, wait_all

TICK_S = 0.05
"""How often a close waiting for its object's I/O (``ready``) asks again."""

EXIT_WAIT_S = 60.0
"""How long interpreter exit waits, all in all, for the closes handed over (a close stuck on
a hung device must not keep the process from exiting)."""


class _Item:
    """A close handed over by a finalizer (*warn*: the ResourceWarning the reaper gives first)."""

    __slots__ = ("close", "deadline", "finished", "group", "patience", "ready", "ref", "warn", "what")

    def __init__(
        self,
        close: Callable[[], object],
        what: str,
        ready: Callable[[], bool] | None,
        warn: str | None = None,
        patience: float | None = None,
        group: object = None,
    ) -> None:
        self.close = close
        self.what = what
        self.ready = ready
        self.warn = warn
        self.patience = patience
        self.deadline: float | None = None  # (set when the thread takes it)
        self.group = group
        # watch()'s closes only: its key in _watched, where it stays until it ran or was
        # given up, and that close as a step under way (what wait_dropped() waits on).
        self.ref: weakref.ref[Any] | None = None
        self.finished: InProgress | None = None


class _Marker:
    """:func:`drain`'s probe: set once the thread reached it with no close left waiting;
    ``taken`` is how many closes the thread had taken by then."""

    __slots__ = ("event", "taken")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.taken = -1


_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # _Item, _Marker, a watch()'s weakref, or None
# watch()'s closes, by the weak reference whose callback queues it
_watched: dict[weakref.ref[Any], _Item] = {}
_thread: threading.Thread | None = None
_lock = threading.Lock()  # start() only: a finalizer never takes it
_exiting = False  # set once the exit hook stopped the thread: a finalizer then hands nothing over
_exit_deadline: float | None = None  # the one bound of every wait at exit (see drain_at_exit)


_TICK = object()  # no new item within TICK_S: only the waiting closes are asked again


def _serve(q: queue.SimpleQueue[Any]) -> None:
    waiting: list[_Item] = []  # closes handed over and not run yet (their object's I/O in flight)
    markers: list[_Marker] = []  # drains waiting for those
    taken = 0
    while True:
        got: object
        try:
            got = q.get(timeout=TICK_S) if waiting else q.get()
        except queue.Empty:
            got = _TICK
        if got is None:  # (from the exit hook)
            return
        if isinstance(got, weakref.ref):  # a watched object was collected
            try:
                item = _watched.get(got)  # (None: unwatched meanwhile; it leaves once done, _finished)
            except TypeError:  # (a reference never hashed: a watch() a raising signal cut short
                item = None  # before it stored it; its object then went, and its hash with it)
            if item is not None and item.warn is not None:
                with contextlib.suppress(Exception):
                    warnings.warn(item.warn, ResourceWarning, 1)
            got, item = item, None
        if isinstance(got, _Item):
            taken += 1
            if got.patience is not None:
                got.deadline = time.monotonic() + got.patience
            waiting.append(got)
        elif isinstance(got, _Marker):
            markers.append(got)
        got = None  # (not kept alive by this frame until the next one arrives)
        if waiting:
            still = []
            for item in waiting:
                if _close_if_ready(item):
                    _finished(item)
                else:
                    still.append(item)
            waiting, still, item = still, [], None
        if markers:  # (everything taken before them ran, or waits for its object's I/O)
            for marker in markers:
                marker.taken = taken
                marker.event.set()
            markers = []


def _close_if_ready(item: _Item) -> bool:
    """Run *item*'s close unless its object still has I/O in flight; whether it is done with."""
    if item.ready is not None:
        try:
            ready = item.ready()
        except Exception:  # (the close itself then says what is wrong)
            ready = True
        if not ready:
            if item.deadline is None or time.monotonic() < item.deadline:
                return False
            # As a close() whose wait timed out: the descriptor stays open, so an op the
            # kernel completes later cannot land in a file opened since under its number.
            with contextlib.suppress(Exception):
                warnings.warn(
                    f"closing the dropped {item.what} failed: its I/O in flight did not complete "
                    f"within {item.patience:g} s (a lost completion or a hung device); left open",
                    ResourceWarning,
                    1,
                )
            return True
    try:
        item.close()
    except Exception as e:  # its waiters got the failure; the next dropped object must still close
        with contextlib.suppress(Exception):
            warnings.warn(f"closing the dropped {item.what} failed: {e!r}", ResourceWarning, 1)
    return True


def _finished(item: _Item) -> None:
    """A close ran or was given up: a watched one leaves _watched and wakes wait_dropped()."""
    if item.ref is not None:
        _watched.pop(item.ref, None)
    if item.finished is not None:
        item.finished.end()


def start() -> None:
    """Start the thread if this process has none.  Called where objects that need it
    are opened (a finalizer cannot start one safely).  A refused thread start (a thread
    limit) is not the opener's failure: closes handed over wait in the queue for a
    later start, or are left to the kernel at exit."""
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            thread = threading.Thread(target=_serve, args=(_queue,), name="uringstack-reaper", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                return
            _thread = thread


def dispose(close: Callable[[], object], what: str, ready: Callable[[], bool] | None = None) -> bool:
    """From a finalizer: have the reaper thread call ``close()``; False if nothing was
    handed over (the process is exiting: what is left goes with it).

    Never blocks and takes no lock.  *what* names the object in the
    ``ResourceWarning`` should ``close()`` raise.  *ready*, if given, is asked
    (on the reaper thread, every :data:`TICK_S`) until it returns True before
    ``close()`` runs: for an object whose I/O in flight must end first."""
    if _exiting:
        return False
    _queue.put(_Item(close, what, ready))
    return True


def watch(
    obj: object,
    close: Callable[[], object],
    what: str,
    ready: Callable[[], bool] | None = None,
    *,
    warn: str,
    patience: float | None = None,
    group: object = None,
) -> weakref.ref[Any]:
    """Have the reaper warn (*warn*, a ``ResourceWarning``) and call ``close()`` once *obj* is
    collected, as :func:`dispose` does (*close* and *ready* must not hold *obj*); returns the
    token for :func:`unwatch`, which the object drops once closed.  *ready* is asked for
    *patience* seconds at most (None: as long as it takes); past that the close is given up
    with a ``ResourceWarning`` and what it would release stays (as a close() whose wait for
    the I/O timed out leaves its descriptor open).  *group* (which *close* holds already:
    the object's stack) is what :func:`wait_dropped` is asked for.

    For objects opened and closed often (handles): a closed one's collection runs no
    Python code at all (a ``__del__`` would, at every collection: a raising signal landing
    there, Ctrl-C, is printed and lost), and a dropped one's runs only C (the weak
    reference's callback is the queue's ``put``)."""
    ref = weakref.ref(obj, _queue.put)
    item = _Item(close, what, ready, warn, patience, group)
    item.ref = ref
    item.finished = InProgress()
    _watched[ref] = item
    return ref


def unwatch(token: weakref.ref[Any]) -> None:
    """Undo :func:`watch` (safe to repeat); the caller then drops *token*, so no callback queues it."""
    _watched.pop(token, None)


def wait_dropped(group: object, timeout: float) -> int:
    """Wait up to *timeout* seconds in all until the closes of *group*'s watched objects that
    were collected have run (or were given up); how many had not by then.

    For what must come after those closes (a stack's teardown after its dropped handles'
    closes).  Nothing is waited for on the reaper thread itself (it runs them only after
    the close it is running now), nor when no reaper thread runs (refused by a thread
    limit: they wait for a later :func:`start`)."""
    thread = _thread
    if thread is None or not thread.is_alive() or threading.current_thread() is thread:
        return 0
    dropped = [
        item.finished
        for ref, item in list(_watched.items())
        # (not another's, and collected: one still alive is its owner's to close)
        if item.group is group and ref() is None and item.finished is not None
    ]
    return wait_all(dropped, timeout)


def drain(timeout: float) -> bool:
    """Wait until every close handed over so far (and any handed over by those closes) has
    run or waits for its object's I/O (``ready``); False if that took longer than *timeout*
    seconds, or no thread runs them."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        thread = _thread
        if thread is None or not thread.is_alive():
            return False
        marker = _Marker()
        _queue.put(marker)
        while not marker.event.wait(min(TICK_S, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or not thread.is_alive():
                return False
        # Done when a whole round trip took no close: one taken after the previous
        # marker may still have been running when that marker was set.
        if marker.taken == last:
            return True
        last = marker.taken


def drain_at_exit() -> None:
    """:func:`drain` for the library's exit hooks (the Wals', the shared stacks'), run before
    they close what the dropped objects may use; all of them share :data:`EXIT_WAIT_S`."""
    global _exit_deadline
    if _exit_deadline is None:
        _exit_deadline = time.monotonic() + EXIT_WAIT_S
    left = _exit_deadline - time.monotonic()
    if left > 0:
        drain(left)


def _stop_at_exit() -> None:
    global _exiting
    drain_at_exit()
    _exiting = True
    thread = _thread
    if thread is not None and thread.is_alive():
        _queue.put(None)
        thread.join(max(0.0, (_exit_deadline or 0.0) - time.monotonic()))


# Registered when this module is first imported, before any stack exists (the stack
# module imports it), so before the hooks that close the shared stacks and the Wals
# (registered at their first use): atexit runs the last registered first, so this runs
# last, after those closed what the dropped objects were written through.
atexit.register(_stop_at_exit)


def _new_reaper_in_child() -> None:
    # The parent's thread does not exist here, and what its queue holds is the parent's to close.
    # (the parent's watched objects queue on the parent's queue, which nothing reads here)
    global _queue, _thread, _lock, _exit_deadline, _watched
    _queue, _thread, _lock, _exit_deadline, _watched = queue.SimpleQueue(), None, threading.Lock(), None, {}


os.register_at_fork(after_in_child=_new_reaper_in_child)
