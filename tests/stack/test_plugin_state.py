"""Hooks reach per-stack plugin state and typed handles; no process-wide registry needed."""

from __future__ import annotations

import pathlib
from collections import Counter
from typing import Any

from uringstack.hookspecs import hookimpl
from uringstack.pluginmanager import make_plugin_manager
from uringstack.ring import Ring
from uringstack.stack import Stack, Worker, open_stack
from uringstack.stack.handle import FileHandle


class OpenCounter:
    """Counts opens per stack in the stack's own plugin state."""

    @hookimpl
    def uringstack_file_opened(self, handle: FileHandle, worker: Worker) -> None:
        counts = worker.stack.plugin_state("opencounter", Counter)
        counts[handle.backend] += 1
        # The typed handle says which ring its I/O goes to.
        self.rings.append(handle.ring)

    def __init__(self) -> None:
        self.rings: list[Ring | None] = []


def _stack(plugin: Any) -> Stack:
    from uringstack.config import load_config

    pm = make_plugin_manager(autoload=True)
    pm.register(plugin, "opencounter")
    loaded = load_config(env={}, overrides={"core.cores": [0]}, plugin_manager=pm)
    return open_stack(loaded.config, plugin_manager=pm)


def test_two_stacks_keep_separate_plugin_state(tmp_path: pathlib.Path) -> None:
    plugin = OpenCounter()
    a, b = _stack(plugin), None
    try:
        b = open_stack(a.config, plugin_manager=a.plugin_manager)
        for name in ("x", "y"):
            a.open(tmp_path / name, create=True).close()
        b.open(tmp_path / "z", create=True).close()
        assert sum(a.plugin_state("opencounter", Counter).values()) == 2
        assert sum(b.plugin_state("opencounter", Counter).values()) == 1
        uring = [r for r in plugin.rings if r is not None]
        assert uring and all(isinstance(r, Ring) for r in uring)
        assert a.workers[0].rings["storage"] in uring
    finally:
        a.close()
        if b is not None:
            b.close()


def test_plugin_state_factory_runs_once() -> None:
    calls: list[int] = []

    def make() -> list[int]:
        calls.append(1)
        return []

    with open_stack(overrides={"core.cores": [0]}) as stack:
        first = stack.plugin_state("x", make)
        assert stack.plugin_state("x", make) is first
        assert calls == [1]
