"""The example plugin in a real stack: its verdict, its ring sizes, its per-stack completion counts."""

from __future__ import annotations

import importlib
import pathlib
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from uringstack.config import load_config
from uringstack.pluginmanager import make_plugin_manager
from uringstack.stack import Stack, open_stack

SRC = pathlib.Path(__file__).resolve().parents[2] / "examples" / "uringstack-example-plugin" / "src"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(SRC))
    yield importlib.import_module("uringstack_example_plugin")
    sys.modules.pop("uringstack_example_plugin", None)


def _stack(example: ModuleType, mode: str = "auto") -> Stack:
    pm = make_plugin_manager(autoload=True)
    if pm.get_plugin("example") is None:
        pm.register(example, "example")
    loaded = load_config(
        env={}, plugin_manager=pm, overrides={"core.cores": [0], "sqpoll.mode": "off", "example.mode": mode}
    )
    return open_stack(loaded.config, plugin_manager=pm)


def test_counts_completions_per_stack_and_worker(example: ModuleType, tmp_path: pathlib.Path) -> None:
    a = _stack(example)
    b = open_stack(a.config, plugin_manager=a.plugin_manager)
    try:
        assert a.workers[0].rings["storage"].params.entries >= 1024
        [verdict] = [v for v in a.plan.verdicts if v.plugin == "example"]
        assert verdict.enabled, verdict.reason
        with a.open(tmp_path / "f", create=True) as h:
            h.write_many([0, 4096], [b"x" * 4096, b"y" * 4096])
            h.fdatasync()
        assert example.completions(a) == {0: {"write": 2, "fdatasync": 1}}
        assert example.completions(b) == {}
    finally:
        a.close()
        b.close()
