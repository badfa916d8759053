"""The probe's verdicts are the right ones for each kernel of the matrix (5.10, 6.1, 6.12).

scripts/test-nvme.sh runs this group on Debian 11's 5.10, Debian 12's 6.1 and
Debian 13's 6.12.  Tests that need a feature skip with the probe's reason
where it is missing; these tests make sure that reason is the right one, so
a skip on 5.10 is "5.10 has no SQE128", never a probe that lost its way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uringstack.cli.probe_report import FeatureCheck
from uringstack.probe.defects import (
    IOWQ_SIGNAL_CANCEL_ID,
    LOST_WRITES_ID,
    PASSTHROUGH,
    POLLED_PASSTHROUGH,
    matching_defects,
    parse_upstream,
    running_kernel,
)
from uringstack.probe.model import Capabilities

from .conftest import BLK, NG, probe_checks

pytestmark = pytest.mark.nvme


def _version() -> tuple[int, int]:
    major, minor, _ = parse_upstream(os.uname().release)
    return major, minor


def test_passthrough_verdict_is_right_for_this_kernel(caps: Capabilities, passthrough_check: FeatureCheck) -> None:
    if _version() < (5, 13):
        # No generic char device before 5.13 and no SQE128/CQE32 before 5.19.
        assert not NG.exists()
        assert not passthrough_check.usable
        assert "SQE128" in passthrough_check.reason or "URING_CMD" in passthrough_check.reason, passthrough_check
        assert not caps.uring.accepts("SQE128")
    elif _version()[:2] == (6, 12):
        # Debian 13's 6.12 loses passthrough Writes under queue pressure (test_lost_writes.py).
        assert NG.exists()
        assert not passthrough_check.usable
        assert LOST_WRITES_ID in passthrough_check.reason, passthrough_check.reason
    else:
        assert NG.exists()
        assert passthrough_check.usable, passthrough_check.reason
        assert str(NG) in passthrough_check.reason


def test_iopoll_and_io_uring_verdicts_hold_on_every_kernel(caps: Capabilities) -> None:
    checks = probe_checks(caps)
    assert checks["io_uring"].usable, checks["io_uring"].reason
    assert checks["iopoll"].usable, checks["iopoll"].reason
    assert BLK.name in checks["iopoll"].reason
    dev = caps.device_for_path(str(BLK))
    assert dev is not None and dev.nvme and dev.io_poll, dev


def test_known_defects_listed_exactly_where_they_apply(caps: Capabilities) -> None:
    kernel = running_kernel()
    assert caps.kernel_debian_version == kernel.debian
    assert caps.kernel_defects == matching_defects(kernel)
    debian_61 = kernel.debian is not None and kernel.debian.startswith("6.1.")
    assert (caps.defect_ruling_out(POLLED_PASSTHROUGH) is not None) == debian_61, caps.kernel_defects
    assert (caps.defect_ruling_out(PASSTHROUGH) is not None) == (_version() == (6, 12)), caps.kernel_defects
    # Every Debian kernel of the matrix cancelled ops in the signal storm (docs/api.md), and
    # tests/ring/test_iowq_signal_cancel.py runs that storm on each: the report must say so.
    assert IOWQ_SIGNAL_CANCEL_ID in [f.id for f in caps.kernel_defects], caps.kernel_defects


def test_nullb_verdict_is_right_for_this_kernel(caps: Capabilities, nullb: Path) -> None:
    dev = caps.device_for_path(str(nullb))
    assert dev is not None, [d.path for d in caps.devices]
    if _version() < (5, 13):
        # 5.10's null_blk has no poll_queues parameter (it ignores it): no poll queues.
        assert not Path("/sys/module/null_blk/parameters/poll_queues").exists()
        assert not dev.io_poll and dev.io_poll_reason, dev
    else:
        assert dev.io_poll, dev.io_poll_reason
