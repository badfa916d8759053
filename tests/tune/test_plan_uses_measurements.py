"""The plan follows fake measurements: SQPOLL, registered buffers, worker count, and third-party dimensions."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.config import load_config
from uringstack.hookspecs import hookimpl
from uringstack.plan import make_plan
from uringstack.pluginmanager import make_plugin_manager
from uringstack.probe import probe
from uringstack.probe.model import Capabilities
from uringstack.probe.tuning import AppliedRecord, TuneChoice, TuneDimension, TuneRecord, TuneState, TuneTarget
from uringstack.stack import open_stack
from uringstack.tune.runner import dimensions

from .fakes import fake_record

CPUS = sorted(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def real_caps() -> Capabilities:
    return probe()


def with_records(caps: Capabilities, *records: TuneRecord) -> Capabilities:
    state = TuneState(records=[AppliedRecord(source="test", record=r) for r in records], searched="test")
    return caps.model_copy(update={"tuning": state})


def verdict(caps: Capabilities, plugin: str, **overrides: Any) -> Any:
    loaded = load_config(overrides=overrides, env={})
    plan = make_plan(caps, loaded.config, loaded.plugin_manager)
    return next(v for v in plan.verdicts if v.plugin == plugin), plan


def test_sqpoll_follows_a_win(real_caps: Capabilities, tmp_path: pathlib.Path) -> None:
    caps = with_records(real_caps, fake_record(str(tmp_path), {"sqpoll": {"off": 118_000, "on": 135_000}}))
    v, plan = verdict(caps, "sqpoll", **{"core.cores": [CPUS[0]]})
    assert v.enabled
    assert v.reason == (
        f"auto: measured: 135k IOPS with SQPOLL vs 118k without on {tmp_path} (tuned 2026-11-30 19:40 UTC, 9 s)"
    )
    assert any("SQPOLL" in r.flags for w in plan.workers for r in w.rings)


def test_sqpoll_follows_a_loss_even_where_the_rule_would_enable_it(
    real_caps: Capabilities, tmp_path: pathlib.Path
) -> None:
    caps = with_records(real_caps, fake_record(str(tmp_path), {"sqpoll": {"off": 121_000, "on": 118_000}}))
    # min_cpus=1 and a spare CPU: the rule alone would say yes
    v, plan = verdict(caps, "sqpoll", **{"core.cores": [CPUS[0]], "sqpoll.min_cpus": 1})
    assert not v.enabled
    assert v.reason.startswith("auto: measured: 121k IOPS without vs 118k with SQPOLL on ")
    assert not any("SQPOLL" in r.flags for w in plan.workers for r in w.rings)


def test_a_gain_within_noise_keeps_the_cheaper_setting(real_caps: Capabilities, tmp_path: pathlib.Path) -> None:
    caps = with_records(real_caps, fake_record(str(tmp_path), {"sqpoll": {"off": 100_000, "on": 102_000}}))
    v, _ = verdict(caps, "sqpoll", **{"core.cores": [CPUS[0]]})
    assert not v.enabled and "measured: 100k IOPS without vs 102k with SQPOLL" in v.reason


def test_sqpoll_must_win_on_every_tuned_target(real_caps: Capabilities, tmp_path: pathlib.Path) -> None:
    a = fake_record(str(tmp_path), {"sqpoll": {"off": 100_000, "on": 150_000}})
    b = fake_record("/", {"sqpoll": {"off": 100_000, "on": 90_000}})
    v, _ = verdict(with_records(real_caps, a, b), "sqpoll", **{"core.cores": [CPUS[0]]})
    assert not v.enabled and v.reason.count("measured:") == 2


def test_config_on_and_off_beat_the_measurement(real_caps: Capabilities, tmp_path: pathlib.Path) -> None:
    caps = with_records(real_caps, fake_record(str(tmp_path), {"sqpoll": {"off": 100_000, "on": 150_000}}))
    v, _ = verdict(caps, "sqpoll", **{"sqpoll.mode": "off"})
    assert not v.enabled and v.reason == "off (config)"


def test_without_measurement_the_rule_is_named(real_caps: Capabilities) -> None:
    caps = real_caps.model_copy(update={"tuning": TuneState(searched="cache /nowhere")})
    v, plan = verdict(caps, "sqpoll", **{"sqpoll.min_cpus": 999})
    assert not v.enabled
    assert v.reason.startswith("auto, no measurement (cache /nowhere; run `uringstack tune`): rule min_cpus: ")
    assert "BENCHMARKS" not in v.reason and "vCPU" not in v.reason
    fixedbuf = next(x for x in plan.verdicts if x.plugin == "fixedbuf")
    assert "no measurement" in fixedbuf.reason and "rule: register where RLIMIT_MEMLOCK allows" in fixedbuf.reason
    assert any("no worker-count measurement" in n for n in plan.notes)


def test_fixedbuf_measured_off_registers_nothing(real_caps: Capabilities, tmp_path: pathlib.Path) -> None:
    caps = with_records(real_caps, fake_record(str(tmp_path), {"fixedbuf": {"off": 90_000, "on": 80_000}}))
    v, _ = verdict(caps, "fixedbuf")
    assert not v.enabled and v.reason.startswith("auto: measured: 90k IOPS without vs 80k with registered buffers")
    with open_stack(caps=caps, overrides={"core.cores": [CPUS[0]]}) as stack:
        ring = stack.workers[0].rings["storage"]
        assert ring.registered_buffers == 0 and ring.registered_files == 0
        with stack.open(tmp_path / "f", create=True) as h:
            assert h.fixed_index is None


def test_fixedbuf_measured_on_registers(real_caps: Capabilities, tmp_path: pathlib.Path) -> None:
    caps = with_records(real_caps, fake_record(str(tmp_path), {"fixedbuf": {"off": 80_000, "on": 90_000}}))
    v, _ = verdict(caps, "fixedbuf")
    assert v.enabled and "auto: measured: 90k IOPS with registered buffers and files vs 80k without" in v.reason
    with open_stack(caps=caps, overrides={"core.cores": [CPUS[0]]}) as stack:
        assert stack.workers[0].rings["storage"].registered_buffers > 0


def test_worker_count_follows_the_measurement(real_caps: Capabilities, tmp_path: pathlib.Path) -> None:
    if len(CPUS) < 2:
        pytest.skip("needs 2 CPUs to measure 1 worker against 2")
    record = fake_record(
        str(tmp_path),
        {"workers": {"1": 120_000, "2": 100_000}},
        overrides={"workers=1": {"core.cores": [CPUS[1]]}, "workers=2": {"core.cores": CPUS[:2]}},
    )
    caps = with_records(real_caps, record)
    _, plan = verdict(caps, "sqpoll")
    assert [w.cpu for w in plan.workers] == [CPUS[1]]
    want = f"core: workers on CPUs [{CPUS[1]}]: measured: 120k IOPS with 1 worker"
    assert any(n.startswith(want) for n in plan.notes)
    _, explicit = verdict(caps, "sqpoll", **{"core.cores": CPUS[:2]})
    assert [w.cpu for w in explicit.workers] == CPUS[:2]  # a configured list is never overridden
    with open_stack(caps=caps) as stack:
        assert [w.cpu for w in stack.workers] == [CPUS[1]]


def test_plan_notes_say_what_was_used(real_caps: Capabilities, tmp_path: pathlib.Path) -> None:
    caps = with_records(real_caps, fake_record(str(tmp_path), {"batch": {"4": 50_000, "8": 70_000}}))
    _, plan = verdict(caps, "sqpoll")
    notes = "\n".join(plan.notes)
    assert f"tune: using {tmp_path} (test, tuned 2026-11-30T19:40:00+00:00): best batch=8" in notes
    assert "tune: issue reads in batches of 8" in notes


class ThirdParty:
    """A plugin outside uringstack offering a dimension and deciding from its measurement."""

    @hookimpl
    def uringstack_tune_candidates(self, target: TuneTarget) -> TuneDimension:
        return TuneDimension(
            name="bigrings",
            plugin="bigrings",
            choices=[
                TuneChoice(value="off", overrides={"core.ring_entries": 256}),
                TuneChoice(value="on", overrides={"core.ring_entries": 1024}),
            ],
        )

    @hookimpl
    def uringstack_ring_params(self, params: Any, caps: Capabilities) -> None:
        found = caps.tuning.comparisons("bigrings") if caps.tuning else []
        if found and all(c.best == "on" for c in found):
            params.entries = 1024
            params.reasons.append("bigrings: " + found[0].describe({"on": "with 1024 entries", "off": "with 256"}))


def test_a_third_party_plugin_offers_and_uses_a_dimension(real_caps: Capabilities, tmp_path: pathlib.Path) -> None:
    pm = make_plugin_manager()
    pm.register(ThirdParty(), "bigrings")
    loaded = load_config(plugin_manager=pm, env={})
    target = TuneTarget(given=str(tmp_path), path=str(tmp_path), kind="directory")
    names = [d.name for d in dimensions(target, real_caps, loaded.config, pm)]
    assert names[0] == "batch" and "bigrings" in names and "sqpoll" in names
    caps = with_records(real_caps, fake_record(str(tmp_path), {"bigrings": {"off": 1e5, "on": 2e5}}))
    plan = make_plan(caps, loaded.config, pm)
    ring = plan.workers[0].rings[0]
    assert ring.entries == 1024
    assert any(r.startswith("bigrings: measured: 200k IOPS with 1024 entries") for r in ring.reasons)


FIXED_FIGURES = ("BENCHMARKS", "measured on", "x fio", "vCPU")


@pytest.mark.parametrize("overrides", [{}, {"sqpoll.min_cpus": 1}, {"sqpoll.min_cpus": 999}, {"core.cores": [CPUS[0]]}])
def test_no_plugin_reason_quotes_fixed_benchmark_figures(real_caps: Capabilities, overrides: dict[str, Any]) -> None:
    # without a measurement every reason is a rule; figures from this repository's own VM
    # (BENCHMARKS.md) would be printed on every machine as if they were about it
    caps = real_caps.model_copy(update={"tuning": TuneState(searched="cache /nowhere")})
    loaded = load_config(overrides=overrides, env={})
    plan = make_plan(caps, loaded.config, loaded.plugin_manager)
    texts = [v.reason for v in plan.verdicts] + [r for w in plan.workers for ring in w.rings for r in ring.reasons]
    for text in texts:
        assert not any(f in text for f in FIXED_FIGURES), text


def test_a_record_measured_on_the_other_backend_is_ignored(real_caps: Capabilities, tmp_path: pathlib.Path) -> None:
    """A tune run under URINGSTACK_CORE__BACKEND=fallback measured the thread pool; its choices
    were applied to every io_uring plan after it (session 32)."""
    if not real_caps.uring.usable:
        skip_without(f"a usable io_uring to plan on ({real_caps.uring.reason})")
    record = fake_record(str(tmp_path), {"sqpoll": {"off": 118_000, "on": 135_000}})
    caps = with_records(real_caps, record.model_copy(update={"backend": "fallback"}))
    v, plan = verdict(caps, "sqpoll", **{"core.cores": [CPUS[0]]})
    assert "measured: " not in v.reason
    assert any("measured on the fallback backend; this config's stack uses uring" in n for n in plan.notes), plan.notes
    v, _ = verdict(with_records(real_caps, record.model_copy(update={"backend": "uring"})), "sqpoll",
                   **{"core.cores": [CPUS[0]]})  # fmt: skip
    assert v.reason.startswith("auto: measured: 135k IOPS with SQPOLL")
    v, _ = verdict(with_records(real_caps, record), "sqpoll", **{"core.cores": [CPUS[0]]})  # (before session 32)
    assert v.reason.startswith("auto: measured: 135k IOPS with SQPOLL")


def test_tune_records_the_backend_it_measured(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uringstack.tune.runner import tune

    target = tmp_path / "f.bin"
    target.write_bytes(b"\0" * (1 << 20))
    monkeypatch.setenv("URINGSTACK_CORE__BACKEND", "fallback")
    [(record, _)] = tune([str(target)], 2.5, write_cache=False)
    assert record.backend == "fallback"
