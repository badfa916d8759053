"""The plugin manager: loading, blocking, loud failures, typed hook calls."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy
import pytest

from uringstack.hookspecs import hookimpl, hookspec
from uringstack.pluginmanager import (
    PluginError,
    PluginLoadError,
    UringstackPluginManager,
    make_plugin_manager,
)

MakeDist = Callable[..., Path]

GOOD_PLUGIN = """
from uringstack.hookspecs import hookimpl

@hookimpl
def uringstack_completion_batch(worker, op, results):
    pass
"""


def test_autoload_registers_entry_point_plugins(make_dist: MakeDist, builtins: list[str]) -> None:
    make_dist("acme-plugin", {"acme": "acme_mod"}, {"acme_mod": GOOD_PLUGIN})
    pm = make_plugin_manager(autoload=True, blocked=builtins)
    assert pm.plugin_names() == ["acme"]
    info = {i.name: i for i in pm.plugin_info()}
    assert info["acme"].distribution == "acme-plugin"
    assert info["acme"].version == "0.1"
    assert info["acme"].module == "acme_mod"
    assert pm.has_completion_batch_impls


def test_autoload_scans_the_installed_distributions_once(make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two plugins of its own and the built-ins, loaded from one pass over the installed
    distributions (a scan per plugin name, as pluggy's loader by name makes, cost ~15 ms
    of every plugin manager built), reading only the declaring distributions' metadata."""
    make_dist(
        "acme-plugin", {"acme": "acme_mod", "acme2": "acme_mod2"}, {"acme_mod": GOOD_PLUGIN, "acme_mod2": GOOD_PLUGIN}
    )
    real = importlib.metadata.distributions
    scans = 0
    names_read: list[str] = []

    class Counted:
        def __init__(self, dist: importlib.metadata.Distribution) -> None:
            self._dist = dist
            self.entry_points = dist.entry_points
            self.version = dist.version if any(ep.group == "uringstack" for ep in dist.entry_points) else ""

        @property
        def metadata(self) -> Any:
            names_read.append(str(self._dist.metadata["Name"]))
            return self._dist.metadata

    def distributions(**kw: Any) -> Any:
        nonlocal scans
        scans += 1
        return [Counted(d) for d in real(**kw)]

    monkeypatch.setattr(importlib.metadata, "distributions", distributions)
    pm = make_plugin_manager(autoload=True)
    assert {"acme", "acme2"} <= set(pm.plugin_names())
    assert scans == 1
    assert sorted(set(names_read)) == ["acme-plugin", "uringstack"]


