"""Tiny fake sysfs trees (real directories and relative symlinks, as the kernel lays them out)."""

from __future__ import annotations

import os
from pathlib import Path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def link(at: Path, target: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(os.path.relpath(target, at.parent))


def add_disk(
    root: Path,
    name: str,
    devno: str,
    parent: Path,
    *,
    nsid: int | None = None,
    lba: int = 512,
    sectors: int = 2097152,
    io_poll: int = 0,
    partitions: dict[str, str] | None = None,
    holders: list[str] | None = None,
) -> Path:
    """A disk under *parent* with /sys/block, /sys/class/block and /sys/dev/block links."""
    disk = parent / name
    write(disk / "dev", devno)
    write(disk / "size", str(sectors))
    write(disk / "queue" / "logical_block_size", str(lba))
    write(disk / "queue" / "io_poll", str(io_poll))
    if nsid is not None:
        write(disk / "nsid", str(nsid))
    (disk / "holders").mkdir(exist_ok=True)
    for holder in holders or []:
        (disk / "holders" / holder).mkdir()
    link(root / "block" / name, disk)
    link(root / "class" / "block" / name, disk)
    link(root / "dev" / "block" / devno, disk)
    for part, part_devno in (partitions or {}).items():
        write(disk / part / "dev", part_devno)
        write(disk / part / "partition", part[-1])
        (disk / part / "holders").mkdir(exist_ok=True)
        link(root / "class" / "block" / part, disk / part)
        link(root / "dev" / "block" / part_devno, disk / part)
    return disk


def add_char(root: Path, name: str, devno: str, parent: Path) -> Path:
    d = parent / name
    write(d / "dev", devno)
    link(root / "class" / "nvme-generic" / name, d)
    link(root / "dev" / "char" / devno, d)
    return d
