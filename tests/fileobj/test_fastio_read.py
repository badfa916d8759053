"""``uringstack.FileIO.readinto``'s page-cache step in C (``uringstack.fileobj._fastio``).

On a buffered io_uring file opened for reading, ``readinto`` is a
``CachedReadInto`` instance attribute: it copies a read the page cache holds
in full with ``preadv2(RWF_NOWAIT)`` at the file position and hands anything
else to the Python step (``FileIO._readinto_fallback``).  These tests check
that it keeps every duty of the Python step it shortcuts: the file's lock,
the in-flight tracker a close waits on, the backend's switches, fork, closed
files and unusual buffers.
"""

from __future__ import annotations

import array
import errno
import os
import pathlib
import threading
import time
from typing import Any

import pytest

import uringstack
from tests.page_cache import resident_pages
from tests.requires import require_setup_flag, skip_without
from uringstack.fileobj._fastio import CachedReadInto
from uringstack.ring.flags import SetupFlag
from uringstack.stack import Stack, open_stack
from uringstack.stack.uring_backend import UringFileIO

from .conftest import BACKENDS, seen_from_fork_child, starts_in_flight, watch_c_step


def _file(tmp_path: pathlib.Path, size: int) -> tuple[pathlib.Path, bytes]:
    path = tmp_path / "f"
    data = os.urandom(size)
    path.write_bytes(data)  # just written: in the page cache
    return path, data


def _armed(f: uringstack.FileIO) -> CachedReadInto:
    """The C step of *f* (asserted present and armed), with its backend checked to copy."""
    fast = vars(f).get("readinto")
    handle = f.handle
    assert handle is not None and isinstance(handle.io, UringFileIO)
    if not handle.io._reads_cached_inline:
        skip_without("reads at the file position copied from the page cache (Linux 5.6+, RWF_NOWAIT)")
    assert isinstance(fast, CachedReadInto) and fast.armed
    return fast


