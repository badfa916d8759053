"""A Wal left open: the lock's refusal names it; dropped, it is closed when collected.

Before session 33 a Wal dropped without ``close()`` kept its directory locked
for the life of the process (its lock was a bare descriptor nobody closed, its
flusher thread kept the writer alive), and the refusal blamed "another writer".
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import threading

import pytest

from uringstack.wal import Wal, segment

ROOT = pathlib.Path(__file__).resolve().parents[2]


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
