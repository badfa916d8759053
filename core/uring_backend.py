"""The core's io_uring backend: a target served by a worker's storage ring.

Used for every target no plugin claims (``uringstack_select_backend``).  One
call turns a whole batch into parallel C arrays and one submission; reads and
writes on registered-buffer leases of the same ring become
READ_FIXED/WRITE_FIXED, and a handle with a fixed-file slot is addressed by
slot with IOSQE_FIXED_FILE.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from uringstack import aio
from uringstack.buffers import RegisteredBuffer, address_of, check_alignment, pin_buffers
from uringstack.flags import FSYNC_DATASYNC, Op, SqeFlag
from uringstack.io_backend import SyncMethod
from uringstack.native import ffi, lib
from uringstack.ring import Batch, Ring

if TYPE_CHECKING:
    from uringstack.stack import Worker
    from uringstack.types import Target


# Linux moves at most MAX_RW_COUNT (INT_MAX rounded down to a page) bytes per
# read or write and returns a short count for the rest, as pread/pwrite do;
# an SQE's length is a u32.  Longer buffers are submitted with this length, and
# the handle completes the short transfer like any other (page aligned, so
# O_DIRECT stays aligned).
MAX_RW_COUNT = 0x7FFFF000

# RWF_DSYNC from linux/fs.h: the write is durable when it completes (FUA, or write + flush).
RWF_DSYNC = 0x2


class UringPending:
    """A batch in flight on a ring."""

    __slots__ = ("batch", "n", "ring")

    def __init__(self, ring: Ring, batch: Batch) -> None:
        self.ring = ring
        self.batch = batch
        self.n = batch.n

    def done(self) -> bool:
        if not self.batch.finished and not self.ring.closed:
            self.ring.try_reap()
        return self.batch.finished

    def wait(self) -> list[int]:
        return self.ring.wait(self.batch)

    async def wait_async(self) -> list[int]:
        return await aio.wait_batch(self.ring, self.batch)


class UringFileIO:
    """A file or block device served by a plain io_uring ring."""

    backend = "uring"

    def __init__(self, ring: Ring, fd: int, target: Target, block_size: int, worker: Worker | None = None) -> None:
        self.ring = ring
        self.fd = fd
        self.path = target.path
        self.direct = target.direct
        self.block_size = block_size
        self.fixed_index: int | None = None
        self.worker = worker
        self.completion_hook = worker.completion_hook if worker is not None else None

    def _fd_and_flags(self) -> tuple[int, int]:
        if self.fixed_index is not None:
            return self.fixed_index, int(SqeFlag.FIXED_FILE)
        return self.fd, 0

    def start_rw(
        self, write: bool, offsets: Sequence[int], buffers: Sequence[Any], *, wait: bool = False
    ) -> UringPending:
        n = len(offsets)
        if n != len(buffers):
            raise ValueError(f"{n} offsets but {len(buffers)} buffers")
        ring_id = id(self.ring)
        plain, fixed = (Op.WRITE, Op.WRITE_FIXED) if write else (Op.READ, Op.READ_FIXED)
        keep, addrs, lens = pin_buffers(buffers, writable=not write)
        if n and max(lens) > MAX_RW_COUNT:
            if self.direct:  # the rest is submitted later: check the whole length now
                for i, length in enumerate(lens):
                    check_alignment(
                        "write" if write else "read", self.path, addrs[i], length, offsets[i], self.block_size
                    )
            lens = [min(length, MAX_RW_COUNT) for length in lens]
        leases = [b for b in buffers if isinstance(b, RegisteredBuffer)]
        # leases registered with this very ring become READ_FIXED/WRITE_FIXED
        slots = [b.index if isinstance(b, RegisteredBuffer) and b.ring_id == ring_id else -1 for b in buffers]
        any_fixed = bool(leases) and max(slots) >= 0
        opcodes = [fixed if i >= 0 else plain for i in slots] if any_fixed else [plain] * n
        fd, sqe_flags = self._fd_and_flags()
        arrays = [
            ffi.new("uint8_t[]", opcodes),
            ffi.new("int32_t[]", [fd] * n),
            ffi.new("uint64_t[]", addrs),
            ffi.new("uint32_t[]", lens),
            ffi.new("uint64_t[]", list(offsets)),
            ffi.NULL,
            ffi.new("uint8_t[]", [sqe_flags] * n) if sqe_flags else ffi.NULL,
            ffi.new("uint16_t[]", [max(i, 0) for i in slots]) if any_fixed else ffi.NULL,
        ]
        if self.direct:
            bad = lib.us_first_misaligned(arrays[2], arrays[3], arrays[4], n, self.block_size)
            if bad >= 0:
                check_alignment(
                    "write" if write else "read", self.path, addrs[bad], lens[bad], offsets[bad], self.block_size
                )
        batch = self.ring.submit_arrays(n, arrays, keep, wait=wait)
        for lease in leases:
            (lease.parent or lease).batch = batch
        if self.completion_hook is not None:
            batch.add_done_callback(self.completion_hook("write" if write else "read", self.ring))
        return UringPending(self.ring, batch)

    def start_sync(self, datasync: bool, *, wait: bool = False) -> UringPending:
        fd, sqe_flags = self._fd_and_flags()
        batch = self.ring.submit(
            Op.FSYNC, fd, n=1, op_flags=FSYNC_DATASYNC if datasync else 0, sqe_flags=sqe_flags or None, wait=wait
        )
        if self.completion_hook is not None:
            batch.add_done_callback(self.completion_hook("fdatasync" if datasync else "fsync", self.ring))
        return UringPending(self.ring, batch)

    def start_write_durable(self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False) -> UringPending:
        pin = ffi.from_buffer(buffer)
        addr, length = address_of(pin), len(pin)
        if self.direct:
            check_alignment("write", self.path, addr, length, offset, self.block_size)
        length = min(length, MAX_RW_COUNT)
        fd, fixed_flag = self._fd_and_flags()
        if sync == "dsync":
            batch = self.ring.submit(
                Op.WRITE, fd, n=1, addrs=addr, lens=length, offsets=offset, op_flags=RWF_DSYNC,
                sqe_flags=fixed_flag or None, keep=(pin, buffer), wait=wait,
            )  # fmt: skip
        else:
            # io_uring does not order SQEs: the flush is linked to the write so it
            # starts only after the write completed (and is cancelled if the write
            # failed or came back short).
            batch = self.ring.submit(
                [Op.WRITE, Op.FSYNC], fd, n=2, addrs=[addr, 0], lens=[length, 0], offsets=[offset, 0],
                op_flags=[0, FSYNC_DATASYNC], sqe_flags=[int(SqeFlag.IO_LINK) | fixed_flag, fixed_flag],
                keep=(pin, buffer), wait=wait,
            )  # fmt: skip
        if self.completion_hook is not None:
            batch.add_done_callback(self.completion_hook("write_durable", self.ring))
        return UringPending(self.ring, batch)

    def size(self) -> int:
        return _fd_size(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _fd_size(fd: int) -> int:
    st = os.fstat(fd)
    if st.st_size or not (st.st_mode & 0o060000):
        return st.st_size
    return os.lseek(fd, 0, os.SEEK_END)  # block devices report st_size 0


class UringBackend:
    """Factory: serves any file or block device on the worker's storage ring."""

    name = "uring"

    def __init__(self, reason: str = "io_uring storage ring of the worker") -> None:
        self.reason = reason

    def open(self, target: Target, worker: Worker) -> UringFileIO:
        from uringstack.targets import logical_block_size, open_target

        fd = open_target(target)
        return UringFileIO(worker.rings["storage"], fd, target, logical_block_size(target, fd), worker)
