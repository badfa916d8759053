"""``uringstack.FileIO.readinto`` on io_uring: one read at the descriptor's file position.

The read is an io_uring READ at offset -1, which the kernel does at the
file position and moves past what it read, as read(2) does: no ``lseek``
before and after a positional read.  Where the kernel refuses offset -1
(before Linux 5.6: EINVAL; the ring's IORING_FEAT_RW_CUR_POS says which) the lseek
bookkeeping stays.
What the page cache holds is copied by the calling thread (``preadv2`` with
``RWF_NOWAIT`` at the position), the rest read through the ring.
"""

from __future__ import annotations

import errno
import os
import pathlib
from typing import Any

import pytest

import uringstack
from tests.requires import require_setup_flag, skip_without
from uringstack.errors import RingClosedError, WrongThreadError
from uringstack.fileobj import fileio
from uringstack.ring.flags import SetupFlag
from uringstack.ring.opnames import FEAT_RW_CUR_POS
from uringstack.stack import Stack, open_stack, uring_backend
from uringstack.stack.uring_backend import UringFileIO


def _random_file(tmp_path: pathlib.Path, size: int) -> tuple[pathlib.Path, bytes]:
    path = tmp_path / "f"
    data = os.urandom(size)
    path.write_bytes(data)
    return path, data


def _uring_io(f: uringstack.FileIO) -> UringFileIO:
    io = f.handle.io if f.handle is not None else None
    if not isinstance(io, UringFileIO):
        skip_without("an io_uring backend for this file (the stack chose another)")
    return io


def _reads_here(f: uringstack.FileIO) -> UringFileIO:
    io = _uring_io(f)
    if not io._reads_here:
        skip_without("io_uring reads at the file position (IORING_FEAT_RW_CUR_POS: Linux 5.6+)")
    return io


def _readinto(f: uringstack.FileIO, n: int) -> bytes:
    buf = bytearray(n)
    got = f.readinto(buf)
    assert got is not None
    return bytes(buf[:got])


def _read(f: uringstack.FileIO, n: int) -> bytes:
    data = f.read(n)
    assert data is not None
    return data


@pytest.mark.parametrize("read", [_readinto, _read], ids=["readinto", "read"])
def test_reads_at_and_move_the_descriptor_position_without_lseek(
    tmp_path: pathlib.Path, uring_stack: Stack, monkeypatch: pytest.MonkeyPatch, read: Any
) -> None:
    """``readinto`` and ``read(n)`` (into the ``bytes`` returned) are one read at the file position."""
    path, data = _random_file(tmp_path, 300_000)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        _reads_here(f)
        fd = f.fileno()
        twin = os.dup(fd)  # shares the open file description, so its position
        try:
            os.lseek(twin, 1000, os.SEEK_SET)

            def no_lseek(*args: Any) -> int:
                raise AssertionError(f"lseek{args} around a read at the file position")

            monkeypatch.setattr(fileio.os, "lseek", no_lseek)
            assert read(f, 100_000) == data[1000:101_000]
            assert read(f, 100_000) == data[101_000:201_000]
            assert read(f, 100_000) == data[201_000:]  # short at end of file, as read(2)
            assert read(f, 100_000) == b""
            monkeypatch.undo()
            assert os.lseek(twin, 0, os.SEEK_CUR) == len(data)
            os.lseek(twin, 5, os.SEEK_SET)
            assert os.read(fd, 3) == data[5:8]  # the kernel's position, as the built-in's
            assert read(f, 1) == data[8:9]  # read(1): through a bytearray, the same read
            assert read(f, 100_000) == data[9:100_009]
            assert f.tell() == 100_009
        finally:
            os.close(twin)


