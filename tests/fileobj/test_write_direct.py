"""A write-only file's large ``bytes`` written at once by the C write step (``_fastio.HeldWrite``).

Where nothing is held, the C step writes the chunk itself (one ``pwritev2`` at
the file position) instead of holding it for the Python step's gathered write:
only where that Python step would make the same ``pwrite`` in the caller's
thread, with the same guards (the file's lock, the handle's in-flight
tracker, the backend's switches read per call, a fork child refused).  These
tests fail when a guard or the write's bookkeeping is removed."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import platform
import random
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

import uringstack
from tests.requires import require_setup_flag, skip_without
from uringstack.fileobj._fastio import HeldWrite
from uringstack.fileobj.openfile import HOLD_MIN
from uringstack.ring.flags import SetupFlag
from uringstack.stack import Stack, open_stack
from uringstack.stack.uring_backend import UringFileIO

from .conftest import BACKENDS, seen_from_fork_child, starts_in_flight, watch_c_step
from .test_write_hold import _apply, _ops


def _direct(f: Any) -> HeldWrite:
    """*f*'s C write step, asserted able to write a chunk itself (skipped, with the reason,
    where the backend does not write buffered data in the caller's thread)."""
    step = vars(f).get("write")
    assert isinstance(step, HeldWrite) and step.direct
    io = f.raw.handle.io
    assert isinstance(io, UringFileIO)
    if not io.writes_inline():
        skip_without("a file system whose buffered io_uring writes the kernel punts (the backend writes them itself)")
    return step