def test_autoload_env_var_disables_loading(
    make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch, builtins: list[str]
) -> None:
    make_dist("acme-plugin", {"acme": "acme_mod"}, {"acme_mod": GOOD_PLUGIN})
    monkeypatch.setenv("URINGSTACK_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert make_plugin_manager(blocked=builtins).plugin_names() == []
    # An explicit argument wins over the environment.
    assert make_plugin_manager(autoload=True, blocked=builtins).plugin_names() == ["acme"]
    monkeypatch.setenv("URINGSTACK_DISABLE_PLUGIN_AUTOLOAD", "0")
    assert make_plugin_manager(blocked=builtins).plugin_names() == ["acme"]


def test_import_error_names_entry_point_and_cause(make_dist: MakeDist, builtins: list[str]) -> None:
    broken = {"broken_mod": "import no_such_module_x\n"}
    make_dist("broken-plugin", {"broken": "broken_mod"}, broken)
    with pytest.raises(PluginLoadError) as info:
        make_plugin_manager(autoload=True, blocked=builtins)
    message = str(info.value)
    assert "'broken'" in message
    assert "broken = broken_mod" in message
    assert "'broken-plugin'" in message
    assert "ModuleNotFoundError" in message and "no_such_module_x" in message
    assert info.value.entry_point == "broken = broken_mod"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_blocked_plugin_is_never_imported(make_dist: MakeDist, builtins: list[str]) -> None:
    make_dist("bomb-plugin", {"bomb": "bomb_mod"}, {"bomb_mod": "raise RuntimeError('imported!')\n"})
    pm = make_plugin_manager(autoload=True, blocked=[*builtins, "bomb"])
    assert pm.plugin_names() == []
    assert pm.is_blocked("bomb")
    assert "bomb_mod" not in sys.modules


def test_misspelled_hook_in_entry_point_plugin_fails_loudly(make_dist: MakeDist, builtins: list[str]) -> None:
    source = """
    from uringstack.hookspecs import hookimpl

    @hookimpl
    def uringstack_ring_param(params, caps, config):
        pass
    """
    make_dist("typo-plugin", {"typo": "typo_mod"}, {"typo_mod": source})
    with pytest.raises(PluginError) as info:
        make_plugin_manager(autoload=True, blocked=builtins)
    message = str(info.value)
    assert "plugin 'typo'" in message
    assert "'uringstack_ring_param' is not a uringstack hook" in message
    assert "did you mean 'uringstack_ring_params'" in message


def test_same_plugin_name_from_two_distributions_is_an_error(make_dist: MakeDist, builtins: list[str]) -> None:
    make_dist("one-plugin", {"twin": "twin_a"}, {"twin_a": GOOD_PLUGIN})
    make_dist("two-plugin", {"twin": "twin_b"}, {"twin_b": GOOD_PLUGIN})
    with pytest.raises(PluginLoadError, match="declared by two distributions"):
        make_plugin_manager(autoload=True, blocked=builtins)
    # ...and blocking the name, as the error advises, works (it did not: the clash was
    # found before the block was looked at)
    pm = make_plugin_manager(autoload=True, blocked=[*builtins, "twin"])
    assert pm.get_plugin("twin") is None


def test_register_checks_hook_names_at_once(plugin_manager: UringstackPluginManager) -> None:
    class Typo:
        @hookimpl
        def uringstack_file_openned(self, handle: object, worker: object) -> None:
            pass

    with pytest.raises(PluginError, match="did you mean 'uringstack_file_opened'"):
        plugin_manager.register(Typo(), "typo")
    # The bad plugin was not left half-registered.
    assert plugin_manager.plugin_names() == []


def test_unmarked_hook_function_is_an_error(plugin_manager: UringstackPluginManager) -> None:
    class Forgot:
        def uringstack_ring_params(self, params: object, caps: object, config: object) -> None:
            pass

    with pytest.raises(PluginError, match=r"not decorated with @uringstack\.hookspecs\.hookimpl"):
        plugin_manager.register(Forgot(), "forgot")


def test_hookimpl_with_argument_not_in_spec_is_an_error(
    plugin_manager: UringstackPluginManager,
) -> None:
    class BadArgs:
        @hookimpl
        def uringstack_probe(self, report: object, extra: object) -> None:
            pass

    with pytest.raises(PluginError, match="does not fit the hook specs"):
        plugin_manager.register(BadArgs(), "badargs")


def test_block_unregisters_and_refuses_later_registration(
    plugin_manager: UringstackPluginManager,
) -> None:
    plugin = types.SimpleNamespace()
    plugin_manager.register(plugin, "victim")
    assert plugin_manager.plugin_names() == ["victim"]
    plugin_manager.block("victim")
    assert plugin_manager.plugin_names() == []
    with pytest.raises(PluginError, match="blocked"):
        plugin_manager.register(plugin, "victim")


def test_select_backend_is_firstresult_and_trylast_loses(
    plugin_manager: UringstackPluginManager,
) -> None:
    def factory(name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, reason="test", open=lambda target, worker: None)

    class Fallback:
        @hookimpl(trylast=True)
        def uringstack_select_backend(self, target: Any, caps: Any, config: Any) -> SimpleNamespace:
            return factory("fallback")

    class Special:
        @hookimpl
        def uringstack_select_backend(self, target: Any, caps: Any, config: Any) -> SimpleNamespace | None:
            return factory("special") if target == "mine" else None

    plugin_manager.register(Special(), "special")
    plugin_manager.register(Fallback(), "fallback")
    assert plugin_manager.select_backend("mine", None, None).name == "special"  # type: ignore[arg-type,union-attr]
    assert plugin_manager.select_backend("other", None, None).name == "fallback"  # type: ignore[arg-type,union-attr]


def test_teardown_mirrors_creation_order_and_survives_failures(
    plugin_manager: UringstackPluginManager,
) -> None:
    calls: list[str] = []

    def make(name: str, fail: bool = False) -> object:
        class P:
            @hookimpl
            def uringstack_ring_created(self, ring: Any, worker: Any, config: Any) -> None:
                calls.append(f"create:{name}")

            @hookimpl
            def uringstack_stack_teardown(self, stack: Any) -> None:
                calls.append(f"teardown:{name}")
                if fail:
                    raise OSError(f"{name} failed")

        return P()

    plugin_manager.register(make("a"), "a")
    plugin_manager.register(make("b", fail=True), "b")
    plugin_manager.register(make("c"), "c")
    plugin_manager.ring_created(None, None, None)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="b failed") as info:
        plugin_manager.stack_teardown(None)  # type: ignore[arg-type]
    assert any("plugin 'b'" in note for note in info.value.__notes__)
    creates = [c.split(":")[1] for c in calls if c.startswith("create")]
    teardowns = [c.split(":")[1] for c in calls if c.startswith("teardown")]
    assert teardowns == list(reversed(creates))  # and c still ran after b failed


