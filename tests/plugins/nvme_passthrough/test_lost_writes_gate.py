"""The lost-writes gate: NVMe passthrough is never planned on a kernel that drops acknowledged Writes.

Defect ``nvme-uring-cmd-lost-writes`` (docs/nvme.md): on Debian 13's 6.12
kernels a batch with more passthrough Writes in flight than the namespace has
tags loses runs of them (result 0, data never written).  The VM side
(tests/nvme/test_lost_writes.py) checks the probe's verdict on the real kernel.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.plugins.nvme_passthrough.test_kernel_defect_gate import _caps
from uringstack.config import load_config
from uringstack.plan import make_plan
from uringstack.pluginmanager import make_plugin_manager
from uringstack.plugins.nvme_passthrough import plugin as pt_plugin
from uringstack.probe.defects import PASSTHROUGH, KernelVersion, matching_defects, refusal
from uringstack.types import PlanError

LOST = "nvme-uring-cmd-lost-writes"
TRIXIE = KernelVersion("6.12.118+deb13-amd64", "6.12.118-1")
TRIXIE_117 = KernelVersion("6.12.117+deb13-amd64", "6.12.117-1")
BOOKWORM = KernelVersion("6.1.0-57-amd64", "6.1.192-3")


def _config(mode: str = "auto", accept: list[str] | None = None) -> Any:
    overrides: dict[str, Any] = {"nvme_passthrough": {"mode": mode}}
    if accept is not None:
        overrides["core"] = {"accept_kernel_defects": accept}
    return load_config(None, env={}, overrides=overrides, plugin_manager=make_plugin_manager(autoload=True)).config


@pytest.mark.parametrize(
    ("kernel", "hit"),
    [
        (TRIXIE, True),  # Debian 13 trixie-security, reproduced
        (TRIXIE_117, True),  # Debian 13 trixie, reproduced
        (KernelVersion("6.12.5"), True),  # upstream 6.12 by its release
        (BOOKWORM, False),  # Debian 12: not seen with the same batches
        (KernelVersion("6.5.0-0.deb12.4-amd64", "6.5.10-1~bpo12+1"), False),
        (KernelVersion("6.13.2"), False),
        (KernelVersion("5.10.0-46-amd64", "5.10.262-1"), False),
    ],
)
def test_the_entry_matches_the_6_12_kernels(kernel: KernelVersion, hit: bool) -> None:
    found = [f for f in matching_defects(kernel) if f.id == LOST]
    assert bool(found) == hit
    if hit:
        assert found[0].rules_out == PASSTHROUGH


def test_auto_disables_passthrough_and_names_the_defect_and_override() -> None:
    verdict = pt_plugin.uringstack_check_support(caps=_caps(TRIXIE), config=_config())
    assert not verdict.enabled
    assert LOST in verdict.reason and "silently lose writes" in verdict.reason
    assert f'accept_kernel_defects = ["{LOST}"]' in verdict.reason
    plan = make_plan(_caps(TRIXIE), _config(), make_plugin_manager(autoload=True))
    assert all(r.role != "passthrough" for r in plan.workers[0].rings), plan.workers[0].rings


def test_on_is_refused_with_the_override_named() -> None:
    with pytest.raises(PlanError, match=rf"nvme_passthrough is configured 'on'.*{LOST}.*accept_kernel_defects"):
        make_plan(_caps(TRIXIE), _config("on"), make_plugin_manager(autoload=True))


def test_the_explicit_override_allows_passthrough() -> None:
    plan = make_plan(_caps(TRIXIE), _config("on", accept=[LOST]), make_plugin_manager(autoload=True))
    assert any(r.role == "passthrough" for r in plan.workers[0].rings)


def test_kernels_without_the_defect_keep_passthrough() -> None:
    verdict = pt_plugin.uringstack_check_support(caps=_caps(BOOKWORM), config=_config())
    assert verdict.enabled, verdict.reason
    assert LOST not in verdict.reason


def test_refusal_says_what_the_defect_does() -> None:
    finding = next(f for f in matching_defects(TRIXIE) if f.id == LOST)
    text = refusal(finding, "NVMe passthrough")
    assert "can silently lose writes" in text and "crash" not in text