def _spy_ring_reads(f: uringstack.FileIO, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Lengths of the reads that reach *f*'s ring."""
    handle = f.handle
    assert handle is not None
    ring: Any = handle.ring
    real = ring.rw_one
    lengths: list[int] = []

    def spy(opcode: int, fd: int, buf: Any, length: int, *rest: Any) -> int:
        lengths.append(length)
        result: int = real(opcode, fd, buf, length, *rest)
        return result

    monkeypatch.setattr(ring, "rw_one", spy)
    return lengths


def _spy_python_steps(f: uringstack.FileIO, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What the C step hands to *f*'s Python step (its *copied* argument), per call."""
    real = f._readinto_fallback
    steps: list[object] = []

    def spy(b: Any, copied: int | None) -> int | None:
        steps.append(copied)
        return real(b, copied)

    monkeypatch.setattr(f, "_readinto_fallback", spy)
    return steps


def _starts(f: uringstack.FileIO) -> int:
    return starts_in_flight(f)


def test_a_cached_read_is_copied_in_c_not_through_the_ring(
    tmp_path: pathlib.Path, uring_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = _file(tmp_path, 300_000)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        _armed(f)
        ring_reads = _spy_ring_reads(f, monkeypatch)
        python_steps = _spy_python_steps(f, monkeypatch)
        f.seek(1000)
        buf = bytearray(65536)
        assert f.readinto(buf) == 65536 and buf == data[1000:66536]
        m = memoryview(bytearray(100_000))
        assert f.readinto(m[10:20_010]) == 20_000 and m[10:20_010] == data[66536:86536]
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 86536 == f.tell()
        assert ring_reads == [] and python_steps == []
        assert _starts(f) == 0  # every copy counted out of the tracker
        # the end of file: the short copy hands the rest to the ring (read(2) would not be
        # short before the end), which finds the end; then 0 from C alone
        f.seek(len(data) - 10)
        assert f.readinto(buf) == 10 and buf[:10] == data[-10:]
        assert python_steps == [10] and ring_reads == [65536 - 10]
        assert f.readinto(buf) == 0
        assert python_steps == [10] and ring_reads == [65536 - 10]
        assert _starts(f) == 0


def test_what_the_page_cache_lacks_goes_to_the_ring(
    tmp_path: pathlib.Path, uring_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real cold pages: the first page cached only (a partial copy: the ring reads the
    rest where the copy stopped) and none cached (EAGAIN: the ring reads it all).

    The one cached page is made by a write of that page, not by a read of it, and the
    page cache is asked with ``mincore(2)``, which reads nothing: a read (``RWF_NOWAIT``
    too) may bring in a large folio (ext4 on Linux 6.16+) far past what it asked for,
    even with ``POSIX_FADV_RANDOM``, so the split of each read between copy and ring is
    the kernel's (before, the test expected one page exactly and failed now and then)."""
    path, data = _file(tmp_path, 8 << 20)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        _armed(f)
        fd = f.fileno()
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead past what is read
        far = 7 << 20
        for _ in range(20):  # (a folio still on a CPU's LRU batch is skipped: asked again)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
            if not resident_pages(fd, 96 << 10, 16 << 10) and not resident_pages(fd, far, 8192):
                break  # dropped, as it should be
            time.sleep(0.05)
        else:
            skip_without("a page cache POSIX_FADV_DONTNEED empties (tmpfs keeps every page)")
        steps = _spy_python_steps(f, monkeypatch)
        ring_reads = _spy_ring_reads(f, monkeypatch)
        writer = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(writer, data[98_304:102_400], 98_304)  # the page holding 100_000, and only it
        finally:
            os.close(writer)
        buf = bytearray(8192)
        f.seek(100_000)
        assert f.readinto(buf) == 8192 and buf == data[100_000:108_192]
        f.seek(far)
        assert f.readinto(buf) == 8192 and buf == data[far : far + 8192]
        assert f.tell() == far + 8192 and _starts(f) == 0
        # The split is the kernel's: the written page is copied (2,400 bytes from 100,000)
        # and the far range is not cached, unless a read brought a large folio around it.
        # Whatever it was, the C step handed what it copied (None: nothing) to the Python
        # step, and the ring read exactly the rest, where the copy stopped.
        if not steps:
            skip_without("the page cache held both ranges whole (large folios around the reads)")
        assert all(c is None or 0 < c < 8192 for c in steps), steps
        assert ring_reads == [8192 - (c or 0) for c in steps], (steps, ring_reads)


def test_the_backend_switches_are_read_per_call(
    tmp_path: pathlib.Path, uring_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Turned off after the open, copies in the caller stop (the ring reads), and a
    completion hook hears of each cached read, as on the Python step."""
    path, data = _file(tmp_path, 50_000)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        _armed(f)
        handle = f.handle
        assert handle is not None
        io: Any = handle.io
        ring_reads = _spy_ring_reads(f, monkeypatch)
        buf = bytearray(1000)
        monkeypatch.setattr(io, "_reads_cached_inline", False)
        assert f.readinto(buf) == 1000 and buf == data[:1000]
        assert ring_reads == [1000]
        monkeypatch.undo()
        ring_reads = _spy_ring_reads(f, monkeypatch)
        heard: list[tuple[str, object, list[int]]] = []
        monkeypatch.setattr(
            io, "completion_hook", lambda op, ring: lambda batch: heard.append((op, ring, list(batch.results)))
        )
        assert f.readinto(buf) == 1000 and buf == data[1000:2000]
        assert heard == [("read", None, [1000])] and ring_reads == []
        monkeypatch.setattr(io, "completion_hook", None)
        assert f.readinto(buf) == 1000 and buf == data[2000:3000]
        assert heard == [("read", None, [1000])] and ring_reads == []


def test_a_copy_holds_the_files_lock_and_is_tracked(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    """While the copy runs (the GIL released), the file's lock is held and the tracker
    counts it: another thread's close() waits for it, and no read or write of this
    file runs beside it."""
    size = 128 << 20
    path = tmp_path / "big"
    with open(path, "wb") as out:
        out.truncate(size)
    with open(path, "rb") as warm:  # the page cache holds all of it
        while warm.read(1 << 22):
            pass
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        _armed(f)
        buf = bytearray(size // 8)

        def read_all() -> None:
            # nothing but the C step between the copies (a seek would take the lock in Python)
            got = [n for n in iter(lambda: f.readinto(buf), 0)]
            assert got == [len(buf)] * 8

        seen = watch_c_step(f, read_all, 20)
        assert seen["starts"] > 0, "no copy was ever counted in the tracker"
        assert seen["locked"] > 0, "the file's lock was never held during a copy"
        assert _starts(f) == 0


def test_the_file_lock_held_by_another_thread_is_waited_for(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    path, _ = _file(tmp_path, 10_000)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        _armed(f)
        got: list[int | None] = []
        with f._lock:
            reader = threading.Thread(target=lambda: got.append(f.readinto(bytearray(100))), daemon=True)
            reader.start()
            reader.join(0.3)
            assert reader.is_alive() and got == []  # waits for the lock, as the Python step does
            f.seek(5000)
        reader.join(10)
        assert got == [100] and f.tell() == 5100


def test_closed_files_and_kept_references(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    path, _ = _file(tmp_path, 10_000)
    f = uringstack.FileIO(path, "rb", stack=uring_stack)
    fast = _armed(f)
    f.close()
    assert "readinto" not in vars(f) and not fast.armed
    for call in (f.readinto, fast):
        with pytest.raises(ValueError, match="I/O operation on closed file"):
            call(bytearray(10))
    g = uringstack.FileIO(path, "rb", stack=uring_stack)
    fast = _armed(g)
    handle = g.handle
    assert handle is not None
    handle.close()  # behind the file's back: taken away too (the tracker refuses meanwhile)
    assert "readinto" not in vars(g) and not fast.armed
    for call in (g.readinto, fast):
        with pytest.raises(ValueError, match="I/O operation on closed file"):
            call(bytearray(10))
    g.close()


def test_a_closing_tracker_refuses_the_copy(
    tmp_path: pathlib.Path, uring_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a close's first step (the tracker refuses new starts) and the file's
    closed flag, the C step copies nothing: the Python step raises closed."""
    path, _ = _file(tmp_path, 1000)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        _armed(f)
        handle: Any = f.handle
        steps = _spy_python_steps(f, monkeypatch)
        monkeypatch.setattr(handle._inflight, "_closed", True)
        with pytest.raises(ValueError, match="I/O operation on closed file"):
            f.readinto(bytearray(10))
        assert steps == [-1] and f.tell() == 0 and _starts(f) == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: array.array("b", bytes(64)),
        lambda: memoryview(bytearray(128))[::2],  # not contiguous
        lambda: b"read-only" * 8,
        lambda: memoryview(bytes(64)),
        lambda: bytearray(),
        lambda: memoryview(bytearray(0)),
    ],
    ids=["array", "strided", "bytes", "readonly-view", "empty", "empty-view"],
)
def test_other_buffers_behave_as_the_builtin(tmp_path: pathlib.Path, uring_stack: Stack, make: Any) -> None:
    """What C does not take (not a writable plain buffer, empty) goes to the Python step: the
    result or the exception of ``io.FileIO.readinto``, and the same position."""
    path, _ = _file(tmp_path, 1000)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f, open(path, "rb", buffering=0) as ref:
        _armed(f)

        def outcome(file: Any) -> tuple[object, int]:
            b = make()
            try:
                result: object = (file.readinto(b), bytes(b))
            except Exception as e:  # (the exception is the comparison)
                result = type(e)
            return result, file.tell()

        assert outcome(f) == outcome(ref)


def test_a_call_takes_one_argument(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    path, _ = _file(tmp_path, 100)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        fast = _armed(f)
        with pytest.raises(TypeError):
            fast()
        with pytest.raises(TypeError):
            fast(bytearray(1), bytearray(1))
        with pytest.raises(TypeError):
            fast(b=bytearray(1))


def test_a_fork_child_takes_the_python_step(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    """In a fork child the C step is off: the Python step refuses the inherited handle."""
    path, _ = _file(tmp_path, 100)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        fast = _armed(f)
        seen = seen_from_fork_child(lambda: f.readinto(bytearray(10)), lambda: str(fast.armed))
        assert seen == "False ForkedChildError"
        assert fast.armed and f.readinto(bytearray(10)) == 10


@pytest.mark.parametrize(
    ("mode", "kwargs"),
    [("wb", {}), ("rb", {"direct": True}), ("rb", {"closefd": False})],
    ids=["write-only", "direct", "closefd-false"],
)
def test_where_the_c_step_is_not_installed(
    tmp_path: pathlib.Path, uring_stack: Stack, mode: str, kwargs: dict[str, Any]
) -> None:
    """Only where the Python step reads at the position: readable, buffered, its own descriptor."""
    path, _ = _file(tmp_path, 8192)
    fd = None
    target: Any = path
    if kwargs.get("closefd") is False:
        fd = target = os.open(path, os.O_RDONLY)
    try:
        try:
            f = uringstack.FileIO(target, mode, stack=uring_stack, **kwargs)
        except OSError as e:
            if kwargs.get("direct") and e.errno == errno.EINVAL:
                skip_without(f"O_DIRECT on the file system of {tmp_path}")
            raise
        with f:
            assert "readinto" not in vars(f)
    finally:
        if fd is not None:
            os.close(fd)


@pytest.mark.parametrize("on", ["fallback", "single_issuer"])
def test_not_on_the_fallback_backend_nor_a_single_issuer_ring(tmp_path: pathlib.Path, on: str) -> None:
    path, _ = _file(tmp_path, 100)
    if on == "single_issuer":
        require_setup_flag(SetupFlag.SINGLE_ISSUER, "6.0")
    overrides = {"core.backend": "fallback"} if on == "fallback" else {**BACKENDS["uring"], "core.single_issuer": "on"}
    s = open_stack(overrides=overrides)
    try:
        f = uringstack.FileIO(path, "rb", stack=s)
        handle = f.handle
        assert handle is not None
        assert "readinto" not in vars(f)
        handle.worker.call(f.close) if handle.worker is not None else f.close()
    finally:
        s.close()