def test_reading_at_the_position_starts_where_the_descriptor_is(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        f.seek(4)
        io = _reads_here(f)
        assert io._reads_here is True
        assert f.tell() == 4
        assert f.read(3) == b"456"


def test_a_kernel_refusing_offset_minus_one_keeps_the_lseek_path(
    tmp_path: pathlib.Path, uring_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = _random_file(tmp_path, 50_000)
    # a kernel before 5.6 sets up its rings without IORING_FEAT_RW_CUR_POS
    for worker in uring_stack.workers:
        for r in worker.rings.values():
            monkeypatch.setattr(r, "features", r.features & ~FEAT_RW_CUR_POS)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        io = _uring_io(f)
        ring: Any = io.ring
        real = ring.rw_one

        def old_kernel(opcode: int, fd: int, buf: Any, length: int, offset: int, *rest: Any) -> int:
            if offset == (1 << 64) - 1:
                return -errno.EINVAL  # what Linux before 5.6 answers to offset -1
            result: int = real(opcode, fd, buf, length, offset, *rest)
            return result

        monkeypatch.setattr(ring, "rw_one", old_kernel)
        f.seek(7)
        buf = bytearray(20_000)
        assert f.readinto(buf) == 20_000 and buf == data[7:20_007]
        assert io._reads_here is False
        assert f.readinto(buf) == 20_000 and buf == data[20_007:40_007]
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 40_007
        assert f.read(5000) == data[40_007:45_007]  # read(n) too
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 45_007


def test_a_descriptor_closed_behind_the_file_fails_as_the_builtin(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    """Read by descriptor number, not a registered slot: EBADF as with ``open()``, nothing read."""
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    f = uringstack.FileIO(path, "rb", stack=uring_stack)
    _reads_here(f)
    assert "readinto" in vars(f)  # the C step's own error (EBADF) goes to the Python step
    os.close(f.fileno())
    with pytest.raises(OSError) as info:
        f.readinto(bytearray(3))
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError):
        f.close()


def _spy_ring_reads(io: UringFileIO, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Lengths of the reads at the file position that reach the ring."""
    ring: Any = io.ring
    real = ring.rw_one
    lengths: list[int] = []

    def spy(opcode: int, fd: int, buf: Any, length: int, offset: int, *rest: Any) -> int:
        if offset == (1 << 64) - 1 and length:
            lengths.append(length)
        result: int = real(opcode, fd, buf, length, offset, *rest)
        return result

    monkeypatch.setattr(ring, "rw_one", spy)
    return lengths


def test_cached_data_is_copied_by_the_caller_not_the_ring(
    tmp_path: pathlib.Path, uring_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read the page cache holds is preadv2(RWF_NOWAIT) at the position; the hook hears of it."""
    path, data = _random_file(tmp_path, 200_000)  # just written: in the page cache
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        io = _reads_here(f)
        ring_reads = _spy_ring_reads(io, monkeypatch)
        heard: list[tuple[str, object, list[int]]] = []
        monkeypatch.setattr(
            io, "completion_hook", lambda op, ring: lambda batch: heard.append((op, ring, list(batch.results)))
        )
        f.seek(100)
        buf = bytearray(150_000)
        assert f.readinto(buf) == 150_000 and buf == data[100:150_100]
        assert f.readinto(buf) == 49_900 and buf[:49_900] == data[150_100:]
        assert f.readinto(buf) == 0
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == len(data)
        # the short cached read at the end asks the ring for the rest once (read(2) would
        # not be short before the end), which finds the end of the file
        assert ring_reads == [100_100]
        assert heard == [
            ("read", None, [150_000]),
            ("read", None, [49_900]),
            ("read", io.ring, [0]),
            ("read", None, [0]),
        ]


@pytest.mark.parametrize("refusal", [errno.EAGAIN, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL])
def test_what_the_page_cache_lacks_goes_to_the_ring(
    refusal: int, tmp_path: pathlib.Path, uring_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EAGAIN (not cached): this read through the ring.  EOPNOTSUPP, ENOSYS, EINVAL (no
    preadv2 with RWF_NOWAIT here): every read, the ring reporting errors of its own."""
    path, data = _random_file(tmp_path, 30_000)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        io = _reads_here(f)
        ring_reads = _spy_ring_reads(io, monkeypatch)
        tries: list[int] = []

        def refused(fd: int, buffers: Any, offset: int, flags: int) -> int:
            tries.append(flags)
            raise OSError(refusal, os.strerror(refusal))

        monkeypatch.setattr(uring_backend.os, "preadv", refused)
        f._disarm_cached_reads()  # the Python step's refusals (the C step's: test_fastio_read.py)
        buf = bytearray(10_000)
        for i in range(3):
            assert f.readinto(buf) == 10_000 and buf == data[i * 10_000 : (i + 1) * 10_000]
        assert ring_reads == [10_000] * 3
        assert tries == [os.RWF_NOWAIT] * (3 if refusal == errno.EAGAIN else 1)


def test_closefd_false_fails_on_a_closed_descriptor_as_the_builtin(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    """With closefd=False the handle reads a dup of the caller's descriptor: that dup must not
    keep reading once the caller's descriptor was closed (the built-in fails with EBADF)."""
    path = tmp_path / "f"
    path.write_bytes(b"abcdef")
    fd = os.open(path, os.O_RDONLY)
    f = uringstack.FileIO(fd, "rb", closefd=False, stack=uring_stack)
    try:
        _reads_here(f)
        assert f.readinto(bytearray(2)) == 2
        os.close(fd)
        with pytest.raises(OSError) as info:
            f.readinto(bytearray(2))
        assert info.value.errno == errno.EBADF
        with pytest.raises(OSError) as info:
            f.read(2)
        assert info.value.errno == errno.EBADF
    finally:
        f.close()


def test_a_partly_cached_read_is_not_short(tmp_path: pathlib.Path, uring_stack: Stack) -> None:
    """preadv2(RWF_NOWAIT) stops at the first page the cache lacks and returns what it
    copied; read(2) would have waited for the rest, and callers of a regular file take a
    short read for its end: the rest is read through the ring (a real cold page, no mock)."""
    path, data = _random_file(tmp_path, 1 << 20)
    with uringstack.FileIO(path, "rb", stack=uring_stack) as f:
        io = _reads_here(f)
        if not io._reads_cached_inline:
            skip_without("preadv2 with RWF_NOWAIT on this file system")
        fd = f.fileno()
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead past what is read
        assert os.pread(fd, 65536, 0) == data[:65536]  # only the first 64 KiB cached
        probe = bytearray(262144)
        try:
            cached = os.preadv(fd, [probe], 0, os.RWF_NOWAIT)
        except BlockingIOError:
            cached = 0
        if not 0 < cached < len(probe):
            skip_without(f"a partly cached file (RWF_NOWAIT read {cached} of {len(probe)} bytes here)")
        os.posix_fadvise(fd, 65536, 0, os.POSIX_FADV_DONTNEED)  # the probe's read pulled in nothing more
        buf = bytearray(262144)
        assert f.readinto(buf) == len(buf)
        assert bytes(buf) == data[: len(buf)]
        assert os.lseek(fd, 0, os.SEEK_CUR) == len(buf)


def test_the_cached_copy_keeps_the_rings_thread_and_closed_checks(tmp_path: pathlib.Path) -> None:
    """The page-cache copy never touches the ring, yet refuses what the ring would: another
    thread on a SINGLE_ISSUER ring (WrongThreadError), and a closed ring (RingClosedError),
    without reading or moving the position."""
    require_setup_flag(SetupFlag.SINGLE_ISSUER, "6.0")
    s = open_stack(overrides={"core.backend": "auto", "fallback.mode": "auto", "core.single_issuer": "on"})
    try:
        path, data = _random_file(tmp_path, 10_000)  # just written: in the page cache
        f = uringstack.FileIO(path, "rb", stack=s)
        io = _uring_io(f)
        if not io.ring._single_issuer:
            skip_without("IORING_SETUP_SINGLE_ISSUER (core.single_issuer = 'on' gave a ring without it)")
        handle = f.handle
        assert handle is not None
        buf = bytearray(100)
        assert handle.worker.call(lambda: f.readinto(buf)) == 100  # a cached read, on the owner
        if not io._reads_here or not io._reads_cached_inline:
            skip_without("reads at the file position copied from the page cache (Linux 5.6+, RWF_NOWAIT)")
        with pytest.raises(WrongThreadError):
            f.readinto(buf)
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 100
        io.ring._closed = True  # as seen between the ring's close and the handle's
        try:
            with pytest.raises(RingClosedError):
                handle.worker.call(lambda: io.read_cached(buf, len(buf)))
        finally:
            io.ring._closed = False
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 100
        assert handle.worker.call(lambda: f.readinto(buf)) == 100 and buf == data[100:200]
        handle.worker.call(f.close)
    finally:
        s.close()
