"""``Stack.close()`` waits for the handle opens and closes other threads have under way.

The hook spec promises plugins that ``uringstack_stack_teardown`` runs "after every
handle was closed".  Until session 45 a handle whose close another thread was running
made ``Stack.close()``'s own close of it return at once, and the teardown went on
beside it: fixedbuf unregistered its file table while the other thread's
``uringstack_file_closed`` cleared a slot of it (``ENXIO``, stop 55's 5.10 failure).
An open under way in another thread did the same from the other side: its
``uringstack_file_opened`` could run after the teardown.  Each test holds the other
thread inside a file hook and checks the order the hooks ran in; with the teardown not
waiting, ``"teardown"`` comes before the held hook's end.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pathlib
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from tests.stack.conftest import BACKENDS
from tests.waiting import wait_until
from uringstack import reaper
from uringstack.config import load_config
from uringstack.errors import RingClosedError
from uringstack.hookspecs import hookimpl
from uringstack.pluginmanager import make_plugin_manager
from uringstack.stack import Stack, open_stack

pytestmark = pytest.mark.timeout(60)


class HeldFileHooks:
    """Records the order of the file hooks and the teardown; holds the hook named in
    ``hold`` until ``release`` is set (the other thread's open or close, under way)."""

    def __init__(self, hold: str) -> None:
        self.hold = hold
        self.entered = threading.Event()
        self.release = threading.Event()
        self.order: list[str] = []

    def _maybe_hold(self, hook: str) -> None:
        if hook == self.hold and not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(30), "the test never released the held hook"
            self.order.append(f"{hook} end")

    @hookimpl
    def uringstack_file_opened(self, handle: Any, worker: Any) -> None:
        self.order.append("file_opened")
        self._maybe_hold("file_opened")

    @hookimpl
    def uringstack_file_closed(self, handle: Any, worker: Any) -> None:
        self.order.append("file_closed")
        self._maybe_hold("file_closed")

    @hookimpl
    def uringstack_stack_teardown(self, stack: Any) -> None:
        self.order.append("teardown")


def _stack(plugin: object, backend: str, **overrides: Any) -> Stack:
    pm = make_plugin_manager()
    pm.register(plugin, "held-file-hooks")
    settings = {**BACKENDS[backend], "core.cores": [0], "sqpoll.mode": "off", **overrides}
    loaded = load_config(env={}, plugin_manager=pm, overrides=settings)
    return open_stack(loaded.config, plugin_manager=pm)


class Closer(threading.Thread):
    """``stack.close()`` in a thread of its own; what it raised, if anything."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.stack.close()
        except BaseException as exc:
            self.error = exc


def close_beside(stack: Stack, held: str, order: list[str], release: Callable[[], None]) -> None:
    """``stack.close()`` in a thread while another step (*held*) is held in a hook: the
    teardown must not run until ``release()`` let that step end; then the close succeeds."""
    closer = Closer(stack)
    closer.start()
    # Not waiting, the teardown is done by now (milliseconds); waiting, it is held.
    closer.join(0.5)
    assert "teardown" not in order, f"the teardown ran beside {held}: {order}"
    release()
    closer.join(10)
    assert not closer.is_alive() and closer.error is None, closer.error


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_teardown_waits_for_a_close_another_thread_runs(tmp_path: pathlib.Path, backend: str) -> None:
    hooks = HeldFileHooks(hold="file_closed")
    stack = _stack(hooks, backend)
    handle = stack.open(tmp_path / "f", create=True)
    other = threading.Thread(target=handle.close, daemon=True)
    other.start()
    assert hooks.entered.wait(10), "the other thread's close never reached file_closed"
    close_beside(stack, "another thread's close", hooks.order, hooks.release.set)
    other.join(10)
    assert hooks.order == ["file_opened", "file_closed", "file_closed end", "teardown"]
    assert handle.closed and stack.closed


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_teardown_waits_for_an_open_another_thread_runs(tmp_path: pathlib.Path, backend: str) -> None:
    hooks = HeldFileHooks(hold="file_opened")
    stack = _stack(hooks, backend)
    opened: list[BaseException | object] = []

    def open_one() -> None:
        try:
            opened.append(stack.open(tmp_path / "f", create=True))
        except BaseException as exc:
            opened.append(exc)

    other = threading.Thread(target=open_one, daemon=True)
    other.start()
    assert hooks.entered.wait(10), "the other thread's open never reached file_opened"
    close_beside(stack, "another thread's open", hooks.order, hooks.release.set)
    other.join(10)
    # The open saw the stack closed: it closed its handle itself (its file_closed before
    # the teardown) and raised as an open of a closed stack does.
    assert len(opened) == 1 and isinstance(opened[0], RingClosedError), opened
    assert hooks.order == ["file_opened", "file_opened end", "file_closed", "teardown"]


def test_an_open_after_the_close_began_is_refused_without_its_hooks(tmp_path: pathlib.Path) -> None:
    hooks = HeldFileHooks(hold="none")
    stack = _stack(hooks, "uring")
    stack.close()
    with pytest.raises(RingClosedError, match="stack is closed"):
        stack.open(tmp_path / "f", create=True)
    assert hooks.order == ["teardown"]
    assert not (tmp_path / "f").exists()


def test_a_close_held_past_the_close_timeout_fails_the_stack_close_and_the_teardown_goes_on(
    tmp_path: pathlib.Path,
) -> None:
    hooks = HeldFileHooks(hold="file_closed")
    stack = _stack(hooks, "uring", **{"core.close_timeout_s": 0.5})
    handle = stack.open(tmp_path / "f", create=True)
    other = threading.Thread(target=handle.close, daemon=True)
    other.start()
    try:
        assert hooks.entered.wait(10)
        with pytest.raises(TimeoutError, match=r"1 handle close\(s\) in other threads still running after 0.5 s"):
            stack.close()
        assert hooks.order == ["file_opened", "file_closed", "teardown"]
        assert all(ring.closed for w in stack.workers for ring in w.rings.values())
    finally:
        hooks.release.set()
        other.join(10)
    assert handle.closed


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_stack_close_inside_a_handle_close_of_the_same_thread_does_not_wait_for_itself(
    tmp_path: pathlib.Path, backend: str
) -> None:
    """A signal handler's (or a plugin's) ``stack.close()`` inside a close the same thread
    runs: waiting for that close would wait for itself, forever."""

    class CloseStackInFileClosed:
        def __init__(self) -> None:
            self.order: list[str] = []
            self.stack: Stack | None = None

        @hookimpl
        def uringstack_file_closed(self, handle: Any, worker: Any) -> None:
            self.order.append("file_closed")
            if self.stack is not None and not self.stack.closed:
                self.stack.close()

        @hookimpl
        def uringstack_stack_teardown(self, stack: Any) -> None:
            self.order.append("teardown")

    plugin = CloseStackInFileClosed()
    stack = _stack(plugin, backend)
    plugin.stack = stack
    handle = stack.open(tmp_path / "f", create=True)
    closing = threading.Thread(target=handle.close, daemon=True)
    closing.start()
    closing.join(20)
    assert not closing.is_alive(), "stack.close() inside the handle's close waited for that close"
    wait_until(lambda: stack.closed and handle.closed, 10, "the stack's and the handle's close")
    assert plugin.order == ["file_closed", "teardown"]


# --- a handle dropped unclosed: its close is the reaper thread's ---------------------------


def _drop_one(stack: Stack, path: pathlib.Path) -> None:
    """Open a handle on *path* and drop it unclosed (collected on return)."""
    stack.open(path, create=True)


def _fds_to(path: pathlib.Path) -> int:
    count = 0
    for entry in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{entry}") == str(path)
    return count


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_teardown_waits_for_a_dropped_handles_close_the_reaper_has_not_reached(
    tmp_path: pathlib.Path, backend: str
) -> None:
    """The reaper is busy with another close, and the dropped handle's waits behind it: the
    stack's close waits for it too, and its plugins' teardown comes after it."""
    hooks = HeldFileHooks(hold="none")
    stack = _stack(hooks, backend)
    busy, free = threading.Event(), threading.Event()

    def slow_close() -> None:
        busy.set()
        assert free.wait(30)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # (the reaper's, for the dropped handle)
        reaper.dispose(slow_close, "a slow close the test holds")
        try:
            assert busy.wait(10), "the reaper never took the held close"
            _drop_one(stack, tmp_path / "f")
            gc.collect()
            assert _fds_to(tmp_path / "f") == 1  # (its close waits behind the held one)
            close_beside(stack, "the reaper's close of a dropped handle", hooks.order, free.set)
        finally:
            free.set()
        assert reaper.drain(10)
    assert hooks.order == ["file_opened", "file_closed", "teardown"]
    assert _fds_to(tmp_path / "f") == 0


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_teardown_waits_for_a_dropped_handles_close_the_reaper_runs(tmp_path: pathlib.Path, backend: str) -> None:
    hooks = HeldFileHooks(hold="file_closed")
    stack = _stack(hooks, backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # (the reaper's, for the dropped handle)
        _drop_one(stack, tmp_path / "f")
        gc.collect()
        assert hooks.entered.wait(10), "the reaper never closed the dropped handle"
        close_beside(stack, "the reaper's close of a dropped handle", hooks.order, hooks.release.set)
        assert reaper.drain(10)
    assert hooks.order == ["file_opened", "file_closed", "file_closed end", "teardown"]
    assert _fds_to(tmp_path / "f") == 0
