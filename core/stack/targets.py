"""Turning a path the user gave into a :class:`~uringstack.types.Target` and an fd."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from uringstack.errors import DeviceInUseError, NamespaceInUseError, UringIOError
from uringstack.probe.blockdev import blkdev_logical_block_size, block_device_name
from uringstack.ring.interrupts import close_stored, open_stored
from uringstack.types import Target, TargetKind

if TYPE_CHECKING:
    from uringstack.probe.model import Capabilities


ADOPT_FD = "adopt_fd"
"""``Stack.open(path, adopt_fd=fd)``: serve an fd the caller already opened (with
its own flags, e.g. ``uringstack.FileIO``'s O_APPEND/O_TRUNC/O_EXCL) instead of
opening *path*.  The handle serves a duplicate of *fd* and closes that; *fd* stays
the caller's.  (A backend's target carries the duplicate under this key: the
backend object closes it, ``Stack.open`` if the backend's ``open`` fails.)"""


def resolve_target(
    path: str,
    *,
    direct: bool | None,
    writable: bool,
    create: bool,
    caps: Capabilities | None,
    options: dict[str, Any] | None = None,
    default_direct: bool = False,
) -> Target:
    """Classify *path* (file, block device, NVMe generic char device) and find its probed device.

    *direct* ``None`` (not given): an adopted descriptor's own ``O_DIRECT`` decides, else
    *default_direct* (``core.direct``).  Given, it must match an adopted descriptor's flag:
    a ``ValueError`` otherwise (the handle would treat the descriptor as what it is not)."""
    adopt = (options or {}).get(ADOPT_FD)
    if not path and adopt is None:  # (abspath would make it the working directory)
        raise UringIOError(errno.ENOENT, "open", path, "an empty path names no file")
    path = os.path.abspath(path)
    try:
        st = os.fstat(adopt) if adopt is not None else os.stat(path)
    except FileNotFoundError:
        if not create:
            raise UringIOError(2, "open", path, _missing(path)) from None
        kind: TargetKind = "file"
    else:
        if stat.S_ISBLK(st.st_mode):
            kind = "block"
        elif stat.S_ISCHR(st.st_mode):
            if not _is_nvme_generic(st):
                raise UringIOError(
                    22,
                    "open",
                    path,
                    "a character device that is not an NVMe generic char device (/dev/ngXnY); "
                    "uringstack opens regular files, block devices and NVMe namespaces",
                )
            kind = "nvme_char"
        elif stat.S_ISREG(st.st_mode):
            kind = "file"
        elif stat.S_ISDIR(st.st_mode):  # (open(2)'s errno for it, as the built-in open() raises)
            raise UringIOError(errno.EISDIR, "open", path, "not a regular file, block device or NVMe char device")
        else:
            raise UringIOError(22, "open", path, "not a regular file, block device or NVMe char device")
    if adopt is not None and kind != "nvme_char":
        # (a char device's passthrough takes no O_DIRECT: its commands bypass the page cache)
        has_direct = bool(fcntl.fcntl(adopt, fcntl.F_GETFL) & os.O_DIRECT)
        if direct is None:
            direct = has_direct
        elif direct and not has_direct:
            # The handle would treat it as O_DIRECT: its reads went through the page cache, or
            # failed with EOPNOTSUPP on an IOPOLL ring (which takes only O_DIRECT).
            raise ValueError(
                f"{path}: direct=True but adopt_fd={adopt} was opened without O_DIRECT; open it with "
                "os.O_DIRECT (uringstack.FileIO reopens such a descriptor for its handle)"
            )
        elif not direct and has_direct:
            # The handle would treat it as buffered: an unaligned op failed with EINVAL from the
            # kernel instead of an AlignmentError, and the page-cache reads' preadv2 with it.
            raise ValueError(
                f"{path}: direct=False but adopt_fd={adopt} was opened with O_DIRECT; pass direct=True "
                "(or direct=None: the descriptor's flag decides)"
            )
    elif direct is None:
        direct = default_direct
    device = caps.device_for_path(path) if caps is not None else None
    return Target(
        path=path,
        kind=kind,
        direct=direct,
        writable=writable,
        device=device,
        options=dict(options or {}),
        create=create,
    )


def check_writes_allowed(target: Target, *, allowed: bool) -> Target:
    """The one rule for writable opens of devices: refuse one that something uses.

    A block device, or an NVMe namespace's generic char device (its block
    device is asked), that is mounted (its file system, or one on a partition
    of it), held (md, dm, a partition table's holders), swapped on, or claimed
    exclusively raises :class:`DeviceInUseError` (:class:`NamespaceInUseError`
    for a char device).  Asked at this moment (:func:`uringstack.probe.usage.current_usage`,
    the probe's own reader), since a report may be older than a mount.  Writes
    through the device bypass whatever uses it (a file system's cache and
    metadata) and corrupt it, whatever backend serves them.  With *allowed*
    (``[core] allow_writes_in_use = true``) the open goes on and the returned
    target's ``in_use`` keeps the reasons.  Files, read-only targets and
    devices sysfs does not know come back unchanged."""
    if not target.writable or target.kind == "file":
        return target
    if target.kind == "nvme_char":
        if target.device is None:
            return target  # the passthrough open refuses a namespace the probe did not list
        name = target.device.name
    else:
        # by device number: a node of another name (mknod /tmp/alias b 259 0) is the same
        # disk, and by its name it was "not a disk sysfs knows", so writes went through
        # under a mounted file system
        name = block_device_name(target.path) or os.path.basename(os.path.realpath(target.path))
    from uringstack.probe.usage import current_usage  # imports pyudev: only for devices

    try:
        reasons = current_usage(name)
    except FileNotFoundError:
        return target  # not a disk sysfs knows: nothing the probe could protect
    if not reasons:
        return target
    if allowed:
        return replace(target, in_use=tuple(reasons))
    if target.kind == "nvme_char":
        raise NamespaceInUseError(target.path, name, reasons)
    raise DeviceInUseError(
        target.path,
        reasons,
        f"refusing a writable open of {target.path}: the block device {name} is in use "
        f"({'; '.join(reasons)}). Writes there bypass what uses it and would corrupt it. "
        "Unmount or release it, open it with writable=False, or set [core] "
        "allow_writes_in_use = true if you really mean it",
    )


def _missing(path: str) -> str:
    """Why *path* cannot be opened, for one that does not exist: create=True only where
    creating it is what the caller may want (not a device node under /dev)."""
    name = os.path.basename(path)
    if re.fullmatch(r"ng\d+n\d+", name):
        return (
            "no such NVMe generic char device: the kernel makes /dev/ngXnY from Linux 5.13 "
            f"(this one is {os.uname().release}), for namespaces it supports"
        )
    if path.startswith("/dev/"):
        return "no such device"
    return "no such file; pass create=True to create it"


def _is_nvme_generic(st: os.stat_result) -> bool:
    """True for an NVMe generic char device: its sysfs node is ``ngXnY`` under ``nvme-generic``."""
    node = os.path.realpath(f"/sys/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    return "nvme-generic" in node.split(os.sep) or re.fullmatch(r"ng\d+n\d+", os.path.basename(node)) is not None


def close_opened(target: Target, fd: int) -> None:
    """A backend's ``open`` failed after :func:`open_target` gave it *fd*: close it.

    *fd* is in ``target.descriptors`` (:func:`open_target` stored it there, or
    ``Stack.open`` its duplicate of an adopted one), and is taken out as it is
    closed, so ``Stack.open``'s cleanup never closes it again; the caller's own
    adopted descriptor is never there."""
    close_stored(target.descriptors)


def open_target(target: Target) -> int:
    """Open *target* with the flags it asks for; errors name the file and the cause.

    The descriptor is stored in ``target.descriptors`` as it is made.  A backend whose
    ``open`` fails after this returned closes it with :func:`close_opened`, never with
    ``os.close``: ``Stack.open``'s cleanup closes what that list still holds, so a
    plain close would be a second close of the number."""
    adopt = target.options.get(ADOPT_FD)
    if adopt is not None:
        return int(adopt)
    flags = (os.O_RDWR if target.writable else os.O_RDONLY) | os.O_CLOEXEC
    if target.direct:
        flags |= os.O_DIRECT
    if target.create and target.kind == "file":
        flags |= os.O_CREAT
    try:
        # Stored by C as it is opened: a raising signal right after the open leaves it to
        # Stack.open's cleanup instead of leaking it (tests/stack/test_open_signals.py).
        return open_stored(target.descriptors, target.path, flags, 0o644)
    except OSError as exc:
        detail = ""
        if exc.errno == 22 and target.direct:
            detail = "this filesystem does not support O_DIRECT (tmpfs?); open with direct=False"
        elif exc.errno == 13 and target.kind != "file":
            detail = "permission denied; block and NVMe devices usually need root or the disk group"
        elif exc.errno == 13:
            # (the device hint was given for regular files too, where it misleads)
            mode = "writing" if target.writable else "reading"
            detail = f"permission denied for {mode}" + (
                "; open with writable=False to read it" if target.writable else ""
            )
        raise UringIOError(exc.errno or 5, "open", target.path, detail) from exc


def logical_block_size(target: Target, fd: int) -> int:
    """Alignment unit for O_DIRECT on *target*: the device's logical block size."""
    if target.device is not None:
        return target.device.logical_block_size
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return blkdev_logical_block_size(fd)
    dev = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    for candidate in (f"{dev}/queue/logical_block_size", f"{dev}/../queue/logical_block_size"):
        try:
            with open(candidate) as f:
                return int(f.read())
        except (OSError, ValueError):
            continue
    return 4096  # unknown backing device (overlay, network fs): the page size is always safe
