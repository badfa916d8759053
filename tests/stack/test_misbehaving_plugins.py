"""A third-party plugin that raises or returns the wrong thing: a clear error naming it, and
nothing worse (a found probe of the plugin contract, session 27).

- A raising ``uringstack_completion_batch`` made a write that had landed fail in its
  caller (inviting a retry that wrote it twice), or failed an unrelated read that reaped
  the batch; it is logged with the plugin's name and the I/O's results stand.
- A raising ``uringstack_file_closed`` stopped the hook before fixedbuf's, whose fixed-file
  slot then kept the closed (deleted) file open in the kernel; a raising
  ``uringstack_file_opened`` left the slot fixedbuf had taken.
- A raising ``uringstack_file_opened`` made ``uringstack.open`` and the log close the
  adopted descriptor a second time (session 40); one that failed because the stack closed
  meanwhile raised ``PluginError`` instead of ``RingClosedError``.
- A raising or wrongly typed planning hook failed with a bare ``KeyError`` or
  ``AttributeError`` naming no plugin.
"""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import threading
from typing import Any

import pytest

from tests.waiting import wait_until
from uringstack.config import load_config
from uringstack.errors import RingClosedError
from uringstack.hookspecs import hookimpl
from uringstack.plan import make_plan
from uringstack.pluginmanager import PluginError, make_plugin_manager
from uringstack.plugins.fixedbuf.files import FixedFileTable
from uringstack.plugins.fixedbuf.plugin import FILES_KEY
from uringstack.probe import probe
from uringstack.ring.flags import SetupFlag
from uringstack.stack import Stack, open_stack
from uringstack.types import PlanError


def _stack(plugin: object, **overrides: Any) -> Stack:
    pm = make_plugin_manager()
    pm.register(plugin, "thirdparty")
    loaded = load_config(plugin_manager=pm, overrides={"core.cores": [0], "sqpoll.mode": "off", **overrides})
    return open_stack(loaded.config, plugin_manager=pm)


class RaisingCompletion:
    @hookimpl
    def uringstack_completion_batch(self, worker: Any, op: str, results: list[int]) -> None:
        raise RuntimeError(f"stats plugin bug on a {op} batch")


