"""The process-wide stack behind ``uringstack.FileIO`` / ``uringstack.open`` when none is passed.

Built on first use (probe + config from ``URINGSTACK_CONFIG`` / ``URINGSTACK_*``
environment, as :func:`uringstack.open_stack` with no arguments, except that
SQPOLL is off unless the configuration asks for it: see :func:`file_object_config`), shared by
every thread, and closed at interpreter exit after the file objects still open
on it were closed (so a buffered writer left open at exit is flushed, as the
built-in ``open()``'s would be when finalized, instead of losing its data).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from uringstack import reaper

if TYPE_CHECKING:
    from uringstack.config import LoadedConfig, StackConfig
    from uringstack.stack import Stack

_lock = threading.Lock()


def _new_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a parent thread may have held it at fork(): the child's first open() would hang


os.register_at_fork(after_in_child=_new_lock_in_child)

_stack: Stack | None = None
_atexit_registered = False
# Outermost objects first (text/buffered from open(), then raw FileIO): closing
# an outer object flushes its buffer into the raw file before the raw one closes.
_outer: weakref.WeakSet[Any] = weakref.WeakSet()
_raw: weakref.WeakSet[Any] = weakref.WeakSet()


def default_stack() -> Stack:
    """The process-wide stack, built on first call (thread-safe); rebuilt if it was closed.

    A fork() child builds its own: the parent's stays the parent's (the child's
    copy refuses use, and its GC only drops the child's copies of its descriptors)."""
    global _stack, _atexit_registered
    with _lock:
        if _stack is None or _stack.closed or _stack.inherited:
            from uringstack.config import load_config
            from uringstack.stack import open_stack

            # loaded once: the SQPOLL choice below and the stack see the same file,
            # environment and plugins (one plugin manager, each plugin loaded once)
            loaded = load_config()
            _stack = open_stack(file_object_config(loaded), plugin_manager=loaded.plugin_manager)
            if not _atexit_registered:
                atexit.register(_close_at_exit)
                _atexit_registered = True
        return _stack


def file_object_config(loaded: LoadedConfig) -> StackConfig:
    """*loaded*'s config with ``sqpoll.mode = "off"``, unless the file or environment set
    ``sqpoll.mode`` itself (or the sqpoll plugin is disabled: then it is as loaded).

    A file object waits for each request before the next (read-ahead keeps a
    few in flight, no more), so SQPOLL's gain, no ``io_uring_enter`` at high
    queue depth, never comes, while its costs do: every copy out of the page
    cache moves to the poller thread (a cross-CPU hand-off per read, and the
    caller spins waiting), and the poller competes for the CPUs.  Measured
    with ``uringstack bench fileobj`` (128 MiB, 2 loaded CPUs, same run):
    sha256 hot 0.09x the built-in with SQPOLL vs 0.75x without, CPU per
    random aio read 127 µs vs 39 µs.  ``sqpoll.mode = "auto"`` may still be
    "on" from `uringstack tune` (measured on QD32 random reads), so only an
    explicit choice is kept.

    A profile of a program using the default stack may still show
    ``io_sq_thread`` for a moment: the probe (run when the stack is built)
    learns whether the kernel accepts SQPOLL by creating and destroying one
    SQPOLL ring, whose poller lives until the kernel's asynchronous ring
    teardown stops it (tens of milliseconds).  The stack's own rings never
    poll (tests/fileobj/test_default_stack_rings.py checks the rings' flags
    and the process's threads)."""
    config = loaded.config
    section = config.sections().get("sqpoll")
    if section is None or loaded.provenance.get("sqpoll.mode") != "default":
        return config
    # ("off" is one of the section's own values: nothing to validate again)
    return config.model_copy(update={"sqpoll": section.model_copy(update={"mode": "off"})})


def track(obj: Any, *, raw: bool) -> None:
    """Remember a file object on the default stack so exit closes (flushes) it first."""
    (_raw if raw else _outer).add(obj)


def _close_at_exit() -> None:
    # Handles dropped unclosed on the stack close first (the reaper's queue), in the order
    # of a close() by hand: the handles, then their stack.
    reaper.drain_at_exit()
    close_default_stack()


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
