"""An NVMe namespace driven through its generic char device (``/dev/ngXnY``) with io_uring.

Every read and write becomes an NVMe command (``struct nvme_uring_cmd``)
sent with ``IORING_OP_URING_CMD``: no filesystem, no block-layer merging, no
page cache.  The ring is created with SQE128 (the 72-byte command rides in
the second half of the SQE) and CQE32, both *required*, and with IOPOLL when
asked for and the namespace's queue polls.

Identity: the namespace ID comes from the ``NVME_IOCTL_ID`` ioctl on the
open char device; the logical block size and capacity from the matching block
device in sysfs, found by *controller + nsid*, never by name (with native
multipath ``ngXnY`` and ``nvmeXnY`` disagree on X and Y is not the NSID).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uringstack.blockdev import read_attr
from uringstack.errors import AlignmentError, UringIOError, UringStackError
from uringstack.flags import Op, SetupFlag
from uringstack.native import ffi
from uringstack.pipeline import filled, first_nonzero, from_bytes, run_pipelined
from uringstack.plugins.nvme_passthrough.commands import (
    MAX_BLOCKS_PER_COMMAND,
    NVME_CMD_READ,
    NVME_CMD_WRITE,
    NVME_IOCTL_ID,
    NVME_URING_CMD_IO,
    NVME_URING_CMD_SIZE,
    build_rw_batch,
    flush_command,
)
from uringstack.plugins.nvme_passthrough.status import NvmeStatusError
from uringstack.plugins.nvme_passthrough.usage import block_device_in_use
from uringstack.probe.defects import (
    POLLED_PASSTHROUGH,
    KernelDefectError,
    check_known_ids,
    defects_here,
    refusal,
    ruling_out,
)
from uringstack.ring import Batch, Ring
from uringstack.ring_params import RingParams

_PATH_DEVICE = re.compile(r"^nvme\d+c\d+n\d+$")  # hidden per-path disks under native multipath


class NamespaceInUseError(UringStackError, PermissionError):
    """Passthrough writes were refused because the namespace is mounted or held."""

    def __init__(self, device: str, block_device: str, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__(
            f"refusing NVMe passthrough writes to {device}: its block device {block_device} is "
            f"in use ({'; '.join(reasons)}). Writes there bypass the filesystem and would "
            "corrupt it. Unmount/release it, open read-only, or pass allow_writes_in_use=True "
            "(config: allow_writes_in_use = true) if you really mean it"
        )


class DeviceAccessError(UringIOError):
    """The generic char device could not be opened (permissions, missing node)."""


@dataclass(frozen=True)
class NamespaceInfo:
    """What sysfs says about the namespace behind a generic char device."""

    generic_sysfs_dir: Path
    controller_dir: Path
    block_device: str | None
    lba_size: int | None
    nblocks: int | None
    io_poll: bool
    # Why io_poll is what it is, or why the block device was not found.
    note: str


def _same_controller(disk_parent: Path, controller_dir: Path) -> bool:
    if disk_parent == controller_dir:
        return True
    # Native multipath: the disk hangs off nvme-subsysN, which links to its controllers.
    try:
        entries = os.listdir(disk_parent)
    except OSError:
        return False
    for entry in entries:
        link = disk_parent / entry
        if (
            entry.startswith("nvme")
            and link.is_symlink()
            and Path(os.path.realpath(link)) == controller_dir
        ):
            return True
    return controller_dir.parent == disk_parent  # per-path ng under the subsystem


def find_namespace(
    char_major: int,
    char_minor: int,
    nsid: int,
    *,
    sysfs_root: str | os.PathLike[str] = "/sys",
) -> NamespaceInfo:
    """Locate the block device of the namespace whose generic char device is ``major:minor``.

    Match: a disk (not a partition, not a hidden per-path disk) whose parent
    in the device tree is the char device's controller (or that controller's
    subsystem) and whose ``nsid`` attribute is *nsid*.
    """
    root = Path(sysfs_root)
    link = root / "dev" / "char" / f"{char_major}:{char_minor}"
    if not link.exists():
        raise FileNotFoundError(
            errno.ENOENT, f"char device {char_major}:{char_minor} not in sysfs", str(link)
        )
    ng_dir = Path(os.path.realpath(link))
    controller = ng_dir.parent
    block_class = root / "class" / "block"
    try:
        names = sorted(os.listdir(block_class))
    except OSError:
        names = []
    found: str | None = None
    for name in names:
        if _PATH_DEVICE.match(name):
            continue
        disk = Path(os.path.realpath(block_class / name))
        if (disk / "partition").exists():
            continue
        if read_attr(disk / "nsid") != str(nsid):
            continue
        if _same_controller(disk.parent, controller):
            found = name
            break
    if found is None:
        return NamespaceInfo(
            ng_dir, controller, None, None, None, False,
            f"no block device with nsid {nsid} under {controller.name}",
        )  # fmt: skip
    disk_dir = root / "block" / found
    lba_text = read_attr(disk_dir / "queue" / "logical_block_size")
    sectors = read_attr(disk_dir / "size")  # always in 512-byte units
    lba = int(lba_text) if lba_text else None
    nblocks = int(sectors) * 512 // lba if sectors and lba else None
    poll = read_attr(disk_dir / "queue" / "io_poll")
    return NamespaceInfo(
        ng_dir,
        controller,
        found,
        lba,
        nblocks,
        poll == "1",
        f"{found}: queue/io_poll is {poll}" if poll is not None else f"{found}: no queue/io_poll",
    )


def open_char_device(path: str, writable: bool) -> int:
    """Open a generic char device; a missing node or missing permission is a :class:`DeviceAccessError`."""
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
    try:
        return os.open(path, flags)
    except PermissionError as exc:
        raise DeviceAccessError(
            exc.errno or errno.EACCES, "open", path,
            f"no permission to open {path} {'read-write' if writable else 'read-only'}: "
            "NVMe generic char devices belong to root (mode 0600); run as root or grant "
            "access with a udev rule (e.g. GROUP=\"disk\", MODE=\"0660\") and join that group",
        ) from exc  # fmt: skip
    except FileNotFoundError as exc:
        raise DeviceAccessError(
            errno.ENOENT, "open", path,
            "no such device node; generic char devices need Linux 5.13+ with the nvme driver",
        ) from exc  # fmt: skip


@dataclass(frozen=True)
class NamespaceIdentity:
    """A namespace behind an open generic char device, with every field known."""

    nsid: int
    block_device: str
    lba_size: int
    nblocks: int
    info: NamespaceInfo


def identify_namespace(
    fd: int, path: str, *, sysfs_root: str | os.PathLike[str] = "/sys"
) -> NamespaceIdentity:
    """nsid (``NVME_IOCTL_ID``) and sysfs facts of the open generic char device *fd*.

    Raises when *fd* is not a char device (a block device node was given) or
    when no block device of that namespace is found (its LBA size and
    capacity come from there).
    """
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode):
        raise UringIOError(
            errno.ENOTTY, "open", path,
            "not a character device: NVMe passthrough needs the generic char device "
            "/dev/ngXnY, not the block device /dev/nvmeXnY",
        )  # fmt: skip
    nsid = int(fcntl.ioctl(fd, NVME_IOCTL_ID))
    info = find_namespace(os.major(st.st_rdev), os.minor(st.st_rdev), nsid, sysfs_root=sysfs_root)
    if info.block_device is None or info.lba_size is None or info.nblocks is None:
        raise UringIOError(errno.ENODEV, "identify", path, info.note)
    return NamespaceIdentity(nsid, info.block_device, info.lba_size, info.nblocks, info)


def check_writes_allowed(
    path: str,
    block_device: str,
    allow_writes_in_use: bool,
    *,
    sysfs_root: str | os.PathLike[str] = "/sys",
    mountinfo_path: str | os.PathLike[str] = "/proc/self/mountinfo",
    dev_root: str | os.PathLike[str] | None = "/dev",
) -> list[str]:
    """The in-use reasons of *block_device*; :class:`NamespaceInUseError` unless allowed.

    Called once when a namespace is opened for writing: passthrough writes
    bypass any filesystem or stacked device on it.
    """
    in_use = block_device_in_use(
        block_device, sysfs_root=sysfs_root, mountinfo_path=mountinfo_path, dev_root=dev_root
    )
    if in_use and not allow_writes_in_use:
        raise NamespaceInUseError(path, block_device, in_use)
    return in_use


def find_generic_char(block_device: str, *, sysfs_root: str | os.PathLike[str] = "/sys") -> str | None:
    """``/dev/ngXnY`` of the namespace whose block device is *block_device*, or None.

    Matched through :func:`find_namespace` (controller + nsid), never by
    name: under native multipath ``ngXnY`` and ``nvmeXnY`` disagree on X.
    """
    root = Path(sysfs_root)
    nsid = read_attr(root / "block" / block_device / "nsid")
    if nsid is None or not nsid.isdigit():
        return None
    try:
        names = sorted(os.listdir(root / "class" / "nvme-generic"))
    except OSError:
        return None
    for name in names:
        dev = read_attr(root / "class" / "nvme-generic" / name / "dev")
        if dev is None or ":" not in dev:
            continue
        major, minor = (int(x) for x in dev.split(":", 1))
        try:
            info = find_namespace(major, minor, int(nsid), sysfs_root=root)
        except OSError:
            continue
        if info.block_device == block_device:
            return f"/dev/{name}"
    return None


class PendingCommands:
    """A submitted batch of NVMe commands; pass it to :meth:`PassthroughNamespace.complete`."""

    __slots__ = ("batch", "lbas", "n", "op")

    def __init__(self, batch: Batch, op: str, lbas: array[int], n: int) -> None:
        self.batch = batch
        self.op = op
        self.lbas = lbas
        self.n = n


def _polled_passthrough_gate(
    path: str, required: bool, accepted: Sequence[str], note: str
) -> tuple[bool, str]:
    """``(use IOPOLL, reason)`` after the known-defects table had its say.

    Raises :class:`KernelDefectError` when IOPOLL was required and a defect
    of this kernel rules polled passthrough out (and was not accepted).
    """
    finding = ruling_out(defects_here(), POLLED_PASSTHROUGH, tuple(check_known_ids(list(accepted))))
    if finding is None:
        return True, note
    why = refusal(finding, f"IOPOLL on {path}")
    if required:
        raise KernelDefectError(why)
    return False, f"{note}; interrupt-driven ring instead: {why}"


class PassthroughNamespace:
    """One NVMe namespace opened through ``/dev/ngXnY``; reads/writes as NVMe commands.

    ``writable=False`` (default) opens O_RDONLY: reads are always allowed.
    ``writable=True`` opens O_RDWR and refuses (:class:`NamespaceInUseError`)
    when the namespace's block device or a partition is mounted, held
    (device-mapper, md), used as swap or exclusively claimed, unless
    ``allow_writes_in_use=True``.  The check runs once, at open.

    ``iopoll``: None = use IOPOLL when the namespace's ``queue/io_poll`` is 1
    and no known defect of the running kernel rules out polled passthrough
    (:mod:`uringstack.probe.defects`; the ring is interrupt-driven then);
    True = required (error otherwise, including on such a kernel unless the
    defect's id is in *accept_kernel_defects*); False = never.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        writable: bool = False,
        allow_writes_in_use: bool = False,
        iopoll: bool | None = None,
        entries: int = 64,
        sysfs_root: str | os.PathLike[str] = "/sys",
        mountinfo_path: str | os.PathLike[str] = "/proc/self/mountinfo",
        dev_root: str | os.PathLike[str] | None = "/dev",
        accept_kernel_defects: Sequence[str] = (),
    ) -> None:
        self.path = os.fspath(path)
        self.writable = writable
        self.fd = -1
        self.fd = open_char_device(self.path, writable)
        try:
            ident = identify_namespace(self.fd, self.path, sysfs_root=sysfs_root)
            info = self.info = ident.info
            self.nsid = ident.nsid
            self.block_device: str = ident.block_device
            self.lba_size: int = ident.lba_size
            self.nblocks: int = ident.nblocks
            self.in_use: list[str] = []
            if writable:
                self.in_use = check_writes_allowed(
                    self.path,
                    self.block_device,
                    allow_writes_in_use,
                    sysfs_root=sysfs_root,
                    mountinfo_path=mountinfo_path,
                    dev_root=dev_root,
                )
            if iopoll is True and not info.io_poll:
                raise UringIOError(errno.EOPNOTSUPP, "IOPOLL", self.path, info.note)
            self.iopoll = bool(info.io_poll if iopoll is None else iopoll)
            self.iopoll_reason = info.note
            if self.iopoll:
                self.iopoll, self.iopoll_reason = _polled_passthrough_gate(
                    self.path, iopoll is True, accept_kernel_defects, info.note
                )
            flags = SetupFlag.SQE128 | SetupFlag.CQE32
            if self.iopoll:
                flags |= SetupFlag.IOPOLL
            params = RingParams(entries=entries, flags=flags, required=flags, role="passthrough")
            params.reasons.append(f"nvme_passthrough: {self.path} nsid {self.nsid}; {info.note}")
            self.ring = Ring(params)
            self.entries = entries
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise

    # --- geometry & checks ------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        """Namespace capacity in bytes."""
        return self.nblocks * self.lba_size

    def _prepare(
        self, op: str, lbas: Sequence[int], buffer: Any, nblocks: int, writable_buf: bool
    ) -> tuple[Any, int, array[int]]:
        if self.fd < 0:
            raise UringIOError(errno.EBADF, op, self.path, "namespace is closed")
        if not 1 <= nblocks <= MAX_BLOCKS_PER_COMMAND:
            raise ValueError(f"nblocks must be 1..{MAX_BLOCKS_PER_COMMAND}, not {nblocks}")
        slbas = lbas if isinstance(lbas, array) and lbas.typecode == "Q" else array("Q", lbas)
        pin = ffi.from_buffer(buffer, require_writable=writable_buf)
        addr = int(ffi.cast("uintptr_t", pin))
        if addr % self.lba_size:
            raise AlignmentError(
                f"{op} {self.path}: buffer address 0x{addr:x} is not aligned to the "
                f"{self.lba_size}-byte logical block size (mmap.mmap(-1, n) gives page-aligned "
                "memory)"
            )
        need = len(slbas) * nblocks * self.lba_size
        if len(pin) < need:
            raise ValueError(
                f"{op} {self.path}: buffer has {len(pin)} bytes, {len(slbas)} x {nblocks} blocks "
                f"of {self.lba_size} need {need}"
            )
        return pin, addr, slbas

    def _columns(self, cmds: bytearray, n: int) -> tuple[list[Any], Any]:
        cmd_pin = ffi.from_buffer(cmds)
        base = int(ffi.cast("uintptr_t", cmd_pin))
        addrs = array("Q", range(base, base + n * NVME_URING_CMD_SIZE, NVME_URING_CMD_SIZE))
        columns = [
            filled("uint8_t", int(Op.URING_CMD), n),
            filled("int32_t", self.fd, n),
            from_bytes("uint64_t", memoryview(addrs).cast("B"), n),
            filled("uint32_t", NVME_URING_CMD_SIZE, n),
            ffi.NULL,
            filled("uint32_t", NVME_URING_CMD_IO, n),
            ffi.NULL,
            ffi.NULL,
        ]
        return columns, cmd_pin

    def _raise_for(self, op: str, results: Any, n: int, lbas: Sequence[int] | None) -> None:
        bad = first_nonzero(results, n)
        if bad < 0:
            return
        res = int(results[bad])
        lba = int(lbas[bad]) if lbas is not None else None
        if res < 0:
            where = f"LBA {lba}, command {bad} of the batch" if lba is not None else ""
            raise UringIOError(-res, op, self.path, where)
        raise NvmeStatusError(res, op, self.path, lba=lba, index=bad if lbas is not None else None)

    # --- synchronous batch I/O ---------------------------------------------------
    def _rw(
        self,
        opcode: int,
        op: str,
        lbas: Sequence[int],
        buffer: Any,
        nblocks: int,
        depth: int,
        chunk: int,
    ) -> None:
        pin, addr, slbas = self._prepare(op, lbas, buffer, nblocks, opcode == NVME_CMD_READ)
        n = len(slbas)
        if n == 0:
            return
        cmds = build_rw_batch(opcode, self.nsid, slbas, nblocks, self.lba_size, addr)
        columns, cmd_pin = self._columns(cmds, n)
        depth = min(depth, self.entries)
        results = run_pipelined(
            self.ring, n, columns, depth=depth, chunk=chunk, keep=(pin, buffer, cmd_pin, cmds)
        )
        self._raise_for(op, results, n, slbas)

    def read_blocks(
        self,
        lba_list: Sequence[int],
        buffer: Any,
        nblocks: int = 1,
        *,
        depth: int = 32,
        chunk: int = 8,
    ) -> None:
        """Read *nblocks* blocks at each LBA into consecutive slices of *buffer*.

        Up to *depth* commands are in flight, submitted *chunk* at a time.
        Raises :class:`NvmeStatusError` (e.g. "LBA Out of Range") or
        :class:`UringIOError` for the first failed command, after every
        command has completed.
        """
        self._rw(NVME_CMD_READ, "nvme read", lba_list, buffer, nblocks, depth, chunk)

    def write_blocks(
        self,
        lba_list: Sequence[int],
        buffer: Any,
        nblocks: int = 1,
        *,
        depth: int = 32,
        chunk: int = 8,
    ) -> None:
        """Write consecutive slices of *buffer* to *nblocks* blocks at each LBA.

        Not durable until :meth:`flush` (the device may have a volatile cache).
        """
        self._check_writable("nvme write")
        self._rw(NVME_CMD_WRITE, "nvme write", lba_list, buffer, nblocks, depth, chunk)

    def flush(self) -> None:
        """NVMe Flush: make completed writes durable (commits the volatile write cache)."""
        self._check_writable("nvme flush")
        cmd = bytearray(flush_command(self.nsid))
        columns, cmd_pin = self._columns(cmd, 1)
        results = run_pipelined(self.ring, 1, columns, depth=1, chunk=1, keep=(cmd_pin, cmd))
        self._raise_for("nvme flush", results, 1, None)

    def _check_writable(self, op: str) -> None:
        if not self.writable:
            raise UringIOError(
                errno.EBADF, op, self.path, "namespace opened read-only; open it with writable=True"
            )

    # --- asynchronous batch form --------------------------------------------------
    def submit_reads(
        self, lba_list: Sequence[int], buffer: Any, nblocks: int = 1
    ) -> PendingCommands:
        """Submit one batch of reads and return without waiting (see :meth:`complete`).

        *buffer* must stay untouched until :meth:`complete` returns.
        """
        return self._submit(NVME_CMD_READ, "nvme read", lba_list, buffer, nblocks)

    def submit_writes(
        self, lba_list: Sequence[int], buffer: Any, nblocks: int = 1
    ) -> PendingCommands:
        """Submit one batch of writes and return without waiting (see :meth:`complete`)."""
        self._check_writable("nvme write")
        return self._submit(NVME_CMD_WRITE, "nvme write", lba_list, buffer, nblocks)

    def _submit(
        self, opcode: int, op: str, lbas: Sequence[int], buffer: Any, nblocks: int
    ) -> PendingCommands:
        pin, addr, slbas = self._prepare(op, lbas, buffer, nblocks, opcode == NVME_CMD_READ)
        n = len(slbas)
        if n == 0:
            raise ValueError(f"{op}: empty LBA list")
        cmds = build_rw_batch(opcode, self.nsid, slbas, nblocks, self.lba_size, addr)
        columns, cmd_pin = self._columns(cmds, n)
        batch = self.ring.submit_arrays(n, columns, (pin, buffer, cmd_pin, cmds, *columns))
        return PendingCommands(batch, op, slbas, n)

    def complete(self, pending: PendingCommands) -> None:
        """Wait for a submitted batch; raise for its first failed command."""
        self.ring.wait(pending.batch)
        self._raise_for(pending.op, pending.batch.results_cdata, pending.n, pending.lbas)

    # --- lifetime ------------------------------------------------------------------
    def close(self) -> None:
        """Wait for/cancel in-flight commands, close the ring and the device. Idempotent."""
        if self.fd < 0:
            return
        try:
            self.ring.close()
        finally:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> PassthroughNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<PassthroughNamespace {self.path} nsid={getattr(self, 'nsid', '?')} "
            f"blockdev={getattr(self, 'block_device', '?')} lba={getattr(self, 'lba_size', '?')} "
            f"iopoll={getattr(self, 'iopoll', '?')}>"
        )
