"""A Wal left open: the lock's refusal names it; dropped, it is closed when collected.

Before session 33 a Wal dropped without ``close()`` kept its directory locked
for the life of the process (its lock was a bare descriptor nobody closed, its
flusher thread kept the writer alive), and the refusal blamed "another writer".
"""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from uringstack.ring.io_backend import FileIO, SyncMethod
from uringstack.ring.pending import Pending
from uringstack.wal import Wal, segment
from uringstack.wal.faults import WrappedFileIO

# host_only: a dropped or unclosed Wal's lock, threads and exit are Python's finalizers and
# flock, the same on every kernel (the NVMe VM's kernel matrix deselects it)
pytestmark = pytest.mark.host_only

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run_script(script: str, wal_dir: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """*script* in a fresh interpreter with ResourceWarnings shown; it must exit 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-W", "default::ResourceWarning", "-c", script, str(wal_dir)],
        capture_output=True, text=True, timeout=30, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(autouse=True)
def _short_close_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # a reopen waits for a dropped log's close: a hang fails the test in seconds, not a minute
    monkeypatch.setattr(segment, "DROPPED_CLOSE_WAIT_S", 10.0, raising=False)


def _log_threads(wal: Wal) -> list[threading.Thread]:
    """The threads of *wal* (its flusher, and its spare's zero-fill)."""
    w = wal._writer
    return [t for t in (w._thread, w._spare_thread) if t is not None]


def _assert_gone(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(10)
        assert not t.is_alive(), f"thread {t.name} of the dropped log is still running"
        assert t not in threading.enumerate()


@pytest.mark.timeout(60)
def test_refusal_names_this_process_open_wal(wal_dir: pathlib.Path) -> None:
    """The lock held by this process's own open Wal: the message says so, and where it was opened."""
    wal = Wal.open(wal_dir, backend="fallback")
    line = sys._getframe().f_lineno - 1
    try:
        with pytest.raises(BlockingIOError) as err:
            Wal.open(wal_dir, backend="fallback")
        msg = str(err.value)
        assert f"is locked by a Wal this process opened at {__file__}:{line} and has not closed" in msg
        assert "call close() (or use `with Wal.open(...)`)" in msg
        assert "another writer" not in msg
    finally:
        wal.close()
    Wal.open(wal_dir, backend="fallback").close()  # released by close()


@pytest.mark.timeout(60)
def test_refusal_for_another_process_stays(wal_dir: pathlib.Path) -> None:
    """Another process holding the lock (an flock: no pid to ask for) keeps the plain message."""
    wal_dir.mkdir()
    code = "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
    code += "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", code, str(wal_dir / "LOCK")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
            with pytest.raises(BlockingIOError, match=r"is locked by another writer$"):
                Wal.open(wal_dir, backend="fallback")
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)


@pytest.mark.timeout(60)
def test_fork_child_holds_no_copy_of_the_lock(wal_dir: pathlib.Path) -> None:
    """A forked child refused the parent's log is told so (with the parent's pid); the parent,
    once it closed the log, reopens it while the child still lives (the child's copy of the
    flock's descriptor kept it locked before)."""
    wal = Wal.open(wal_dir, backend="fallback")
    wal.append(b"before fork")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the refusal, then live until told to exit
        code = 1
        try:
            os.close(to_child_w)
            os.close(from_child_r)
            try:
                Wal.open(wal_dir, backend="fallback")
                msg = "opened"
            except BlockingIOError as e:
                msg = str(e)
            os.write(from_child_w, msg.encode() + b"\n")
            os.read(to_child_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(to_child_r)
    os.close(from_child_w)
    try:
        with os.fdopen(from_child_r, "rb") as f:
            msg = f.readline().decode()
        assert f"is locked by another writer (process {os.getpid()}, which this process {pid} was forked from" in msg
        assert "this process opened" not in msg
        wal.close()
        with Wal.open(wal_dir, backend="fallback") as again:  # the child is alive still
            assert list(again.read_from()) == [(1, b"before fork")]
    finally:
        wal.close()
        os.close(to_child_w)  # (the child's read returns: it exits)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.timeout(60)
def test_dropped_wal_is_closed_and_its_records_kept(
    wal_dir: pathlib.Path, unraisable: list[BaseException | None]
) -> None:
    """A Wal dropped unclosed, with records queued and their futures awaited elsewhere: a
    ResourceWarning, every record flushed (the futures resolve to their LSNs), the directory
    reopens in this process, and none of the log's threads is left behind."""

    async def main() -> None:
        # a long delay: the records are still queued, unflushed, when the log is dropped
        wal = Wal.open(wal_dir, backend="fallback", max_delay_us=1_000_000)
        wal.append_many([b"a", b"b"])  # durable before the drop
        futs = [wal.append_async(b"queued %d" % i) for i in range(5)]
        threads = _log_threads(wal)
        gone = weakref.ref(wal)
        with pytest.warns(ResourceWarning, match=r"unclosed Wal .* \(opened at .*test_unclosed\.py:\d+\)"):
            del wal
            gc.collect()
        assert gone() is None
        assert await asyncio.wait_for(asyncio.gather(*futs), 10) == [3, 4, 5, 6, 7]
        with Wal.open(wal_dir, backend="fallback") as again:  # waits for the close if still under way
            assert [p for _, p in again.read_from()] == [b"a", b"b", *(b"queued %d" % i for i in range(5))]
        _assert_gone(threads)

    asyncio.run(main())
    assert unraisable == []


class _BeforeWrite:
    """A ``wrap_io`` that calls *hook* on the writing thread before each durable write."""

    def __init__(self, hook: Callable[[], None]) -> None:
        self.hook = hook

    def __call__(self, io: FileIO) -> FileIO:
        return _HookedIO(io, self.hook)


class _HookedIO(WrappedFileIO):
    def __init__(self, inner: FileIO, hook: Callable[[], None]) -> None:
        super().__init__(inner)
        self.hook = hook

    def start_write_durable(self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False) -> Pending:
        self.hook()
        return self.inner.start_write_durable(offset, buffer, sync, wait=wait)


class _CollectOnWrite(_BeforeWrite):
    """Runs the cyclic GC on the writing thread before the write after :attr:`armed` is set."""

    def __init__(self) -> None:
        super().__init__(self._collect)
        self.armed = False
        self.collected_on: list[str] = []

    def _collect(self) -> None:
        if self.armed:
            self.armed = False
            gc.collect()
            self.collected_on.append(threading.current_thread().name)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("_gc_off")
def test_dropped_wal_collected_on_its_own_flusher_thread(
    wal_dir: pathlib.Path, unraisable: list[BaseException | None]
) -> None:
    """The finalizer can run on any thread: here the log's own flusher, in the middle of a
    flush of the log's records (a cycle keeps the Wal until the GC runs).  It must not close
    there (the flusher would join itself): the log is closed, its records kept, all the same."""
    collect = _CollectOnWrite()

    async def main() -> None:
        wal = Wal.open(wal_dir, backend="fallback", max_delay_us=50_000, wrap_io=collect)
        wal.cycle = wal  # type: ignore[attr-defined]  # only the cyclic GC frees it
        futs = [wal.append_async(b"r%d" % i) for i in range(3)]
        threads = _log_threads(wal)
        gone = weakref.ref(wal)
        collect.armed = True
        del wal
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert await asyncio.wait_for(asyncio.gather(*futs), 10) == [1, 2, 3]
            with Wal.open(wal_dir, backend="fallback") as again:
                assert [p for _, p in again.read_from()] == [b"r0", b"r1", b"r2"]
        assert collect.collected_on == ["wal-flusher"] and gone() is None
        assert unraisable == []  # (a close on the flusher thread: "cannot join current thread")
        assert any(issubclass(w.category, ResourceWarning) and "unclosed Wal" in str(w.message) for w in seen)
        _assert_gone(threads)

    asyncio.run(main())
    assert unraisable == []


@pytest.mark.timeout(60)
def test_open_wal_is_closed_at_exit(wal_dir: pathlib.Path) -> None:
    """Still open at interpreter exit (a global, never closed): its queued records are flushed
    before the process ends (its daemon flusher was stopped mid-delay before), with a warning."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from uringstack.wal import Wal

        WAL = Wal.open(sys.argv[1], backend="fallback", max_delay_us=1_000_000)

        async def main():
            WAL.append(b"acked")
            for i in range(3):
                WAL.append_async(b"queued %d" % i)  # never awaited: still queued at exit

        asyncio.run(main())
        """
    )
    proc = _run_script(script, wal_dir)
    with Wal.open(wal_dir, backend="fallback") as again:
        assert [p for _, p in again.read_from()] == [b"acked", b"queued 0", b"queued 1", b"queued 2"]
    assert "ResourceWarning: unclosed Wal" in proc.stderr and "closed at exit" in proc.stderr


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("_gc_off")
def test_reopen_collects_a_wal_only_a_cycle_keeps(wal_dir: pathlib.Path) -> None:
    """A dropped Wal in a reference cycle the GC has not reached yet: the reopen collects it
    (rather than tell the user to close a Wal they can no longer reach), then waits for its close."""
    wal = Wal.open(wal_dir, backend="fallback")
    wal.cycle = wal  # type: ignore[attr-defined]
    wal.append_many([b"x", b"y"])
    threads = _log_threads(wal)
    del wal
    with pytest.warns(ResourceWarning, match="unclosed Wal"):
        again = Wal.open(wal_dir, backend="fallback")
    with again:
        assert [p for _, p in again.read_from()] == [b"x", b"y"]
    _assert_gone(threads)


@pytest.mark.timeout(60)
def test_fork_child_exit_leaves_parent_wal_alone(wal_dir: pathlib.Path) -> None:
    """A fork child that exits normally runs the parent's atexit hooks: the parent's open Wal
    is not the child's to close (nor to warn about); the parent goes on appending."""
    script = textwrap.dedent(
        """
        import os, sys
        from uringstack.wal import Wal

        wal = Wal.open(sys.argv[1], backend="fallback")
        wal.append(b"before fork")
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a normal exit: atexit hooks run in the child
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        wal.append(b"after the child exited")
        wal.close()
        """
    )
    proc = _run_script(script, wal_dir)
    assert "unclosed Wal" not in proc.stderr
    with Wal.open(wal_dir, backend="fallback") as again:
        assert [p for _, p in again.read_from()] == [b"before fork", b"after the child exited"]


class _HeldWrite(_BeforeWrite):
    """Writes wait for :attr:`release` (a device that stopped answering)."""

    def __init__(self) -> None:
        super().__init__(self._hold)
        self.entered = threading.Event()
        self.release = threading.Event()

    def _hold(self) -> None:
        self.entered.set()
        assert self.release.wait(20), "the test never released the write"


@pytest.mark.timeout(60)
def test_reopen_waits_for_a_stuck_dropped_close_a_bounded_time(
    wal_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dropped log's close waits for a write that does not come back: the reopen gives up
    after ``DROPPED_CLOSE_WAIT_S`` and says what it waited for; once the write returns, the
    close ends and the reopen finds the record."""
    monkeypatch.setattr(segment, "DROPPED_CLOSE_WAIT_S", 0.5, raising=False)
    held = _HeldWrite()

    async def main() -> None:
        wal = Wal.open(wal_dir, backend="fallback", wrap_io=held)
        fut = wal.append_async(b"stuck")
        assert await asyncio.to_thread(held.entered.wait, 10)  # the flusher is in the write
        with pytest.warns(ResourceWarning, match="unclosed Wal"):
            del wal
            gc.collect()
        with pytest.raises(BlockingIOError, match=r"dropped without close\(\) and is still being closed \(flushing"):
            Wal.open(wal_dir, backend="fallback")
        held.release.set()
        assert await asyncio.wait_for(fut, 10) == 1
        with Wal.open(wal_dir, backend="fallback") as again:
            assert list(again.read_from()) == [(1, b"stuck")]

    asyncio.run(main())
