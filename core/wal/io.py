"""I/O backends: how one staged write becomes durable.

The writer hands a backend one contiguous, block-aligned buffer per flush and
waits for :meth:`WalBackend.write_durable` to return; only then are the
records in it acknowledged.  Two ways to make a write durable are offered:

``dsync``
    one write with ``RWF_DSYNC`` (a FUA write or write+flush in the kernel,
    one syscall / one SQE); what fio's ``--sync=dsync`` measures.
``fdatasync``
    a write then an fdatasync.  On io_uring the two SQEs are linked with
    ``IOSQE_IO_LINK``: io_uring does not order SQEs, and an unlinked flush
    may run before the write and acknowledge nothing.

A short write is completed with further writes (a flush linked to a short
write is cancelled by the kernel, it never ran, so re-issuing it is not a
retry).  Any error propagates; the writer then fails the log and never calls
the backend again for that log: a failed flush must not be retried.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any, Literal, Protocol, runtime_checkable

from ..errors import UringIOError

SyncMethod = Literal["dsync", "fdatasync"]


@runtime_checkable
class WalBackend(Protocol):
    """What the WAL needs from an I/O path."""

    name: str

    def write_durable(self, fd: int, buf: memoryview, offset: int) -> None:
        """Write all of *buf* at *offset* of *fd* and return only once it is durable.

        Raises :class:`OSError` (with the kernel's errno) on any failure.
        """
        ...

    def counters(self) -> dict[str, int]:
        """``flushes`` (write_durable calls), ``writes``, ``syncs`` and ``bytes`` so far."""
        ...

    def close(self) -> None:
        """Release what the backend owns (not what it was handed)."""
        ...


class _Counting:
    def __init__(self) -> None:
        self._c = {"flushes": 0, "writes": 0, "syncs": 0, "bytes": 0}
        self.reason = ""  # why this backend was chosen (set by make_backend's auto)

    def counters(self) -> dict[str, int]:
        return dict(self._c)


class PosixBackend(_Counting):
    """``os.pwrite``/``os.pwritev(RWF_DSYNC)`` and ``os.fdatasync``: the portable path."""

    name = "posix"

    def __init__(self, sync: SyncMethod = "dsync") -> None:
        super().__init__()
        if sync == "dsync" and not hasattr(os, "RWF_DSYNC"):
            sync = "fdatasync"
        self.sync: SyncMethod = sync

    # The two primitives are separate methods so a fault-injecting subclass can
    # replace them while the short-write and ordering logic stays the real one.
    def _pwrite(self, fd: int, buf: memoryview, offset: int) -> int:
        if self.sync == "dsync":
            return os.pwritev(fd, [buf], offset, os.RWF_DSYNC)
        return os.pwrite(fd, buf, offset)

    def _fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def write_durable(self, fd: int, buf: memoryview, offset: int) -> None:
        self._c["flushes"] += 1
        done, total = 0, len(buf)
        while done < total:
            try:
                n = self._pwrite(fd, buf[done:], offset + done)
            except OSError as e:
                # name the primitive: the writer reports it as the failing operation
                raise UringIOError(
                    e.errno or errno.EIO,
                    "pwrite",
                    None,
                    f"{total - done} bytes at offset {offset + done}: {e.strerror or e}",
                ) from e
            self._c["writes"] += 1
            if n <= 0:
                raise UringIOError(errno.EIO, "pwrite", None, f"wrote {n} of {total - done} bytes")
            done += n
            self._c["bytes"] += n
        if self.sync == "fdatasync":
            self._c["syncs"] += 1
            try:
                self._fdatasync(fd)
            except OSError as e:
                raise UringIOError(e.errno or errno.EIO, "fdatasync", None, str(e.strerror or e)) from e

    def close(self) -> None:
        pass


class UringBackend(_Counting):
    """Writes through an io_uring :class:`~uringstack.ring.Ring`.

    Pass *ring* to share a ring the stack built (it is then not closed here);
    otherwise the backend creates and owns a small one.  The ring is used from
    the WAL's flusher thread only, so it must not be SINGLE_ISSUER-bound to
    another thread.
    """

    name = "uring"

    def __init__(self, ring: object | None = None, sync: SyncMethod = "dsync") -> None:
        super().__init__()
        from ..ring import Ring  # deferred: the posix path must work without cffi

        self._owns_ring = ring is None
        self.ring: Ring = Ring(entries=8) if ring is None else ring  # type: ignore[assignment]
        self.sync: SyncMethod = sync
        self._lock = threading.Lock()
        self._cols = self._columns()

    def _columns(self) -> list[Any]:
        """Submission columns built once and refilled per flush.

        Building eight cdata arrays per flush costs more CPU than the rest of
        the submit; reusing them is safe because a flush waits for its
        completions before the next one refills them.
        """
        from ..flags import FSYNC_DATASYNC, Op, SqeFlag
        from ..native import ffi

        n = 1 if self.sync == "dsync" else 2
        cols = [
            ffi.new("uint8_t[]", [int(Op.WRITE), int(Op.FSYNC)][:n]),
            ffi.new("int32_t[]", n),
            ffi.new("uint64_t[]", n),
            ffi.new("uint32_t[]", n),
            ffi.new("uint64_t[]", n),
            ffi.new("uint32_t[]", [os.RWF_DSYNC] if n == 1 else [0, FSYNC_DATASYNC]),
            ffi.new("uint8_t[]", [0] if n == 1 else [int(SqeFlag.IO_LINK), 0]),
            ffi.new("uint16_t[]", n),
        ]
        return cols

    def write_durable(self, fd: int, buf: memoryview, offset: int) -> None:
        from ..native import ffi

        self._c["flushes"] += 1
        pin = ffi.from_buffer(buf)
        base = int(ffi.cast("uintptr_t", pin))
        done, total = 0, len(buf)
        n = 1 if self.sync == "dsync" else 2
        with self._lock:
            cols = self._cols
            _ops, fds, addrs, lens, offs = cols[:5]
            fds[0] = fds[n - 1] = fd
            while done < total:
                addr, left, off = base + done, total - done, offset + done
                addrs[0], lens[0], offs[0] = addr, left, off
                # one syscall submits the write (and its linked flush) and waits
                res = self.ring.wait(self.ring.submit_arrays(n, cols, (pin, buf), wait=True))
                w = res[0]
                f = res[1] if n == 2 else 0
                self._c["writes"] += 1
                if w < 0:
                    raise UringIOError(-w, "write", None, f"{left} bytes at offset {off}")
                if w == 0:
                    raise UringIOError(errno.EIO, "write", None, f"wrote 0 of {left} bytes")
                done += w
                self._c["bytes"] += w
                if n == 2 and done == total:
                    self._c["syncs"] += 1
                    if f < 0:
                        raise UringIOError(-f, "fdatasync")
                # w < left: the linked flush was cancelled (never ran); the loop
                # writes the rest and links a fresh flush to it.

    def close(self) -> None:
        if self._owns_ring:
            self.ring.close()


BackendSpec = Literal["auto", "uring", "posix"]


def backend_for_stack(stack: Any, sync: SyncMethod = "dsync", core: int | None = None) -> WalBackend:
    """The WAL backend that writes through *stack*: its worker's storage ring, or
    posix where the stack has no io_uring (the fallback plan)."""
    workers = [w for w in stack.workers if core is None or w.cpu == core]
    if not workers:
        raise ValueError(f"no worker on CPU {core}")
    ring = workers[0].rings.get("storage")
    if ring is None:
        return PosixBackend(sync)
    from ..flags import SetupFlag

    if ring.flags & SetupFlag.SQPOLL:
        # Measured on kernel 6.18 (2 vCPU VM): O_DSYNC writes through an SQPOLL
        # ring complete in milliseconds (fio --sqthread_poll=1: 327 writes/s vs
        # 7,080 without), so durable appends get a plain ring of their own.
        return UringBackend(sync=sync)
    return UringBackend(ring=ring, sync=sync)


def durable_uring_punts(
    directory: str | os.PathLike[str], *, sysfs_root: str | os.PathLike[str] = "/sys"
) -> str | None:
    """Why a durable io_uring write would be slow for files in *directory*, or None.

    On a disk with a volatile write cache and no FUA, every O_DSYNC write
    needs a separate cache flush, which io_uring cannot issue without
    blocking: the kernel hands each durable write to an io-wq thread.
    Measured on such a disk (virtio, kernel 6.18): one 4 KiB appender had p99
    1.26x fio's through io_uring but 1.03x through pwrite, and 32 appender
    threads did 36k vs 58k records/s (BENCHMARKS.md).
    """
    from ..blockdev import backing_disk, disk_queue_attr

    try:
        disk, _ = backing_disk(directory, sysfs_root=sysfs_root)
    except OSError:
        return None
    if disk is None:
        return None
    cache = disk_queue_attr(disk, "write_cache", sysfs_root=sysfs_root)
    if cache == "write back" and disk_queue_attr(disk, "fua", sysfs_root=sysfs_root) == "0":
        return (
            f"{disk} has a volatile write cache and no FUA, so each durable io_uring write is punted "
            "to an io-wq thread; pwrite + O_DSYNC measured faster there"
        )
    return None


def make_backend(
    spec: BackendSpec | WalBackend, sync: SyncMethod = "dsync", directory: str | os.PathLike[str] | None = None
) -> WalBackend:
    """Build the backend *spec* names, or return *spec* if it already is one.

    ``auto`` picks io_uring when a ring can be created here (it cannot under
    Docker's default seccomp profile, with ``io_uring_disabled`` set, or on a
    kernel without io_uring) and the log's disk does not make durable io_uring
    writes slow (:func:`durable_uring_punts`); posix otherwise.  The choice
    and its reason are in ``backend.reason``.
    """
    if not isinstance(spec, str):
        return spec
    if spec == "posix":
        return PosixBackend(sync)
    if spec == "uring":
        return UringBackend(sync=sync)
    if spec == "auto":
        slow = durable_uring_punts(directory) if directory is not None else None
        if slow is not None:
            posix = PosixBackend(sync)
            posix.reason = f"auto: posix, because {slow}"
            return posix
        try:
            uring = UringBackend(sync=sync)
        except (OSError, ImportError) as exc:
            posix = PosixBackend(sync)
            posix.reason = f"auto: posix, because io_uring is unusable here ({exc})"
            return posix
        uring.reason = "auto: io_uring"
        return uring
    raise ValueError(f"unknown WAL backend {spec!r} (allowed: auto, uring, posix)")
