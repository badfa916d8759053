"""The iopoll plugin in ``auto`` follows ``uringstack tune``'s measurement of IOPOLL on each
device, as sqpoll and fixedbuf do: fake measurements on fake pollable devices."""

from __future__ import annotations

from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.config import load_config
from uringstack.plan import make_plan
from uringstack.plugins.iopoll.plugin import serve_decision
from uringstack.probe import probe
from uringstack.probe.model import BlockDevice, Capabilities
from uringstack.probe.tuning import AppliedRecord, TuneRecord, TuneState
from uringstack.types import Target

from .fakes import fake_record

POLLED = BlockDevice(name="nvme9n1", path="/dev/nvme9n1", io_poll=True, nvme=True)
OTHER = BlockDevice(name="nvme8n1", path="/dev/nvme8n1", io_poll=True, nvme=True)


@pytest.fixture(scope="module")
def real_caps() -> Capabilities:
    caps = probe()
    if not caps.uring.accepts("IOPOLL"):
        skip_without(f"the kernel refuses IORING_SETUP_IOPOLL: {caps.uring.setup_flags.get('IOPOLL')}")
    return caps


def on_device(device: BlockDevice, iops: dict[str, float]) -> TuneRecord:
    """A record of *device* (as `uringstack tune /dev/nvmeXnY` writes it) comparing IOPOLL off/on."""
    record = fake_record("/", {"iopoll": iops}, kind="block")
    key = record.key.model_copy(update={"device": record.key.device.model_copy(update={"name": device.name})})
    return record.model_copy(update={"target": device.path, "key": key})


def caps_with(real: Capabilities, *records: TuneRecord, devices: tuple[BlockDevice, ...] = (POLLED,)) -> Capabilities:
    state = TuneState(records=[AppliedRecord(source="test", record=r) for r in records], searched="cache /nowhere")
    return real.model_copy(update={"devices": list(devices), "tuning": state})


def decide(caps: Capabilities, device: BlockDevice, **overrides: Any) -> tuple[bool, str, Any]:
    loaded = load_config(overrides={"core.cores": [min(caps.cpus.allowed)], **overrides}, env={})
    target = Target(path=device.path, kind="block", direct=True, writable=False, device=device)
    plan = make_plan(caps, loaded.config, loaded.plugin_manager)
    verdict = next(v for v in plan.verdicts if v.plugin == "iopoll")
    ok, why = serve_decision(target, caps, loaded.config)
    return ok, why, (verdict, plan)


def iopoll_rings(plan: Any) -> list[Any]:
    return [r for w in plan.workers for r in w.rings if r.role == "iopoll"]


def test_a_measured_loss_keeps_the_device_on_the_storage_ring(real_caps: Capabilities) -> None:
    caps = caps_with(real_caps, on_device(POLLED, {"off": 30_000, "on": 20_000}))
    ok, why, (verdict, plan) = decide(caps, POLLED)
    assert not ok
    assert why.startswith("iopoll: auto: measured: 30k IOPS without vs 20k with IOPOLL on /dev/nvme9n1 (tuned ")
    # no other device polls: no IOPOLL ring is made at all
    assert not verdict.enabled and verdict.reason.startswith("auto: measured: 30k IOPS without")
    assert iopoll_rings(plan) == []


def test_a_measured_win_polls(real_caps: Capabilities) -> None:
    caps = caps_with(real_caps, on_device(POLLED, {"off": 20_000, "on": 30_000}))
    ok, why, (verdict, plan) = decide(caps, POLLED)
    assert ok and "auto: measured: 30k IOPS with IOPOLL vs 20k without on /dev/nvme9n1" in why
    assert verdict.enabled and "measured: 30k IOPS with IOPOLL" in verdict.reason
    assert iopoll_rings(plan)


def test_a_gain_within_min_gain_keeps_the_cheaper_storage_ring(real_caps: Capabilities) -> None:
    caps = caps_with(real_caps, on_device(POLLED, {"off": 100_000, "on": 101_000}))
    ok, why, _ = decide(caps, POLLED)
    assert not ok and "measured: 100k IOPS without vs 101k with IOPOLL" in why


def test_a_measurement_of_one_device_does_not_decide_another(real_caps: Capabilities) -> None:
    caps = caps_with(real_caps, on_device(POLLED, {"off": 30_000, "on": 20_000}), devices=(POLLED, OTHER))
    ok, why, (verdict, plan) = decide(caps, OTHER)
    assert ok, why
    assert "rule: poll where queue/io_poll is 1" in why and "no measurement of nvme8n1" in why
    # the stack still makes IOPOLL rings: nvme8n1 polls by the rule, nvme9n1 was measured off
    assert verdict.enabled and iopoll_rings(plan)
    assert "nvme8n1" in verdict.reason and "measured: 30k IOPS without" in verdict.reason
    assert not decide(caps, POLLED)[0]


def test_polling_must_win_on_every_tuned_target_of_the_device(real_caps: Capabilities) -> None:
    win = on_device(POLLED, {"off": 20_000, "on": 30_000})
    loss = on_device(POLLED, {"off": 30_000, "on": 20_000}).model_copy(update={"target": "/srv/data"})
    ok, why, _ = decide(caps_with(real_caps, win, loss), POLLED)
    assert not ok and why.count("measured:") == 2


def test_without_measurement_the_rule_is_named(real_caps: Capabilities) -> None:
    ok, why, (verdict, _) = decide(caps_with(real_caps), POLLED)
    assert ok
    assert why == (
        "iopoll: /dev/nvme9n1 is on nvme9n1: queue/io_poll is 1 (auto, no measurement "
        "(cache /nowhere; run `uringstack tune`): rule: poll where queue/io_poll is 1)"
    )
    assert verdict.enabled and "no measurement" in verdict.reason


def test_config_on_beats_a_measured_loss(real_caps: Capabilities) -> None:
    caps = caps_with(real_caps, on_device(POLLED, {"off": 30_000, "on": 20_000}))
    ok, why, (verdict, plan) = decide(caps, POLLED, **{"iopoll.mode": "on"})
    assert ok and "measured" not in why
    assert verdict.enabled and iopoll_rings(plan)


def test_config_off_beats_a_measured_win(real_caps: Capabilities) -> None:
    caps = caps_with(real_caps, on_device(POLLED, {"off": 20_000, "on": 30_000}))
    ok, why, (verdict, _) = decide(caps, POLLED, **{"iopoll.mode": "off"})
    assert not ok and why == "iopoll: off (config)" and not verdict.enabled
