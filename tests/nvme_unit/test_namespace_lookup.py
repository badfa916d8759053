"""Finding a generic char device's block device by controller + nsid (fake sysfs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from uringstack.plugins.nvme_passthrough.device import find_namespace

from .sysfs_fake import add_char, add_disk, link


def test_simple_controller(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    ctrl0 = root / "devices" / "pci0000:00" / "0000:00:02.0" / "nvme" / "nvme0"
    ctrl1 = root / "devices" / "pci0000:00" / "0000:00:03.0" / "nvme" / "nvme1"
    # Two controllers, each with nsid 1 and 2; the names are deliberately misleading.
    add_disk(root, "nvme0n1", "259:0", ctrl1, nsid=1, lba=4096, sectors=8 * 1000)
    add_disk(root, "nvme0n2", "259:1", ctrl1, nsid=2)
    add_disk(root, "nvme1n1", "259:2", ctrl0, nsid=1)
    add_disk(root, "nvme1n2", "259:3", ctrl0, nsid=2, lba=512, sectors=4096, io_poll=1,
             partitions={"nvme1n2p1": "259:4"})  # fmt: skip
    add_char(root, "ng0n2", "241:1", ctrl0)
    add_char(root, "ng1n1", "241:2", ctrl1)

    info = find_namespace(241, 1, 2, sysfs_root=root)
    assert info.block_device == "nvme1n2"
    assert (info.lba_size, info.nblocks, info.io_poll) == (512, 4096, True)
    assert "io_poll is 1" in info.note

    info = find_namespace(241, 2, 1, sysfs_root=root)
    assert info.block_device == "nvme0n1"
    assert (info.lba_size, info.nblocks, info.io_poll) == (4096, 1000, False)


def test_native_multipath(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    ctrl = root / "devices" / "pci0000:00" / "0000:00:02.0" / "nvme" / "nvme3"
    subsys = root / "devices" / "virtual" / "nvme-subsystem" / "nvme-subsys0"
    link(subsys / "nvme3", ctrl)
    add_disk(root, "nvme0n1", "259:0", subsys, nsid=5)  # the head, what users mount
    add_disk(root, "nvme0c3n1", "259:1", ctrl, nsid=5)  # hidden per-path disk
    add_char(root, "ng3n1", "241:0", ctrl)
    assert find_namespace(241, 0, 5, sysfs_root=root).block_device == "nvme0n1"


def test_missing(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    ctrl = root / "devices" / "nvme" / "nvme0"
    add_char(root, "ng0n1", "241:0", ctrl)
    info = find_namespace(241, 0, 1, sysfs_root=root)
    assert info.block_device is None and "nsid 1" in info.note
    with pytest.raises(FileNotFoundError):
        find_namespace(241, 9, 1, sysfs_root=root)
