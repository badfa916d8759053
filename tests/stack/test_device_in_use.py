"""``Stack.open`` refuses a writable handle on a block device that something uses.

Writes through a block device bypass whatever sits on it: a mounted file
system's cache and metadata are corrupted by them.  The NVMe passthrough
plugin refused writable opens of a mounted namespace, but a block device
served by the core's backends (io_uring, IOPOLL, the fallback) was opened
writable (``writable=True`` is the default) whatever used it.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest

import uringstack
from tests.requires import skip_without
from uringstack.errors import DeviceInUseError
from uringstack.stack import open_stack


@pytest.fixture
def mounted_loop(loop_device: tuple[str, pathlib.Path], tmp_path: pathlib.Path) -> Iterator[tuple[str, pathlib.Path]]:
    """The loop device with an ext4 file system mounted on it: ``(device, mount point)``."""
    dev, _ = loop_device
    mkfs = shutil.which("mkfs.ext4")
    if mkfs is None:
        skip_without("mkfs.ext4 (Debian's e2fsprogs) to make the file system to mount")
    subprocess.run([mkfs, "-q", "-F", dev], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ext4", dev, str(mnt)], check=True)  # (as root with a loop device: must work)
    try:
        yield dev, mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("backend", ["auto", "fallback"])
def test_a_mounted_block_device_is_refused_writable(mounted_loop: tuple[str, pathlib.Path], backend: str) -> None:
    dev, mnt = mounted_loop
    with open_stack(overrides={"core.backend": backend}) as stack:
        with pytest.raises(DeviceInUseError) as refused:
            stack.open(dev)
        assert any(f"mounted at {mnt}" in r for r in refused.value.reasons), refused.value.reasons
        assert refused.value.device == dev and "allow_writes_in_use" in str(refused.value)
        with stack.open(dev, writable=False) as ro:  # reading is always allowed
            sb = bytearray(4096)
            ro.read_into(sb, 0)
            assert sb[1024 + 56 : 1024 + 58] == b"\x53\xef"  # the ext4 superblock's magic


def test_the_config_allows_it_and_an_unused_device_needs_nothing(
    mounted_loop: tuple[str, pathlib.Path], loop_device: tuple[str, pathlib.Path]
) -> None:
    dev, _ = mounted_loop
    with open_stack(overrides={"core.allow_writes_in_use": True}) as stack, stack.open(dev) as h:
        assert h.size() == 32 << 20
    subprocess.run(["umount", str(mounted_loop[1])], check=True)
    with open_stack() as stack, stack.open(dev) as h:  # unmounted: nothing uses it
        assert h.size() == 32 << 20


def test_a_file_object_opens_it_as_the_built_in_does(mounted_loop: tuple[str, pathlib.Path]) -> None:
    """``uringstack.open``/``FileIO`` keep ``io.FileIO``'s behaviour: the caller opened the device."""
    dev, _ = mounted_loop
    with open_stack() as stack, uringstack.open(dev, "r+b", buffering=0, stack=stack) as f:
        assert len(f.read(4096)) == 4096
