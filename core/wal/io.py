"""Where the log's writes go: one :class:`~uringstack.stack.handle.FileHandle` per segment, on a stack.

The writer hands each flush, one contiguous block-aligned buffer, to
:meth:`FileHandle.write_durable <uringstack.stack.handle.FileHandle.write_durable>`
with the log's ``sync`` (``dsync``: one ``RWF_DSYNC`` write; ``fdatasync``: a
write then a flush, linked with ``IOSQE_IO_LINK`` on io_uring), bound once per
segment (``FileHandle.bind_write_durable``).  The handle
completes short writes and raises on any error; the writer then fails the log
and never writes again: a failed flush must not be retried.

The handles come from the stack the log is given (``Wal.open(..., stack=)``) or
from a small one-worker stack (:func:`shared_stack`, one per process and
backend) whose ``core.backend`` is the log's ``backend`` choice.  Segment files are opened by the writer (it
falls back from O_DIRECT where the file system refuses it) and adopted by the
stack (``adopt_fd``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from uringstack import reaper
from uringstack.probe.punts import durable_uring_punts
from uringstack.ring import forking
from uringstack.ring.io_backend import FileIO
from uringstack.stack.handle import FileHandle

if TYPE_CHECKING:
    from ..stack import Stack

BackendSpec = Literal["auto", "uring", "fallback", "posix"]

FileIOWrapper = Callable[[FileIO], FileIO]
"""Wraps the FileIO of every segment handle (fault injection: :mod:`uringstack.wal.faults`)."""


def _sqpoll_enabled(stack: Stack) -> bool:
    return any(v.plugin == "sqpoll" and v.enabled for v in stack.plan.verdicts)


_shared_lock = threading.Lock()


def _new_lock_in_child() -> None:
    global _shared_lock
    _shared_lock = threading.Lock()  # a parent thread may have held it at fork(): the child's first log would hang


os.register_at_fork(after_in_child=_new_lock_in_child)
_shared: dict[str, tuple[int, Stack]] = {}
_atexit_registered = False


def _close_shared() -> None:
    reaper.drain_at_exit()  # (the handles dropped unclosed on them first, as in default_stack)
    with _shared_lock:
        stacks = [s for _, s in _shared.values()]
        _shared.clear()
    for stack in stacks:
        with contextlib.suppress(Exception):  # at exit: a stack that fails to close must not hide others
            stack.close()


def shared_stack(core_backend: str) -> Stack:
    """The process's small stack for logs with this ``core.backend``: built on first use, shared
    by every log that was given no stack, closed at interpreter exit (rebuilt after a fork or close).

    Building a stack (probe, plugins, plan, a pinned worker) costs tens of
    milliseconds, more than many appends: logs opened and closed often should
    not pay it each time.
    """
    global _atexit_registered
    with _shared_lock:
        gen = forking.generation()
        got = _shared.get(core_backend)
        if got is not None and got[0] == gen and not got[1].closed:
            return got[1]
        stack = _small_stack(core_backend)
        _shared[core_backend] = (gen, stack)
        if not _atexit_registered:
            atexit.register(_close_shared)
            _atexit_registered = True
        return stack


def _small_stack(core_backend: str) -> Stack:
    """A one-worker stack with no plugin that would not help a log (nor cost it a syscall)."""
    from ..stack import open_stack

    cpu = min(os.sched_getaffinity(0))
    return open_stack(
        overrides={
            "core.backend": core_backend, "core.cores": [cpu], "core.ring_entries": 8,
            "sqpoll.mode": "off", "fixedbuf.mode": "off", "iopoll.mode": "off", "nvme_passthrough.mode": "off",
            "fallback.mode": "on" if core_backend == "fallback" else "auto",
        }
    )  # fmt: skip


class WalIO:
    """The stack a log writes through, and how it opens a segment's handle on it."""

    def __init__(self, stack: Stack, *, owns_stack: bool, reason: str, wrap: FileIOWrapper | None = None) -> None:
        self.stack = stack
        self.owns_stack = owns_stack
        self.reason = reason
        """Which stack and backend the log writes through, and why."""
        self.wrap = wrap
        self._inner: dict[int, FileHandle] = {}

    @classmethod
    def for_log(
        cls,
        directory: Path,
        spec: BackendSpec,
        stack: Stack | None = None,
        wrap: FileIOWrapper | None = None,
    ) -> WalIO:
        """The log's I/O: on *stack* if given, else on a small stack built for *spec*.

        ``auto`` is the stack's own choice (io_uring where usable, the
        fallback elsewhere), except on a disk where durable io_uring writes
        are punted to io-wq (:func:`durable_uring_punts`): fallback there.
        A given stack whose rings poll with SQPOLL is not used: O_DSYNC writes
        through an SQPOLL ring measured in milliseconds (kernel 6.18, fio
        --sqthread_poll=1: 327 writes/s vs 7,080 without), so the log gets a
        small io_uring stack of its own.
        """
        if stack is not None:
            if not _sqpoll_enabled(stack):
                return cls(stack, owns_stack=False, reason="the stack it was given", wrap=wrap)
            own = shared_stack("uring")
            reason = "the process's small io_uring stack: the given stack polls with SQPOLL"
            return cls(own, owns_stack=False, reason=reason, wrap=wrap)
        if spec == "posix":
            spec = "fallback"
        if spec not in ("auto", "uring", "fallback"):
            raise ValueError(f"unknown WAL backend {spec!r} (allowed: auto, uring, fallback)")
        reason = f"backend = {spec!r}"
        if spec == "auto":
            slow = durable_uring_punts(directory)
            if slow is not None:
                spec, reason = "fallback", f"auto: fallback, because {slow}"
        if reason == "backend = 'auto'":
            reason = "auto: the stack's choice"
        return cls(shared_stack(spec), owns_stack=False, reason=reason, wrap=wrap)

    def open_segment(self, path: Path, fd: int, direct: bool) -> FileHandle:
        """A handle on the segment file *fd* (opened by the writer): it serves a duplicate of
        *fd*, which it closes; *fd* stays the writer's."""
        handle = self.stack.open(path, direct=direct, adopt_fd=fd)
        if self.wrap is None:
            return handle
        wrapped = FileHandle(self.wrap(handle.io), handle.worker, self.stack, handle.backend_reason)
        self._inner[id(wrapped)] = handle
        return wrapped

    def close_segment(self, handle: FileHandle) -> None:
        """Close a handle from :meth:`open_segment` (and its own descriptor)."""
        inner = self._inner.pop(id(handle), None)
        # The wrapped handle first: the log's I/O went through it, and its close waits for
        # that I/O (raising, it leaves the descriptor open, and the handle under it too).
        # Left open, its finalizer would warn and close it.
        handle.close()
        if inner is not None:
            inner.close()

    def close(self) -> None:
        """Close the stack if this object owns it (a given or shared stack stays open)."""
        if self.owns_stack:
            self.stack.close()
