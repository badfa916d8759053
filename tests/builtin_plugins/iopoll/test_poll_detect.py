"""IOPOLL capability detection: this machine's disk, files, partitions, dm (fake sysfs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from uringstack.plugins.iopoll.poll import backing_disk, device_supports_poll

from .sysfs_fake import add_disk, write


def _root_disk() -> tuple[Path, str] | None:
    st = os.stat("/")
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    link = Path(f"/sys/dev/block/{major}:{minor}")
    if major == 0 or not link.exists():
        return None
    disk = Path(os.path.realpath(link))
    if (disk / "partition").exists():
        disk = disk.parent
    return disk, (disk / "queue" / "io_poll").read_text().strip()


def test_this_machines_root_disk() -> None:
    found = _root_disk()
    if found is None:
        pytest.skip("/ has no backing block device on this machine")
    disk, io_poll = found
    ok, why = device_supports_poll("/")
    assert ok == (io_poll == "1"), why
    assert disk.name in why
    if not ok:
        assert f"queue/io_poll is {io_poll}" in why


def test_virtio_disk_has_no_poll(tmp_path: Path) -> None:
    """The brief's case: a file on this machine's virtio disk cannot use IOPOLL."""
    if not Path("/sys/block/vda").exists():
        pytest.skip("no virtio disk /dev/vda on this machine")
    f = tmp_path / "x"
    f.write_bytes(b"x")
    ok, why = device_supports_poll(f)
    if Path("/dev/vda").exists() and stat.S_ISBLK(os.stat("/dev/vda").st_mode):
        ok_dev, why_dev = device_supports_poll("/dev/vda")
        assert not ok_dev
        assert "vda" in why_dev and "io_poll is 0" in why_dev and "virtio_blk" in why_dev
    if backing_disk(f)[0] == "vda":
        assert not ok and "vda" in why


def test_tmpfs_file_has_no_backing_disk() -> None:
    if not Path("/dev/shm").is_dir() or os.major(os.stat("/dev/shm").st_dev) != 0:
        pytest.skip("/dev/shm is not an anonymous-device filesystem here")
    ok, why = device_supports_poll("/dev/shm")
    assert not ok and "no single backing block device" in why


def test_missing_path() -> None:
    ok, why = device_supports_poll("/nonexistent/really")
    assert not ok and "cannot stat" in why


def _fake_node(tmp_path: Path, devno: tuple[int, int]) -> Path:
    if os.geteuid() != 0:
        pytest.skip("creating block device nodes needs root")
    node = tmp_path / f"node{devno[0]}_{devno[1]}"
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(*devno))
    return node


def test_fake_trees_partition_dm_nvme(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    add_disk(root, "nvme7n1", "259:70", root / "devices" / "nvme" / "nvme7", io_poll=1,
             partitions={"nvme7n1p1": "259:71"})  # fmt: skip
    add_disk(root, "nvme8n1", "259:80", root / "devices" / "nvme" / "nvme8", io_poll=0)
    add_disk(root, "dm-3", "253:3", root / "devices" / "virtual" / "block", io_poll=0)
    write(root / "block" / "dm-3" / "dm" / "name", "vg-wal")

    ok, why = device_supports_poll(_fake_node(tmp_path, (259, 71)), sysfs_root=root)
    assert ok and "nvme7n1" in why  # partition resolved to its disk
    ok, why = device_supports_poll(_fake_node(tmp_path, (259, 80)), sysfs_root=root)
    assert not ok and "poll_queues" in why
    ok, why = device_supports_poll(_fake_node(tmp_path, (253, 3)), sysfs_root=root)
    assert not ok and "device-mapper" in why and "vg-wal" in why
    ok, why = device_supports_poll(_fake_node(tmp_path, (8, 99)), sysfs_root=root)
    assert not ok and "not in" in why
