"""uringstack.feature.Feature: one decision per (report, config), hooks bound from one object."""

from __future__ import annotations

import types

import pytest
from pydantic import BaseModel

from uringstack.config import load_config
from uringstack.feature import Decision, Feature
from uringstack.pluginmanager import make_plugin_manager
from uringstack.testing import make_fake_capabilities
from uringstack.types import FeatureConfig, FeatureMode


class WidgetConfig(FeatureConfig):
    mode: FeatureMode = "auto"
    size: int = 4


def _plugin(calls: list[int]) -> tuple[Feature[WidgetConfig], types.ModuleType]:
    def decide(caps: object, config: object) -> Decision:
        calls.append(1)
        return Decision(True, "widgets everywhere", "buy more widgets")

    feature = Feature("widget", WidgetConfig, decide, ring_roles=("widget",))
    module = types.ModuleType("widget_plugin")
    # What a plugin module does with `uringstack_config_sections, ... = FEATURE.hooks()`.
    sections, check = feature.hooks()
    vars(module).update(uringstack_config_sections=sections, uringstack_check_support=check)
    return feature, module


def test_bound_hooks_register_and_give_the_verdict() -> None:
    calls: list[int] = []
    feature, module = _plugin(calls)
    pm = make_plugin_manager(autoload=False)
    pm.register(module, "widget")  # the unmarked-hook check accepts the bound hookimpls
    loaded = load_config(env={}, plugin_manager=pm, overrides={"widget.size": 8})
    assert feature.section(loaded.config).size == 8
    caps = make_fake_capabilities()
    [verdict] = pm.check_support(caps, loaded.config)
    assert (verdict.plugin, verdict.mode, verdict.enabled) == ("widget", "auto", True)
    assert verdict.hint == "buy more widgets"
    assert verdict.ring_roles == ("widget",)


def test_decision_is_computed_once_per_report_and_config() -> None:
    calls: list[int] = []
    feature, module = _plugin(calls)
    pm = make_plugin_manager(autoload=False)
    pm.register(module, "widget")
    config = load_config(env={}, plugin_manager=pm).config
    caps = make_fake_capabilities()
    for _ in range(3):
        feature.decide(caps, config)
    pm.check_support(caps, config)
    assert len(calls) == 1
    feature.decide(make_fake_capabilities(), config)  # another report: decided again
    assert len(calls) == 2


def test_model_without_mode_is_refused() -> None:
    class NoMode(BaseModel):
        size: int = 1

    with pytest.raises(TypeError, match="has no 'mode' field"):
        Feature("nomode", NoMode, lambda caps, config: (False, "x"))
