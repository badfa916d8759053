"""``uringstack.FileIO.readinto`` pins the caller's buffer only for a read that goes to the ring.

A ``bytearray`` or a writable contiguous ``memoryview`` (what ``io.BufferedReader``
and ``hashlib.file_digest`` pass) is read at the file position without a pin:
the page-cache part is ``preadv2(RWF_NOWAIT)`` into the caller's object, which
``preadv`` takes itself (the backend's ``read_cached``); the handle pins it
(``FileHandle._read_here``) only for what the ring reads, and that pin is what
the handle tracks when the ring's wait is interrupted.  The closed check moved
from ``FileIO.readinto`` into the handle's own (``RingClosedError``, made the
built-in's ``ValueError``): these tests fail when either is lost.
"""

from __future__ import annotations

import array
import io
import os
import pathlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

import uringstack
from tests.requires import skip_without
from uringstack.ring import Ring
from uringstack.stack import Stack, open_stack
from uringstack.stack.uring_backend import UringFileIO

CPU = sorted(os.sched_getaffinity(0))[0]


def _file(tmp_path: pathlib.Path, size: int = 8192) -> tuple[pathlib.Path, bytes]:
    path = tmp_path / "f"
    data = os.urandom(size)
    path.write_bytes(data)  # just written: in the page cache
    return path, data


@pytest.mark.parametrize("mode", ["rb", "wb", "r+b"])
def test_a_handle_closed_behind_the_file_raises_closed_for_every_buffer(
    tmp_path: pathlib.Path, stack: Stack, mode: str
) -> None:
    """The stack's handle closed directly (not through the file object): every ``readinto``
    raises the built-in's closed-file ``ValueError`` and reads nothing, whatever the buffer
    (the unpinned path, the pinned one, an empty buffer) and even on a file not open for
    reading (io.FileIO checks closed first)."""
    path, _ = _file(tmp_path)
    f = uringstack.FileIO(path, mode, stack=stack)
    handle = f.handle
    assert handle is not None
    handle.close()  # closes the descriptor too (closefd=True)
    buffers: list[Any] = [
        bytearray(100),
        memoryview(bytearray(100)),
        array.array("b", bytes(100)),
        bytearray(0),
        memoryview(bytearray(0)),
    ]
    for buf in buffers:
        with pytest.raises(ValueError, match="I/O operation on closed file"):
            f.readinto(buf)
        assert not any(memoryview(buf).cast("B"))
    assert f.closed


def test_buffers_the_unpinned_path_does_not_take_fail_as_before(tmp_path: pathlib.Path, stack: Stack) -> None:
    """A non-contiguous ``memoryview`` is refused with ``TypeError`` (as ``io.FileIO`` does), a
    read-only one with an error, before anything is read: the position does not move; other
    writable buffers (``array``, a cast ``memoryview``) are read at the position."""
    path, data = _file(tmp_path)
    with uringstack.FileIO(path, "rb", stack=stack) as f, io.FileIO(path, "rb") as builtin:
        for bad in (memoryview(bytearray(8))[::2], memoryview(b"abcd")):
            with pytest.raises((TypeError, BufferError)):
                builtin.readinto(bad)
            with pytest.raises(TypeError if not bad.c_contiguous else (TypeError, BufferError)):
                f.readinto(bad)
            assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 0
        arr = array.array("i", [0] * 4)
        assert f.readinto(arr) == 16 and arr.tobytes() == data[:16]
        m = memoryview(bytearray(16)).cast("B", (4, 4))
        assert f.readinto(m) == 16 and m.tobytes() == data[16:32]
        assert f.readinto(memoryview(bytearray(8)).cast("i")) == 8
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 40


class Alarm(Exception):
    """What the test's SIGALRM handler raises."""


def _raise_alarm(signum: int, frame: FrameType | None) -> None:
    raise Alarm


@pytest.fixture
def alarmed_stack() -> Iterator[Stack]:
    old = signal.signal(signal.SIGALRM, _raise_alarm)
    s = open_stack(overrides={"core.backend": "uring", "core.cores": [CPU], "sqpoll.mode": "off"})
    try:
        yield s
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        s.close()


@pytest.mark.timeout(30)
def test_an_interrupted_ring_read_at_the_position_is_waited_for_by_close(
    tmp_path: pathlib.Path, alarmed_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pin the handle makes for the ring is the one it tracks: a ``readinto`` whose ring
    wait a raising signal handler interrupts leaves the read tracked, and ``close()`` waits
    for it (the kernel still writes into the caller's buffer) before closing the descriptor.
    The hung read is a read from an empty pipe (``rw_one`` redirected there, as in
    ``tests/stack/test_audit_signals.py``)."""
    path, _ = _file(tmp_path, 4096)
    f = uringstack.FileIO(path, "rb", stack=alarmed_stack)
    handle = f.handle
    assert handle is not None
    backend = handle.io
    if not isinstance(backend, UringFileIO) or not backend._reads_here:
        skip_without("reads at the file position through io_uring (IORING_FEAT_RW_CUR_POS, Linux 5.6+)")
    ring = handle.ring
    assert isinstance(ring, Ring)
    ring.wait_tick = 2.0  # the call's own wait: the alarm interrupts it
    ring.wait_timeout = 3.0
    backend._reads_cached_inline = False  # every read goes to the ring (the backend's own switch)
    r, w = os.pipe()
    try:
        real = ring.rw_one
        monkeypatch.setattr(ring, "rw_one", lambda op, fd, ptr, n, off, *rest: real(op, r, ptr, n, 0, 0, 0, rest[-1]))
        buf = bytearray(4096)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Alarm):
            f.readinto(buf)
        monkeypatch.undo()
        assert ring.inflight == 1
        writer = threading.Timer(0.3, os.write, (w, b"late"))
        writer.start()
        started = time.monotonic()
        fd = f.fileno()
        f.close()  # the handle's close waits for the read the kernel still holds
        assert bytes(buf[:4]) == b"late", "close() returned while the kernel still held the read"
        assert time.monotonic() - started >= 0.25
        writer.join()
        assert ring.inflight == 0
        with pytest.raises(OSError):
            os.fstat(fd)
    finally:
        os.close(r)
        os.close(w)
