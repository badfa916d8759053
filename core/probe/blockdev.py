"""Facts about block devices from sysfs and ioctls: the one place that reads them.

Which whole disk a path lives on, a sysfs attribute, the logical block size
of an open block device.  The probe and the plugins read sysfs through these
helpers rather than each keeping its own copy.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from pathlib import Path

from uringstack.ring.interrupts import with_descriptor

# <linux/fs.h>: BLKSSZGET = _IO(0x12, 104): the logical sector size of a block device.
BLKSSZGET = (0x12 << 8) | 104
# <linux/fs.h>: BLKGETSIZE64 = _IOR(0x12, 114, size_t): its size in bytes.
BLKGETSIZE64 = (2 << 30) | (8 << 16) | (0x12 << 8) | 114


def read_attr(path: str | os.PathLike[str]) -> str | None:
    """The text of a sysfs (or procfs) file, stripped; ``None`` when it cannot be read."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def blkdev_logical_block_size(fd: int) -> int:
    """Logical block size of the open block device *fd* (the BLKSSZGET ioctl)."""
    buf = fcntl.ioctl(fd, BLKSSZGET, struct.pack("i", 0))
    return int(struct.unpack("i", buf)[0])


def blkdev_size_bytes(fd: int) -> int:
    """Size in bytes of the open block device *fd* (BLKGETSIZE64; its ``st_size`` is 0)."""
    buf = fcntl.ioctl(fd, BLKGETSIZE64, struct.pack("Q", 0))
    return int(struct.unpack("Q", buf)[0])


def _disk_dir(major: int, minor: int, sysfs_root: Path) -> Path | None:
    """The sysfs directory of the whole disk for block device ``major:minor``."""
    link = sysfs_root / "dev" / "block" / f"{major}:{minor}"
    if not link.exists():
        return None
    real = Path(os.path.realpath(link))
    # A partition's directory sits inside its disk's and has a "partition" attribute.
    if (real / "partition").is_file():
        real = real.parent
    return real


def sysfs_hidden_reason(sysfs_root: str | os.PathLike[str] = "/sys") -> str:
    """Why block devices cannot be listed through sysfs here, or ``""`` when they can.

    A container without /sys (or with an empty tmpfs there) shows no block device at
    all, which reads as "this machine has none" unless said.
    """
    root = Path(sysfs_root)
    missing = [name for name in ("class/block", "dev/block") if not (root / name).is_dir()]
    if not missing:
        return ""
    return (
        f"sysfs is not visible at {root} ({', '.join(str(root / m) for m in missing)} missing), "
        "so no block device can be listed: mount sysfs there (read-only is enough; a container "
        "needs /sys bound in)"
    )


def block_device_name(path: str | os.PathLike[str], *, sysfs_root: str | os.PathLike[str] = "/sys") -> str | None:
    """The kernel's name (``nvme0n1``, ``nvme0n1p2``) of the block device node *path*, by its
    device number, whatever the node is called; ``None`` for anything else or an unknown one.

    By number, not by the node's name: a node made with ``mknod`` elsewhere
    (``/tmp/alias``, a container's ``/dev``) is the same device."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    link = Path(sysfs_root) / "dev" / "block" / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return Path(os.path.realpath(link)).name if link.exists() else None


def backing_disk(
    path: str | os.PathLike[str], *, sysfs_root: str | os.PathLike[str] = "/sys"
) -> tuple[str | None, str]:
    """The whole-disk name behind *path* (block device or file), or None and why not."""
    root = Path(sysfs_root)
    st = os.stat(path)
    if stat.S_ISBLK(st.st_mode):
        major, minor, what = os.major(st.st_rdev), os.minor(st.st_rdev), f"block device {path}"
    elif stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        major, minor, what = os.major(st.st_dev), os.minor(st.st_dev), f"the filesystem of {path}"
        if major == 0:
            return None, (
                f"{what} has no single backing block device (st_dev {major}:{minor}: tmpfs, "
                "overlay, 9p, NFS, FUSE or btrfs); IOPOLL needs a block device with poll queues"
            )
    else:
        return None, f"{path} is neither a block device nor a regular file"
    disk = _disk_dir(major, minor, root)
    if disk is None:
        return None, f"{what} ({major}:{minor}) is not in {root}/dev/block"
    return disk.name, f"{what} is on {disk.name}"


def disk_queue_attr(disk: str, attr: str, *, sysfs_root: str | os.PathLike[str] = "/sys") -> str | None:
    """``/sys/block/<disk>/queue/<attr>`` stripped, or None when absent."""
    return read_attr(Path(sysfs_root) / "block" / disk / "queue" / attr)


def device_size(path: str) -> int:
    """The size in bytes of a block device (or file), read by seeking to its end:
    ``st_size`` of a block device node is 0."""
    return with_descriptor(path, os.O_RDONLY | os.O_CLOEXEC, _end_offset)


def _end_offset(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)
