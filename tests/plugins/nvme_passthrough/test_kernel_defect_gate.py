"""The known-defect gate: polled passthrough is never planned on a kernel that crashes on it."""

from __future__ import annotations

from typing import Any

import pytest

from uringstack.config import load_config
from uringstack.plan import make_plan
from uringstack.pluginmanager import make_plugin_manager
from uringstack.plugins.nvme_passthrough import plugin as pt_plugin
from uringstack.probe.defects import POLLED_PASSTHROUGH, KernelVersion, matching_defects
from uringstack.probe.model import Capabilities
from uringstack.ring.params import RingParams
from uringstack.testing import make_fake_capabilities
from uringstack.types import PlanError

GPF = "nvme-uring-cmd-iopoll-gpf"
BOOKWORM = KernelVersion("6.1.0-57-amd64", "6.1.192-3")
# Debian's 6.5 backport: the GPF is fixed there (Debian 13's 6.12 is too, but it carries
# nvme-uring-cmd-lost-writes, which rules passthrough out altogether: test_lost_writes_gate.py).
FIXED = KernelVersion("6.5.0-0.deb12.4-amd64", "6.5.10-1~bpo12+1")


def _caps(kernel: KernelVersion) -> Capabilities:
    caps = make_fake_capabilities(nvme=True, nvme_io_poll=True)
    caps.kernel_release, caps.kernel_debian_version = kernel.release, kernel.debian
    caps.kernel_defects = matching_defects(kernel)
    return caps


def _config(mode: str = "auto", iopoll: bool = True, accept: list[str] | None = None) -> Any:
    overrides: dict[str, Any] = {"nvme_passthrough": {"mode": mode, "iopoll": iopoll}}
    if accept is not None:
        overrides["core"] = {"accept_kernel_defects": accept}
    return load_config(None, env={}, overrides=overrides, plugin_manager=make_plugin_manager(autoload=True)).config


def _passthrough_flags(caps: Capabilities, config: Any) -> tuple[list[str], list[str]]:
    plan = make_plan(caps, config, make_plugin_manager(autoload=True))
    rings = [r for r in plan.workers[0].rings if r.role == "passthrough"]
    assert len(rings) == 1, plan.workers[0].rings
    return rings[0].flags, rings[0].reasons


def test_auto_plans_an_interrupt_driven_passthrough_ring_and_names_the_defect() -> None:
    caps, config = _caps(BOOKWORM), _config()
    verdict = pt_plugin.uringstack_check_support(caps=caps, config=config)
    assert verdict.enabled and GPF in verdict.reason and "interrupt-driven" in verdict.reason
    flags, reasons = _passthrough_flags(caps, config)
    assert "IOPOLL" not in flags and {"SQE128", "CQE32"} <= set(flags)
    assert any(GPF in r for r in reasons), reasons


def test_on_with_iopoll_is_refused_with_the_override_named() -> None:
    with pytest.raises(PlanError, match=rf"nvme_passthrough is configured 'on'.*{GPF}.*accept_kernel_defects"):
        make_plan(_caps(BOOKWORM), _config("on"), make_plugin_manager(autoload=True))


def test_the_explicit_override_allows_polled_passthrough() -> None:
    flags, _ = _passthrough_flags(_caps(BOOKWORM), _config("on", accept=[GPF]))
    assert "IOPOLL" in flags


@pytest.mark.parametrize("kernel", [FIXED, KernelVersion("weird-kernel")], ids=["fixed", "unknown"])
def test_kernels_without_the_defect_poll_as_configured(kernel: KernelVersion) -> None:
    caps = _caps(kernel)
    assert caps.defect_ruling_out(POLLED_PASSTHROUGH) is None  # (6.5 still has iopoll-file-read-eof-zero)
    flags, _ = _passthrough_flags(caps, _config("on"))
    assert "IOPOLL" in flags


def test_ring_params_hook_alone_never_adds_iopoll_on_an_affected_kernel() -> None:
    params = RingParams(role="passthrough")
    pt_plugin.uringstack_ring_params(params=params, caps=_caps(BOOKWORM), config=_config())
    assert not params.flags & params.flags.__class__.IOPOLL