@pytest.mark.parametrize("backend", ["auto", "fallback"])
def test_a_raising_completion_hook_is_logged_and_the_io_stands(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    path = tmp_path / "f"
    with _stack(RaisingCompletion(), **{"core.backend": backend}) as stack, stack.open(path, create=True) as h:
        with caplog.at_level(logging.ERROR):
            assert h.write_many([0], [b"B" * 4096]) == [4096]
            pending = h.start_write_many([4096], [b"C" * 4096])
            buf = bytearray(8192)
            assert h.read_into(buf, 0) in (4096, 8192)  # (may reap the unwaited write's batch)
            assert pending.wait() == [4096]
        assert path.read_bytes() == b"B" * 4096 + b"C" * 4096
    failures = [r for r in caplog.records if "uringstack_completion_batch of plugin 'thirdparty'" in r.getMessage()]
    assert failures and all(r.exc_info and "stats plugin bug" in str(r.exc_info[1]) for r in failures)


class RaisingFileHooks:
    def __init__(self, fail: str) -> None:
        self.fail = fail

    @hookimpl
    def uringstack_file_opened(self, handle: Any, worker: Any) -> None:
        if self.fail == "opened":
            raise RuntimeError("tracer bug in file_opened")

    @hookimpl
    def uringstack_file_closed(self, handle: Any, worker: Any) -> None:
        if self.fail == "closed":
            raise RuntimeError("tracer bug in file_closed")


def _slots(stack: Stack) -> int:
    table = stack.workers[0].resources.get(FILES_KEY)
    assert isinstance(table, FixedFileTable), "fixedbuf registered no file slots here"
    return table.free_slots()


@pytest.mark.parametrize("fail", ["opened", "closed"])
def test_a_raising_file_hook_leaves_no_fixed_file_slot_behind(tmp_path: pathlib.Path, fail: str) -> None:
    with _stack(RaisingFileHooks(fail), **{"fixedbuf.mode": "on", "fixedbuf.files": 4}) as stack:
        free = _slots(stack)
        for i in range(6):  # more than the slots: a leaked slot would show
            path = tmp_path / f"f{i}"
            with pytest.raises(PluginError, match="plugin 'thirdparty': uringstack_file_"):
                h = stack.open(path, create=True)
                h.close()
            assert _slots(stack) == free, f"open/close {i} left a fixed-file slot taken"
        assert not stack._handles


class WrongPlanHooks:
    def __init__(self, what: str) -> None:
        self.what = what

    @hookimpl
    def uringstack_check_support(self, caps: Any, config: Any) -> Any:
        if self.what == "check_support raises":
            raise KeyError("oops")
        if self.what == "check_support returns a dict":
            return {"plugin": "thirdparty"}
        return None

    @hookimpl
    def uringstack_ring_params(self, params: Any, caps: Any, config: Any) -> None:
        if self.what == "ring_params raises":
            raise ValueError("bad sysfs value")
        if params.role != "storage":
            return
        if self.what == "ring_params sets entries 0":
            params.entries = 0
        if self.what == "ring_params polls the storage ring":
            params.add(SetupFlag.IOPOLL, "thirdparty: poll everything")
        if self.what == "ring_params disables the ring":
            params.add(SetupFlag.R_DISABLED, "thirdparty: enabled later")

    @hookimpl
    def uringstack_select_backend(self, target: Any, caps: Any, config: Any) -> Any:
        if self.what == "select_backend raises":
            raise OSError(2, "no such attribute")
        if self.what == "select_backend returns a str":
            return "mybackend"
        return None


@pytest.mark.parametrize(
    "what",
    [
        "check_support raises",
        "check_support returns a dict",
        "ring_params raises",
        "ring_params sets entries 0",
        "ring_params polls the storage ring",
        "ring_params disables the ring",
        "select_backend raises",
        "select_backend returns a str",
    ],
)
def test_a_broken_planning_hook_is_a_plugin_error_naming_it(tmp_path: pathlib.Path, what: str) -> None:
    named = f"plugin 'thirdparty': uringstack_{what.split()[0]}"
    with pytest.raises(PluginError, match=named), _stack(WrongPlanHooks(what)) as st:
        st.open(tmp_path / "f", create=True).close()


class AttachesToNothing:
    @hookimpl
    def uringstack_ring_params(self, params: Any) -> None:
        params.attach_to = "core99/storage"


def test_attach_to_a_ring_not_planned_is_a_plan_error() -> None:
    """Before, the plan showed the ring as fine and ``open_stack`` failed with a bare
    ``ValueError`` from inside the stack's ring building."""
    pm = make_plugin_manager()
    pm.register(AttachesToNothing(), "thirdparty")
    loaded = load_config(plugin_manager=pm, overrides={"core.cores": [0], "sqpoll.mode": "off"})
    with pytest.raises(PlanError, match=r"ring core0/storage: attach_to='core99/storage' names no ring planned"):
        make_plan(probe(), loaded.config, pm)


class _CloseRecorder:
    """``os.close`` recording each descriptor number it closes, and whether it was open."""

    def __init__(self) -> None:
        self.closed: list[int] = []
        self.not_open: list[int] = []
        self._close = os.close

    def __call__(self, fd: int) -> None:
        self.closed.append(fd)
        try:
            self._close(fd)
        except OSError as e:
            if e.errno == errno.EBADF:
                self.not_open.append(fd)
            raise


def _open_file_object(stack: Stack, path: pathlib.Path) -> None:
    import uringstack

    uringstack.open(path, "rb", stack=stack)


def _open_wal(stack: Stack, path: pathlib.Path) -> None:
    from uringstack.wal import Wal

    Wal.open(path.parent / "wal", stack=stack)


def _adopt(stack: Stack, path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        stack.open(path, adopt_fd=fd, writable=False)
    except BaseException:
        os.fstat(fd)  # a failed open leaves it open, the caller's (OSError EBADF if not)
        os.close(fd)
        raise


@pytest.mark.parametrize("backend", ["auto", "fallback"])
@pytest.mark.parametrize(
    "opener", [_open_file_object, _open_wal, _adopt], ids=["uringstack.open", "Wal.open", "adopt_fd"]
)
def test_an_open_a_plugin_refused_leaves_the_adopted_descriptor_to_its_caller(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, backend: str, opener: Any
) -> None:
    """``Stack.open(adopt_fd=fd)`` that raises leaves *fd* open, its caller's to close (as
    ``io.FileIO`` leaves a descriptor it was given), also after a plugin's ``file_opened``
    raised: the backend object closed it there, and its callers (``uringstack.FileIO``, the
    log's segment opener) closed it a second time.  The second close raised EBADF in place
    of the plugin's error, or, in a program with other threads, closed the file another
    thread had opened under that number meanwhile (a stress run of file objects from four
    threads: EBADF in their reads, session 40).  Each caller closes it once, and nothing is
    left open."""
    path = tmp_path / "f"
    path.write_bytes(bytes(8192))
    with _stack(RaisingFileHooks("opened"), **{"core.backend": backend}) as stack:
        closes = _CloseRecorder()
        before = set(os.listdir("/proc/self/fd"))
        monkeypatch.setattr(os, "close", closes)
        with pytest.raises(PluginError, match="tracer bug in file_opened"):
            opener(stack, path)
        monkeypatch.undo()
        # (one thread: a second close of a number finds it closed, nothing reopened it between)
        assert closes.not_open == [], f"closed a descriptor that was not open: {closes.not_open} (of {closes.closed})"
        assert set(os.listdir("/proc/self/fd")) <= before, "the adopted descriptor was left open"


class ClosingWhileOpening:
    """A ``file_opened`` that meets a close of the stack: it starts the close (in another
    thread, as a program's shutdown would) and, once the close began, fails as a
    registration with a torn-down table fails (fixedbuf's ``update_files``: ENXIO, no
    file table any more).  Since session 45 the close waits for the open before its
    teardown, so the table is still there; the open still fails as an open of a closed
    stack, whatever its plugin's error."""

    def __init__(self) -> None:
        self.stack: Stack | None = None
        self.closer: threading.Thread | None = None
        self.close_error: list[BaseException] = []

    def _close(self) -> None:
        assert self.stack is not None
        try:
            self.stack.close()
        except BaseException as exc:
            self.close_error.append(exc)

    @hookimpl
    def uringstack_file_opened(self, handle: Any, worker: Any) -> None:
        assert self.stack is not None
        self.closer = threading.Thread(target=self._close)
        self.closer.start()
        wait_until(lambda: self.stack is not None and self.stack.closed, 10, "the stack's close to begin")
        raise OSError(errno.ENXIO, "io_uring_register_files_update failed: No such device or address")


def test_an_open_that_a_close_of_the_stack_overtook_raises_ring_closed(tmp_path: pathlib.Path) -> None:
    """The stress run of file objects met this at its close: a thread's ``uringstack.open`` got
    ``PluginError`` (fixedbuf, ENXIO) where a stack closed meanwhile gives ``RingClosedError``
    (``FileIO`` turns it into ``ValueError``, as a built-in file closed meanwhile)."""
    path = tmp_path / "f"
    path.write_bytes(bytes(4096))
    plugin = ClosingWhileOpening()
    stack = _stack(plugin)
    plugin.stack = stack
    fds = set(os.listdir("/proc/self/fd"))
    with pytest.raises(RingClosedError, match="stack is closed") as raised:
        stack.open(path, writable=False)
    cause = raised.value.__cause__  # the plugin's error, naming it, with the kernel's under it
    assert isinstance(cause, PluginError) and "thirdparty" in str(cause)
    assert isinstance(cause.__cause__, OSError) and cause.__cause__.errno == errno.ENXIO
    assert plugin.closer is not None
    plugin.closer.join(30)
    assert not plugin.closer.is_alive() and plugin.close_error == [], plugin.close_error  # (waited for the open)
    assert stack.closed
    assert set(os.listdir("/proc/self/fd")) <= fds
