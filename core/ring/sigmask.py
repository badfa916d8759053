"""This thread's signals held back while an op is submitted (``pthread_sigmask``).

io_uring's io-wq worker threads are created by the thread that submits the op
needing one, and a signal pending in that thread makes the creation fail; some
kernels then cancel the op (docs/api.md, "An op the kernel cancelled on its
own").  A blocked signal does not count as pending there, so an op submitted
with the thread's signals blocked gets its worker.  Only for the rare rerun of
such an op (two more syscalls): a signal sent meanwhile is delivered when the
mask is restored, to this thread or, if process-directed, to another one.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# SIGKILL and SIGSTOP cannot be blocked; the kernel leaves them out of the mask silently.
_EVERY_SIGNAL = signal.valid_signals()


def with_signals_held(fn: Callable[..., T]) -> Callable[..., T]:
    """*fn* made to run with every signal of this thread blocked, the previous mask after it.

    Given a backend's ``start_*`` (it submits and returns a pending), only the
    submission is held: the wait for the pending comes after.  Given a call that
    submits and waits (``read_here``), Ctrl-C and every other signal for this
    thread wait until it returns (a process-directed one goes to another thread
    that does not block it; Python runs its handler in the main thread): keep
    such a call short and bounded, as a file's read is."""

    def held(*args: Any) -> T:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _EVERY_SIGNAL)
        try:
            return fn(*args)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    return held
