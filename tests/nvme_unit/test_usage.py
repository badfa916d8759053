"""In-use detection (mounts, partitions, holders, swap) on fake mountinfo/sysfs trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uringstack.plugins.nvme_passthrough.usage import (
    block_device_in_use,
    disk_and_partitions,
    parse_mountinfo,
)

from .sysfs_fake import add_disk, write

MOUNTINFO_BASE = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    ctrl = root / "devices" / "pci0000:00" / "0000:00:02.0" / "nvme" / "nvme0"
    add_disk(
        root,
        "nvme0n1",
        "259:0",
        ctrl,
        nsid=1,
        partitions={"nvme0n1p1": "259:1", "nvme0n1p2": "259:2"},
    )
    add_disk(root, "nvme1n1", "259:5", root / "devices" / "x" / "nvme" / "nvme1", nsid=1)
    add_disk(root, "dm-0", "253:0", root / "devices" / "virtual" / "block")
    write(root / "block" / "dm-0" / "dm" / "name", "vg-data")
    return root


def check(
    root: Path, disk: str, mountinfo: str, swaps: str = "Filename Type Size Used Priority\n"
) -> list[str]:
    mi = root.parent / "mountinfo"
    mi.write_text(MOUNTINFO_BASE + mountinfo)
    sw = root.parent / "swaps"
    sw.write_text(swaps)
    return block_device_in_use(disk, sysfs_root=root, mountinfo_path=mi, swaps_path=sw)


def test_partitions_found(tree: Path) -> None:
    names = [d.name for d in disk_and_partitions("nvme0n1", sysfs_root=tree)]
    assert names == ["nvme0n1", "nvme0n1p1", "nvme0n1p2"]
    with pytest.raises(FileNotFoundError):
        disk_and_partitions("nvme9n9", sysfs_root=tree)


def test_unused(tree: Path) -> None:
    assert check(tree, "nvme0n1", "") == []


def test_whole_disk_mounted_by_devno(tree: Path) -> None:
    reasons = check(tree, "nvme0n1", "40 27 259:0 / /mnt/x rw - ext4 /dev/root rw\n")
    assert reasons == ["nvme0n1 is mounted at /mnt/x (ext4)"]


def test_partition_mounted_with_escaped_path(tree: Path) -> None:
    reasons = check(tree, "nvme0n1", "41 27 259:2 / /mnt/my\\040data rw - xfs /dev/nvme0n1p2 rw\n")
    assert reasons == ["nvme0n1p2 is mounted at /mnt/my data (xfs)"]


def test_btrfs_anonymous_devno_matched_by_source(tree: Path) -> None:
    reasons = check(tree, "nvme0n1", "42 27 0:45 / /srv rw - btrfs /dev/nvme0n1p1 rw\n")
    assert reasons == ["nvme0n1p1 is mounted at /srv (btrfs)"]


def test_other_disk_mount_not_counted(tree: Path) -> None:
    assert check(tree, "nvme0n1", "43 27 259:5 / /mnt/y rw - ext4 /dev/nvme1n1 rw\n") == []
    assert check(tree, "nvme1n1", "43 27 259:5 / /mnt/y rw - ext4 /dev/nvme1n1 rw\n") != []


def test_holders_disk_and_partition(tree: Path) -> None:
    (tree / "block" / "nvme0n1" / "holders" / "dm-0").mkdir()
    (tree / "block" / "nvme0n1" / "nvme0n1p1" / "holders" / "md127").mkdir()
    reasons = check(tree, "nvme0n1", "")
    assert "nvme0n1 is held by dm-0 (device-mapper vg-data)" in reasons
    assert "nvme0n1p1 is held by md127 (md RAID)" in reasons
    assert len(reasons) == 2


def test_swap(tree: Path) -> None:
    swaps = "Filename Type Size Used Priority\n/dev/nvme0n1p2 partition 1048572 0 -2\n"
    assert check(tree, "nvme0n1", "", swaps) == ["nvme0n1p2 is in use as swap"]


def test_parse_mountinfo_optional_fields() -> None:
    line = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue"
    (m,) = parse_mountinfo(line)
    assert (m.devno, m.mount_point, m.fstype, m.source) == ("98:0", "/mnt2", "ext3", "/dev/root")
    assert parse_mountinfo("garbage line\n") == []


def test_real_root_device_is_in_use() -> None:
    """On this machine the root filesystem's disk must be reported as mounted."""
    st = os.stat("/")
    link = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if os.major(st.st_dev) == 0 or not link.exists():
        pytest.skip("root filesystem has no backing block device here")
    disk = Path(os.path.realpath(link))
    if (disk / "partition").exists():
        disk = disk.parent
    reasons = block_device_in_use(disk.name)
    assert any("mounted at / " in r for r in reasons), reasons
