"""Defect nvme-uring-cmd-lost-writes on the real kernel: the gate holds end to end.

On Debian 13's 6.12 a batch with more passthrough Writes in flight than the
namespace has tags (1023 on the VM's QEMU NVMe) loses runs of them: result
0, data never written (docs/nvme.md).  test_hardware's round trip of 10,000
random LBAs showed it in most runs there.  So on such a kernel the probe must
rule passthrough out, ``Stack.open`` of the char device must refuse with the
defect named, and only ``[core] accept_kernel_defects`` may bypass that.
Elsewhere passthrough stays on and the round trip (test_hardware.py) runs.
scripts/kernel-defect-repro.py --lost-writes measures the loss itself.
"""

from __future__ import annotations

import pytest

from uringstack import open_stack
from uringstack.cli.probe_report import FeatureCheck
from uringstack.probe.defects import LOST_WRITES_ID, PASSTHROUGH
from uringstack.probe.model import Capabilities
from uringstack.types import PlanError

from .conftest import NG

pytestmark = pytest.mark.nvme


def test_passthrough_is_refused_exactly_where_the_defect_applies(
    caps: Capabilities, passthrough_check: FeatureCheck
) -> None:
    finding = caps.defect_ruling_out(PASSTHROUGH)
    if not NG.exists():
        assert finding is None or not passthrough_check.usable
        return
    if finding is None:
        assert passthrough_check.usable, passthrough_check.reason
        return
    assert finding.id == LOST_WRITES_ID
    assert not passthrough_check.usable
    assert LOST_WRITES_ID in passthrough_check.reason and "silently lose writes" in passthrough_check.reason
    with open_stack(overrides={"core.cores": [0]}) as s:
        assert all(r.role != "passthrough" for r in s.plan.workers[0].rings)
        with pytest.raises(PlanError, match=LOST_WRITES_ID):
            s.open(NG)

    # The explicit override, and only it, opens the namespace through passthrough again.
    overrides = {"core.cores": [0], "core.accept_kernel_defects": [LOST_WRITES_ID]}
    with open_stack(overrides=overrides) as s, s.open(NG) as h:
        assert h.ring is s.workers[0].rings["passthrough"]
