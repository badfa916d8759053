"""A handle or a stack dropped without ``close()``: closed when collected, with a ResourceWarning.

Until session 34 neither was ever freed: the stack held its handles in a
strong set (a dropped handle kept its descriptor and fixed-file slot until the
stack closed), and each worker's thread ran a bound method of the worker, so a
dropped stack kept its threads, rings and registered buffers for the life of
the process.  Now each is closed as an unclosed ``io.FileIO`` is, by the
library's reaper thread (``uringstack.reaper``), never in the finalizer's own
frame: that may be the stack's own worker thread.
"""

from __future__ import annotations

import gc
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import uringstack
from tests.requires import skip_without
from tests.stack.conftest import BACKENDS, GatedReads
from uringstack import reaper
from uringstack.hookspecs import hookimpl
from uringstack.pluginmanager import make_plugin_manager
from uringstack.stack import Stack, open_stack

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = b"dropped" * 600
CPU = [min(os.sched_getaffinity(0))]  # one worker: one thread and ring per stack to watch


def _points_at(fd: int, path: pathlib.Path) -> bool:
    """Whether this process's descriptor *fd* is open on *path*."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(path)
    except FileNotFoundError:
        return False


def _ring_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[io_uring]":
                fds.add(int(name))
        except FileNotFoundError:  # (the listing's own descriptor)
            pass
    return fds


def _drained() -> bool:
    """``reaper.drain(10)``, or an AssertionError saying where the reaper thread is stuck."""
    if reaper.drain(10):
        return True
    thread = reaper._thread
    frame = sys._current_frames().get(thread.ident) if thread is not None and thread.ident else None
    where = "".join(traceback.format_stack(frame)) if frame is not None else "no reaper thread"
    raise AssertionError(f"the reaper did not drain in 10 s:\n{where}")


def _resource_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.fixture
def caught() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised meanwhile, on any thread (the finalizers run where the GC does)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield seen


@pytest.mark.timeout(60)
def test_dropped_handle_is_closed_with_one_warning(
    stack: Stack, tmp_path: pathlib.Path, caught: list[warnings.WarningMessage]
) -> None:
    """Its descriptor is closed once collected (the stack's set held it before), with exactly
    one ResourceWarning naming the path; the stack itself goes on."""
    path = tmp_path / "f"
    path.write_bytes(DATA)
    h = stack.open(path)
    fd = h.fd
    gone = weakref.ref(h)
    del h
    gc.collect()
    assert _drained()
    assert not _points_at(fd, path)
    warned = _resource_warnings(caught)
    assert len(warned) == 1, warned
    assert "unclosed <FileHandle" in warned[0] and str(path) in warned[0]
    assert gone() is None
    with stack.open(path) as again:  # (nothing of the stack went with it)
        assert again.read_many([0], [bytearray(7)]) == [7]


@pytest.mark.timeout(60)
def test_dropped_handle_frees_its_fixed_file_slot(
    tmp_path: pathlib.Path, caught: list[warnings.WarningMessage]
) -> None:
    """A registered-file slot is given back with the descriptor."""
    from uringstack.plugins.fixedbuf.files import FixedFileTable
    from uringstack.plugins.fixedbuf.plugin import FILES_KEY

    path = tmp_path / "f"
    path.write_bytes(DATA)
    with open_stack(overrides={**BACKENDS["uring"], "fixedbuf.mode": "auto", "core.cores": CPU}) as stack:
        table = stack.workers[0].resources.get(FILES_KEY)
        if not isinstance(table, FixedFileTable):
            skip_without("a registered-file table (fixedbuf found no io_uring file registration)")
        free = table.free_slots()
        h = stack.open(path)
        assert h.fixed_index is not None and table.free_slots() == free - 1
        del h
        gc.collect()
        assert _drained()
        assert table.free_slots() == free
    assert len(_resource_warnings(caught)) == 1


@pytest.mark.timeout(60)
def test_handle_with_a_batch_in_flight_is_not_closed_under_it(
    tmp_path: pathlib.Path, gated_fallback_reads: GatedReads, caught: list[warnings.WarningMessage]
) -> None:
    """Dropped with a read still in flight (held at the fallback's gate): its descriptor stays
    open until the read returned, the pending still gives the read's bytes; meanwhile the
    reaper is not held up: another dropped handle is closed at once."""
    path, other = tmp_path / "f", tmp_path / "g"
    path.write_bytes(DATA)
    other.write_bytes(DATA)
    with open_stack(overrides=BACKENDS["fallback"]) as stack:
        h = stack.open(path)
        fd = h.fd
        buf = bytearray(4096)
        pending = h.start_read_many([0], [buf])
        del h
        gc.collect()
        assert _drained()  # (the handle's close waits for the read, at the gate)
        assert _points_at(fd, path)
        h2 = stack.open(other)
        fd2 = h2.fd
        del h2
        gc.collect()
        deadline = time.monotonic() + 3
        while _points_at(fd2, other) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _points_at(fd2, other), "the reaper waited for the other handle's read"
        assert _points_at(fd, path)
        gated_fallback_reads.gate.set()
        assert pending.wait() == [4096] and bytes(buf) == DATA[:4096]
        deadline = time.monotonic() + 10
        while _points_at(fd, path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _points_at(fd, path)
    assert len(_resource_warnings(caught)) == 2


@pytest.mark.timeout(60)
def test_dropped_stack_ends_its_workers_and_frees_its_rings(caught: list[warnings.WarningMessage]) -> None:
    """No handle left: the stack is collected, its worker threads end and its rings' descriptors
    are closed, with one ResourceWarning."""
    before = _ring_fds()
    stack = open_stack(overrides={**BACKENDS["uring"], "core.cores": CPU})
    threads = [w._thread for w in stack.workers]
    if not _ring_fds() - before:
        skip_without("io_uring (the stack built no ring)")
    gone = weakref.ref(stack)
    del stack
    gc.collect()
    assert _drained()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), f"{t.name} of the dropped stack still runs"
    assert _ring_fds() - before == set()
    warned = _resource_warnings(caught)
    assert len(warned) == 1 and "unclosed <uringstack.Stack" in warned[0], warned
    caught.clear()  # (a warning's source is the stack)
    gc.collect()
    assert gone() is None


class _TeardownWitness:
    """Records, at each stack's plugin teardown, whether the stack's rings were still open."""

    def __init__(self) -> None:
        self.rings_open: list[bool] = []

    @hookimpl
    def uringstack_stack_teardown(self, stack: Stack) -> None:
        self.rings_open += [not ring.closed for w in stack.workers for ring in w.rings.values()]


@pytest.mark.timeout(60)
def test_dropped_stack_tears_down_in_order(caught: list[warnings.WarningMessage]) -> None:
    """The collected stack's rings go with it in one pass, but are closed by its close, after
    the plugins' teardown (which unregisters buffers and files from them), not by their own
    finalizers before it."""
    from uringstack.config import load_config

    witness = _TeardownWitness()
    pm = make_plugin_manager(autoload=True)
    pm.register(witness, "teardown-witness")
    loaded = load_config(env={}, overrides={**BACKENDS["uring"], "core.cores": CPU}, plugin_manager=pm)
    stack = open_stack(loaded.config, plugin_manager=pm)
    if not any(w.rings for w in stack.workers):
        skip_without("io_uring (the stack built no ring)")
    del stack, loaded
    gc.collect()
    assert _drained()
    assert witness.rings_open and all(witness.rings_open), witness.rings_open


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("_gc_off")
def test_stack_collected_on_its_own_worker_thread(
    caught: list[warnings.WarningMessage], unraisable: list[BaseException | None]
) -> None:
    """The finalizer runs on the dropped stack's own worker thread (the cyclic GC ran there):
    nothing deadlocks or fails there (a close in place would join that very thread); the
    stack is closed and its threads end."""
    stack = open_stack(overrides={**BACKENDS["uring"], "core.cores": CPU})
    threads = [w._thread for w in stack.workers]
    release = threading.Event()

    def collect_here() -> str:
        assert release.wait(10)
        gc.collect()  # (the stack is only in a reference cycle now: collected here)
        return threading.current_thread().name

    fut = stack.workers[0].submit(collect_here)
    del stack
    release.set()
    assert fut.result(10) == threads[0].name
    assert _drained()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), f"{t.name} of the dropped stack still runs"
    assert unraisable == []
    assert len(_resource_warnings(caught)) == 1


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("_gc_off")
def test_handle_and_stack_collected_together(
    tmp_path: pathlib.Path, caught: list[warnings.WarningMessage], unraisable: list[BaseException | None]
) -> None:
    """A handle in a reference cycle, dropped with its stack: one collection finds both; the
    handle is closed, then the stack, with a warning each and nothing raised."""
    path = tmp_path / "f"
    path.write_bytes(DATA)
    stack = open_stack(overrides={**BACKENDS["uring"], "core.cores": CPU})
    threads = [w._thread for w in stack.workers]
    h: Any = stack.open(path)
    h.cycle = h
    fd = h.fd
    del h, stack
    gc.collect()
    assert _drained()
    assert not _points_at(fd, path)
    gc.collect()  # (the handle's close held the stack: it is collected once that ran)
    assert _drained()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert unraisable == []
    assert len(_resource_warnings(caught)) == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layer", ["raw", "raw in a cycle", "buffered"])
def test_dropped_file_object_closes_its_handle_once(
    stack: Stack, tmp_path: pathlib.Path, caught: list[warnings.WarningMessage], layer: str
) -> None:
    """A file object dropped unclosed keeps its own behaviour: what it buffered is written and
    its handle closed by its own finalizer, which warns as ``io.FileIO``'s does (the raw file;
    a buffered layer over it closes it first, silently, as the built-in's does here); the
    handle under it warns nothing of its own."""
    path = tmp_path / "f"
    raw = layer != "buffered"
    f: Any = uringstack.FileIO(path, "w", stack=stack) if raw else uringstack.open(path, "wb", stack=stack)
    if layer == "raw in a cycle":
        f.cycle = f  # (one collection finalizes the file and its handle, in no set order)
    f.write(b"written")
    fd = (f if raw else f.raw).handle.fd
    del f
    gc.collect()
    reaper.drain(10)  # (nothing should be handed to it)
    assert path.read_bytes() == b"written"
    assert not _points_at(fd, path)
    warned = _resource_warnings(caught)
    assert not [w for w in warned if "FileHandle" in w], warned
    assert len(warned) == (1 if raw else 0), warned


class _Watcher:
    """An object layered over a handle (``watch_close``) with no finalizer of its own."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        handle.watch_close(self._closing)

    def _closing(self) -> None:
        pass


@pytest.mark.timeout(60)
def test_handle_under_a_watcher_that_does_not_own_it_is_closed(
    stack: Stack, tmp_path: pathlib.Path, caught: list[warnings.WarningMessage]
) -> None:
    """Only a watcher that declared it closes the handle (``owner=True``, as the file objects)
    keeps the handle's finalizer out: under any other, a dropped handle is closed and warned about."""
    path = tmp_path / "f"
    path.write_bytes(DATA)
    watcher = _Watcher(stack.open(path))
    fd = watcher.handle.fd
    del watcher
    gc.collect()
    assert _drained()
    assert not _points_at(fd, path)
    assert len(_resource_warnings(caught)) == 1


@pytest.mark.timeout(60)
def test_one_reaper_for_the_library(tmp_path: pathlib.Path) -> None:
    """The WAL hands its dropped logs to the same thread as handles and stacks."""
    from uringstack.wal import Wal

    with open_stack(overrides=BACKENDS["fallback"]), Wal.open(tmp_path / "wal", backend="fallback"):
        names = [t.name for t in threading.enumerate()]
    assert names.count("uringstack-reaper") == 1 and "wal-reaper" not in names, names


FORK_SCRIPT = textwrap.dedent(
    """
    import gc, json, os, sys, warnings
    from uringstack.stack import open_stack

    path, report = sys.argv[1:3]
    stack = open_stack(overrides={"core.backend": "auto", "iopoll.mode": "off", "fixedbuf.mode": "auto",
                                  "core.cores": [min(os.sched_getaffinity(0))]})
    h = stack.open(path)
    fd, slot = h.fd, h.fixed_index
    pid = os.fork()
    if pid == 0:
        child_out = {}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                del h
                gc.collect()
                del stack
                gc.collect()
            child_out = {"warnings": [str(w.message) for w in caught]}
        except BaseException as exc:
            child_out = {"error": repr(exc)}
        with open(report, "w") as f:
            json.dump(child_out, f)
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    buf = bytearray(7)
    got = h.read_many([0], [buf])
    out = {"read": [got, bytes(buf).decode()], "slot": [slot, h.fixed_index], "fd": os.readlink(f"/proc/self/fd/{fd}")}
    h.close()
    stack.close()
    with open(report) as f:
        out["child"] = json.load(f)
    print(json.dumps(out))
    """
)


@pytest.mark.timeout(60)
def test_fork_child_dropping_inherited_objects_closes_nothing_of_the_parents(tmp_path: pathlib.Path) -> None:
    """A fork child drops the parent's handle and stack: no warning (they are the parent's),
    nothing handed to a reaper, and the parent's handle still reads through its descriptor
    and fixed-file slot."""
    path = tmp_path / "f"
    path.write_bytes(DATA)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-W", "default::ResourceWarning", "-c", FORK_SCRIPT, str(path), str(tmp_path / "child.json")],
        capture_output=True, text=True, timeout=45, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["child"] == {"warnings": []}
    assert out["read"] == [[7], DATA[:7].decode()]
    assert out["slot"][0] == out["slot"][1]
    assert out["fd"] == str(path)
    assert "ResourceWarning" not in proc.stderr, proc.stderr