def test_completion_batch_impls_flag(plugin_manager: UringstackPluginManager) -> None:
    assert not plugin_manager.has_completion_batch_impls
    seen: list[list[int]] = []

    class Stats:
        @hookimpl
        def uringstack_completion_batch(self, worker: Any, op: str, results: list[int]) -> None:
            seen.append(results)

    plugin_manager.register(Stats(), "stats")
    assert plugin_manager.has_completion_batch_impls
    plugin_manager.completion_batch(None, "read", [4096, -5])  # type: ignore[arg-type]
    assert seen == [[4096, -5]]


def test_addhooks_is_historic_and_new_specs_are_checked(
    plugin_manager: UringstackPluginManager,
) -> None:
    specs = types.ModuleType("acme_specs")

    @hookspec
    def uringstack_acme_event(value: int) -> None:
        """A hook added by a third party."""

    specs.uringstack_acme_event = uringstack_acme_event  # type: ignore[attr-defined]
    got: list[int] = []

    class Provider:
        @hookimpl
        def uringstack_addhooks(self, pluginmanager: pluggy.PluginManager) -> None:
            pluginmanager.add_hookspecs(specs)

    class User:
        @hookimpl
        def uringstack_acme_event(self, value: int) -> None:
            got.append(value)

    # The provider registers after the manager called uringstack_addhooks:
    # historic means it is still called for it.
    plugin_manager.register(Provider(), "provider")
    plugin_manager.register(User(), "user")
    plugin_manager.pm.hook.uringstack_acme_event(value=7)
    assert got == [7]


def test_config_sections_reports_owner_and_bad_returns(
    plugin_manager: UringstackPluginManager,
) -> None:
    from pydantic import BaseModel

    class Section(BaseModel):
        mode: str = "auto"

    class Good:
        @hookimpl
        def uringstack_config_sections(self) -> tuple[str, type[BaseModel]]:
            return ("good", Section)

    class Bad:
        @hookimpl
        def uringstack_config_sections(self) -> Any:
            return "bad"

    plugin_manager.register(Good(), "good-plugin")
    [section] = plugin_manager.config_sections()
    assert (section.name, section.model, section.plugin) == ("good", Section, "good-plugin")
    plugin_manager.register(Bad(), "bad-plugin")
    with pytest.raises(PluginError, match=r"plugin 'bad-plugin'.*got 'bad'"):
        plugin_manager.config_sections()


def test_managers_are_independent() -> None:
    one = make_plugin_manager(autoload=False)
    two = make_plugin_manager(autoload=False)
    one.register(types.SimpleNamespace(), "only-in-one")
    assert two.plugin_names() == []
