"""Features whose extra rings do not fit a charged RLIMIT_MEMLOCK step aside in ``auto``.

Until session 34, on a kernel that charges ring memory (6.18) and a limit that held
the storage rings but not the IOPOLL and passthrough rings beside them (a container's
64 KiB, 3 workers, a polling NVMe disk), ``make_plan`` raised PlanError "even at their
smallest the planned rings need N pages": in ``auto``, nothing could be opened at all.
"""

from __future__ import annotations

from typing import Any

import pytest

from uringstack.config import load_config
from uringstack.plan import Plan, make_plan, plan_caps, select_backend
from uringstack.plan.ringmem import charged_limit_pages, params_pages
from uringstack.probe.model import Capabilities, MemlockInfo
from uringstack.ring.params import MIN_ENTRIES
from uringstack.stack import open_stack
from uringstack.testing import make_fake_capabilities
from uringstack.types import PlanError, Target

CONTAINER = 64 << 10  # Docker's default RLIMIT_MEMLOCK: 16 pages


def _caps(limit: int, cores: int, charged: bool | None = True) -> Capabilities:
    memlock = MemlockInfo(soft_bytes=limit, hard_bytes=limit, cap_ipc_lock=False, rings_charged=charged)
    return make_fake_capabilities(cores=cores, memlock=memlock, nvme=True, kernel_release="6.18.0-test")


def _loaded(cores: int, **overrides: Any) -> Any:
    return load_config(None, env={}, overrides={"core.cores": list(range(cores)), **overrides})


def _plan(caps: Capabilities, cores: int, **overrides: Any) -> Plan:
    loaded = _loaded(cores, **overrides)
    return make_plan(caps, loaded.config, loaded.plugin_manager)


def _roles(plan: Plan) -> list[list[str]]:
    """Each worker's ring roles, the storage ring first and the others sorted."""
    return [
        [r.name.split("/")[-1] for r in w.rings[:1]] + sorted(r.name.split("/")[-1] for r in w.rings[1:])
        for w in plan.workers
    ]


def _verdict(plan: Plan, plugin: str) -> Any:
    return next(v for v in plan.verdicts if v.plugin == plugin)


def test_with_room_every_feature_gets_its_rings() -> None:
    # the same machine under a large limit: storage, iopoll and passthrough rings on each worker
    plan = _plan(_caps(8 << 20, cores=3), 3)
    assert _roles(plan) == [["storage", "iopoll", "passthrough"]] * 3
    assert _verdict(plan, "iopoll").enabled and _verdict(plan, "nvme_passthrough").enabled


def test_auto_leaves_out_the_rings_that_do_not_fit_and_says_why() -> None:
    caps = _caps(CONTAINER, cores=3)
    plan = _plan(caps, 3)  # raised PlanError before
    roles = _roles(plan)
    assert all(r[0] == "storage" for r in roles) and len({tuple(r) for r in roles}) == 1
    limit = charged_limit_pages(caps)
    assert limit is not None
    need = sum(params_pages(plan.ring_params(r.name)) for w in plan.workers for r in w.rings)
    assert need <= limit, (need, limit, roles)
    left_out = [v for v in plan.verdicts if v.plugin in ("iopoll", "nvme_passthrough") and not v.enabled]
    assert left_out, plan.verdicts
    for v in left_out:
        assert "no room for its" in v.reason and "RLIMIT_MEMLOCK" in v.reason and "65536 bytes" in v.reason, v
        assert "ulimit -l" in v.hint and v.ring_roles == ()
    kept = [v.plugin for v in plan.verdicts if v.plugin in ("iopoll", "nvme_passthrough") and v.enabled]
    # what is kept has its ring, what is left out has none
    names = {"iopoll": "iopoll", "nvme_passthrough": "passthrough"}
    assert sorted(roles[0][1:]) == sorted(names[p] for p in kept)


def test_the_opens_act_on_the_verdicts_the_plan_printed() -> None:
    # make_plan, open_stack and the probe's verdicts start from one report (plan_caps): the
    # device the plan left without its IOPOLL ring is not handed to the IOPOLL backend.
    # 3 workers' storage rings take 6 of 10 pages, their IOPOLL rings would need 6 more.
    loaded = _loaded(3, **{"nvme_passthrough.mode": "off"})
    caps = plan_caps(_caps(40 << 10, cores=3), loaded.config, loaded.plugin_manager)
    assert list(caps.memlock.no_room_for) == ["iopoll"]
    assert plan_caps(caps, loaded.config, loaded.plugin_manager) == caps  # a second pass changes nothing
    target = Target(path="/dev/nvme0n1", kind="block", direct=True, writable=False, device=caps.devices[0])
    chosen = select_backend(target, caps, loaded.config, loaded.plugin_manager)
    assert chosen is None, chosen.reason  # the storage ring (the core's backend) serves it
    with_room = _caps(8 << 20, cores=3)
    chosen = select_backend(
        target, plan_caps(with_room, loaded.config, loaded.plugin_manager), loaded.config, loaded.plugin_manager
    )
    assert chosen is not None and "IOPOLL" in chosen.reason  # (the same target where the ring fits)


def test_open_stack_builds_the_stack_of_the_fitted_report() -> None:
    # real rings (this process is not limited); the fake report says 6 pages, charged: the
    # two storage rings fit (2 pages each at 64 entries), their IOPOLL rings do not
    caps = _caps(24 << 10, cores=2)
    with open_stack(caps=caps, overrides={"core.cores": [0, 1], "nvme_passthrough.mode": "off"}) as stack:
        assert "iopoll" in stack.caps.memlock.no_room_for
        assert not _verdict(stack.plan, "iopoll").enabled
        assert [sorted(w.rings) for w in stack.workers] == [["storage"], ["storage"]]
        target = Target(path="/dev/nvme0n1", kind="block", direct=True, writable=False, device=stack.caps.devices[0])
        assert select_backend(target, stack.caps, stack.config, stack.plugin_manager) is None


def test_a_feature_configured_on_keeps_its_rings_and_the_plan_names_the_pages() -> None:
    # "on" is a requirement: the plan fails naming the pages rather than leave it out
    with pytest.raises(PlanError, match="even at their smallest"):
        _plan(_caps(CONTAINER, cores=3), 3, **{"iopoll.mode": "on", "nvme_passthrough.mode": "on"})


def test_features_are_left_out_only_where_the_kernel_charges_the_rings() -> None:
    for charged in (False, None):
        plan = _plan(_caps(CONTAINER, cores=3, charged=charged), 3)
        assert _roles(plan) == [["storage", "iopoll", "passthrough"]] * 3


def test_the_smallest_rings_are_what_the_room_is_counted_in() -> None:
    # 2 workers: storage and both extra rings fit at MIN_ENTRIES (2 pages each, 12 of 16
    # pages): kept, shrunk rather than dropped
    plan = _plan(_caps(CONTAINER, cores=2), 2)
    assert _roles(plan) == [["storage", "iopoll", "passthrough"]] * 2
    assert all(r.entries >= MIN_ENTRIES for w in plan.workers for r in w.rings)


def test_uringstack_probe_s_verdict_lines_say_what_the_plan_says() -> None:
    from uringstack.cli.probe_report import verdicts

    loaded = _loaded(3, **{"nvme_passthrough.mode": "off"})
    lines = {c.feature: c for c in verdicts(_caps(40 << 10, cores=3), loaded.plugin_manager, loaded.config)}
    assert not lines["iopoll"].usable and "no room for its iopoll ring(s)" in lines["iopoll"].reason, lines["iopoll"]
