"""Can a path be polled?  The iopoll plugin answers from the probe's report, never from its own sysfs reads."""

from __future__ import annotations

import os
from pathlib import Path

from tests.requires import skip_without
from uringstack.plugins.iopoll.plugin import poll_fact
from uringstack.probe.blockdev import backing_disk
from uringstack.probe.model import BlockDevice
from uringstack.testing import make_fake_capabilities


def _root_disk() -> str | None:
    try:
        disk, _ = backing_disk("/")
    except OSError:
        return None
    return disk


def test_a_file_is_judged_by_its_filesystems_disk_as_the_probe_saw_it(tmp_path: Path) -> None:
    disk = _root_disk()
    f = tmp_path / "x"
    f.write_bytes(b"x")
    if disk is None or backing_disk(f)[0] != disk:
        skip_without("/ and the test's tmp directory are not on one block device")
    polled = BlockDevice(name=disk, path=f"/dev/{disk}", io_poll=True)
    ok, why = poll_fact(str(f), make_fake_capabilities(devices=[polled]))
    assert ok and disk in why and "queue/io_poll is 1" in why
    # The probe's fact, reason included, not a fresh sysfs read: the same disk
    # reported without poll queues gives the probe's words.
    unpolled = polled.model_copy(update={"io_poll": False, "io_poll_reason": "virtio-blk has no poll queues"})
    ok, why = poll_fact(str(f), make_fake_capabilities(devices=[unpolled]))
    assert not ok and why.endswith(f"{disk}: virtio-blk has no poll queues")


def test_a_disk_the_probe_did_not_list_is_not_polled(tmp_path: Path) -> None:
    disk = _root_disk()
    if disk is None:
        skip_without("/ has no backing block device")
    ok, why = poll_fact("/", make_fake_capabilities(nvme=True))
    assert not ok and disk in why and "the probe did not list" in why and "nvme0n1" in why
    caps = make_fake_capabilities(device_scan_error="ImportError: no libudev")
    ok, why = poll_fact("/", caps)
    assert not ok and "no libudev" in why


def test_the_given_device_wins_over_the_path() -> None:
    caps = make_fake_capabilities(nvme=True, nvme_io_poll=True)
    ok, why = poll_fact("/dev/nvme0n1", caps, caps.devices[0])  # no such node here: never stat'ed
    assert ok and "nvme0n1" in why


def test_tmpfs_file_has_no_backing_disk() -> None:
    if not Path("/dev/shm").is_dir() or os.major(os.stat("/dev/shm").st_dev) != 0:
        skip_without("/dev/shm is not a tmpfs (anonymous-device) mount")
    ok, why = poll_fact("/dev/shm", make_fake_capabilities(nvme=True))
    assert not ok and "no single backing block device" in why


def test_missing_path() -> None:
    ok, why = poll_fact("/nonexistent/really", make_fake_capabilities(nvme=True))
    assert not ok and "cannot stat" in why