def _spy_python_writes(f: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Total lengths of the writes that reach *f*'s handle through Python."""
    handle = f.raw.handle
    real = handle.writev_from
    seen: list[int] = []

    def writev_from(buffers: Any, offset: int) -> int:
        seen.append(sum(len(b) for b in buffers))
        return int(real(buffers, offset))

    monkeypatch.setattr(handle, "writev_from", writev_from)
    return seen


def _counts(f: Any) -> tuple[int, int]:
    """The handle's in-flight tracker counts (started, finished), read without stepping them."""
    tracker = f.raw.handle._inflight
    entered, left = (
        int(m.group(1)) for m in (re.match(r"count\((\d+)\)", repr(c)) for c in (tracker._entered, tracker._left)) if m
    )
    return entered, left


def test_a_chunk_reaches_the_kernel_at_once_and_in_c(
    tmp_path: pathlib.Path, uring_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk is in the file when write() returns, through no Python step, counted in
    the tracker, and the position (the descriptor's own) is after it."""
    path = tmp_path / "f"
    chunks = [os.urandom(HOLD_MIN + i) for i in range(12)]
    with uringstack.open(path, "wb", stack=uring_stack) as f:
        step = _direct(f)
        python_writes = _spy_python_writes(f, monkeypatch)
        before = _counts(f)
        end = 0
        for c in chunks:
            assert f.write(c) == len(c)
            end += len(c)
            assert os.stat(path).st_size == end, "not in the file when write() returned"
            assert os.lseek(f.raw.fileno(), 0, os.SEEK_CUR) == end
            assert not f.raw._holds()
        assert step.direct_writes == len(chunks)
        assert python_writes == []
        started, finished = _counts(f)
        assert started - before[0] == len(chunks) and finished - before[1] == len(chunks)
        assert f.tell() == end
    assert path.read_bytes() == b"".join(chunks)


def test_a_write_holds_the_files_lock_and_is_tracked(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    """While the write runs (the GIL released), the file's lock is held and the tracker
    counts it: another thread's close() waits for it, and no other write runs beside it."""
    path = tmp_path / "f"
    chunk = b"w" * (32 << 20)
    with uringstack.open(path, "wb", stack=uring_stack) as f:
        step = _direct(f)

        def write_all() -> None:
            for _ in range(4):
                f.write(chunk)

        seen = watch_c_step(f.raw, write_all, 30)
        assert step.direct_writes == 4
        assert seen["starts"] > 0, "no write was ever counted in the tracker"
        assert seen["locked"] > 0, "the file's lock was never held during a write"
        assert starts_in_flight(f.raw) == 0
    assert os.stat(path).st_size == 4 * len(chunk)


@pytest.mark.parametrize("seed", range(4))
def test_mixed_writes_seeks_and_truncates_match_the_builtin(
    seed: int, tmp_path: pathlib.Path, uring_stack: Stack
) -> None:
    """Large ``bytes`` written at once among small writes, copies, seeks and truncates: the
    same results, positions and file as the built-in's."""
    ops = _ops(random.Random(seed), 60)
    with open(tmp_path / "ref", "wb") as f:
        want = _apply(f, ops, True)
    with uringstack.open(tmp_path / "f", "wb", stack=uring_stack) as g:
        step = _direct(g)
        got = _apply(g, ops, True)
        assert step.direct_writes > 0
    assert got == want
    assert (tmp_path / "f").read_bytes() == (tmp_path / "ref").read_bytes()


def test_the_backend_switches_are_read_per_call(
    tmp_path: pathlib.Path, uring_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completion hook set after the open hears of every write (the Python step makes
    them), and a backend that stopped writing inline is not bypassed."""
    path = tmp_path / "f"
    with uringstack.open(path, "wb", stack=uring_stack) as f:
        step = _direct(f)
        io: Any = f.raw.handle.io
        heard: list[tuple[str, object, list[int]]] = []
        monkeypatch.setattr(
            io, "completion_hook", lambda op, ring: lambda batch: heard.append((op, ring, list(batch.results)))
        )
        python_writes = _spy_python_writes(f, monkeypatch)
        f.write(b"a" * HOLD_MIN)
        f.flush()
        assert step.direct_writes == 0 and python_writes == [HOLD_MIN]
        assert heard == [("write", None, [HOLD_MIN])]
        monkeypatch.setattr(io, "completion_hook", None)
        monkeypatch.setattr(io, "_inline_writes", False)  # (as on a file system that does not punt)
        f.write(b"b" * HOLD_MIN)
        f.flush()
        assert step.direct_writes == 0 and python_writes == [HOLD_MIN, HOLD_MIN]
        monkeypatch.setattr(io, "_inline_writes", True)
        f.write(b"c" * HOLD_MIN)
        assert step.direct_writes == 1 and len(python_writes) == 2
    assert path.read_bytes() == b"a" * HOLD_MIN + b"b" * HOLD_MIN + b"c" * HOLD_MIN


def test_the_first_write_measures_the_backend(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    """Not measured yet (a file's first write), the backend is asked, as its Python step would."""
    with uringstack.open(tmp_path / "f", "wb", stack=uring_stack) as f:
        step = vars(f)["write"]
        io: Any = f.raw.handle.io
        assert io._inline_writes is None
        f.write(b"x" * HOLD_MIN)
        assert io._inline_writes is not None
        assert step.direct_writes == (1 if io._inline_writes else 0)


@pytest.mark.parametrize("where", ["tracker", "backend"])
def test_a_closing_handle_is_not_written_here(
    tmp_path: pathlib.Path, uring_stack: Stack, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Between a close's first step (the tracker refuses new starts; the backend closed)
    and the file's closed flag, nothing is written here: the chunk is held, as the Python
    step holds it (the handle's close then writes it, or refuses)."""
    path = tmp_path / "f"
    with uringstack.open(path, "wb", stack=uring_stack) as f:
        step = _direct(f)
        handle: Any = f.raw.handle
        target = handle._inflight if where == "tracker" else handle.io
        monkeypatch.setattr(target, "_closed" if where == "tracker" else "closed", True)
        assert f.write(b"z" * HOLD_MIN) == HOLD_MIN
        assert step.direct_writes == 0 and os.stat(path).st_size == 0 and f.raw._holds()
        monkeypatch.undo()
    assert path.read_bytes() == b"z" * HOLD_MIN


def test_a_fork_child_takes_the_python_step(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    """In a fork child the direct write is off: the Python step refuses the inherited handle,
    and nothing of the child's reaches the file."""
    path = tmp_path / "f"
    with uringstack.open(path, "wb", stack=uring_stack) as f:
        step = _direct(f)
        f.write(b"p" * HOLD_MIN)

        def write_in_child() -> None:
            f.write(b"c" * HOLD_MIN)  # held, as by the Python step
            f.flush()

        seen = seen_from_fork_child(write_in_child, lambda: f"{step.direct} {step.direct_writes}")
        assert seen == "False 1 ForkedChildError"
        assert step.direct and os.stat(path).st_size == HOLD_MIN
        f.write(b"q" * HOLD_MIN)
        assert step.direct_writes == 2
    assert path.read_bytes() == b"p" * HOLD_MIN + b"q" * HOLD_MIN


def test_a_write_failing_with_nothing_written_is_reported_by_the_python_step(
    tmp_path: pathlib.Path, uring_stack: Stack, size_limit: Callable[[int | None], None]
) -> None:
    """Past the file size limit (``EFBIG``, nothing written): the Python step writes it
    again and raises the handle's error; the position stays."""
    path = tmp_path / "f"
    with uringstack.open(path, "wb", stack=uring_stack) as f:
        step = _direct(f)
        f.write(b"a" * HOLD_MIN)
        size_limit(HOLD_MIN)
        try:
            with pytest.raises(OSError) as failed:
                f.write(b"b" * HOLD_MIN)
        finally:
            size_limit(None)
        assert failed.value.errno == errno.EFBIG
        assert step.direct_writes == 1 and f.tell() == HOLD_MIN
        f.write(b"c" * HOLD_MIN)
        assert step.direct_writes == 2
    assert path.read_bytes() == b"a" * HOLD_MIN + b"c" * HOLD_MIN


def test_a_write_cut_short_keeps_its_part_and_raises(
    tmp_path: pathlib.Path, uring_stack: Stack, size_limit: Callable[[int | None], None]
) -> None:
    """Cut short by the size limit: the part written stays, the position after it, and this
    write raises EFBIG (the rest is written at once by the Python step, as the built-in's
    write of the rest would fail)."""
    path = tmp_path / "f"
    with uringstack.open(path, "wb", stack=uring_stack) as f:
        step = _direct(f)
        size_limit(HOLD_MIN + 100)
        try:
            with pytest.raises(OSError) as failed:
                f.write(b"d" * (2 * HOLD_MIN))
        finally:
            size_limit(None)
        assert failed.value.errno == errno.EFBIG
        assert step.direct_writes == 1 and f.tell() == HOLD_MIN + 100 and not f.raw._holds()
        f.write(b"e" * HOLD_MIN)
    assert path.read_bytes() == b"d" * (HOLD_MIN + 100) + b"e" * HOLD_MIN


@pytest.mark.parametrize("on", ["fallback", "single_issuer"])
def test_not_on_the_fallback_backend_nor_a_single_issuer_ring(tmp_path: pathlib.Path, on: str) -> None:
    """There the C step holds, as the Python step does: nothing is written at once."""
    if on == "single_issuer":
        require_setup_flag(SetupFlag.SINGLE_ISSUER, "6.0")
    overrides = {"core.backend": "fallback"} if on == "fallback" else {**BACKENDS["uring"], "core.single_issuer": "on"}
    s = open_stack(overrides=overrides)
    path = tmp_path / "f"
    try:
        f = uringstack.open(path, "wb", stack=s)
        step = vars(f)["write"]
        assert isinstance(step, HeldWrite) and not step.direct
        worker = f.raw.handle.worker

        def write_then_close() -> int:
            f.write(b"h" * HOLD_MIN)
            size = os.stat(path).st_size
            f.close()
            return size

        size = worker.call(write_then_close) if worker is not None else write_then_close()
        assert size == 0 and step.direct_writes == 0
    finally:
        s.close()
    assert path.read_bytes() == b"h" * HOLD_MIN


SECCOMP = pathlib.Path(__file__).parents[1] / "probe" / "seccomp_deny_uring.py"

_REFUSED_CHILD = r"""
import json, os, sys
import uringstack
from uringstack.stack import open_stack
path = sys.argv[1]
stack = open_stack(overrides=json.loads(sys.argv[2]))
f = uringstack.open(path, "wb", stack=stack)
step = vars(f)["write"]
armed = step.direct
inline = f.raw.handle.io.writes_inline()
chunks = [bytes([i]) * 65536 for i in range(1, 5)]
sizes = []
for c in chunks:
    f.write(c)
    sizes.append(os.stat(path).st_size)
f.close()
stack.close()
with open(path, "rb") as g:
    whole = g.read() == b"".join(chunks)
print(json.dumps({"armed": armed, "inline": inline, "after": step.direct,
                  "direct_writes": step.direct_writes, "sizes": sizes, "whole": whole}))
"""


@pytest.mark.parametrize("err", ["EPERM", "EOPNOTSUPP", "ENOSYS"])
def test_pwritev2_refused_by_seccomp(tmp_path: pathlib.Path, err: str) -> None:
    """Under a seccomp filter that refuses ``pwritev2`` (a sandbox's allow-list), every byte
    is written. EPERM and EOPNOTSUPP: the first write finds out, the C step stops trying
    and holds as the Python step does (written by ``pwrite`` at the close). ENOSYS: glibc's
    ``pwritev2`` falls back to ``pwritev`` for flags 0 (as on kernels before 4.6), so every
    chunk is still written at once."""
    if platform.machine() != "x86_64":
        skip_without("an x86_64 machine (the seccomp filter is written for its syscall numbers)")
    path = tmp_path / "f"
    child = [sys.executable, "-c", _REFUSED_CHILD, str(path), json.dumps(BACKENDS["uring"])]
    out = subprocess.run(
        [sys.executable, str(SECCOMP), "--deny", "pwritev2", "--errno", err, *child],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if not report["inline"]:
        skip_without("a file system whose buffered io_uring writes the kernel punts (the backend writes them itself)")
    assert report["armed"] is True and report["whole"] is True
    if err == "ENOSYS":
        assert report["after"] is True and report["direct_writes"] == 4
        assert report["sizes"] == [65536 * i for i in range(1, 5)]
    else:
        assert report["after"] is False and report["direct_writes"] == 0
        assert report["sizes"] == [0, 0, 0, 0], "held, as by the Python step, until the close"
