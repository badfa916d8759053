"""Is a block device in use?  Mounts, holders, swap, exclusive claims.

NVMe passthrough writes go around the filesystem and the page cache, so a
write to a namespace that a filesystem, device-mapper, md RAID or swap sits on
corrupts it.  :func:`block_device_in_use` collects every reason it can find,
for the disk and each of its partitions, as sentences a user can act on.

Sources, each with a root parameter so tests can use fake trees:

- ``/proc/self/mountinfo``: field 3 is the ``major:minor`` of the mounted
  device; the mount source after `` - `` is checked too because btrfs reports
  an anonymous ``0:N`` device number;
- ``/sys/block/<disk>/holders`` and ``/sys/block/<disk>/<part>/holders``:
  device-mapper (``dm-N/dm/name``), md (``mdN``), bcache, ... stacked on top;
- ``/proc/swaps``;
- optionally an ``O_EXCL`` open of the block device node, which fails with
  EBUSY when the kernel has the device claimed, e.g. mounted in another mount
  namespace that our mountinfo does not show.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from uringstack.blockdev import read_attr


@dataclass(frozen=True)
class BlockDev:
    """A disk or partition as sysfs shows it."""

    name: str
    major: int
    minor: int
    sysfs_dir: Path

    @property
    def devno(self) -> str:
        """``major:minor`` as mountinfo spells it."""
        return f"{self.major}:{self.minor}"


def _devno(sysfs_dir: Path) -> tuple[int, int] | None:
    text = read_attr(sysfs_dir / "dev")
    if text is None or ":" not in text:
        return None
    major, minor = text.split(":", 1)
    return int(major), int(minor)


def disk_and_partitions(
    disk: str, *, sysfs_root: str | os.PathLike[str] = "/sys"
) -> list[BlockDev]:
    """The whole disk *disk* (e.g. ``nvme0n1``) followed by its partitions."""
    base = Path(sysfs_root) / "block" / disk
    devno = _devno(base)
    if devno is None:
        raise FileNotFoundError(errno.ENOENT, f"no block device {disk!r} in sysfs", str(base))
    devs = [BlockDev(disk, devno[0], devno[1], base)]
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        entries = []
    for entry in entries:
        sub = base / entry
        # A partition is a subdirectory with a "partition" attribute (holders/, queue/ ... are not).
        if (sub / "partition").is_file():
            part_no = _devno(sub)
            if part_no is not None:
                devs.append(BlockDev(entry, part_no[0], part_no[1], sub))
    return devs


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo, reduced to what the in-use check needs."""

    devno: str
    mount_point: str
    fstype: str
    source: str


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse ``/proc/<pid>/mountinfo`` (see proc(5))."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        fstype = fields[sep + 1] if len(fields) > sep + 1 else ""
        source = fields[sep + 2] if len(fields) > sep + 2 else ""
        mounts.append(
            Mount(
                devno=fields[2],
                mount_point=_unescape_mountinfo(fields[4]),
                fstype=fstype,
                source=_unescape_mountinfo(source),
            )
        )
    return mounts


def _holder_kind(holder: str, sysfs_root: Path) -> str:
    block = sysfs_root / "block" / holder
    if (block / "dm").is_dir():
        name = read_attr(block / "dm" / "name")
        return f"device-mapper {name}" if name else "device-mapper"
    if (block / "md").is_dir() or holder.startswith("md"):
        return "md RAID"
    if holder.startswith("bcache"):
        return "bcache"
    return "a stacked block device"


def block_device_in_use(
    disk: str,
    *,
    sysfs_root: str | os.PathLike[str] = "/sys",
    mountinfo_path: str | os.PathLike[str] = "/proc/self/mountinfo",
    swaps_path: str | os.PathLike[str] | None = "/proc/swaps",
    dev_root: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Reasons why writing to *disk* (or its partitions) behind the kernel's back is unsafe.

    An empty list means no use was found.  *dev_root* (e.g. ``"/dev"``) also
    tries an ``O_EXCL`` open of each device node there, which catches mounts
    in other mount namespaces; leave it None for fake sysfs trees.
    """
    root = Path(sysfs_root)
    devs = disk_and_partitions(disk, sysfs_root=root)
    reasons: list[str] = []

    mount_text = read_attr(Path(mountinfo_path)) or ""
    mounts = parse_mountinfo(mount_text)
    for dev in devs:
        dev_paths = {f"/dev/{dev.name}"}
        for m in mounts:
            if m.devno == dev.devno or m.source in dev_paths:
                reasons.append(f"{dev.name} is mounted at {m.mount_point} ({m.fstype})")

    for dev in devs:
        holders_dir = dev.sysfs_dir / "holders"
        try:
            holders = sorted(os.listdir(holders_dir))
        except OSError:
            holders = []
        for holder in holders:
            reasons.append(f"{dev.name} is held by {holder} ({_holder_kind(holder, root)})")

    if swaps_path is not None:
        swaps = read_attr(Path(swaps_path)) or ""
        for line in swaps.splitlines()[1:]:
            fields = line.split()
            if not fields:
                continue
            for dev in devs:
                if _unescape_mountinfo(fields[0]) == f"/dev/{dev.name}":
                    reasons.append(f"{dev.name} is in use as swap")

    if dev_root is not None and not reasons:
        # Only worth trying when nothing else explained the use: EBUSY then
        # means a claim we cannot see from here.
        for dev in devs:
            node = Path(dev_root) / dev.name
            try:
                if os.stat(node).st_rdev != os.makedev(dev.major, dev.minor):
                    continue  # a node of that name that is not this device
                fd = os.open(node, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    reasons.append(
                        f"{dev.name} is claimed exclusively by the kernel (O_EXCL open gives "
                        "EBUSY): mounted in another mount namespace, or held by a driver"
                    )
                continue
            os.close(fd)
    return reasons
