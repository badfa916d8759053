"""Device probe against faked NVMe hardware; runs INSIDE ``umockdev-run``.

Driven by ``test_umockdev_runner.py``, which starts
``umockdev-run -d fixtures/<name>.umockdev -- python -m pytest <this file>``
with ``URINGSTACK_UMOCKDEV_FIXTURE=<name>``.  umockdev fakes sysfs, the udev
properties and /dev nodes (as plain files); it does not fake ioctls or
io_uring, so only the device scan is tested here.  Outside umockdev this
file is not collected (tests/probe/conftest.py): the real machine has other
devices.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pyudev

from uringstack.probe.devices import scan_block_devices
from uringstack.probe.model import BlockDevice

FIXTURE = os.environ.get("URINGSTACK_UMOCKDEV_FIXTURE", "")
TESTBED = os.environ.get("UMOCKDEV_DIR", "")

pytestmark = pytest.mark.skipif(
    not TESTBED or not FIXTURE,
    reason="runs only inside umockdev-run (started by test_umockdev_runner.py)",
)


def only(name: str) -> pytest.MarkDecorator:
    if not TESTBED:
        return pytest.mark.skipif(True, reason="runs only inside umockdev-run")
    return pytest.mark.skipif(name != FIXTURE, reason=f"needs fixture {name}, loaded: {FIXTURE}")


def set_nvme_poll_queues(value: int) -> None:
    """Create /sys/module/nvme/parameters/poll_queues inside the test bed.

    Fixture files can only describe devices (``P: /devices/...``), so the
    module parameter is written into the test bed's sysfs directly; the probe
    then reads it through the preload library's /sys redirection.
    """
    param = Path(TESTBED) / "sys/module/nvme/parameters/poll_queues"
    param.parent.mkdir(parents=True, exist_ok=True)
    param.write_text(f"{value}\n")


def by_name(devices: list[BlockDevice]) -> dict[str, BlockDevice]:
    return {d.name: d for d in devices}


@only("nvme_poll")
def test_namespace_with_poll_queues_and_generic_char() -> None:
    set_nvme_poll_queues(4)
    # pyudev itself must see the fake devices, else the rest proves nothing.
    ctx = pyudev.Context()
    assert [d.sys_name for d in ctx.list_devices(subsystem="nvme-generic")] == ["ng0n1"]
    devices = by_name(scan_block_devices(ctx, mountinfo="", swaps=""))
    assert list(devices) == ["nvme0n1"]
    ns = devices["nvme0n1"]
    assert ns.path == "/dev/nvme0n1"
    assert ns.nvme and ns.controller == "nvme0" and ns.nsid == 1
    assert ns.model == "QEMU NVMe Ctrl"
    assert ns.size_bytes == 2097152 * 512
    assert (ns.logical_block_size, ns.physical_block_size) == (4096, 4096)
    assert ns.io_poll and ns.io_poll_reason == ""
    assert ns.poll_queues == 4
    assert ns.generic_char == "/dev/ng0n1"
    assert ns.generic_char_accessible, ns.generic_char_error
    assert not ns.in_use and ns.usage == []


@only("nvme_poll")
def test_full_probe_and_cli_verdicts_on_fake_namespace() -> None:
    from click.testing import CliRunner

    from uringstack.cli import cli
    from uringstack.probe import probe

    set_nvme_poll_queues(4)
    caps = probe()
    assert caps.device_scan_error == ""
    assert caps.device_for_path("/dev/ng0n1") is caps.devices[0]
    result = CliRunner().invoke(cli, ["probe"])
    assert result.exit_code == 0, result.output
    if caps.uring.usable and caps.uring.accepts("IOPOLL"):
        assert "iopoll: usable (poll queues on nvme0n1" in result.output
    if caps.uring.usable and caps.uring.accepts("SQE128") and caps.uring.accepts("CQE32"):
        assert "nvme_passthrough: usable (passthrough via /dev/ng0n1 (nvme0n1))" in result.output


@only("nvme_nopoll")
def test_namespace_without_poll_queues_in_use() -> None:
    set_nvme_poll_queues(0)
    # 259:1 is nvme0n1p1 in the fixture: a mounted partition makes the disk in use.
    mountinfo = "36 25 259:1 / /data rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n"
    devices = by_name(scan_block_devices(mountinfo=mountinfo, swaps=""))
    ns = devices["nvme0n1"]
    assert not ns.io_poll
    assert ns.io_poll_reason == "no poll queues (nvme poll_queues=0)"
    assert ns.poll_queues == 0
    assert ns.partitions == ["nvme0n1p1"]
    assert ns.in_use
    assert ns.usage == ["nvme0n1 held by dm-0", "nvme0n1p1 mounted at /data"]
    # ng0n1 has no nsid attribute here (as on real kernels) and the ioctl
    # cannot work on umockdev's plain file: the only namespace and the only
    # char device under the same controller are paired by count.
    assert ns.generic_char == "/dev/ng0n1"


@only("nvme_multipath")
def test_multipath_matching_is_by_controller_and_nsid() -> None:
    set_nvme_poll_queues(2)
    ctx = pyudev.Context()
    chars = {d.sys_name: d.parent.sys_name for d in ctx.list_devices(subsystem="nvme-generic")}
    assert chars == {"ng0n1": "nvme0", "ng1n1": "nvme1", "ng1n2": "nvme1", "ng2n1": "nvme-subsys2"}
    devices = by_name(scan_block_devices(ctx, mountinfo="", swaps=""))
    # Hidden per-path disks (no device node) are not reported.
    assert sorted(devices) == ["nvme0n1", "nvme0n2", "nvme1n1", "nvme2n1"]
    # nvme0n1 lives on controller nvme1: its char device is ng1n1, not ng0n1
    # (ng0n1 belongs to controller nvme0's namespace nvme1n1).
    assert (devices["nvme0n1"].controller, devices["nvme0n1"].nsid) == ("nvme1", 2)
    assert devices["nvme0n1"].generic_char == "/dev/ng1n1"
    assert (devices["nvme0n2"].controller, devices["nvme0n2"].nsid) == ("nvme1", 1)
    assert devices["nvme0n2"].generic_char == "/dev/ng1n2"
    assert (devices["nvme1n1"].controller, devices["nvme1n1"].nsid) == ("nvme0", 1)
    assert devices["nvme1n1"].generic_char == "/dev/ng0n1"
    # The multipath head hangs off its subsystem; its char node is missing in
    # /dev, so the open fails and the error is reported, not hidden.
    head = devices["nvme2n1"]
    assert head.controller == "nvme-subsys2"
    assert head.generic_char == "/dev/ng2n1"
    assert not head.generic_char_accessible
    assert head.generic_char_error.startswith("ENOENT")
    assert devices["nvme0n1"].io_poll and not devices["nvme1n1"].io_poll
