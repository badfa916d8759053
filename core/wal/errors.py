"""Errors of the write-ahead log."""

from __future__ import annotations

import errno as _errno
import os

from ..errors import RingClosedError, UringStackError


class WalFailedError(OSError):
    """The log hit a write or flush error and accepts nothing more.

    ``errno`` is the original error (EIO, ENOSPC, ...).  A failed fdatasync is
    never retried (PostgreSQL's "fsyncgate": after a failed flush the page cache
    may have dropped the dirty pages, so a retry can report success for data
    that is gone).  Reopen the log to recover what is on disk.
    """

    def __init__(self, err: int, op: str, detail: str = "") -> None:
        msg = f"WAL failed: {op}: {os.strerror(err)}"
        if detail:
            msg += f" ({detail})"
        super().__init__(err, msg)
        self.op = op
        self.detail = detail


class WalClosedError(UringStackError, RuntimeError):
    """The log was used after ``close()``."""


class WalCorruptionError(UringStackError, ValueError):
    """The log on disk is damaged in a way the recovery mode does not accept."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"WAL corruption in {path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


def failed_from(exc: BaseException, op: str, where: str = "") -> WalFailedError:
    """Wrap any backend exception as the log's failure, keeping its errno.

    *op* is the writer's step (``write``, ``roll``); an exception that names
    its own operation (``op`` attribute, as :class:`~uringstack.errors.UringIOError`
    has: ``pwrite``, ``fdatasync``) is reported under that name instead, so an
    fdatasync error never reads as a write error.
    """
    if isinstance(exc, WalFailedError):
        return exc
    if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: cut short, not an I/O error
        detail = f"interrupted by {type(exc).__name__}: what reached the disk is unknown"
        return WalFailedError(_errno.EINTR, op, f"{detail}; {where}" if where else detail)
    if isinstance(exc, RingClosedError):  # no I/O error: the log's stack (or handle) went first
        detail = f"the stack the log writes through was closed before the log ({exc})"
        return WalFailedError(_errno.EBADF, op, f"{detail}; {where}" if where else detail)
    err = exc.errno if isinstance(exc, OSError) and exc.errno else _errno.EIO
    own = getattr(exc, "op", None)
    detail = str(getattr(exc, "detail", "")) if own else str(exc)
    filename = getattr(exc, "filename", None) if own else None
    if filename:
        detail = f"{filename}: {detail}" if detail else str(filename)
    if where:
        detail = f"{detail}; {where}" if detail else where
    return WalFailedError(err, own if isinstance(own, str) and own else op, detail)
