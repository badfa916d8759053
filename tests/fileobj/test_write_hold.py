"""A write-only file keeps large ``bytes`` objects instead of copying them (``BufferedWriter.write``).

What is held must reach the file exactly where and when the writer's own buffer
would have put it: in order with every other write, before ``seek``/``tell``/
``truncate``/``fileno()``/``flush()``/``close()``, with a failure raised there."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import random
import threading
from typing import Any

import pytest

import uringstack
from uringstack.fileobj import openfile
from uringstack.fileobj._fastio import HeldWrite
from uringstack.fileobj.openfile import HOLD_MIN
from uringstack.stack import Stack

from .conftest import hold_in_c, write_from_another_thread


@pytest.fixture(autouse=True, params=["c-step", "python-step"])
def write_step(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: through the write's C step (``_fastio.HeldWrite``, the default
    where large ``bytes`` are held), holding as the Python step does, and through the
    class's Python ``write``."""
    init = openfile.BufferedWriter.__init__

    def check_step(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if self._hold is None:
            return  # nothing held: no C step either way
        if request.param == "c-step":
            assert isinstance(vars(self)["write"], HeldWrite)
            hold_in_c(self)  # (its direct write, where nothing is held: test_write_direct.py)
        else:
            del vars(self)["write"]

    monkeypatch.setattr(openfile.BufferedWriter, "__init__", check_step)
    return str(request.param)


def _spy_gathers(f: Any) -> list[list[Any]]:
    """Record the buffers of every gathered write of *f*'s raw file."""
    handle = f.raw.handle
    real = handle.writev_from
    seen: list[list[Any]] = []

    def writev_from(buffers: Any, offset: int) -> int:
        seen.append(list(buffers))
        return int(real(buffers, offset))

    handle.writev_from = writev_from
    return seen


def test_large_bytes_are_written_without_a_copy(tmp_path: pathlib.Path, stack: Stack) -> None:
    """The very objects given to write() go to the kernel, all of a buffer's worth in one gathered write."""
    path = tmp_path / "f"
    chunks = [os.urandom(HOLD_MIN) for _ in range(20)]
    with uringstack.open(path, "wb", stack=stack, buffering=4 * HOLD_MIN) as f:
        seen = _spy_gathers(f)
        for c in chunks:
            assert f.write(c) == len(c)
    assert path.read_bytes() == b"".join(chunks)
    assert [len(s) for s in seen] == [4] * 5
    assert all(a is b for a, b in zip([b for s in seen for b in s], chunks, strict=True))


def test_small_writes_between_large_ones_join_the_gathered_write(tmp_path: pathlib.Path, stack: Stack) -> None:
    """A header before each large ``bytes`` (the writer's buffer written out) keeps one gathered write going."""
    path = tmp_path / "f"
    big = [os.urandom(HOLD_MIN) for _ in range(2)]
    with uringstack.open(path, "wb", stack=stack, buffering=4 * HOLD_MIN) as f:
        seen = _spy_gathers(f)
        f.write(b"h" * 100)  # nothing held yet: written out before the first large one
        f.write(big[0])
        f.write(b"i" * 100)
        f.write(big[1])
        f.write(b"j" * 100)
        f.flush()
        assert [bytes(b) for s in seen for b in s] == [big[0], b"i" * 100, big[1], b"j" * 100]
        assert len(seen) == 1
    assert path.read_bytes() == b"h" * 100 + big[0] + b"i" * 100 + big[1] + b"j" * 100


def test_mutable_buffers_are_copied(tmp_path: pathlib.Path, stack: Stack) -> None:
    """A bytearray (or memoryview) may change once write() returned: it is never held."""
    path = tmp_path / "f"
    with uringstack.open(path, "wb", stack=stack) as f:
        seen = _spy_gathers(f)
        ba = bytearray(b"a" * HOLD_MIN)
        f.write(ba)
        f.write(memoryview(ba))
        ba[:] = b"b" * HOLD_MIN
    assert path.read_bytes() == b"a" * (2 * HOLD_MIN)
    assert seen == []


def _ops(rnd: random.Random, n: int) -> list[tuple[str, Any]]:
    ops: list[tuple[str, Any]] = []
    for i in range(n):
        r = rnd.random()
        if r < 0.45:
            ops.append(("write", bytes([i % 251]) * rnd.choice([HOLD_MIN, HOLD_MIN + 1, 3 * HOLD_MIN, 9 << 20])))
        elif r < 0.7:
            ops.append(("write", bytes([i % 251]) * rnd.choice([1, 100, 4096, HOLD_MIN - 1])))
        elif r < 0.75:
            ops.append(("write", bytearray([i % 251]) * HOLD_MIN))
        elif r < 0.85:
            ops.append(("seek", rnd.randrange(0, 4 << 20)))
        elif r < 0.9:
            ops.append(("seek_end", 0))
        elif r < 0.95:
            ops.append(("truncate", rnd.randrange(0, 4 << 20)))
        else:
            ops.append(("tell", None))
    return ops


def _apply(f: Any, ops: list[tuple[str, Any]], fd_positions: bool) -> list[Any]:
    out: list[Any] = []
    for op, arg in ops:
        if op == "write":
            out.append(f.write(arg))
        elif op == "seek":
            out.append(f.seek(arg))
        elif op == "seek_end":
            out.append(f.seek(0, os.SEEK_END))
        elif op == "truncate":
            out.append(f.truncate(arg))
        else:
            out.append(f.tell())
            if fd_positions:  # the descriptor's own position, as a dup or a child sees it after flush()
                f.flush()
                out.append(os.lseek(f.fileno(), 0, os.SEEK_CUR))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_mixed_writes_seeks_and_truncates_match_the_builtin(seed: int, tmp_path: pathlib.Path, stack: Stack) -> None:
    ops = _ops(random.Random(seed), 60)
    with open(tmp_path / "ref", "wb") as f:
        want = _apply(f, ops, True)
    with uringstack.open(tmp_path / "f", "wb", stack=stack, buffering=4 * HOLD_MIN) as g:
        got = _apply(g, ops, True)
    assert got == want
    assert (tmp_path / "f").read_bytes() == (tmp_path / "ref").read_bytes()


def test_held_data_reaches_the_kernel_at_flush_and_fileno(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    data = os.urandom(HOLD_MIN)
    with uringstack.open(path, "wb", stack=stack) as f:
        f.write(data)
        f.flush()
        assert path.read_bytes() == data
        f.write(data)
        os.fsync(f.fileno())  # the raw file's fileno() writes what it holds
        assert path.read_bytes() == data * 2
        f.write(data)
        f.fileno()
        assert path.read_bytes() == data * 3


def _fail_gathers(f: Any, err: int) -> None:
    def fail(buffers: Any, offset: int) -> int:
        raise OSError(err, os.strerror(err))

    f.raw.handle.writev_from = fail


def test_a_failed_held_write_surfaces_at_flush(tmp_path: pathlib.Path, stack: Stack) -> None:
    with uringstack.open(tmp_path / "f", "wb", stack=stack) as f:
        real = f.raw.handle.writev_from
        _fail_gathers(f, errno.ENOSPC)
        f.write(b"x" * HOLD_MIN)
        with pytest.raises(OSError) as info:
            f.flush()
        assert info.value.errno == errno.ENOSPC
        f.raw.handle.writev_from = real
        f.write(b"y")  # what failed was dropped, as a failed write-behind's data; the file goes on
    assert (tmp_path / "f").read_bytes() == b"y"


def test_a_failed_held_write_surfaces_at_close(tmp_path: pathlib.Path, stack: Stack) -> None:
    f = uringstack.open(tmp_path / "f", "wb", stack=stack)
    _fail_gathers(f, errno.EIO)
    f.write(b"x" * HOLD_MIN)
    with pytest.raises(OSError) as info:
        f.close()
    assert info.value.errno == errno.EIO
    assert f.closed


def test_a_closed_writer_refuses_large_bytes_in_the_builtins_words(tmp_path: pathlib.Path, stack: Stack) -> None:
    f = uringstack.open(tmp_path / "f", "wb", stack=stack)
    f.close()
    with pytest.raises(ValueError, match=r"^write to closed file$"):
        f.write(b"x" * HOLD_MIN)


def test_append_and_update_modes_hold_nothing(tmp_path: pathlib.Path, stack: Stack) -> None:
    """Appends land where the kernel runs them (unordered in a batch): they are copied as before."""
    path = tmp_path / "f"
    path.write_bytes(b"start")
    for mode in ("ab", "r+b"):
        with uringstack.open(path, mode, stack=stack) as f:
            if mode == "r+b":
                f.seek(0, os.SEEK_END)
            seen = _spy_gathers(f)
            f.write(b"z" * HOLD_MIN)
        assert seen == []
    assert path.read_bytes() == b"start" + b"z" * (2 * HOLD_MIN)


def test_one_writer_from_several_threads_keeps_each_write_whole(tmp_path: pathlib.Path, stack: Stack) -> None:
    """Large (held) and small (buffered) writes from four threads: each write lands whole, none lost."""
    path = tmp_path / "f"
    sizes = [HOLD_MIN, 100, 3 * HOLD_MIN, 5000]
    with uringstack.open(path, "wb", stack=stack, buffering=4 * HOLD_MIN) as f:

        def writer(k: int) -> None:
            for i in range(40):
                f.write(bytes([k * 40 + i]) * sizes[i % 4])

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a writer is stuck"
    data = path.read_bytes()
    assert len(data) == 4 * 10 * sum(sizes)
    runs: list[tuple[int, int]] = []  # (byte value, run length), in file order
    at = 0
    while at < len(data):
        end = at
        while end < len(data) and data[end] == data[at]:
            end += 1
        runs.append((data[at], end - at))
        at = end
    assert sorted(runs) == sorted((k * 40 + i, sizes[i % 4]) for k in range(4) for i in range(40))


def test_the_write_step_is_where_bytes_are_held(tmp_path: pathlib.Path, stack: Stack, write_step: str) -> None:
    """A C step only on a binary write-only file (holding): text, append and update
    modes keep the class's ``write``."""
    for mode, held in (("wb", True), ("xb", True), ("w", False), ("ab", False), ("r+b", False)):
        path = tmp_path / f"f{mode.replace('+', 'p')}"
        if mode == "r+b":
            path.write_bytes(b"")
        with uringstack.open(path, mode, stack=stack) as f:
            buffer = getattr(f, "buffer", f)
            assert ("write" in vars(buffer)) is (held and write_step == "c-step"), mode


def test_a_lock_held_by_another_thread_is_waited_for(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    with uringstack.open(path, "wb", stack=stack) as f:
        raw = f.raw
        done: list[int] = []
        with raw._lock:
            t = threading.Thread(target=lambda: done.append(f.write(b"a" * HOLD_MIN)), daemon=True)
            t.start()
            t.join(0.3)
            assert t.is_alive() and done == []
            os.write(raw._fd, b"head")  # the position moves before the held chunk records it
        t.join(10)
        assert done == [HOLD_MIN]
    assert path.read_bytes() == b"head" + b"a" * HOLD_MIN


def test_a_raw_file_closed_behind_the_writer(tmp_path: pathlib.Path, stack: Stack) -> None:
    """Nothing is held once the raw file closed (the C step checks the file still holds
    for it); the write fails as the built-in's writer over a closed raw file does."""
    path = tmp_path / "f"
    f = uringstack.open(path, "wb", stack=stack)
    f.write(b"1" * HOLD_MIN)
    f.raw.close()
    with pytest.raises(ValueError, match="closed file"):
        f.write(b"2" * HOLD_MIN)
    assert path.read_bytes() == b"1" * HOLD_MIN
    with contextlib.suppress(ValueError):
        f.close()


def test_a_write_takes_one_argument(tmp_path: pathlib.Path, stack: Stack) -> None:
    with uringstack.open(tmp_path / "f", "wb", stack=stack) as f:
        with pytest.raises(TypeError):
            f.write()
        with pytest.raises(TypeError):
            f.write(b"a", b"b")
        assert f.write(b"ok") == 2
    assert (tmp_path / "f").read_bytes() == b"ok"


def test_the_files_held_object_replaced_is_the_one_used(tmp_path: pathlib.Path, stack: Stack) -> None:
    """The C step holds for the file's current ``_held`` only (closed: None; a race between
    the writer's flush and the hold could close it): another goes through ``FileIO._hold``."""
    path = tmp_path / "f"
    with uringstack.open(path, "wb", stack=stack) as f:
        f.write(b"1" * HOLD_MIN)
        f.flush()
        assert f.raw._enable_holding(2 * HOLD_MIN)  # a new held object for the same file
        f.write(b"2" * HOLD_MIN)
        assert f.raw._held.nbytes == HOLD_MIN
    assert path.read_bytes() == b"1" * HOLD_MIN + b"2" * HOLD_MIN


def _write_waiting_for_the_lock_as_the_file_closes(raw: Any, write: Any) -> list[BaseException]:
    """Run *write* in a thread that waits for *raw*'s lock while this thread closes *raw*;
    what the write raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            write()
        except BaseException as e:  # (reported to the test)
            errors.append(e)

    with raw._lock:
        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(0.3)
        assert t.is_alive()  # waiting for the lock
        raw.close()  # this thread holds the lock (re-entered): the descriptor goes now
    t.join(10)
    assert not t.is_alive()
    return errors


def test_a_write_waiting_for_the_lock_while_the_file_closes_raises_closed(tmp_path: pathlib.Path, stack: Stack) -> None:
    """A large write that waits for the file's lock while another thread closes the file
    fails as on a closed file (it found the descriptor gone: EBADF, before the check)."""
    path = tmp_path / "f"
    f = uringstack.open(path, "wb", stack=stack)
    errors = _write_waiting_for_the_lock_as_the_file_closes(f.raw, lambda: f.write(b"w" * HOLD_MIN))
    assert len(errors) == 1 and type(errors[0]) is ValueError, errors
    assert "closed file" in str(errors[0])
    with contextlib.suppress(ValueError):
        f.close()
    assert path.read_bytes() == b""


def test_a_write_between_closes_flush_and_the_closed_mark_is_written(tmp_path: pathlib.Path, stack: Stack) -> None:
    """A large write from another thread that lands after the raw file's close flushed,
    and before it is marked closed, was accepted: it is written before the descriptor
    goes (before, it stayed held and was dropped with the file: 0 bytes on disk)."""
    path = tmp_path / "f"
    f = uringstack.open(path, "wb", stack=stack)
    raw = f.raw
    accepted: list[bytes] = []
    errors: list[BaseException] = []
    real_flush = raw.flush

    def flush_then_another_threads_write() -> None:
        real_flush()
        write_from_another_thread(f, bytes([ord("a") + len(accepted)]) * HOLD_MIN, accepted, errors)

    raw.flush = flush_then_another_threads_write  # close's flushes (its own, io.IOBase.close's)
    raw.close()
    assert errors == []
    assert len(accepted) == 2
    assert path.read_bytes() == b"".join(accepted)
    with contextlib.suppress(ValueError):
        f.close()


class _WriteAsTheHandleCloses:
    """A second watcher of the handle's close: its flush runs after the file's, before
    the file is marked closed, and makes a write from another thread there."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.accepted: list[bytes] = []
        self.errors: list[BaseException] = []

    def flush(self) -> None:
        write_from_another_thread(self.f, b"late" * (HOLD_MIN // 4), self.accepted, self.errors)

    def closed(self) -> None:
        pass


def test_a_write_while_the_handle_closes_is_refused_not_dropped(tmp_path: pathlib.Path, stack: Stack) -> None:
    """Once the handle's close flushed the file, the file is closed: a large write from
    another thread then fails as on a closed file (before, it was held, its length
    returned, and its bytes dropped with the handle)."""
    path = tmp_path / "f"
    f = uringstack.open(path, "wb", stack=stack)
    f.write(b"1" * HOLD_MIN)
    racer = _WriteAsTheHandleCloses(f)
    f.raw.handle.watch_close(racer.closed, flush=racer.flush)
    f.raw.handle.close()
    assert racer.accepted == []
    assert len(racer.errors) == 1 and type(racer.errors[0]) is ValueError, racer.errors
    assert "closed file" in str(racer.errors[0])
    assert path.read_bytes() == b"1" * HOLD_MIN
    with contextlib.suppress(ValueError):
        f.close()


@pytest.mark.parametrize("size", [1, HOLD_MIN])
def test_a_raw_write_waiting_for_the_lock_while_the_file_closes_raises_closed(
    tmp_path: pathlib.Path, stack: Stack, size: int
) -> None:
    """``FileIO.write`` (a small write and a large one, straight to the raw file) that
    waits for the lock while another thread closes the file fails as on a closed file,
    not with EBADF from the descriptor that went meanwhile."""
    path = tmp_path / "f"
    raw = uringstack.FileIO(path, "wb", stack=stack)
    errors = _write_waiting_for_the_lock_as_the_file_closes(raw, lambda: raw.write(b"w" * size))
    assert len(errors) == 1 and type(errors[0]) is ValueError, errors
    assert path.read_bytes() == b""
