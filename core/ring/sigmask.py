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

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

# SIGKILL and SIGSTOP cannot be blocked; the kernel leaves them out of the mask silently.
_EVERY_SIGNAL = signal.valid_signals()


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Block every signal in this thread for the ``with`` body; the previous mask after it.

    Keep the body short and bounded: Ctrl-C and every other signal for this
    thread wait until it ends (a process-directed one goes to another thread
    that does not block it, and Python runs its handler in the main thread)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _EVERY_SIGNAL)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def submitted_with_signals_held(start: Callable[..., T]) -> Callable[..., T]:
    """*start* (a backend's ``start_*``: it submits and returns a pending) made to submit
    with this thread's signals blocked; the wait for the pending it returns is not."""

    def submit(*args: Any) -> T:
        with signals_held():
            return start(*args)

    return submit
