"""The process-wide stack behind uringstack.open()/FileIO without stack=."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.config import StackConfig, load_config
from uringstack.fileobj import default_stack as ds
from uringstack.plugins.sqpoll.plugin import SqpollConfig
from uringstack.stack import Stack, open_stack


def test_built_once_for_all_threads() -> None:
    got: list[Stack] = []
    threads = [threading.Thread(target=lambda: got.append(ds.default_stack())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert len(got) == 8 and all(s is got[0] for s in got)


def test_files_left_open_are_flushed_and_the_stack_closed_at_exit(tmp_path: pathlib.Path) -> None:
    """A buffered writer never closed still reaches the file at exit, as the built-in's does."""
    script = f"""
import uringstack
f = uringstack.open({str(tmp_path / "text")!r}, "w")
f.write("kept" * 100_000)
f.write("tail")  # stays in the buffers until exit
g = uringstack.open({str(tmp_path / "bin")!r}, "wb")
g.write(b"x" * 3_000_000)
g.write(b"y")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert (tmp_path / "text").read_text() == "kept" * 100_000 + "tail"
    assert (tmp_path / "bin").read_bytes() == b"x" * 3_000_000 + b"y"


def _sqpoll_mode(config: StackConfig) -> str:
    return config.section("sqpoll", SqpollConfig).mode


def test_sqpoll_off_unless_the_config_chose_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """File objects wait for each request: SQPOLL (e.g. "auto" turned on by a tune result) only costs them."""
    monkeypatch.delenv("URINGSTACK_SQPOLL__MODE", raising=False)
    monkeypatch.delenv("URINGSTACK_CONFIG", raising=False)
    loaded = load_config()
    assert _sqpoll_mode(loaded.config) == "auto"
    assert _sqpoll_mode(ds.file_object_config(loaded)) == "off"
    assert _sqpoll_mode(loaded.config) == "auto"  # (a copy: the loaded config is left as it was)
    monkeypatch.setenv("URINGSTACK_SQPOLL__MODE", "on")
    loaded = load_config()
    assert ds.file_object_config(loaded) is loaded.config
    assert _sqpoll_mode(loaded.config) == "on"


def test_a_disabled_sqpoll_plugin_leaves_the_config_as_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("URINGSTACK_CONFIG", raising=False)
    monkeypatch.setenv("URINGSTACK_CORE__DISABLED_PLUGINS", '["sqpoll"]')
    loaded = load_config()
    assert "sqpoll" not in loaded.config.sections()
    assert ds.file_object_config(loaded) is loaded.config


def test_the_default_stack_loads_the_config_and_its_plugins_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until session 46 the SQPOLL choice loaded the config (and built a plugin manager, each
    plugin loaded again) before the stack loaded it once more."""
    import uringstack.config as config_module
    import uringstack.config.load as load_module

    loads: list[object] = []
    managers: list[object] = []
    real_load, real_manager = config_module.load_config, load_module.make_plugin_manager

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return real_load(*args, **kwargs)

    def counted_manager(*args: Any, **kwargs: Any) -> Any:
        managers.append(args)
        return real_manager(*args, **kwargs)

    monkeypatch.setattr(config_module, "load_config", counted_load)
    monkeypatch.setattr(load_module, "make_plugin_manager", counted_manager)
    with ds._lock:
        saved, ds._stack = ds._stack, None
    try:
        stack = ds.default_stack()
        try:
            assert (len(loads), len(managers)) == (1, 1)
        finally:
            stack.close()
    finally:
        with ds._lock:
            ds._stack = saved


def test_default_stack_has_no_sqpoll_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even where "auto" would plan SQPOLL (here: its CPU-count rule relaxed, as a tune result saying "on")."""
    monkeypatch.delenv("URINGSTACK_SQPOLL__MODE", raising=False)
    monkeypatch.delenv("URINGSTACK_CONFIG", raising=False)
    monkeypatch.setenv("URINGSTACK_SQPOLL__MIN_CPUS", "1")
    monkeypatch.setenv("URINGSTACK_CORE__CORES", "[0]")  # the other CPU is spare for a poller
    with open_stack() as plain:  # the premise: without the override, this machine gets a poller
        if "SQPOLL" not in {f for w in plain.plan.workers for r in w.rings for f in r.flags}:
            skip_without(f"SQPOLL is not planned even with a CPU spare for its poller: {plain.plan.verdicts}")
    with ds._lock:
        saved, ds._stack = ds._stack, None
    try:
        stack = ds.default_stack()
        flags = {f for w in stack.plan.workers for r in w.rings for f in r.flags}
        assert "SQPOLL" not in flags, stack.plan
        stack.close()
    finally:
        with ds._lock:
            ds._stack = saved
