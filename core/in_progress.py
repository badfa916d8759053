"""A step under way that another thread waits for: a handle's open or close, which
:meth:`Stack.close` waits for, and the reaper's close of a dropped handle
(:func:`uringstack.reaper.wait_dropped`).

The stack's teardown (the plugins' ``uringstack_stack_teardown``, then the rings'
close) must come after every handle's close has ended, its ``uringstack_file_closed``
included: a plugin whose file hook ran after its teardown would touch what it had
already released (fixedbuf clearing a slot of a file table it had unregistered:
``ENXIO``, session 44).  A close another thread runs, or an open another thread has
under way, is therefore waited for; one of the closing thread's own (a signal handler's
``stack.close()`` inside a close) is not, as that would wait for itself.
"""

from __future__ import annotations

import threading
import time
from _thread import get_ident
from collections.abc import Iterable


class InProgress:
    """One step under way: the thread that made it, and whether it ended.

    :meth:`end` is called once, when the step ended (successfully or not).
    :meth:`elsewhere` takes the maker for the runner, as a handle's open and close
    are (the reaper's closes are made by the opener, and only waited for)."""

    __slots__ = ("_running", "end", "thread")

    def __init__(self) -> None:
        self.thread = get_ident()
        # A lock held until the step ends: far cheaper to make than an Event (0.1 µs
        # against 3 µs), and every close and open makes one.
        self._running = threading.Lock()
        self._running.acquire()
        # The lock's own release, called from a `finally`: a C call, so no Python frame's
        # entry where a raising signal (Ctrl-C) could skip it and leave a waiter waiting.
        self.end = self._running.release

    def wait(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for the step's end; whether it ended."""
        if not self._running.acquire(timeout=max(timeout, 0.0)):
            return False
        self._running.release()
        return True

    def elsewhere(self) -> bool:
        """True while another thread runs the step (this thread's own is never waited for)."""
        return self.thread != get_ident() and self._running.locked()


def wait_all(steps: Iterable[InProgress], timeout: float) -> int:
    """Wait up to *timeout* seconds in all for *steps* to end; how many had not by then."""
    deadline = time.monotonic() + timeout
    late = 0
    for step in steps:
        if not step.wait(deadline - time.monotonic()):
            late += 1
    return late


def wait_for_others(steps: Iterable[InProgress | None], timeout: float) -> int:
    """:func:`wait_all` for the steps other threads run (None entries, and this thread's own
    steps, are skipped)."""
    return wait_all([step for step in steps if step is not None and step.elsewhere()], timeout)
