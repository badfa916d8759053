"""``core.tune = "on-start"`` calibrates in ``open_stack`` only: ``make_plan`` is a dry run."""

from __future__ import annotations

import os
import pathlib

import pytest

import uringstack.tune.runner as runner
from uringstack.config import load_config
from uringstack.plan import make_plan
from uringstack.probe import probe
from uringstack.stack import open_stack


def _count_calls(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []

    def fake_tune(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise OSError(28, "No space left on device")  # no measurement: the rules apply

    monkeypatch.setattr(runner, "tune", fake_tune)
    return calls


def test_make_plan_never_calibrates(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    calls = _count_calls(monkeypatch)
    loaded = load_config(overrides={"core.tune": "on-start", "core.cores": [min(os.sched_getaffinity(0))]}, env={})
    plan = make_plan(probe(plugin_manager=loaded.plugin_manager), loaded.config, loaded.plugin_manager)
    assert calls == []
    assert not any("calibrating" in n for n in plan.notes)


def test_open_stack_calibrates_on_start(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    calls = _count_calls(monkeypatch)
    with open_stack(overrides={"core.tune": "on-start", "core.cores": [min(os.sched_getaffinity(0))]}) as stack:
        assert len(calls) == 1
        assert any(f"calibrating {tmp_path} failed" in n for n in stack.plan.notes)
