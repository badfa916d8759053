"""The coordinate search with scripted measurements: the order of runs, adoption by MIN_GAIN
and by the measured noise, the budget as a limit."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

import uringstack.tune.runner as runner
from uringstack.config import load_config
from uringstack.plan.tuning import plan_notes
from uringstack.probe import probe
from uringstack.probe.tuning import AppliedRecord, Measurement, TuneState, TuneTarget
from uringstack.testing import make_fake_capabilities

from .fakes import fake_record


class VirtualClock:
    """The runner's ``time`` module in these tests: only the scripted runs advance it, so the
    budget checks are exact however loaded the machine is (a real sleep overshoots there)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def scripted(
    iops: dict[tuple[tuple[str, str], ...], list[float]],
    seen: list[dict[str, str]],
    cost: float | None = None,
    clock: VirtualClock | None = None,
) -> Any:
    def measure(
        target: Any,
        settings: dict[str, str],
        overrides: dict[str, Any],
        batch: int,
        seconds: float,
        caps: Any,
        pm: Any = None,
        **deadline: Any,
    ) -> Measurement:
        seen.append(dict(settings))
        if cost is not None and clock is not None:  # a run takes its window plus set-up, as a real one does
            clock.now += seconds + cost
        key = tuple(sorted((k, v) for k, v in settings.items() if v != _base(k)))
        value = iops[key].pop(0)
        return Measurement(
            settings=settings, overrides=overrides, iops=value, ops=int(value), seconds=seconds, cpu_us_per_io=10.0
        )

    return measure


def _base(dim: str) -> str:
    return {"batch": "4", "fixedbuf": "off", "sqpoll": "off", "workers": "1"}.get(dim, "off")


def _search(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, iops: Any, budget: float = 30.0, cost: float | None = None
) -> Any:
    seen: list[dict[str, str]] = []
    clock = VirtualClock()
    monkeypatch.setattr(runner, "measure", scripted(iops, seen, cost, clock))
    loaded = load_config(env={})
    caps = probe()
    target = TuneTarget(given=str(tmp_path), path=str(tmp_path), kind="directory")
    dims = [d.name for d in runner.dimensions(target, caps, loaded.config, loaded.plugin_manager)]
    monkeypatch.setattr(runner, "time", clock)
    t0 = clock.now
    record = runner.tune_target(target, caps, loaded.config, loaded.plugin_manager, budget)
    record.elapsed_s = clock.now - t0  # unrounded, for the budget check
    return record, seen, dims


def test_noise_raises_the_bar(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    iops = {
        (): [100_000, 80_000],  # the baseline twice: 20 % apart
        (("batch", "8"),): [95_000],  # +19 % over the warm baseline: within the noise
        (("fixedbuf", "on"),): [130_000],  # +62 %: adopted
        (("fixedbuf", "on"), ("sqpoll", "on")): [120_000],
        (("fixedbuf", "on"), ("workers", "2")): [140_000],  # +8 %: within the noise
    }
    record, seen, dims = _search(tmp_path, monkeypatch, iops)
    assert dims == ["batch", "fixedbuf", "sqpoll", "workers"][: len(dims)]
    assert record.noise == pytest.approx(0.2)
    assert seen[0] == seen[1]  # the baseline twice
    best = record.best_measurement()
    assert best is not None and best.settings == {**{d: _base(d) for d in dims}, "fixedbuf": "on"}
    batch = record.comparison("batch")
    assert batch is not None and batch.best == "4" and batch.min_gain == pytest.approx(0.2)
    text = batch.describe({"4": "in batches of 4", "8": "in batches of 8"})
    assert "8 was faster by less than the run-to-run noise of 20%" in text
    fixedbuf = record.comparison("fixedbuf")
    assert fixedbuf is not None and fixedbuf.best == "on" and fixedbuf.iops == {"off": 80_000, "on": 130_000}


def test_quiet_machine_uses_min_gain(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    iops = {
        (): [100_000, 100_000],
        (("batch", "8"),): [104_000],  # +4 % > MIN_GAIN: adopted
        (("batch", "8"), ("fixedbuf", "on")): [106_000],  # +1.9 %: not
        (("batch", "8"), ("sqpoll", "on")): [50_000],
        (("batch", "8"), ("workers", "2")): [90_000],
    }
    record, _, _ = _search(tmp_path, monkeypatch, iops)
    best = record.best_measurement()
    assert record.noise == 0 and best is not None and best.settings["batch"] == "8"
    assert best.settings["fixedbuf"] == "off"


def test_runs_that_do_not_fit_are_skipped(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    iops: Any = {(): [100_000, 100_000]}
    iops.update(
        {
            k: [90_000]
            for k in [
                (("batch", "8"),),
                (("fixedbuf", "on"),),
                (("sqpoll", "on"),),
                (("workers", "2"),),
                (("iopoll", "on"),),
            ]
        }
    )
    budget = 1.0
    record, seen, _ = _search(tmp_path, monkeypatch, iops, budget=budget, cost=0.1)
    assert record.elapsed_s <= budget  # a limit, not a target (exact: the clock is virtual)
    status = [m.status for m in record.measurements]
    ran = status.count("ok")
    assert ran == len(seen) >= 2 and status == ["ok"] * ran + ["skipped"] * (len(status) - ran)
    assert "skipped" in status and all(m.reason.startswith("budget exhausted") for m in record.measurements[ran:])


def test_fake_record_noise_default() -> None:
    record = fake_record("/", {"sqpoll": {"off": 100_000, "on": 102_000}})
    comparison = record.comparison("sqpoll")
    assert comparison is not None
    assert record.noise == 0 and comparison.min_gain == pytest.approx(0.03)


def test_a_dimension_whose_other_choices_were_skipped_is_not_measured() -> None:
    # the budget ran out before "sqpoll on" ran: "measured: 4.8k IOPS without" would claim
    # a comparison that never happened, and auto would follow it instead of its rule
    record = fake_record("/", {"sqpoll": {"off": 100_000, "on": 150_000}})
    on = next(i for i in record.compared["sqpoll"] if record.measurements[i].settings["sqpoll"] == "on")
    record.measurements[on] = record.measurements[on].model_copy(
        update={"status": "skipped", "reason": "budget exhausted (0.10 s left)", "iops": 0.0}
    )
    record.best = next(i for i in record.compared["sqpoll"] if i != on)  # (tune's best is always one that ran)
    assert record.comparison("sqpoll") is None
    state = TuneState(records=[AppliedRecord(source="test", record=record)])
    assert state.comparisons("sqpoll") == []
    # ... and neither the plugin's reason nor the plan's note says otherwise (session 32: "no
    # measurement ... run `uringstack tune`", and "best sqpoll=off" for a value never compared)
    assert state.no_measurement("sqpoll").startswith("no comparison of sqpoll in the measurements of /")
    caps = make_fake_capabilities().model_copy(update={"tuning": state})
    [note] = [n for n in plan_notes(caps) if n.startswith("tune: using")]
    assert "best nothing compared" in note and "(not compared: sqpoll)" in note, note
