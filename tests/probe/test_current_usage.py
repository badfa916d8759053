"""``current_usage``: what uses a disk at this moment, read by the probe's own module.

``Stack.open`` refuses writable opens of a device something uses; the report's
``usage`` may be old, so it asks here (and :meth:`Capabilities.usage_now`
for a plugin holding a report lands here too).  These run against this machine's root disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.requires import skip_without
from uringstack.probe.blockdev import backing_disk
from uringstack.probe.model import BlockDevice
from uringstack.probe.usage import current_usage
from uringstack.testing import make_fake_capabilities


def _root() -> tuple[str, int, int]:
    try:
        disk, _ = backing_disk("/")
        st = os.stat(f"/dev/{disk}")
    except OSError:
        disk = None
    if disk is None:
        skip_without("/ has no backing block device with a node in /dev")
    return disk, os.major(st.st_rdev), os.minor(st.st_rdev)


def _mountinfo(devno: str, mountpoint: str, source: str, fstype: str = "ext4") -> str:
    return f"36 35 {devno} / {mountpoint} rw,noatime master:1 shared:7 - {fstype} {source} rw\n"


def test_the_root_disk_is_in_use_now() -> None:
    disk, _, _ = _root()
    assert any(r.startswith(disk) and "mounted at /" in r for r in current_usage(disk))
    # Through the report, as a plugin may ask: fresh, whatever the report says.
    stale = BlockDevice(name=disk, path=f"/dev/{disk}", in_use=False, usage=[])
    assert any("mounted at /" in r for r in make_fake_capabilities(devices=[stale]).usage_now(stale))


def test_mounts_by_number_by_source_and_escaped(tmp_path: os.PathLike[str]) -> None:
    disk, major, minor = _root()
    text = (
        _mountinfo(f"{major}:{minor}", r"/mnt/with\040space", "/dev/whatever")
        + _mountinfo("0:52", "/btrfs", f"/dev/{disk}", "btrfs")  # anonymous devno: matched by source
        + _mountinfo("7:99", "/elsewhere", "/dev/loop99")  # another disk: not counted
    )
    usage = current_usage(disk, mountinfo=text, swaps="Filename Type Size Used Priority\n", exclusive=False)
    assert f"{disk} mounted at /mnt/with space" in usage
    assert f"{disk} mounted at /btrfs" in usage
    assert not any("elsewhere" in r for r in usage)


def test_swap_and_nothing() -> None:
    disk, _, _ = _root()
    swaps = f"Filename Type Size Used Priority\n/dev/{disk} partition 1024 0 -2\n"
    assert current_usage(disk, mountinfo="", swaps=swaps, exclusive=False) == [f"{disk} is active swap"]
    assert current_usage(disk, mountinfo="", swaps="Filename\n", exclusive=False) == []


def test_exclusive_claim_is_tried_only_when_nothing_else_explains_it(loop_device: tuple[str, Path]) -> None:
    # A loop device this test claims itself (O_EXCL, as a mounted filesystem or
    # device-mapper would): runs wherever the suite runs (root and losetup), not
    # only where this process may open the root disk.
    dev, _ = loop_device
    disk = os.path.basename(dev)
    assert current_usage(disk, mountinfo="", swaps="Filename\n") == []
    claim = os.open(dev, os.O_RDONLY | os.O_EXCL)
    try:
        # With no mounts or swap to explain it, the kernel's claim still shows.
        usage = current_usage(disk, mountinfo="", swaps="Filename\n")
        assert usage and "claimed exclusively" in usage[0], usage
    finally:
        os.close(claim)


def test_unknown_disk() -> None:
    with pytest.raises(FileNotFoundError, match="no block device 'nvme99n9'"):
        current_usage("nvme99n9")
