"""The generic char device (``/dev/ngXnY``) of an NVMe namespace: opening it and its identity.

What sysfs knows about the namespace (its block device, logical block size,
capacity, transfer limits, what uses it) comes from the probe's report
(:class:`~uringstack.probe.model.BlockDevice`, matched to the char device by
*controller + nsid*, never by name: with native multipath ``ngXnY`` and
``nvmeXnY`` disagree on X and Y is not the NSID).  This module adds what only
the open descriptor can tell: the ``NVME_IOCTL_ID`` namespace id, checked
against the report before any command carries it.  Whether a writable open is
allowed at all is the core's one rule for devices in use
(:func:`uringstack.stack.targets.check_writes_allowed`), checked before a
backend is chosen.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from uringstack.errors import NamespaceInUseError, UringIOError
from uringstack.ring.interrupts import open_stored

__all__ = ["DeviceAccessError", "NamespaceIdentity", "NamespaceInUseError", "identify_namespace", "open_char_device"]

if TYPE_CHECKING:
    from uringstack.probe.model import BlockDevice


class DeviceAccessError(UringIOError):
    """The generic char device could not be opened (permissions, missing node)."""


def open_char_device(path: str, writable: bool, into: list[int]) -> int:
    """Open a generic char device, its descriptor appended to *into* by C as it is made (so
    a raising signal right after the open leaves it to the caller's cleanup of *into*);
    a missing node or missing permission is a :class:`DeviceAccessError`."""
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
    try:
        return open_stored(into, path, flags)
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


def identify_namespace(fd: int, path: str, device: BlockDevice | None) -> NamespaceIdentity:
    """The namespace behind the open generic char device *fd*: its nsid and the probe's facts.

    The nsid is read with ``NVME_IOCTL_ID`` from *fd* itself and must match
    the probed *device* (a stale report would otherwise send commands to
    another namespace).  Raises when *fd* is not a char device or the probe
    did not list its namespace.
    """
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode):
        raise UringIOError(
            errno.ENOTTY, "open", path,
            "not a character device: NVMe passthrough needs the generic char device "
            "/dev/ngXnY, not the block device /dev/nvmeXnY",
        )  # fmt: skip
    if device is None:
        raise UringIOError(
            errno.ENODEV, "identify", path,
            "the probe's report lists no namespace with this generic char device "
            "(probed without devices, or the device appeared since: probe again)",
        )  # fmt: skip
    from uringstack.probe.devices import namespace_id  # imports pyudev: only when a namespace is opened

    nsid = namespace_id(fd)
    if device.nsid is not None and device.nsid != nsid:
        raise UringIOError(
            errno.ENODEV, "identify", path,
            f"the device reports nsid {nsid} but the probe's report has nsid {device.nsid} "
            f"({device.name}): the report is stale, probe again",
        )  # fmt: skip
    lba = device.logical_block_size
    return NamespaceIdentity(nsid, device.name, lba, device.size_bytes // lba)
