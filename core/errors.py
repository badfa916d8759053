"""Exceptions raised by uringstack.

Every I/O failure is an :class:`OSError` subclass carrying ``errno``, the
operation that failed and the file it failed on, so ``except OSError`` in
existing code keeps working and the message says what happened where.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence


class UringStackError(Exception):
    """Base class of the errors uringstack raises that are not I/O errors."""


class UringIOError(OSError):
    """An I/O operation failed; ``errno``, ``op`` and ``filename`` say which and where.

    ``transferred``: the bytes of the failed buffer that moved before the failure
    (a write that came back short, completed by further writes, the next of which
    failed: the first part is in the file).  0 when none did.  ``write(2)`` would
    have returned that count; ``uringstack.FileIO.write`` does."""

    transferred = 0

    def __init__(self, err: int, op: str, filename: str | None = None, detail: str = "") -> None:
        message = f"{op} failed: {os.strerror(err)}"
        if detail:
            message += f" ({detail})"
        super().__init__(err, message, filename)
        self.op = op
        self.detail = detail


def transferred(exc: BaseException) -> int:
    """Bytes of a failed write already in the file: :attr:`UringIOError.transferred`, 0 for
    any other exception (a raising signal, a closed file)."""
    return getattr(exc, "transferred", 0)


class RingSetupError(UringIOError):
    """``io_uring_setup`` failed (seccomp, disabled sysctl, memlock, ...)."""


class SubmissionError(UringIOError):
    """The kernel refused a submission (``io_uring_enter`` failed), or the fallback backend's
    thread pool refused an op of a batch (``can't start new thread``: ``EAGAIN``).

    ``results``: where part of the batch ran before the failure and the backend
    knows which part (the fallback), each op's result as the batch would have
    reported it: bytes moved or ``-errno``, and ``-ECANCELED`` for an op that
    never ran and never will.  Empty when not known."""

    results: tuple[int, ...] = ()


class CancelTimeoutError(UringIOError):
    """A cancelled asyncio op that uses the caller's buffer did not complete within the
    stack's ``core.close_timeout_s`` (a hung device, a lost completion): raised instead of
    ``CancelledError`` (``errno.ETIMEDOUT``).  The kernel (or a pool thread) may still read
    or write that buffer: do not reuse it.  The op stays in flight and owns the buffer
    until it completes (for the life of the process if its ring is closed first), and the
    handle's ``close()`` still waits for it (docs/api.md, asyncio, "Cancelling an await")."""


class ShortIOError(UringIOError):
    """A read or write moved fewer bytes than asked and the rest could not be completed."""

    def __init__(self, op: str, filename: str | None, expected: int, got: int, offset: int) -> None:
        super().__init__(_errno.EIO, op, filename, f"short transfer at offset {offset}: {got} of {expected} bytes")
        self.expected = expected
        self.got = got
        self.offset = offset


class AlignmentError(UringStackError, ValueError):
    """An O_DIRECT or passthrough request is not aligned to the logical block size."""


class DeviceInUseError(UringStackError, PermissionError):
    """A writable open of a device that something uses (mounted, held, swap) was refused.

    ``reasons`` lists what uses it; ``device`` is the device node.  Writes
    there would bypass whatever uses the device (a file system's cache and
    metadata) and corrupt it."""

    def __init__(self, device: str, reasons: list[str], message: str) -> None:
        self.device = device
        self.reasons = list(reasons)
        super().__init__(message)


class NamespaceInUseError(DeviceInUseError):
    """A writable open of an NVMe namespace's generic char device (``/dev/ngXnY``) was refused:
    its block device (``block_device``) is mounted, held, swapped on or claimed."""

    def __init__(self, device: str, block_device: str, reasons: Sequence[str]) -> None:
        self.block_device = block_device
        super().__init__(
            device,
            list(reasons),
            f"refusing NVMe passthrough writes to {device}: its block device {block_device} is "
            f"in use ({'; '.join(reasons)}). Writes there bypass the filesystem and would "
            "corrupt it. Unmount or release it, open it with writable=False, or set [core] "
            "allow_writes_in_use = true if you really mean it",
        )


class RingClosedError(UringStackError, RuntimeError):
    """The ring (or handle, or stack) was used after ``close()``."""


class BatchInFlightError(UringStackError, RuntimeError):
    """Reusable batch columns (or a prepared I/O) were resubmitted while their last batch was in flight."""


class ThreadStartError(UringStackError, RuntimeError):
    """A thread of the library could not be started (``RuntimeError: can't start new thread``,
    its ``__cause__``); the message names the thread limit this process is at and the fix
    (:func:`uringstack.probe.threadlimits.start_thread`)."""


class WrongThreadError(UringStackError, RuntimeError):
    """A SINGLE_ISSUER ring was used from a thread other than the one that created it."""


class ForkedChildError(UringStackError, RuntimeError):
    """A stack, handle or ring was used in a ``fork()`` child of the process that opened it.

    The child shares the parent's rings, registered files and thread-pool
    state, so using them would steal the parent's completions or break its
    handles; the child must open its own stack."""
