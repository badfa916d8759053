"""IOPOLL support: which devices can poll, and a file/block device read through an IOPOLL ring.

``IORING_SETUP_IOPOLL`` makes the kernel busy-poll the device's completion
queue instead of waiting for an interrupt.  It only works for O_DIRECT
reads/writes on a block device (or a file on a filesystem over one) whose
driver has poll queues: ``/sys/block/<disk>/queue/io_poll`` is 1 (NVMe with
``nvme.poll_queues=N``).  On anything else the kernel either refuses the I/O
(EOPNOTSUPP) or spins without finding completions, so the check here decides
from sysfs, and tells why when the answer is no.

Reaping strategy (see also :mod:`uringstack.pipeline`): an
IOPOLL ring posts completions only while some task polls the device inside
``io_uring_enter(IORING_ENTER_GETEVENTS)``.  :class:`IopollFile` therefore
waits with ``Ring.wait`` (liburing ``io_uring_wait_cqe`` -> GETEVENTS), never
with a CQ peek loop, and it never puts fsync, buffered I/O or anything
non-pollable on that ring (the kernel would fail it: IOPOLL rings carry only
pollable O_DIRECT reads and writes).  Durability (a flush of the device's
write cache) belongs on a normal ring or an NVMe Flush command.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from array import array
from pathlib import Path
from typing import Any

from uringstack.blockdev import backing_disk, blkdev_logical_block_size, read_attr
from uringstack.errors import AlignmentError, ShortIOError, UringIOError
from uringstack.flags import Op, SetupFlag
from uringstack.native import ffi
from uringstack.pipeline import filled, first_not_equal, from_bytes, run_pipelined
from uringstack.ring import Ring
from uringstack.ring_params import RingParams

# <linux/fs.h>: BLKGETSIZE64 = _IOR(0x12, 114, size_t)
BLKGETSIZE64 = (2 << 30) | (8 << 16) | (0x12 << 8) | 114


def device_supports_poll(
    path: str | os.PathLike[str], *, sysfs_root: str | os.PathLike[str] = "/sys"
) -> tuple[bool, str]:
    """Can O_DIRECT I/O on *path* use an IOPOLL ring?  Returns ``(answer, reason)``.

    *path* is a block device (partitions are resolved to their disk) or a
    file, whose filesystem's device is used.  Device-mapper and md devices
    never poll (they do not pass polling through here); for the rest the
    disk's ``queue/io_poll`` decides.
    """
    root = Path(sysfs_root)
    try:
        name, why = backing_disk(path, sysfs_root=root)
    except OSError as exc:
        return False, f"cannot stat {path}: {exc.strerror}"
    if name is None:
        return False, why
    disk = root / "block" / name
    if (disk / "dm").is_dir():
        dm_name = read_attr(disk / "dm" / "name") or name
        return False, f"{why}, a device-mapper device ({dm_name}): no poll queues"
    if (disk / "md").is_dir():
        return False, f"{why}, an md RAID device: no poll queues"
    io_poll = read_attr(disk / "queue" / "io_poll")
    if io_poll is None:
        return False, f"{why}, which has no queue/io_poll attribute"
    if io_poll.strip() == "1":
        return True, f"{why}: queue/io_poll is 1"
    driver_link = disk / "device" / "driver"
    driver = os.path.basename(os.path.realpath(driver_link)) if driver_link.exists() else None
    hint = ""
    if name.startswith("nvme"):
        hint = "; load the nvme driver with poll_queues=N (e.g. nvme.poll_queues=1) to enable it"
    elif driver:
        hint = f" (driver {driver} has no poll queues)"
    return False, f"{why}: queue/io_poll is {io_poll}{hint}"


def device_size_bytes(fd: int) -> int:
    """Size in bytes of an open block device (BLKGETSIZE64)."""
    buf = fcntl.ioctl(fd, BLKGETSIZE64, struct.pack("Q", 0))
    return int(struct.unpack("Q", buf)[0])


class IopollFile:
    """A block device (or file on a pollable disk) read and written O_DIRECT through an IOPOLL ring.

    The ring is created with IOPOLL *required*: if the kernel drops it the
    constructor fails instead of quietly running interrupt-driven.  Offsets,
    lengths and buffer addresses must be multiples of the logical block size
    (:class:`AlignmentError` before anything is submitted).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        writable: bool = False,
        entries: int = 64,
        check_poll: bool = True,
        sysfs_root: str | os.PathLike[str] = "/sys",
    ) -> None:
        self.path = os.fspath(path)
        if check_poll:
            ok, why = device_supports_poll(self.path, sysfs_root=sysfs_root)
            if not ok:
                raise UringIOError(errno.EOPNOTSUPP, "IOPOLL", self.path, why)
            self.poll_reason = why
        else:
            self.poll_reason = "not checked"
        flags = os.O_DIRECT | os.O_CLOEXEC | (os.O_RDWR if writable else os.O_RDONLY)
        self.fd = os.open(self.path, flags)
        self.writable = writable
        try:
            st = os.fstat(self.fd)
            if stat.S_ISBLK(st.st_mode):
                self.block_size = blkdev_logical_block_size(self.fd)
                self.size_bytes = device_size_bytes(self.fd)
            else:
                # A file: O_DIRECT alignment follows the device; 4096 covers 512e and 4Kn.
                self.block_size = 4096
                self.size_bytes = st.st_size
            params = RingParams(
                entries=entries,
                flags=SetupFlag.IOPOLL,
                required=SetupFlag.IOPOLL,
                role="iopoll",
            )
            params.reasons.append(f"iopoll: {self.poll_reason}")
            self.ring = Ring(params)
        except BaseException:
            os.close(self.fd)
            raise
        self.entries = entries

    # --- I/O -------------------------------------------------------------------
    def _check(self, offsets: list[int], buffer: Any, size: int, op: str) -> Any:
        bs = self.block_size
        pin = ffi.from_buffer(buffer, require_writable=True)
        addr = int(ffi.cast("uintptr_t", pin))
        if size <= 0 or size % bs:
            raise AlignmentError(
                f"{op} {self.path}: size {size} is not a positive multiple of {bs}"
            )
        if addr % bs:
            raise AlignmentError(
                f"{op} {self.path}: buffer address 0x{addr:x} is not aligned to {bs} bytes "
                "(use mmap.mmap(-1, n) for page-aligned memory)"
            )
        if len(pin) < size * len(offsets):
            raise ValueError(
                f"{op}: buffer of {len(pin)} bytes is smaller than {len(offsets)} x {size}"
            )
        bad = next((o for o in offsets if o % bs or o < 0), None)
        if bad is not None:
            raise AlignmentError(f"{op} {self.path}: offset {bad} is not a multiple of {bs}")
        return pin

    def _rw(
        self, op: Op, offsets: list[int], buffer: Any, size: int, depth: int, chunk: int
    ) -> None:
        name = "read" if op == Op.READ else "write"
        if op == Op.WRITE and not self.writable:
            raise PermissionError(f"{self.path} was opened read-only (pass writable=True)")
        pin = self._check(offsets, buffer, size, name)
        n = len(offsets)
        if n == 0:
            return
        base = int(ffi.cast("uintptr_t", pin))
        columns = [
            filled("uint8_t", int(op), n),
            filled("int32_t", self.fd, n),
            from_bytes(
                "uint64_t", memoryview(_u64(range(base, base + n * size, size))).cast("B"), n
            ),
            filled("uint32_t", size, n),
            from_bytes("uint64_t", memoryview(_u64(offsets)).cast("B"), n),
            ffi.NULL,
            ffi.NULL,
            ffi.NULL,
        ]
        depth = min(depth, self.entries)
        results = run_pipelined(self.ring, n, columns, depth=depth, chunk=chunk, keep=(pin, buffer))
        bad = first_not_equal(results, n, size)
        if bad >= 0:
            res = int(results[bad])
            if res < 0:
                raise UringIOError(-res, f"IOPOLL {name}", self.path, f"at offset {offsets[bad]}")
            raise ShortIOError(f"IOPOLL {name}", self.path, size, res, offsets[bad])

    def read_into(
        self, offsets: list[int], buffer: Any, size: int, *, depth: int = 32, chunk: int = 8
    ) -> None:
        """Read *size* bytes at each offset into consecutive slices of *buffer*."""
        self._rw(Op.READ, offsets, buffer, size, depth, chunk)

    def write_from(
        self, offsets: list[int], buffer: Any, size: int, *, depth: int = 32, chunk: int = 8
    ) -> None:
        """Write consecutive *size*-byte slices of *buffer* at each offset (not durable alone)."""
        self._rw(Op.WRITE, offsets, buffer, size, depth, chunk)

    # --- lifetime ----------------------------------------------------------------
    def close(self) -> None:
        """Close the ring (after all I/O completed) and the file descriptor. Idempotent."""
        if getattr(self, "fd", -1) < 0:
            return
        self.ring.close()
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> IopollFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _u64(values: Any) -> array[int]:
    return array("Q", values)
