"""The process-wide stack behind uringstack.open()/FileIO without stack=."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading

import pytest

from tests.requires import skip_without
from uringstack.fileobj import default_stack as ds
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


def test_sqpoll_off_unless_the_config_chose_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """File objects wait for each request: SQPOLL (e.g. "auto" turned on by a tune result) only costs them."""
    monkeypatch.delenv("URINGSTACK_SQPOLL__MODE", raising=False)
    monkeypatch.delenv("URINGSTACK_CONFIG", raising=False)
    assert ds.file_object_overrides() == {"sqpoll.mode": "off"}
    monkeypatch.setenv("URINGSTACK_SQPOLL__MODE", "on")
    assert ds.file_object_overrides() == {}


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
