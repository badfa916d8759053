"""Which whole disk a path lives on, from sysfs (for per-device decisions)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


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
    try:
        return (Path(sysfs_root) / "block" / disk / "queue" / attr).read_text().strip()
    except OSError:
        return None
