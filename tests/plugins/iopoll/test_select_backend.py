"""Which targets the iopoll plugin serves: O_DIRECT ones on devices the probe saw polling."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.config import StackConfig, load_config
from uringstack.plugins.iopoll import plugin as iopoll_plugin
from uringstack.probe.blockdev import backing_disk, disk_queue_attr
from uringstack.probe.defects import KernelVersion, matching_defects
from uringstack.probe.model import BlockDevice
from uringstack.testing import make_fake_capabilities
from uringstack.types import PlanError, Target


def _config(**overrides: Any) -> StackConfig:
    return load_config(None, env={}, overrides=overrides).config


def _target(path: str, kind: str, *, direct: bool = True, device: BlockDevice | None = None, **options: Any) -> Target:
    return Target(path=path, kind=kind, direct=direct, writable=True, device=device, options=options)  # type: ignore[arg-type]


def test_iopoll_serves_only_direct_targets_on_pollable_devices(tmp_path: Path) -> None:
    caps = make_fake_capabilities(nvme=True, nvme_io_poll=True)  # the verdict is enabled
    cfg = _config()
    here = tmp_path / "f"
    here.write_bytes(b"x" * 4096)
    hook = iopoll_plugin.uringstack_select_backend
    assert hook(target=_target(str(here), "file", direct=False), caps=caps, config=cfg) is None
    assert hook(target=_target("/dev/ng0n1", "nvme_char"), caps=caps, config=cfg) is None
    # The rest needs a filesystem that cannot be polled under tmp_path, as on the
    # development host (a virtio disk); in the NVMe VM it may sit on the namespace.
    disk, _ = backing_disk(tmp_path)
    if disk is not None and disk_queue_attr(disk, "io_poll") == "1":
        skip_without(f"tmp_path's filesystem is on {disk}, which has poll queues; the test needs one without")
    ok, why = iopoll_plugin.serve_decision(_target(str(here), "file"), caps, cfg)
    assert not ok and why.startswith("iopoll: ")
    assert hook(target=_target(str(here), "file"), caps=caps, config=cfg) is None
    on = _config(**{"iopoll.mode": "on"})
    with pytest.raises(PlanError, match=r"mode = 'on' but .* cannot be polled"):
        hook(target=_target(str(here), "file"), caps=caps, config=on)
    # A file still to be created is judged by its directory's filesystem.
    with pytest.raises(PlanError, match="cannot be polled"):
        hook(target=_target(str(tmp_path / "new"), "file"), caps=caps, config=on)
    # Buffered targets never need polling, so 'on' does not object to them.
    assert hook(target=_target(str(here), "file", direct=False), caps=caps, config=on) is None
    off = _config(**{"iopoll.mode": "off"})
    assert iopoll_plugin.serve_decision(_target(str(here), "file"), caps, off) == (False, "iopoll: off (config)")


def test_iopoll_verdict_disabled_means_no_backend() -> None:
    caps = make_fake_capabilities(nvme=True, nvme_io_poll=False)
    ok, why = iopoll_plugin.serve_decision(_target(os.getcwd(), "file"), caps, _config())
    assert not ok and "no block device has poll queues" in why


def test_a_kernel_defect_keeps_files_off_the_iopoll_ring_but_not_block_devices(tmp_path: Path) -> None:
    """iopoll-file-read-eof-zero (Debian 5.10 and 6.1): a polled read across the end of a
    file over a hole returns 0; files go to the storage ring, block devices stay polled."""
    caps = make_fake_capabilities(nvme=True, nvme_io_poll=True)
    caps.kernel_defects = matching_defects(KernelVersion("6.1.0-57-amd64", "6.1.192-3"))
    enabled, verdict, _ = iopoll_plugin.FEATURE.decide(caps, _config())
    assert enabled and "block devices only" in verdict and "iopoll-file-read-eof-zero" in verdict  # (probe, plan)
    file = _target(str(tmp_path / "f"), "file")
    ok, why = iopoll_plugin.serve_decision(file, caps, _config())
    assert not ok and "iopoll-file-read-eof-zero" in why and "storage ring serves it" in why
    assert 'accept_kernel_defects = ["iopoll-file-read-eof-zero"]' in why  # the override, named
    with pytest.raises(PlanError, match=r"mode = 'on' but .*iopoll-file-read-eof-zero"):
        iopoll_plugin.serve_decision(file, caps, _config(**{"iopoll.mode": "on"}))
    nvme = next(d for d in caps.devices if d.io_poll)
    ok, why = iopoll_plugin.serve_decision(_target(f"/dev/{nvme.name}", "block", device=nvme), caps, _config())
    assert ok, why
    # accepted: the file is judged by its disk again, as on a kernel without the defect
    accepted = _config(**{"core.accept_kernel_defects": ["iopoll-file-read-eof-zero"]})
    ok, why = iopoll_plugin.serve_decision(file, caps, accepted)
    assert "iopoll-file-read-eof-zero" not in why
    caps.kernel_defects = matching_defects(KernelVersion("6.12.118+deb13-amd64", "6.12.118-1"))
    ok, why = iopoll_plugin.serve_decision(file, caps, _config())
    assert "iopoll-file-read-eof-zero" not in why


def test_tune_offers_no_iopoll_choice_for_files_where_the_defect_keeps_them_off_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uringstack.probe.tuning import TuneTarget, Workload

    monkeypatch.setattr(iopoll_plugin, "poll_fact", lambda *a, **k: (True, "pollable (test)"))
    caps = make_fake_capabilities(nvme=True, nvme_io_poll=True)
    direct = Workload(direct=True)
    file = TuneTarget(given=str(tmp_path), path=str(tmp_path / "scratch"), kind="directory", workload=direct)
    block = TuneTarget(given="/dev/nvme0n1", path="/dev/nvme0n1", kind="block", workload=direct)
    hook = iopoll_plugin.uringstack_tune_candidates
    assert hook(target=file, caps=caps, config=_config()) is not None  # no defect: a choice
    caps.kernel_defects = matching_defects(KernelVersion("5.10.0-46-amd64", "5.10.262-1"))
    assert hook(target=file, caps=caps, config=_config()) is None
    assert hook(target=block, caps=caps, config=_config()) is not None


def test_no_devices_because_sysfs_is_hidden_is_said_in_the_verdict() -> None:
    caps = make_fake_capabilities(nvme=False)
    caps.devices = []
    caps.device_scan_error = "sysfs is not visible at /sys (/sys/class/block missing)"
    ok, why = iopoll_plugin.serve_decision(_target(os.getcwd(), "file"), caps, _config())
    assert not ok and "sysfs is not visible at /sys" in why
