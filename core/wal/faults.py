"""Fault injection for tests: a simulated faulty disk (FaultyIO), failing segment
syscalls (SegmentFaults), a recording and fault-injecting ring (RecordingRing).

:class:`FaultyIO` wraps the :class:`~uringstack.ring.io_backend.FileIO` of each
segment handle (``Wal.open(..., wrap_io=FaultyIO(plan))``): the real
:class:`~uringstack.stack.handle.FileHandle` (short-write loop, error checks) runs
on top and the real backend underneath, so a test can make the Nth write or
flush fail, come back short, or tear (part of the bytes land, then the
"machine dies": every later call fails, as nothing reaches a dead disk).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uringstack.ring.io_backend import FileIO, SyncMethod
from uringstack.ring.pending import CompletedPending, Pending

from . import segment
from .segment import SegmentSyscalls


@dataclass
class FaultPlan:
    """Which calls misbehave; call numbers count from 0 per primitive.

    ``short_writes`` maps a write number to the byte count it returns.
    ``torn_writes`` maps a write number to the bytes that land before the crash.
    ``sync_errors`` counts the flushes of ``sync="fdatasync"`` writes.
    """

    write_errors: dict[int, int] = field(default_factory=dict)  # call -> errno
    sync_errors: dict[int, int] = field(default_factory=dict)  # call -> errno
    short_writes: dict[int, int] = field(default_factory=dict)
    torn_writes: dict[int, int] = field(default_factory=dict)


class FaultyIO:
    """A :class:`FaultPlan` applied to every segment's FileIO (a ``wrap_io`` for :meth:`Wal.open`).

    Call counts run across segments.  ``calls`` records ``("write", offset,
    length)`` and ``("fdatasync", 0, 0)`` in the order the backend was asked.
    """

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.plan = plan if plan is not None else FaultPlan()
        self.write_calls = 0
        self.sync_calls = 0
        self.crashed = False
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, io: FileIO) -> FileIO:
        return _FaultyFileIO(io, self)

    def write_durable(self, io: FileIO, offset: int, buf: memoryview, sync: SyncMethod) -> list[int]:
        """One durable write through *io* with the plan applied; the results io_uring would report."""
        n = self.write_calls
        self.write_calls += 1
        self.calls.append(("write", offset, len(buf)))
        cancelled = [-errno.ECANCELED] if sync == "fdatasync" else []
        if self.crashed:
            return [-errno.EIO, *cancelled]
        if n in self.plan.write_errors:
            return [-self.plan.write_errors[n], *cancelled]
        if n in self.plan.torn_writes:
            keep = min(self.plan.torn_writes[n], len(buf))
            if keep:  # what landed is on disk; the rest never will be
                io.start_write_durable(offset, buf[:keep], "fdatasync", wait=True).wait()
            self.crashed = True
            return [-errno.EIO, *cancelled]
        if n in self.plan.short_writes:
            buf = buf[: max(0, min(self.plan.short_writes[n], len(buf)))]
            if not len(buf):
                return [0, *cancelled]
            written = io.start_write_durable(offset, buf, sync, wait=True)
            return [written.wait()[0], *cancelled]  # a flush linked to a short write never runs
        if sync == "dsync":
            return io.start_write_durable(offset, buf, sync, wait=True).wait()
        res = io.start_write_durable(offset, buf, sync, wait=True).wait()
        k = self.sync_calls
        self.sync_calls += 1
        self.calls.append(("fdatasync", 0, 0))
        if k in self.plan.sync_errors:
            res = [res[0], -self.plan.sync_errors[k]]
        return res


class WrappedFileIO:
    """A FileIO that hands everything to *inner*: subclass it and override what a test changes."""

    def __init__(self, inner: FileIO) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.path = inner.path
        self.fd = inner.fd
        self.direct = inner.direct
        self.block_size = inner.block_size

    @property
    def fixed_index(self) -> int | None:
        return self.inner.fixed_index

    @fixed_index.setter
    def fixed_index(self, value: int | None) -> None:
        self.inner.fixed_index = value

    def start_rw(self, write: bool, offsets: Sequence[int], buffers: Sequence[Any], *, wait: bool = False) -> Pending:
        return self.inner.start_rw(write, offsets, buffers, wait=wait)

    def start_sync(self, datasync: bool, *, wait: bool = False) -> Pending:
        return self.inner.start_sync(datasync, wait=wait)

    def start_write_durable(self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False) -> Pending:
        return self.inner.start_write_durable(offset, buffer, sync, wait=wait)

    def size(self) -> int:
        return self.inner.size()

    def close(self) -> None:
        self.inner.close()


class _FaultyFileIO(WrappedFileIO):
    """Durable writes go through :meth:`FaultyIO.write_durable`."""

    def __init__(self, inner: FileIO, faults: FaultyIO) -> None:
        super().__init__(inner)
        self.faults = faults

    def start_write_durable(self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False) -> Pending:
        view = memoryview(buffer).cast("B")
        return CompletedPending(self.faults.write_durable(self.inner, offset, view, sync))


class SegmentFaults(SegmentSyscalls):
    """The segment syscalls, recorded in order, with chosen calls failing.

    ``log`` gets ``(operation, file name)`` per call (``fsync`` is the
    directory's).  ``fail`` maps ``(operation, call number)`` to an errno;
    call numbers count from 0 per operation.  Install it with
    :func:`segment_faults`.
    """

    def __init__(self, fail: dict[tuple[str, int], int] | None = None) -> None:
        self.fail = dict(fail or {})
        self.log: list[tuple[str, str]] = []
        self._calls: dict[str, int] = {}
        self._names: dict[int, str] = {}

    def _enter(self, op: str, name: str) -> None:
        n = self._calls.get(op, 0)
        self._calls[op] = n + 1
        self.log.append((op, name))
        err = self.fail.get((op, n))
        if err is not None:
            raise OSError(err, f"injected {op} error: {os.strerror(err)}")

    def open(self, fds: list[int], path: Path, flags: int, mode: int = 0o644) -> int:
        self._enter("open", path.name)
        fd = super().open(fds, path, flags, mode)
        self._names[fd] = path.name
        return fd

    def fallocate(self, fd: int, offset: int, length: int) -> None:
        self._enter("fallocate", self._names.get(fd, "?"))
        super().fallocate(fd, offset, length)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self._enter("pwrite", self._names.get(fd, "?"))
        return super().pwrite(fd, data, offset)

    def fdatasync(self, fd: int) -> None:
        self._enter("fdatasync", self._names.get(fd, "?"))
        super().fdatasync(fd)

    def rename(self, src: Path, dst: Path) -> None:
        self._enter("rename", f"{src.name}->{dst.name}")
        super().rename(src, dst)

    def fsync(self, fd: int) -> None:
        self._enter("fsync", "<dir>")
        super().fsync(fd)


@contextlib.contextmanager
def segment_faults(faults: SegmentFaults) -> Iterator[SegmentFaults]:
    """Route segment creation through *faults* for the duration of the block."""
    old = segment.SYSCALLS
    segment.SYSCALLS = faults
    try:
        yield faults
    finally:
        segment.SYSCALLS = old


@dataclass
class SubmittedOp:
    """One SQE as it was handed to the kernel, and what its completion said."""

    opcode: str  # Op name: WRITE, FSYNC, ...
    fd: int
    length: int
    offset: int
    op_flags: int  # rw_flags / fsync_flags
    sqe_flags: int  # IOSQE_*
    result: int | None = None  # as returned to the caller (after any injected fault)


class RecordingRing:
    """Records every SQE submitted to a :class:`~uringstack.ring.Ring` (opcode, flags,
    lengths) in order, with its result, and can replace results to inject faults
    on the io_uring path.  :meth:`install` hooks the ring's submit and wait (the
    ring stays the real one, used by whatever handle holds it); :meth:`remove`
    restores them.

    ``results`` maps ``(opcode name, call number)`` to the result the caller
    sees instead of the kernel's (e.g. ``("FSYNC", 1): -errno.EIO``); call
    numbers count from 0 per opcode.
    """

    def __init__(self, results: dict[tuple[str, int], int] | None = None) -> None:
        self.results = dict(results or {})
        self.submissions: list[list[SubmittedOp]] = []
        self._calls: dict[str, int] = {}
        self._pending: dict[int, tuple[list[SubmittedOp], list[int | None]]] = {}
        self._ring: Any = None

    def install(self, ring: Any) -> RecordingRing:
        """Hook *ring*'s ``submit_columns`` (every submission goes through it) and ``wait``
        (instance attributes shadow the methods)."""
        from uringstack.ring.flags import Op

        real_submit, real_wait = ring.submit_columns, ring.wait
        self._ring = ring

        def submit_columns(cols: Any, n: int | None = None, keep: Any = (), *, wait: bool = False) -> Any:
            k = cols.n if n is None else n
            cols.n = k
            opcodes, fds, lens, offs, op_flags, sqe_flags = (
                cols.get(c) for c in ("opcodes", "fds", "lens", "offs", "op_flags", "sqe_flags")
            )
            ops, overrides = [], []
            for i in range(k):
                name = Op(opcodes[i]).name
                calls = self._calls.get(name, 0)
                self._calls[name] = calls + 1
                ops.append(SubmittedOp(name, fds[i], lens[i], offs[i], op_flags[i], sqe_flags[i]))
                overrides.append(self.results.get((name, calls)))
            self.submissions.append(ops)
            batch = real_submit(cols, k, keep, wait=wait)
            self._pending[id(batch)] = (ops, overrides)
            return batch

        def wait_batch(batch: Any) -> list[int]:
            got = list(real_wait(batch))
            ops, overrides = self._pending.pop(id(batch), ([], []))
            for i, op in enumerate(ops):
                override = overrides[i]
                if override is not None:
                    got[i] = override
                    # in the batch too, as the kernel's CQE would be: a caller that reads
                    # batch.results after the wait (a flush across two rings) sees it
                    batch.results_cdata[i] = override
                op.result = got[i]
            return got

        ring.submit_columns = submit_columns
        ring.wait = wait_batch
        return self

    def remove(self) -> None:
        """Give the ring its own submit and wait back."""
        if self._ring is not None:
            for name in ("submit_columns", "wait"):
                with contextlib.suppress(AttributeError):
                    delattr(self._ring, name)
            self._ring = None
