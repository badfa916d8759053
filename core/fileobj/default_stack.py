"""The process-wide stack behind ``uringstack.FileIO`` / ``uringstack.open`` when none is passed.

Built on first use (probe + config from ``URINGSTACK_CONFIG`` / ``URINGSTACK_*``
environment, as :func:`uringstack.open_stack` with no arguments), shared by
every thread, and closed at interpreter exit after the file objects still open
on it were closed (so a buffered writer left open at exit is flushed, as the
built-in ``open()``'s would be when finalized, instead of losing its data).
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - see below
import contextlib
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uringstack.stack import Stack

# The fallback plugin's teardown names concurrent.futures.ThreadPoolExecutor, a
# lazy attribute whose first import registers a threading atexit hook, which
# fails once the interpreter is shutting down: import it now so the stack can
# be closed from our atexit hook.

_lock = threading.Lock()
_stack: Stack | None = None
_atexit_registered = False
# Outermost objects first (text/buffered from open(), then raw FileIO): closing
# an outer object flushes its buffer into the raw file before the raw one closes.
_outer: weakref.WeakSet[Any] = weakref.WeakSet()
_raw: weakref.WeakSet[Any] = weakref.WeakSet()


def default_stack() -> Stack:
    """The process-wide stack, built on first call (thread-safe); rebuilt if it was closed."""
    global _stack, _atexit_registered
    with _lock:
        if _stack is None or _stack._closed:
            from uringstack.stack import open_stack

            _stack = open_stack()
            if not _atexit_registered:
                atexit.register(close_default_stack)
                _atexit_registered = True
        return _stack


def track(obj: Any, *, raw: bool) -> None:
    """Remember a file object on the default stack so exit closes (flushes) it first."""
    (_raw if raw else _outer).add(obj)


def close_default_stack() -> None:
    """Close the file objects still open on the default stack, then the stack."""
    global _stack
    with _lock:
        stack, _stack = _stack, None
    if stack is None:
        return
    for group in (_outer, _raw):
        for obj in list(group):
            with contextlib.suppress(Exception):  # at exit: close the rest, as finalization would
                obj.close()
    stack.close()
