"""Fault injection for tests: a simulated faulty disk (FaultyBackend), failing
segment syscalls (SegmentFaults), a recording and fault-injecting ring (RecordingRing).

It is the real :class:`~uringstack.wal.io.PosixBackend` (same short-write and
flush logic) with its two primitives replaced, so a test can make the Nth
write or flush fail, come back short, or tear (part of the bytes land, then
the "machine dies": every later call fails, as nothing reaches a dead disk).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import segment
from .io import PosixBackend, SyncMethod
from .segment import SegmentSyscalls


@dataclass
class FaultPlan:
    """Which calls misbehave; call numbers count from 0 per primitive.

    ``short_writes`` maps a write number to the byte count it returns.
    ``torn_writes`` maps a write number to the bytes that land before the crash.
    """

    write_errors: dict[int, int] = field(default_factory=dict)  # call -> errno
    sync_errors: dict[int, int] = field(default_factory=dict)  # call -> errno
    short_writes: dict[int, int] = field(default_factory=dict)
    torn_writes: dict[int, int] = field(default_factory=dict)


class FaultyBackend(PosixBackend):
    """PosixBackend plus a :class:`FaultPlan`; defaults to write+fdatasync so both ops exist."""

    name = "faulty"

    def __init__(self, plan: FaultPlan | None = None, sync: SyncMethod = "fdatasync") -> None:
        super().__init__(sync)
        self.plan = plan if plan is not None else FaultPlan()
        self.write_calls = 0
        self.sync_calls = 0
        self.crashed = False

    def _pwrite(self, fd: int, buf: memoryview, offset: int) -> int:
        n = self.write_calls
        self.write_calls += 1
        if self.crashed:
            raise OSError(errno.EIO, "simulated disk is gone")
        if n in self.plan.write_errors:
            err = self.plan.write_errors[n]
            raise OSError(err, f"injected write error: {os.strerror(err)}")
        if n in self.plan.torn_writes:
            keep = min(self.plan.torn_writes[n], len(buf))
            if keep:
                os.pwrite(fd, buf[:keep], offset)
                os.fdatasync(fd)  # what landed is on disk; the rest never will be
            self.crashed = True
            raise OSError(errno.EIO, f"injected torn write: {keep} of {len(buf)} bytes landed")
        if n in self.plan.short_writes:
            buf = buf[: max(0, min(self.plan.short_writes[n], len(buf)))]
            if not len(buf):
                return 0
        return super()._pwrite(fd, buf, offset)

    def _fdatasync(self, fd: int) -> None:
        n = self.sync_calls
        self.sync_calls += 1
        if self.crashed:
            raise OSError(errno.EIO, "simulated disk is gone")
        if n in self.plan.sync_errors:
            err = self.plan.sync_errors[n]
            raise OSError(err, f"injected fdatasync error: {os.strerror(err)}")
        super()._fdatasync(fd)


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

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        self._enter("open", path.name)
        fd = super().open(path, flags, mode)
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
    """Wraps a :class:`~uringstack.ring.Ring`: records every SQE submitted through
    ``submit_arrays`` (opcode, flags, lengths) in order, with its result, and can
    replace results to inject faults on the io_uring path.

    ``results`` maps ``(opcode name, call number)`` to the result the caller
    sees instead of the kernel's (e.g. ``("FSYNC", 1): -errno.EIO``); call
    numbers count from 0 per opcode.  Everything else is the real ring.
    """

    def __init__(self, ring: Any, results: dict[tuple[str, int], int] | None = None) -> None:
        self.ring = ring
        self.results = dict(results or {})
        self.submissions: list[list[SubmittedOp]] = []
        self._calls: dict[str, int] = {}
        self._pending: dict[int, tuple[list[SubmittedOp], list[int | None]]] = {}

    def submit_arrays(self, n: int, arrays: Any, keep: Any = (), *, wait: bool = False) -> Any:
        from ..flags import Op

        opcodes, fds, _addrs, lens, offs, op_flags, sqe_flags, _bufs = arrays
        ops, overrides = [], []
        for i in range(n):
            name = Op(opcodes[i]).name
            k = self._calls.get(name, 0)
            self._calls[name] = k + 1
            ops.append(SubmittedOp(name, fds[i], lens[i], offs[i], op_flags[i], sqe_flags[i]))
            overrides.append(self.results.get((name, k)))
        self.submissions.append(ops)
        batch = self.ring.submit_arrays(n, arrays, keep, wait=wait)
        self._pending[id(batch)] = (ops, overrides)
        return batch

    def wait(self, batch: Any) -> list[int]:
        got = list(self.ring.wait(batch))
        ops, overrides = self._pending.pop(id(batch), ([], []))
        for i, op in enumerate(ops):
            if overrides[i] is not None:
                got[i] = overrides[i]
            op.result = got[i]
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ring, name)
