"""``Stack.open`` refuses a writable handle on a block device that something uses.

Writes through a block device bypass whatever sits on it: a mounted file
system's cache and metadata are corrupted by them.  The NVMe passthrough
plugin refused writable opens of a mounted namespace, but a block device
served by the core's backends (io_uring, IOPOLL, the fallback) was opened
writable (``writable=True`` is the default) whatever used it.  Now one rule
(``stack.targets.check_writes_allowed``) and one switch (``[core]
allow_writes_in_use``) cover block devices and namespaces' char devices alike.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace

import pytest

import uringstack
from tests.requires import skip_without
from uringstack.config import load_config
from uringstack.errors import DeviceInUseError, NamespaceInUseError
from uringstack.probe.model import BlockDevice
from uringstack.stack import open_stack
from uringstack.stack.targets import ADOPT_FD, check_writes_allowed
from uringstack.types import Target


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


@pytest.mark.parametrize("backend", ["auto", "fallback"])
def test_a_node_of_another_name_for_a_mounted_device_is_refused_too(
    mounted_loop: tuple[str, pathlib.Path], tmp_path: pathlib.Path, backend: str
) -> None:
    """The device was looked up by the node's name: ``mknod /tmp/alias b 7 0`` was "not a
    disk sysfs knows", and writes through it landed under the mounted file system."""
    dev, mnt = mounted_loop
    rdev = os.stat(dev).st_rdev
    alias = tmp_path / "alias"
    os.mknod(alias, 0o600 | stat.S_IFBLK, rdev)
    with open_stack(overrides={"core.backend": backend}) as stack:
        with pytest.raises(DeviceInUseError) as refused:
            stack.open(alias)
        assert any(f"mounted at {mnt}" in r for r in refused.value.reasons), refused.value.reasons


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


def _namespace_target(block_name: str | None, *, writable: bool = True) -> Target:
    """A write of an NVMe namespace's char device whose block device is *block_name*."""
    device = None if block_name is None else BlockDevice(name=block_name, path=f"/dev/{block_name}")
    return Target(path="/dev/ng9n1", kind="nvme_char", direct=True, writable=writable, device=device)


def test_the_same_rule_refuses_a_namespace_char_device(mounted_loop: tuple[str, pathlib.Path]) -> None:
    """One rule for every device: a namespace's char device is asked through its block device
    (here the mounted loop device stands for it; the NVMe VM runs it on a real namespace)."""
    dev, mnt = mounted_loop
    name = pathlib.Path(dev).name
    with pytest.raises(NamespaceInUseError) as refused:
        check_writes_allowed(_namespace_target(name), allowed=False)
    assert isinstance(refused.value, DeviceInUseError) and refused.value.block_device == name
    assert refused.value.device == "/dev/ng9n1" and any(f"mounted at {mnt}" in r for r in refused.value.reasons)
    assert "[core] allow_writes_in_use" in str(refused.value)
    allowed = check_writes_allowed(_namespace_target(name), allowed=True)
    assert any(f"mounted at {mnt}" in r for r in allowed.in_use), allowed  # kept for the handle (io.in_use)
    read_only = _namespace_target(name, writable=False)
    assert check_writes_allowed(read_only, allowed=False) is read_only
    unlisted = _namespace_target(None)  # (the passthrough open refuses a namespace the probe did not list)
    assert check_writes_allowed(unlisted, allowed=False) is unlisted


def test_the_passthrough_plugins_own_switch_is_deprecated_and_lifts_nothing(
    mounted_loop: tuple[str, pathlib.Path],
) -> None:
    """``[nvme_passthrough] allow_writes_in_use`` was a second switch for the same rule: a config
    file that sets it still loads, warns, and the open stays refused until ``[core]`` says so."""
    with pytest.warns(FutureWarning, match=r"\[core\] allow_writes_in_use"):
        loaded = load_config(overrides={"nvme_passthrough.allow_writes_in_use": True})
    assert loaded.config.core.allow_writes_in_use is False
    with open_stack(loaded.config, plugin_manager=loaded.plugin_manager) as stack, pytest.raises(DeviceInUseError):
        stack.open(mounted_loop[0])


def test_a_descriptor_handed_over_for_a_namespace_char_device_is_checked_too(
    mounted_loop: tuple[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Stack.open(path, adopt_fd=fd)`` skips the rule for a block device (``uringstack.FileIO``
    hands over the descriptor it opened and writes it as ``io.FileIO`` would), but a namespace's
    char device is written only by passthrough, which ``io.FileIO`` cannot do: the rule holds.
    (Here the target is made a namespace whose block device is the mounted loop device; the
    NVMe VM runs it on a real one.)"""
    import uringstack.stack as stack_module

    name = pathlib.Path(mounted_loop[0]).name
    monkeypatch.setattr(
        stack_module, "resolve_target", lambda *a, **kw: replace(_namespace_target(name), options=kw["options"])
    )
    fd = os.open(os.devnull, os.O_RDWR)
    try:
        with open_stack() as stack, pytest.raises(NamespaceInUseError):
            stack.open("/dev/ng9n1", **{ADOPT_FD: fd})
    finally:
        os.close(fd)
